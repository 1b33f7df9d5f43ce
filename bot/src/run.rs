//! One run of a runbook: its number, its phase, its steps' progress. The transitions live in
//! `engine/`; this file holds the state they move and the questions asked of it.

use crate::chat::RoomRef;
use baton_actions::{ActionReport, Plan, PlanHash};
use baton_policies::{PersonId, Review};
use chrono::{DateTime, Utc};
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

/// Where a run stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for approvals of the plan.
    PendingApproval,
    /// Executing `step` (0-based).
    Running {
        step: usize,
    },
    /// `step` failed; waiting for `!retry` or `!abort`.
    Failed {
        step: usize,
    },
    /// `!retry` of `step` is waiting for approvals (when the policy asks for them).
    RetryPending {
        step: usize,
    },
    Succeeded,
    /// Stopped by a person, or by Baton itself (`by: None`) when its plan could no longer be
    /// resolved.
    Aborted {
        by: Option<PersonId>,
        reason: Option<String>,
    },
    Denied {
        by: PersonId,
        reason: Option<String>,
    },
    Expired,
}

impl Phase {
    /// Active runs hold the federation route: only one may exist at a time.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            Phase::PendingApproval | Phase::Running { .. } | Phase::Failed { .. } | Phase::RetryPending { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Phase::PendingApproval => "pending approval",
            Phase::Running { .. } => "running",
            Phase::Failed { .. } => "failed",
            Phase::RetryPending { .. } => "retry pending approval",
            Phase::Succeeded => "succeeded",
            Phase::Aborted { .. } => "aborted",
            Phase::Denied { .. } => "denied",
            Phase::Expired => "expired",
        }
    }
}

/// Progress of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    NotStarted,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepState {
    pub status: StepStatus,
    /// 1 for the first execution, +1 for every `!retry`.
    pub attempt: u32,
    /// One entry per action of the plan's step; `None` while not finished in this attempt.
    pub results: Vec<Option<ActionReport>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An `!abort` waiting for the step in flight to end: who asked, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbortRequest {
    pub by: PersonId,
    pub reason: Option<String>,
}

/// One run.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: RunId,
    pub requester: PersonId,
    pub room: RoomRef,
    pub reason: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub plan: Plan,
    pub plan_hash: PlanHash,
    /// The review under way (the request's, or a retry's).
    pub review: Review,
    /// Everyone who approved this run, in order (across plan changes and retries).
    pub approvers: Vec<PersonId>,
    /// The plan changed after the request: approvals must name the plan they are for.
    pub plan_changed: bool,
    /// The route as Lync reported it when the plan was made.
    pub live_route: Option<crate::event::LiveRoute>,
    pub phase: Phase,
    pub steps: Vec<StepState>,
    /// Set by `!abort` while a step is in flight: the run stops when that step ends.
    pub abort_requested: Option<AbortRequest>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The approvers the latest approval request (the request's, or a retry's) called by name.
    pub asked: Vec<PersonId>,
    /// When the latest approval request was made: a pending run has waited since then.
    pub asked_at: DateTime<Utc>,
}

impl Run {
    pub fn step_count(&self) -> usize {
        self.plan.steps.len()
    }

    /// The step in flight, if any.
    pub fn running_step(&self) -> Option<usize> {
        match self.phase {
            Phase::Running { step } => Some(step),
            _ => None,
        }
    }

    /// Whether every action of `step` has a result in the current attempt.
    pub fn step_complete(&self, step: usize) -> bool {
        self.steps
            .get(step)
            .is_some_and(|s| s.results.iter().all(Option::is_some))
    }

    pub fn step_ok(&self, step: usize) -> bool {
        self.steps
            .get(step)
            .is_some_and(|s| s.results.iter().all(|r| r.as_ref().is_some_and(|r| r.outcome.is_ok())))
    }
}
