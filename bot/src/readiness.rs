//! Readiness: the conditions under which Baton can do its job (the store writable, every
//! enabled chat platform connected, every agent reachable), each with the reason it is not met.
//! The shell and its watchers update it; `/readyz` reads it. Pure state, no IO.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// The conditions, by name (`store`, `chat:xmpp`, `agent:edge2a.contoso.com`).
#[derive(Debug, Default)]
pub struct Readiness {
    conditions: Mutex<BTreeMap<String, Result<(), String>>>,
}

/// A snapshot for `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyReport {
    /// Every condition, by name, with the reason when it is not met.
    pub conditions: Vec<(String, Option<String>)>,
}

impl ReadyReport {
    pub fn ready(&self) -> bool {
        self.conditions.iter().all(|(_, why)| why.is_none())
    }

    /// The answer's body: a verdict line, then one line per condition.
    pub fn text(&self) -> String {
        let mut out = String::from(if self.ready() { "ready\n" } else { "not ready\n" });
        for (name, why) in &self.conditions {
            match why {
                None => out.push_str(&format!("{name}: ok\n")),
                Some(why) => out.push_str(&format!("{name}: {why}\n")),
            }
        }
        out
    }
}

impl Readiness {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Result<(), String>>> {
        // Plain values: usable whatever a panicking holder left.
        self.conditions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Declares a condition, not met yet, with the reason shown until it is.
    pub fn expect(&self, name: &str, until: &str) {
        self.lock().insert(name.to_string(), Err(until.to_string()));
    }

    /// Records whether a condition is met; `Err` carries the reason it is not.
    pub fn set(&self, name: &str, state: Result<(), String>) {
        self.lock().insert(name.to_string(), state);
    }

    pub fn report(&self) -> ReadyReport {
        ReadyReport {
            conditions: self
                .lock()
                .iter()
                .map(|(name, state)| (name.clone(), state.clone().err()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_is_met_and_each_failure_says_why() {
        let r = Readiness::default();
        assert!(r.report().ready(), "no condition declared: nothing to wait for");
        r.expect("store", "not checked yet");
        r.expect("chat:xmpp", "not connected yet");
        assert_eq!(
            r.report().text(),
            "not ready\nchat:xmpp: not connected yet\nstore: not checked yet\n"
        );
        r.set("store", Ok(()));
        r.set("chat:xmpp", Err("not in room incident@conference.contoso.com".into()));
        assert!(!r.report().ready());
        r.set("chat:xmpp", Ok(()));
        assert_eq!(r.report().text(), "ready\nchat:xmpp: ok\nstore: ok\n");
        r.set("store", Err("the store is read-only".into()));
        assert_eq!(
            r.report().text(),
            "not ready\nchat:xmpp: ok\nstore: the store is read-only\n"
        );
    }
}
