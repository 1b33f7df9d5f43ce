//! Refusals answered per sender: someone spamming commands they may not use (an unverified
//! occupant, a stranger, a person without the right) gets at most [`REFUSALS_PER_WINDOW`]
//! refusals in [`REFUSAL_WINDOW`]; after that the refusals are silent (no reply, no journal
//! row, so no disk flush) until the window ends, and the log says so once per window. Pure:
//! time is passed in. Not journaled: after a restart every sender starts afresh.

use chrono::{DateTime, Duration, Utc};
use std::collections::HashMap;

/// Refusals answered (and journaled) per sender in one window.
pub const REFUSALS_PER_WINDOW: u32 = 5;
/// The window, counted from the sender's first refusal in it.
pub const REFUSAL_WINDOW: Duration = Duration::seconds(60);
/// Senders remembered at most; beyond, new senders are silenced until old windows end.
const SENDERS: usize = 10_000;

/// What to do with one refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer (and journal, as any refusal).
    Answer,
    /// Say nothing; `first` is the first silenced refusal of this sender's window (log it).
    Silent { first: bool },
}

#[derive(Clone, Debug)]
struct Window {
    since: DateTime<Utc>,
    count: u32,
}

/// The refusals of each sender in their current window.
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    senders: HashMap<String, Window>,
}

impl Refusals {
    /// One more refusal for `sender` at `now`.
    pub fn note(&mut self, sender: &str, now: DateTime<Utc>) -> Verdict {
        if !self.senders.contains_key(sender) && self.senders.len() >= SENDERS {
            self.senders.retain(|_, w| now - w.since < REFUSAL_WINDOW);
            if self.senders.len() >= SENDERS {
                return Verdict::Silent { first: false };
            }
        }
        let w = self
            .senders
            .entry(sender.to_string())
            .or_insert(Window { since: now, count: 0 });
        if now - w.since >= REFUSAL_WINDOW || now < w.since {
            *w = Window { since: now, count: 0 };
        }
        w.count = w.count.saturating_add(1);
        match w.count {
            n if n <= REFUSALS_PER_WINDOW => Verdict::Answer,
            n => Verdict::Silent {
                first: n == REFUSALS_PER_WINDOW + 1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_answers_a_minute_per_sender_then_silence_logged_once() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-26T14:02:11Z")
            .expect("valid time")
            .with_timezone(&Utc);
        let mut r = Refusals::default();
        let verdicts: Vec<Verdict> = (0..8).map(|i| r.note("mallory", t0 + Duration::seconds(i))).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Answer,
                Verdict::Silent { first: true },
                Verdict::Silent { first: false },
                Verdict::Silent { first: false },
            ]
        );
        // Another sender has a window of their own.
        assert_eq!(r.note("unverified 'bob'", t0), Verdict::Answer);
        // A minute after the window began, answers again.
        assert_eq!(r.note("mallory", t0 + Duration::seconds(60)), Verdict::Answer);
    }
}
