//! The journal's events: the facts Baton records before acting on them. A run's state is the
//! fold of its events (`Engine::apply`), so replaying the journal after a crash rebuilds it.

use crate::chat::RoomRef;
use crate::run::RunId;
use baton_actions::{ActionReport, Plan};
use baton_policies::PersonId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One fact, as journaled. The serialized form is the audit record (`baton audit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// A failover was requested; the plan and its hash are bound to the request.
    Requested {
        run: RunId,
        requester: PersonId,
        /// The identity the request came from (`xmpp:alice@contoso.com`).
        via: String,
        room: RoomRef,
        reason: Option<String>,
        plan: Plan,
        plan_hash: String,
        /// The route as Lync reported it when the plan was made, when Baton could read it
        /// (absent from older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        live_route: Option<LiveRoute>,
        /// The approvers the request called by name (those in the room; absent from older
        /// journals).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        asked: Vec<PersonId>,
    },
    /// A person's approval of the plan with this hash passed the policy.
    Approved {
        run: RunId,
        person: PersonId,
        via: String,
        plan_hash: String,
    },
    /// The policy or the run's state refused a command (kept for the audit trail).
    Refused {
        run: Option<RunId>,
        who: String,
        command: String,
        why: String,
    },
    Denied {
        run: RunId,
        person: PersonId,
        reason: Option<String>,
    },
    /// The request was not approved in time.
    Expired {
        run: RunId,
    },
    /// The inventory changed and the plan with it: earlier approvals lapse.
    PlanChanged {
        run: RunId,
        plan: Plan,
        plan_hash: String,
        lapsed: Vec<PersonId>,
    },
    /// Enough people approved: the run starts.
    Started {
        run: RunId,
        approvers: Vec<PersonId>,
    },
    /// A step starts (or starts again, on retry, with a new attempt).
    StepStarted {
        run: RunId,
        step: usize,
        attempt: u32,
    },
    /// One action of a step ended.
    ActionFinished {
        run: RunId,
        step: usize,
        attempt: u32,
        action: usize,
        report: ActionReport,
    },
    /// A step ended: all its actions have results.
    StepFinished {
        run: RunId,
        step: usize,
        attempt: u32,
        ok: bool,
    },
    /// `!abort` while a step is in flight: the run stops when it ends.
    AbortRequested {
        run: RunId,
        person: PersonId,
        /// Absent from journals written before `!abort` took a reason.
        #[serde(default)]
        reason: Option<String>,
    },
    Aborted {
        run: RunId,
        person: Option<PersonId>,
        reason: Option<String>,
    },
    /// `!retry` when the policy wants fresh approvals first.
    RetryRequested {
        run: RunId,
        person: PersonId,
        step: usize,
        /// The approvers the request called by name (absent from older journals).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        asked: Vec<PersonId>,
    },
    /// The configuration was reloaded (SIGHUP): what changed. Pending plans are resolved again.
    Reloaded {
        changed: Vec<String>,
    },
    /// A reload was refused: a run in progress depends on the running configuration.
    ReloadRefused {
        why: String,
    },
    /// A reload took a person's right to approve: their approval of a pending run lapses.
    ApprovalWithdrawn {
        run: RunId,
        person: PersonId,
        why: String,
    },
    /// A retry waited for approvals in vain; the run is failed again.
    RetryExpired {
        run: RunId,
    },
    Succeeded {
        run: RunId,
    },
    Failed {
        run: RunId,
        step: usize,
    },
}

impl Event {
    pub fn run(&self) -> Option<RunId> {
        match self {
            Event::Refused { run, .. } => *run,
            Event::Reloaded { .. } | Event::ReloadRefused { .. } => None,
            Event::ApprovalWithdrawn { run, .. } => Some(*run),
            Event::Requested { run, .. }
            | Event::Approved { run, .. }
            | Event::Denied { run, .. }
            | Event::Expired { run }
            | Event::PlanChanged { run, .. }
            | Event::Started { run, .. }
            | Event::StepStarted { run, .. }
            | Event::ActionFinished { run, .. }
            | Event::StepFinished { run, .. }
            | Event::AbortRequested { run, .. }
            | Event::Aborted { run, .. }
            | Event::RetryRequested { run, .. }
            | Event::RetryExpired { run }
            | Event::Succeeded { run }
            | Event::Failed { run, .. } => Some(*run),
        }
    }

    /// The event's type name, as stored in the journal's `kind` column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Requested { .. } => "requested",
            Event::Approved { .. } => "approved",
            Event::Refused { .. } => "refused",
            Event::Denied { .. } => "denied",
            Event::Expired { .. } => "expired",
            Event::PlanChanged { .. } => "plan_changed",
            Event::Started { .. } => "started",
            Event::StepStarted { .. } => "step_started",
            Event::ActionFinished { .. } => "action_finished",
            Event::StepFinished { .. } => "step_finished",
            Event::AbortRequested { .. } => "abort_requested",
            Event::Aborted { .. } => "aborted",
            Event::RetryRequested { .. } => "retry_requested",
            Event::RetryExpired { .. } => "retry_expired",
            Event::Reloaded { .. } => "reloaded",
            Event::ReloadRefused { .. } => "reload_refused",
            Event::ApprovalWithdrawn { .. } => "approval_withdrawn",
            Event::Succeeded { .. } => "succeeded",
            Event::Failed { .. } => "failed",
        }
    }
}

/// The XMPP federation route as Lync reports it (`Get-CsSite` through the management host's
/// agent), read just before a plan is made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveRoute {
    /// The pool the route names, when it names one of the inventory.
    pub pool: Option<baton_actions::PoolName>,
    /// What was read, per site, or why nothing could be (`Site1: EdgeServer:edgepool1…`).
    pub seen: String,
}

/// An event with the time it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub at: DateTime<Utc>,
    pub event: Event,
}
