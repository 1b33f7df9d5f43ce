//! `!status xmpp` looks shared between askers: at most one look (DNS queries, a probe of every
//! pool, `Get-CsSite` on the management agent) is in flight at a time, every asker meanwhile gets
//! its result, and a look that ended less than [`STATUS_CACHE`] ago answers without looking
//! again, saying how old it is. Pure: the daemon passes the time in and does the looking.

use crate::chat::RoomRef;
use std::time::{Duration, Instant};

/// How long a look's result answers later askers: a room asking again and again costs one look
/// per this time at most.
pub const STATUS_CACHE: Duration = Duration::from_secs(10);

/// What to do for one ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// No look in flight and none recent: start one (its askers are answered by [`Looks::done`]).
    Start,
    /// A look is in flight: this asker gets its result too.
    Joined,
    /// The last look ended `age` ago: answer with its `text`.
    Cached { text: String, age: Duration },
}

/// The looks in flight and the last result.
#[derive(Debug)]
pub struct Looks {
    cache: Duration,
    /// The askers of the look in flight, in order (one entry per ask).
    waiting: Option<Vec<RoomRef>>,
    last: Option<(Instant, String)>,
}

impl Looks {
    pub fn new(cache: Duration) -> Looks {
        Looks {
            cache,
            waiting: None,
            last: None,
        }
    }

    /// An ask from `room` at `now`.
    pub fn ask(&mut self, room: RoomRef, now: Instant) -> Ask {
        if let Some(waiting) = &mut self.waiting {
            waiting.push(room);
            return Ask::Joined;
        }
        if let Some((at, text)) = &self.last {
            let age = now.saturating_duration_since(*at);
            if age < self.cache {
                return Ask::Cached {
                    text: text.clone(),
                    age,
                };
            }
        }
        self.waiting = Some(vec![room]);
        Ask::Start
    }

    /// The look ended at `now` with `text`: the askers to answer, in order of asking.
    pub fn done(&mut self, text: String, now: Instant) -> Vec<RoomRef> {
        self.last = Some((now, text));
        self.waiting.take().unwrap_or_default()
    }

    /// How long a result answers later askers.
    pub fn cache(&self) -> Duration {
        self.cache
    }

    /// Whether a look is in flight.
    pub fn in_flight(&self) -> bool {
        self.waiting.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_policies::Platform;

    fn room(id: &str) -> RoomRef {
        RoomRef::new(Platform::Xmpp, id)
    }

    #[test]
    fn one_look_at_a_time_every_asker_answered_then_cached() {
        let t0 = Instant::now();
        let mut looks = Looks::new(STATUS_CACHE);
        assert_eq!(looks.ask(room("a"), t0), Ask::Start);
        assert!(looks.in_flight());
        assert_eq!(looks.ask(room("b"), t0), Ask::Joined);
        assert_eq!(looks.ask(room("a"), t0), Ask::Joined);
        let answered = looks.done("route: EdgePool1".into(), t0 + Duration::from_secs(1));
        assert_eq!(answered, [room("a"), room("b"), room("a")]);
        assert!(!looks.in_flight());
        assert_eq!(
            looks.ask(room("c"), t0 + Duration::from_secs(5)),
            Ask::Cached {
                text: "route: EdgePool1".into(),
                age: Duration::from_secs(4)
            }
        );
        // The cache is counted from the look's end; after it, a new look.
        assert_eq!(looks.ask(room("c"), t0 + Duration::from_secs(11)), Ask::Start);
        assert_eq!(looks.done("later".into(), t0 + Duration::from_secs(12)), [room("c")]);
        assert!(matches!(
            looks.ask(room("d"), t0 + Duration::from_secs(12)),
            Ask::Cached { text, .. } if text == "later"
        ));
    }

    #[test]
    fn no_cache_means_a_look_per_ask_but_still_one_at_a_time() {
        let t0 = Instant::now();
        let mut looks = Looks::new(Duration::ZERO);
        assert_eq!(looks.ask(room("a"), t0), Ask::Start);
        assert_eq!(looks.ask(room("a"), t0), Ask::Joined);
        assert_eq!(looks.done("x".into(), t0).len(), 2);
        assert_eq!(looks.ask(room("a"), t0), Ask::Start);
    }
}
