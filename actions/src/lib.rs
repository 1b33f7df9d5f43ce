//! Baton's runbook model and the means to carry it out: validated names, the inventory, the
//! closed action catalog, plan resolution (pure), and the executors behind one trait.
//!
//! Invariant: nothing here takes free text from chat. A plan is resolved from the inventory and
//! a pool name that must match it; every action parameter is a validated type.

pub mod agent;
pub mod catalog;
pub mod direct;
pub mod dispatcher;
pub mod dns;
pub mod executor;
pub mod inventory;
pub mod lync_sim;
pub mod names;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod protocol;
pub mod router;
pub mod simulated;
pub mod status;
pub mod tls;

pub use catalog::{Action, DnsVia, Target};
pub use executor::{ActionOutcome, ActionReport, ActionRequest, Executor, IdempotencyKey};
pub use inventory::{DnsProvider, Federation, Inventory, Pool};
pub use names::{Fqdn, NameError, PoolName, SiteName};
pub use plan::{Plan, PlanError, PlanHash, Step, StepKind};

/// Every action id of the catalog.
pub const ACTION_IDS: &[&str] = &[
    "health",
    "services.stop",
    "services.start",
    "services.status",
    "route.get",
    "route.set",
    "dns.set_a",
    "dns.ensure_srv",
    "port.check",
    "verify",
];
