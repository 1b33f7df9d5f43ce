//! The chat messages already handled, in memory: keyed by room, sender and the platform's
//! message id (ids are only unique per sender), kept for a bounded age and count. Loaded from the
//! store at start; the loop checks it without touching the disk.

use crate::store::Handled;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long a handled id is remembered, and how many at most.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
pub const MAX_COUNT: usize = 100_000;

#[derive(Default)]
pub struct Seen {
    set: HashSet<Handled>,
    order: VecDeque<(Instant, Handled)>,
}

impl Seen {
    /// Remembers `key` at `now`; false when it was already there.
    pub fn insert(&mut self, key: Handled, now: Instant) -> bool {
        self.forget_old(now);
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back((now, key));
        while self.order.len() > MAX_COUNT {
            if let Some((_, k)) = self.order.pop_front() {
                self.set.remove(&k);
            }
        }
        true
    }

    pub fn contains(&self, key: &Handled) -> bool {
        self.set.contains(key)
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < MAX_AGE {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                self.set.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::RoomRef;
    use baton_policies::Platform;

    fn key(sender: &str, id: &str) -> Handled {
        Handled {
            room: RoomRef::new(Platform::Xmpp, "incident@conference.contoso.test"),
            sender: sender.into(),
            message_id: id.into(),
        }
    }

    #[test]
    fn the_same_id_from_two_senders_is_two_messages() {
        let mut seen = Seen::default();
        let now = Instant::now();
        assert!(seen.insert(key("xmpp:alice@contoso.test", "m1"), now));
        assert!(!seen.insert(key("xmpp:alice@contoso.test", "m1"), now));
        assert!(seen.insert(key("xmpp:carol@contoso.test", "m1"), now));
        assert!(seen.contains(&key("xmpp:carol@contoso.test", "m1")));
    }

    #[test]
    fn old_ids_are_forgotten() {
        let mut seen = Seen::default();
        let start = Instant::now();
        assert!(seen.insert(key("a", "m1"), start));
        let later = start + MAX_AGE + Duration::from_secs(1);
        assert!(seen.insert(key("a", "m2"), later));
        assert!(!seen.contains(&key("a", "m1")));
        assert!(
            seen.insert(key("a", "m1"), later),
            "an id past the age bound counts as new"
        );
    }
}
