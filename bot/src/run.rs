//! One run of a runbook: its number, its state, and the pure state machine that moves it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A run's number: 1, 2, 3… per store, short enough to type under stress.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub u64);

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}
