//! An in-process chat platform for the daemon's tests: rooms that keep every message posted,
//! cards edited in place by reference, buttons pressed with an answer for the clicker alone,
//! and faults on demand (a delay per delivery, a room that refuses, a platform offline). It
//! is not in the registry: tests build it and hand it to the daemon.

use crate::chat::{
    Capabilities, ChatAdapter, Delivered, DeliveryError, Inbound, InteractionReply, Link, MessageRef, Outbound,
    ReplyHandle, RoomRef, RunCard,
};
use async_trait::async_trait;
use baton_policies::{Identity, Platform, Sender};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A message as the room shows it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub reference: MessageRef,
    pub room: String,
    pub text: String,
    /// The card it shows (for a card message), after its latest edit.
    pub card: Option<RunCard>,
    /// How many times it was edited.
    pub edits: u32,
}

/// Every delivery attempt, in order (edits included), for the tests' bookkeeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub room: String,
    pub outbox_id: i64,
    pub edit: Option<MessageRef>,
    pub accepted: bool,
}

#[derive(Default)]
struct State {
    posted: Vec<Posted>,
    attempts: Vec<Attempt>,
    refusing: BTreeSet<String>,
    gone: BTreeSet<String>,
    delay: Duration,
    next: u64,
    clicks: u64,
}

/// The adapter.
pub struct MemoryAdapter {
    platform: Platform,
    caps: Capabilities,
    rooms: Vec<String>,
    state: Mutex<State>,
    changed: Notify,
    listening: Notify,
    inbound: Mutex<Option<mpsc::Sender<Inbound>>>,
    link: watch::Sender<Link>,
}

impl MemoryAdapter {
    /// A platform with these rooms, online from the start.
    pub fn new(platform: Platform, caps: Capabilities, rooms: &[&str]) -> MemoryAdapter {
        let rooms: Vec<String> = rooms.iter().map(|r| r.to_string()).collect();
        let (link, _) = watch::channel(Link {
            online: true,
            joined: rooms.iter().cloned().collect(),
            sessions: 1,
        });
        MemoryAdapter {
            platform,
            caps,
            rooms,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            listening: Notify::new(),
            inbound: Mutex::new(None),
            link,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn room(&self, id: &str) -> RoomRef {
        RoomRef::new(self.platform, id)
    }

    /// Every delivery takes this long from now on.
    pub fn set_delay(&self, d: Duration) {
        self.state().delay = d;
    }

    /// The room answers "not now" to every delivery until `false` again, and is reported as
    /// not joined meanwhile.
    pub fn refuse(&self, room: &str, refusing: bool) {
        if refusing {
            self.state().refusing.insert(room.to_string());
            self.link.send_modify(|l| {
                l.joined.remove(room);
            });
        } else {
            self.state().refusing.remove(room);
            self.link.send_modify(|l| {
                l.joined.insert(room.to_string());
            });
        }
    }

    /// Someone deletes a posted message: edits of it fail for good.
    pub fn delete(&self, reference: &MessageRef) {
        let mut st = self.state();
        st.gone.insert(reference.0.clone());
        st.posted.retain(|p| &p.reference != reference);
    }

    /// The messages of a room as it shows them now, oldest first.
    pub fn posted(&self, room: &str) -> Vec<Posted> {
        self.state().posted.iter().filter(|p| p.room == room).cloned().collect()
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.state().attempts.clone()
    }

    /// Waits until `check` holds for the posted messages, at most `timeout`.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&[Posted]) -> bool) -> Result<(), String> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let st = self.state();
                if check(&st.posted) {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                let st = self.state();
                let texts: Vec<&str> = st.posted.iter().map(|p| p.text.as_str()).collect();
                return Err(format!("condition not met within {timeout:?}; posted: {texts:#?}"));
            }
        }
    }

    /// Hands a message to the daemon, once it listens (at most 10 s).
    async fn send(&self, message: Inbound) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let listening = self.listening.notified();
            let tx = self.inbound.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(tx) = tx {
                let _ = tx.send(message).await;
                return;
            }
            if tokio::time::timeout_at(until, listening).await.is_err() {
                panic!("the daemon did not start listening within 10 s");
            }
        }
    }

    /// `who` types `text` in `room` (with its own message id).
    pub async fn say(&self, room: &str, who: &Identity, text: &str) {
        let id = {
            let mut st = self.state();
            st.next += 1;
            format!("in-{}", st.next)
        };
        self.send(Inbound::text(self.room(room), Sender::Verified(who.clone()), text, id))
            .await;
    }

    /// `who` presses a button of a card in `room`; returns what the clicker alone is told.
    pub async fn click(
        &self,
        room: &str,
        who: &Identity,
        button: crate::chat::ButtonIntent,
    ) -> Option<InteractionReply> {
        let (handle, answer) = ReplyHandle::new(tokio::time::Instant::now() + Duration::from_secs(10));
        let id = {
            let mut st = self.state();
            st.clicks += 1;
            format!("click-{}", st.clicks)
        };
        let mut m = Inbound::text(self.room(room), Sender::Verified(who.clone()), "", id);
        m.button = Some(button);
        m.reply = Some(handle);
        self.send(m).await;
        tokio::time::timeout(Duration::from_secs(10), answer).await.ok()?.ok()
    }
}

#[async_trait]
impl ChatAdapter for MemoryAdapter {
    fn platform(&self) -> Platform {
        self.platform
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn link(&self) -> Option<watch::Receiver<Link>> {
        Some(self.link.subscribe())
    }

    async fn run(&self, inbound: mpsc::Sender<Inbound>, shutdown: CancellationToken) -> anyhow::Result<()> {
        *self.inbound.lock().unwrap_or_else(|p| p.into_inner()) = Some(inbound);
        self.listening.notify_waiters();
        shutdown.cancelled().await;
        *self.inbound.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    async fn deliver(&self, message: &Outbound) -> Result<Delivered, DeliveryError> {
        let delay = self.state().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let room = message.room.id.clone();
        let mut st = self.state();
        let refused = st.refusing.contains(&room) || !self.rooms.contains(&room);
        let gone = message.edit.as_ref().is_some_and(|r| st.gone.contains(&r.0));
        st.attempts.push(Attempt {
            room: room.clone(),
            outbox_id: message.id,
            edit: message.edit.clone(),
            accepted: !refused && !gone,
        });
        if refused {
            return Err(DeliveryError::transient(format!("room {room} refuses messages")));
        }
        if gone {
            return Err(DeliveryError::Permanent {
                reason: "the message to edit was deleted".into(),
            });
        }
        let reference = match &message.edit {
            Some(r) => {
                let Some(p) = st.posted.iter_mut().find(|p| &p.reference == r) else {
                    return Err(DeliveryError::Permanent {
                        reason: format!("no message {r}"),
                    });
                };
                p.card = message.card.clone();
                p.edits += 1;
                r.clone()
            }
            None => {
                st.next += 1;
                let reference = MessageRef(format!("m{}", st.next));
                st.posted.push(Posted {
                    reference: reference.clone(),
                    room,
                    text: message.text(),
                    card: message.card.clone(),
                    edits: 0,
                });
                reference
            }
        };
        drop(st);
        self.changed.notify_waiters();
        Ok(Delivered {
            reference: Some(reference),
        })
    }
}

/// The posted texts per room, for a test's failure message.
pub fn by_room(posted: &[Posted]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in posted {
        out.entry(p.room.clone()).or_default().push(p.text.clone());
    }
    out
}
