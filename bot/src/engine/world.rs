//! What Baton's own actions changed, as far as its journal knows: the pool it last set the
//! federation route to, the pool whose address it last put in the federation A record, and the
//! Edge servers whose services it stopped and has not started again. Folded from journaled
//! action outcomes, so a run that fails or is aborted half-way leaves an honest picture: a
//! failback after it is planned from where the route really is.

use crate::run::RunId;
use baton_actions::{Action, Fqdn, Inventory, PoolName};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// The pool Baton last moved the route to (or the configured initial one).
    pub route: Option<PoolName>,
    /// The pool whose address Baton last set in the federation A record.
    pub dns_a: Option<PoolName>,
    /// Edge servers whose services Baton stopped, and the run that stopped them.
    pub stopped: BTreeMap<Fqdn, RunId>,
}

impl World {
    pub fn new(initial_route: Option<PoolName>) -> World {
        World {
            route: initial_route,
            ..World::default()
        }
    }

    /// Takes the effect of an action that succeeded.
    pub fn apply(&mut self, inventory: &Inventory, run: RunId, action: &Action) {
        match action {
            Action::ServicesStop { host } => {
                self.stopped.insert(host.clone(), run);
            }
            Action::ServicesStart { host } => {
                self.stopped.remove(host);
            }
            Action::RouteSet { edge_pool, .. } => {
                if let Some(p) = inventory.pools.iter().find(|p| &p.fqdn == edge_pool) {
                    self.route = Some(p.name.clone());
                }
            }
            Action::DnsSetA { address, .. } => {
                self.dns_a = inventory
                    .pools
                    .iter()
                    .find(|p| p.external_address == *address)
                    .map(|p| p.name.clone());
            }
            _ => {}
        }
    }

    /// The hosts a run left stopped.
    pub fn stopped_by(&self, run: RunId) -> Vec<&Fqdn> {
        self.stopped
            .iter()
            .filter(|(_, r)| **r == run)
            .map(|(h, _)| h)
            .collect()
    }
}
