//! What the engine hands to an executor and what comes back: one action with its idempotency
//! key ([`ActionRequest`]), and how it ended ([`ActionReport`]). The executors themselves (the
//! async `Executor` trait and its implementations) live in `baton-actions` and `baton-agent`.
//!
//! The contract every executor keeps: a key that was executed before returns the recorded
//! outcome and executes nothing again, also after a restart of either side.

use crate::catalog::Action;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Identifies one execution of one action: store, run, step, action, host and attempt. The same
/// key always means the same execution; `!retry` makes a new attempt and so a new key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// `store` is the store's random id, so two stores that both number runs from 1 never share
    /// keys at an agent.
    pub fn new(store: &str, run: u64, step: usize, action: usize, place: &str, attempt: u32) -> IdempotencyKey {
        IdempotencyKey(format!(
            "{store}/r{run}/s{}/a{}-{place}/t{attempt}",
            step + 1,
            action + 1
        ))
    }

    /// The key of one execution of a requested run: the run's segment carries the request's
    /// time (`r5.19acb2f3e10`, milliseconds in hex), because a store restored from a backup
    /// numbers its next run like a run it forgot, and that run's keys must not be answered
    /// with the forgotten run's recorded results. Resuming reads the time back from the
    /// journal, so the same execution always gets the same key.
    #[allow(clippy::too_many_arguments)]
    pub fn for_request(
        store: &str,
        run: u64,
        requested_ms: i64,
        step: usize,
        action: usize,
        place: &str,
        attempt: u32,
    ) -> IdempotencyKey {
        IdempotencyKey(format!(
            "{store}/r{run}.{requested_ms:x}/s{}/a{}-{place}/t{attempt}",
            step + 1,
            action + 1
        ))
    }

    /// Accepts a key received on the wire: 1 to 200 characters of `[A-Za-z0-9._/-]`.
    pub fn parse(s: &str) -> Option<IdempotencyKey> {
        let ok = !s.is_empty()
            && s.len() <= 200
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
        ok.then(|| IdempotencyKey(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One action to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionRequest {
    pub key: IdempotencyKey,
    pub action: Action,
    /// The action is stopped and reported failed after this long.
    pub timeout: Duration,
}

/// How an action ended. `detail` and `error` are short, human sentences for the status line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ActionOutcome {
    Ok { detail: String },
    Failed { error: String },
}

impl ActionOutcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, ActionOutcome::Ok { .. })
    }
    pub fn text(&self) -> &str {
        match self {
            ActionOutcome::Ok { detail } => detail,
            ActionOutcome::Failed { error } => error,
        }
    }
}

/// The outcome of one request, with how long it took and whether it was a replay of a recorded
/// execution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionReport {
    pub outcome: ActionOutcome,
    pub elapsed_ms: u64,
    /// True when the executor returned a recorded outcome for a key it had executed before.
    #[serde(default)]
    pub replayed: bool,
}
