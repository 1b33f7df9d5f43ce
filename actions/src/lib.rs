//! The bot's means to carry out a runbook: the executors behind one trait (`Executor`), the
//! dispatcher that calls `baton-agent` over mutual TLS, the DNS updater, the probes, the
//! `!status xmpp` look, the direct executor of the bot's own actions, the router between them,
//! and the in-process simulation.
//!
//! The runbook model itself (names, inventory, catalog, plan, wire protocol) is the pure
//! `baton-runbook` crate, re-exported here so that `baton_actions::plan` and the like keep
//! naming it; the agent, the TLS helpers, the PKI generator and the Lync simulator are crates of
//! their own under `actions/`.

pub mod direct;
pub mod dispatcher;
pub mod dns;
pub mod executor;
pub mod probe;
pub mod router;
pub mod simulated;
pub mod status;

pub use baton_runbook::{action, catalog, inventory, names, plan, protocol};

pub use baton_runbook::{
    ACTION_IDS, AGENT_ACTIONS, Action, ActionKind, DnsProvider, DnsVia, Federation, Fqdn, Inventory, NameError, Plan,
    PlanError, PlanHash, Pool, PoolName, SiteName, Step, StepKind, Target,
};
pub use executor::{ActionOutcome, ActionReport, ActionRequest, Executor, IdempotencyKey};
