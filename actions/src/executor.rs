//! The executor seam: the engine hands out one action at a time with an idempotency key, and an
//! executor carries it out (the simulated one for the demo, agents and DNS for real runs). The
//! request and report types are the runbook crate's, re-exported here.
//!
//! The contract every executor keeps: a key that was executed before returns the recorded
//! outcome and executes nothing again, also after a restart of either side.

use async_trait::async_trait;

pub use baton_runbook::action::{ActionOutcome, ActionReport, ActionRequest, IdempotencyKey};

/// Carries out actions. Implementations never panic on bad input and never return before the
/// action has ended (or its timeout has passed): a failure is an outcome, not an error.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    async fn execute(&self, request: ActionRequest) -> ActionReport;
}
