//! Baton's runbook model, pure: validated names, the inventory, the closed action catalog, plan
//! resolution, the idempotency key and the action request and report types, and the versioned
//! bot<->agent wire types. No runtime, network, TLS, database or clock: the crate depends on none
//! of them, so the plan and the catalog cannot do IO.
//!
//! Invariant: nothing here takes free text from chat. A plan is resolved from the inventory and
//! a pool name that must match it; every action parameter is a validated type.

pub mod action;
pub mod catalog;
pub mod inventory;
pub mod names;
pub mod plan;
pub mod protocol;

pub use action::{ActionOutcome, ActionReport, ActionRequest, IdempotencyKey};
pub use catalog::{ACTION_IDS, AGENT_ACTIONS, Action, ActionKind, DnsVia, Target};
pub use inventory::{DnsProvider, Federation, Inventory, Pool};
pub use names::{Fqdn, NameError, PoolName, SiteName};
pub use plan::{Plan, PlanError, PlanHash, Step, StepKind};
