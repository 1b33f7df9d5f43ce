//! Teams' documented rate limits per bot per thread (7 operations in 1 s, 8 in 2 s, 60 in
//! 30 s, 1800 in an hour), kept on Baton's side so that it waits before Teams has to refuse:
//! a sliding log of operations per channel. Pure: the time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits: at most `n` operations within `window`.
pub const LIMITS: [(Duration, usize); 4] = [
    (Duration::from_secs(1), 7),
    (Duration::from_secs(2), 8),
    (Duration::from_secs(30), 60),
    (Duration::from_secs(3600), 1800),
];

/// The log of recent operations per key (a channel).
#[derive(Debug, Default)]
pub struct Limiter {
    log: HashMap<String, VecDeque<Instant>>,
}

impl Limiter {
    /// Takes one operation on `key` at `now` if every limit allows it; otherwise says how long
    /// to wait before one would be allowed (and records nothing).
    pub fn admit(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let longest = LIMITS[LIMITS.len() - 1].0;
        let log = self.log.entry(key.to_string()).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) >= longest) {
            log.pop_front();
        }
        let mut wait = Duration::ZERO;
        for (window, n) in LIMITS {
            let inside: Vec<&Instant> = log
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .collect();
            if inside.len() >= n {
                // The oldest operation that must leave the window first.
                let oldest = inside[n - 1];
                wait = wait.max(window - now.duration_since(*oldest));
            }
        }
        if wait.is_zero() {
            log.push_back(now);
            Ok(())
        } else {
            Err(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_per_second_then_eight_per_two_seconds() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..7 {
            assert_eq!(l.admit("c", t0 + Duration::from_millis(i * 10)), Ok(()), "{i}");
        }
        let wait = l
            .admit("c", t0 + Duration::from_millis(100))
            .expect_err("the eighth within a second");
        assert_eq!(wait, Duration::from_millis(900));
        assert_eq!(
            l.admit("other", t0 + Duration::from_millis(100)),
            Ok(()),
            "channels are apart"
        );
        assert_eq!(l.admit("c", t0 + Duration::from_millis(1000)), Ok(()), "after a second");
        let wait = l
            .admit("c", t0 + Duration::from_millis(1100))
            .expect_err("nine in two seconds");
        assert_eq!(wait, Duration::from_millis(900));
        assert_eq!(l.admit("c", t0 + Duration::from_millis(2000)), Ok(()));
    }

    #[test]
    fn sixty_per_thirty_seconds() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let mut t = t0;
        let mut admitted = 0;
        while t < t0 + Duration::from_secs(30) {
            if l.admit("c", t).is_ok() {
                admitted += 1;
            }
            t += Duration::from_millis(100);
        }
        assert_eq!(admitted, 60);
    }
}
