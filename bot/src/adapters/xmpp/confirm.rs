//! Which of Baton's messages each room has shown back, and what becomes of those it has not.
//! Pure bookkeeping for the driver: no IO, time passed in.
//!
//! A message is confirmed when the room echoes every part of it: matched by the stanza id Baton
//! gave the part, else by its XEP-0359 origin id (servers that rewrite stanza ids keep it), else
//! by its text (the oldest unconfirmed part with that text; from history only when the history
//! stamp is not older than the message). `deliver` waits for that echo up to a bound; past it
//! the message counts as *late*, not lost: `deliver` answers `Ok`, the message stays here, and it
//! is never sent again while the stream is up. Only after the stream was reset (the session was
//! lost and not resumed) does the driver ask the room for its history since the oldest late
//! message and send again the parts the history does not show ([`Outstanding::resend`]).

use crate::chat::{Delivered, DeliveryError, MessageRef};
use std::collections::VecDeque;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_xmpp::jid::BareJid;

/// Where `deliver` waits for the outcome.
pub type Reply = oneshot::Sender<Result<Delivered, DeliveryError>>;

/// How far a history stamp may lag behind the time Baton sent a message (clocks of two
/// machines, and Prosody's whole-second stamps) for a text-only match; also how much earlier
/// than the oldest late message the history is asked for.
pub const HISTORY_SKEW_MS: i64 = 60_000;

/// Late messages kept per room at most (the oldest are forgotten first, with a warning).
pub const MAX_PER_ROOM: usize = 500;

/// One stanza of a message.
#[derive(Debug)]
struct Part {
    id: String,
    text: String,
    echoed: bool,
}

/// A message sent and not yet fully echoed.
#[derive(Debug)]
struct Sent {
    room: BareJid,
    parts: Vec<Part>,
    /// Wall-clock milliseconds when first sent (for the history's `since`).
    sent_ms: i64,
    /// Set while `deliver` waits; taken when answered.
    reply: Option<Reply>,
    /// When `deliver` is answered `Ok` even without the echo.
    answer_by: Instant,
}

impl Sent {
    fn reference(&self) -> Delivered {
        Delivered {
            reference: self.parts.first().map(|p| MessageRef(p.id.clone())),
        }
    }
}

/// How the room's copy of a message arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Live, as the room relays it to occupants.
    Live,
    /// Replayed from the room's history, stamped at `stamp_ms`.
    History { stamp_ms: i64 },
}

/// What a room's error for one of Baton's stanzas did.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `deliver` was still waiting and got the error (the outbox decides what next).
    Answered,
    /// A late message the room now refuses for good: it is lost (the text, for the log).
    Lost(String),
    /// A late message refused for now (the bot is no longer in the room): it stays, and the
    /// rejoin's history check sends it again if the room does not show it.
    Kept,
    /// Not one of the messages tracked here.
    Unknown,
}

/// Every message sent and not yet confirmed, in the order sent.
#[derive(Debug, Default)]
pub struct Outstanding {
    sent: VecDeque<Sent>,
}

impl Outstanding {
    /// Records a message just sent; returns how many late messages of that room were forgotten
    /// to stay under [`MAX_PER_ROOM`].
    pub fn push(
        &mut self,
        room: BareJid,
        parts: Vec<(String, String)>,
        reply: Reply,
        answer_by: Instant,
        sent_ms: i64,
    ) -> usize {
        let mut forgotten = 0;
        while self.count(&room) >= MAX_PER_ROOM {
            let Some(pos) = self.sent.iter().position(|s| s.room == room && s.reply.is_none()) else {
                break;
            };
            self.sent.remove(pos);
            forgotten += 1;
        }
        let parts = parts
            .into_iter()
            .map(|(id, text)| Part {
                id,
                text,
                echoed: false,
            })
            .collect();
        self.sent.push_back(Sent {
            room,
            parts,
            sent_ms,
            reply: Some(reply),
            answer_by,
        });
        forgotten
    }

    /// Messages tracked for `room`.
    pub fn count(&self, room: &BareJid) -> usize {
        self.sent.iter().filter(|s| &s.room == room).count()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// The room showed one of Baton's messages (live or from history). Returns whether it was
    /// one of the messages tracked here.
    pub fn echo(
        &mut self,
        room: &BareJid,
        id: Option<&str>,
        origin_id: Option<&str>,
        body: Option<&str>,
        seen: Seen,
    ) -> bool {
        let by_id = |wanted: Option<&str>| {
            let wanted = wanted?;
            self.sent.iter().enumerate().find_map(|(i, s)| {
                (&s.room == room)
                    .then(|| s.parts.iter().position(|p| p.id == wanted))
                    .flatten()
                    .map(|j| (i, j))
            })
        };
        let found = by_id(id).or_else(|| by_id(origin_id)).or_else(|| {
            let body = body?;
            self.sent.iter().enumerate().find_map(|(i, s)| {
                let recent = match seen {
                    Seen::Live => true,
                    Seen::History { stamp_ms } => stamp_ms >= s.sent_ms - HISTORY_SKEW_MS,
                };
                (&s.room == room && recent)
                    .then(|| s.parts.iter().position(|p| !p.echoed && p.text == body))
                    .flatten()
                    .map(|j| (i, j))
            })
        });
        let Some((i, j)) = found else {
            return false;
        };
        self.sent[i].parts[j].echoed = true;
        if self.sent[i].parts.iter().all(|p| p.echoed) {
            let done = self.sent.remove(i).expect("the index was just found");
            let delivered = done.reference();
            if let Some(reply) = done.reply {
                let _ = reply.send(Ok(delivered));
            }
        }
        true
    }

    /// Answers `Ok` to every `deliver` still waiting past its bound: those messages are late,
    /// and stay here. Returns how many.
    pub fn overdue(&mut self, now: Instant) -> usize {
        let mut n = 0;
        for s in self.sent.iter_mut().filter(|s| s.answer_by <= now) {
            if let Some(reply) = s.reply.take() {
                let _ = reply.send(Ok(s.reference()));
                n += 1;
            }
        }
        n
    }

    /// The stream was reset: every message still waiting for its echo becomes late (answered
    /// `Ok`; the history check after the rejoin decides whether to send it again). Returns
    /// how many.
    pub fn adopt_all(&mut self) -> usize {
        let mut n = 0;
        for s in &mut self.sent {
            if let Some(reply) = s.reply.take() {
                let _ = reply.send(Ok(s.reference()));
                n += 1;
            }
        }
        n
    }

    /// The room returned an error for the stanza with this id.
    pub fn refused(&mut self, id: &str, permanent: bool, reason: &str) -> Refusal {
        let Some(i) = self.sent.iter().position(|s| s.parts.iter().any(|p| p.id == id)) else {
            return Refusal::Unknown;
        };
        if self.sent[i].reply.is_some() {
            let s = self.sent.remove(i).expect("the index was just found");
            let reason = reason.to_string();
            let err = if permanent {
                DeliveryError::Permanent { reason }
            } else {
                DeliveryError::transient(reason)
            };
            if let Some(reply) = s.reply {
                let _ = reply.send(Err(err));
            }
            return Refusal::Answered;
        }
        if !permanent {
            return Refusal::Kept;
        }
        let s = self.sent.remove(i).expect("the index was just found");
        Refusal::Lost(s.parts.iter().map(|p| p.text.as_str()).collect::<Vec<_>>().join("\n"))
    }

    /// Where to start the room's history when checking what it shows: a little before the
    /// oldest message tracked for it, in wall-clock milliseconds.
    pub fn history_since(&self, room: &BareJid) -> Option<i64> {
        self.sent
            .iter()
            .filter(|s| &s.room == room)
            .map(|s| s.sent_ms)
            .min()
            .map(|ms| ms - HISTORY_SKEW_MS)
    }

    /// The parts the room has not shown, in the order sent: to send again (same ids) after the
    /// history check.
    pub fn resend(&self, room: &BareJid) -> Vec<(String, String)> {
        self.sent
            .iter()
            .filter(|s| &s.room == room)
            .flat_map(|s| s.parts.iter().filter(|p| !p.echoed))
            .map(|p| (p.id.clone(), p.text.clone()))
            .collect()
    }

    /// The adapter stops: `deliver`s still waiting get a transient error (the outbox keeps
    /// their messages and tries again), late messages stay for the next run.
    pub fn fail_waiting(&mut self, reason: &str) {
        self.sent.retain_mut(|s| match s.reply.take() {
            Some(reply) => {
                let _ = reply.send(Err(DeliveryError::transient(reason)));
                false
            }
            None => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn room(name: &str) -> BareJid {
        BareJid::new(&format!("{name}@conference.contoso.test")).expect("valid")
    }

    fn parts(id: i64, texts: &[&str]) -> Vec<(String, String)> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("baton-{id}-{i}"), t.to_string()))
            .collect()
    }

    /// Sends a message; returns the receiver `deliver` waits on.
    fn send(
        o: &mut Outstanding,
        r: &str,
        id: i64,
        texts: &[&str],
        answer_by: Instant,
        ms: i64,
    ) -> oneshot::Receiver<Result<Delivered, DeliveryError>> {
        let (tx, rx) = oneshot::channel();
        o.push(room(r), parts(id, texts), tx, answer_by, ms);
        rx
    }

    fn outcome(rx: &mut oneshot::Receiver<Result<Delivered, DeliveryError>>) -> String {
        match rx.try_recv() {
            Ok(Ok(d)) => format!("ok {}", d.reference.map(|r| r.0).unwrap_or_default()),
            Ok(Err(e)) => format!("err {e}"),
            Err(oneshot::error::TryRecvError::Empty) => "waiting".into(),
            Err(oneshot::error::TryRecvError::Closed) => "dropped".into(),
        }
    }

    #[test]
    fn a_message_is_delivered_when_every_part_is_echoed_by_id_origin_id_or_text() {
        let mut o = Outstanding::default();
        let later = Instant::now() + Duration::from_secs(10);
        let mut a = send(&mut o, "incident", 1, &["one", "two"], later, 0);
        assert!(o.echo(&room("incident"), Some("baton-1-0"), None, Some("one"), Seen::Live));
        assert_eq!(outcome(&mut a), "waiting", "one part of two");
        // A server that rewrote the stanza id keeps the origin id.
        assert!(o.echo(
            &room("incident"),
            Some("srv-9"),
            Some("baton-1-1"),
            Some("two"),
            Seen::Live
        ));
        assert_eq!(outcome(&mut a), "ok baton-1-0");
        // One that rewrote both: the oldest unconfirmed part with that text.
        let mut b = send(&mut o, "incident", 2, &["same"], later, 0);
        let mut c = send(&mut o, "incident", 3, &["same"], later, 0);
        assert!(o.echo(&room("incident"), Some("x"), None, Some("same"), Seen::Live));
        assert_eq!(
            (outcome(&mut b), outcome(&mut c)),
            ("ok baton-2-0".into(), "waiting".into())
        );
        // Another room's echo, or an unknown text, confirms nothing.
        assert!(!o.echo(&room("audit"), Some("baton-3-0"), None, Some("same"), Seen::Live));
        assert!(!o.echo(&room("incident"), Some("y"), None, Some("other"), Seen::Live));
        assert_eq!(outcome(&mut c), "waiting");
    }

    #[test]
    fn a_missing_echo_is_late_not_lost_and_is_sent_again_only_if_history_lacks_it() {
        let mut o = Outstanding::default();
        let now = Instant::now();
        let mut a = send(
            &mut o,
            "incident",
            1,
            &["step 2"],
            now + Duration::from_secs(10),
            100_000,
        );
        let mut b = send(
            &mut o,
            "incident",
            2,
            &["step 3"],
            now + Duration::from_secs(10),
            101_000,
        );
        assert_eq!(o.overdue(now + Duration::from_secs(5)), 0);
        assert_eq!(o.overdue(now + Duration::from_secs(10)), 2);
        assert_eq!(
            (outcome(&mut a), outcome(&mut b)),
            ("ok baton-1-0".into(), "ok baton-2-0".into())
        );
        // Nothing is sent again while the stream is up; after a reset, the history is asked
        // for from before the oldest, and only what it lacks is sent again.
        assert_eq!(o.history_since(&room("incident")), Some(100_000 - HISTORY_SKEW_MS));
        assert!(o.echo(
            &room("incident"),
            Some("baton-1-0"),
            None,
            Some("step 2"),
            Seen::History { stamp_ms: 100_000 }
        ));
        assert_eq!(
            o.resend(&room("incident")),
            [("baton-2-0".to_string(), "step 3".to_string())]
        );
        // Its live echo after the resend confirms it.
        assert!(o.echo(&room("incident"), Some("baton-2-0"), None, None, Seen::Live));
        assert!(o.is_empty());
    }

    #[test]
    fn old_history_with_the_same_text_does_not_count() {
        let mut o = Outstanding::default();
        let now = Instant::now();
        let _rx = send(&mut o, "incident", 5, &["#1 status"], now, 1_000_000);
        let old = Seen::History {
            stamp_ms: 1_000_000 - HISTORY_SKEW_MS - 1,
        };
        assert!(!o.echo(&room("incident"), Some("other"), None, Some("#1 status"), old));
        let recent = Seen::History { stamp_ms: 999_000 };
        assert!(o.echo(&room("incident"), Some("other"), None, Some("#1 status"), recent));
    }

    #[test]
    fn a_reset_makes_waiting_messages_late_and_errors_go_to_whoever_owns_the_message() {
        let mut o = Outstanding::default();
        let later = Instant::now() + Duration::from_secs(10);
        let mut a = send(&mut o, "incident", 1, &["a"], later, 0);
        let mut b = send(&mut o, "incident", 2, &["b"], later, 0);
        // Still waiting: the error goes to `deliver`, and the outbox decides.
        assert_eq!(o.refused("baton-2-0", false, "not in the room"), Refusal::Answered);
        assert_eq!(outcome(&mut b), "err not delivered yet: not in the room");
        assert_eq!(o.adopt_all(), 1);
        assert_eq!(outcome(&mut a), "ok baton-1-0");
        // Late and refused for now: kept for the rejoin; refused for good: lost, and said.
        assert_eq!(o.refused("baton-1-0", false, "not in the room"), Refusal::Kept);
        assert_eq!(o.count(&room("incident")), 1);
        assert_eq!(o.refused("baton-1-0", true, "forbidden"), Refusal::Lost("a".into()));
        assert_eq!(o.refused("baton-1-0", true, "forbidden"), Refusal::Unknown);
    }

    #[test]
    fn stopping_fails_the_waiting_and_keeps_the_late() {
        let mut o = Outstanding::default();
        let now = Instant::now();
        let _late = send(&mut o, "incident", 1, &["late"], now, 0);
        o.overdue(now);
        let mut waiting = send(&mut o, "incident", 2, &["waiting"], now + Duration::from_secs(9), 0);
        o.fail_waiting("stopped");
        assert_eq!(outcome(&mut waiting), "err not delivered yet: stopped");
        assert_eq!(
            o.resend(&room("incident")),
            [("baton-1-0".to_string(), "late".to_string())]
        );
    }

    #[test]
    fn a_room_keeps_a_bounded_number_of_late_messages() {
        let mut o = Outstanding::default();
        let now = Instant::now();
        for i in 0..MAX_PER_ROOM as i64 {
            drop(send(&mut o, "incident", i, &["x"], now, 0));
        }
        o.overdue(now);
        let (tx, _rx) = oneshot::channel();
        assert_eq!(o.push(room("incident"), parts(9999, &["y"]), tx, now, 0), 1);
        assert_eq!(o.count(&room("incident")), MAX_PER_ROOM);
        assert_eq!(o.resend(&room("incident"))[0].0, "baton-1-0", "the oldest went first");
    }
}
