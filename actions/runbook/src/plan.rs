//! Plan resolution: inventory + target pool + current route -> the exact steps of the runbook,
//! with a stable SHA-256 hash that approvals are bound to.
//!
//! Runbooks are data: [`XMPP_FAILOVER`] lists the step kinds in order, and [`resolve`] fills in
//! each kind's actions from the inventory. Nothing here comes from chat text but the pool name,
//! which must match the inventory.

use crate::catalog::{Action, DnsVia};
use crate::inventory::{DnsProvider, Inventory, Pool};
use crate::names::{Fqdn, PoolName, SiteName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;

/// The kinds of step a runbook is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Precheck,
    ServicesStop,
    RouteSet,
    DnsA,
    DnsSrv,
    PortCheck,
    ServicesStart,
    Verify,
}

impl StepKind {
    /// The short title shown in status lines (`[2/8] services`).
    pub fn title(self) -> &'static str {
        match self {
            StepKind::Precheck => "precheck",
            StepKind::ServicesStop | StepKind::ServicesStart => "services",
            StepKind::RouteSet => "route",
            StepKind::DnsA => "dns A",
            StepKind::DnsSrv => "dns SRV",
            StepKind::PortCheck => "port",
            StepKind::Verify => "verify",
        }
    }
}

/// The runbook "failing over the Edge pool used for XMPP federation", as data.
pub const XMPP_FAILOVER: &[StepKind] = &[
    StepKind::Precheck,
    StepKind::ServicesStop,
    StepKind::RouteSet,
    StepKind::DnsA,
    StepKind::DnsSrv,
    StepKind::PortCheck,
    StepKind::ServicesStart,
    StepKind::Verify,
];

/// One step: its kind and the actions it fans out to (in parallel).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub kind: StepKind,
    pub actions: Vec<Action>,
}

impl Step {
    /// One line saying what the step does, with its exact targets.
    pub fn summary(&self) -> String {
        let hosts = || {
            self.actions
                .iter()
                .map(|a| a.where_long())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let first = self.actions.first();
        match (self.kind, first) {
            (StepKind::Precheck, _) => {
                let shorts: Vec<String> = self.actions.iter().map(|a| a.where_short()).collect();
                format!("agents on {} answer health", shorts.join(", "))
            }
            (StepKind::ServicesStop, _) => format!("Stop-CsWindowsService on {}", hosts()),
            (StepKind::ServicesStart, _) => format!("Start-CsWindowsService on {}", hosts()),
            (StepKind::RouteSet, Some(a)) => format!("{} (on {})", a.command_line(), a.where_long()),
            (StepKind::DnsA, Some(Action::DnsSetA { dns, name, address, .. })) => {
                format!("{name} -> {address} ({})", dns_how(dns))
            }
            (
                StepKind::DnsSrv,
                Some(Action::DnsEnsureSrv {
                    dns,
                    name,
                    target,
                    port,
                    ..
                }),
            ) => {
                format!("{name} -> {target}:{port}, exactly once ({})", dns_how(dns))
            }
            (StepKind::PortCheck, Some(Action::PortCheck { address, port })) => {
                format!(
                    "{} reachable through the firewall",
                    std::net::SocketAddr::new(*address, *port)
                )
            }
            (StepKind::Verify, Some(Action::Verify { srv, port, .. })) => {
                format!("{srv} resolves to the new pool; an XMPP s2s stream opens on {port}")
            }
            _ => self
                .actions
                .iter()
                .map(|a| a.command_line())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }
}

fn dns_how(dns: &DnsVia) -> String {
    match dns {
        DnsVia::Rfc2136 { server, .. } => format!("RFC 2136 update to {server}"),
        DnsVia::Agent { host, .. } => format!("DnsServer cmdlets on {host}"),
    }
}

/// A resolved plan: what will run, where, in which order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The runbook's name (`xmpp`: the federation route being moved).
    pub route: String,
    /// The pool that holds the route now, if known.
    pub from_pool: Option<PoolName>,
    pub to_pool: PoolName,
    pub to_site: SiteName,
    pub steps: Vec<Step>,
    /// Consequences the approver must know before approving.
    pub warnings: Vec<String>,
}

/// The SHA-256 of a plan's canonical form, in hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanHash(String);

impl PlanHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The first 12 hex digits, as shown in chat.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl fmt::Display for PlanHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Plan {
    /// The plan's hash: SHA-256 over a version tag and the plan's JSON form (fields in
    /// declaration order, lists in plan order), so it is stable across runs and machines.
    pub fn hash(&self) -> PlanHash {
        let json = serde_json::to_vec(self).expect("a plan is plain data and always serializes");
        let mut h = Sha256::new();
        h.update(b"baton-plan-v1\n");
        h.update(&json);
        PlanHash(hex::encode(h.finalize()))
    }

    pub fn step(&self, index: usize) -> Option<&Step> {
        self.steps.get(index)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown pool '{name}'; known pools: {}", known.join(", "))]
    UnknownPool { name: String, known: Vec<String> },
    #[error("{pool} already holds the XMPP federation route; nothing to fail over")]
    AlreadyCurrent { pool: PoolName },
    #[error("pool {pool} has no servers in the inventory")]
    NoServers { pool: PoolName },
}

/// Resolves the XMPP federation failover to `target`, given the pool that holds the route now.
pub fn resolve(inv: &Inventory, target: &str, current: Option<&PoolName>) -> Result<Plan, PlanError> {
    let pool = inv.pool(target).ok_or_else(|| PlanError::UnknownPool {
        name: crate::names::shown(target),
        known: inv.pool_names().into_iter().map(str::to_string).collect(),
    })?;
    if current.is_some_and(|c| c.as_str().eq_ignore_ascii_case(pool.name.as_str())) {
        return Err(PlanError::AlreadyCurrent {
            pool: pool.name.clone(),
        });
    }
    if pool.servers.is_empty() {
        return Err(PlanError::NoServers {
            pool: pool.name.clone(),
        });
    }
    let steps = XMPP_FAILOVER
        .iter()
        .map(|kind| Step {
            kind: *kind,
            actions: actions_for(*kind, inv, pool),
        })
        .collect();
    let warnings = vec![format!(
        "stopping the services of {} interrupts its remote access and federation until step 7 starts them again",
        pool.name
    )];
    Ok(Plan {
        route: "xmpp".to_string(),
        from_pool: current.cloned(),
        to_pool: pool.name.clone(),
        to_site: pool.site.clone(),
        steps,
        warnings,
    })
}

fn dns_via(inv: &Inventory) -> DnsVia {
    inv.dns.clone()
}

fn actions_for(kind: StepKind, inv: &Inventory, pool: &Pool) -> Vec<Action> {
    let fed = &inv.federation;
    let per_server = |f: fn(Fqdn) -> Action| pool.servers.iter().cloned().map(f).collect();
    match kind {
        StepKind::Precheck => {
            let mut hosts: Vec<Fqdn> = pool.servers.clone();
            hosts.push(inv.management_host.clone());
            if let DnsProvider::Agent { host, .. } = &inv.dns {
                hosts.push(host.clone());
            }
            let mut seen = std::collections::BTreeSet::new();
            hosts.retain(|h| seen.insert(h.clone()));
            hosts.into_iter().map(|host| Action::Health { host }).collect()
        }
        StepKind::ServicesStop => per_server(|host| Action::ServicesStop { host }),
        StepKind::ServicesStart => per_server(|host| Action::ServicesStart { host }),
        StepKind::RouteSet => vec![Action::RouteSet {
            host: inv.management_host.clone(),
            site: pool.site.clone(),
            edge_pool: pool.fqdn.clone(),
        }],
        StepKind::DnsA => vec![Action::DnsSetA {
            dns: dns_via(inv),
            name: fed.host.clone(),
            address: pool.external_address,
            ttl: fed.ttl,
        }],
        StepKind::DnsSrv => vec![Action::DnsEnsureSrv {
            dns: dns_via(inv),
            name: fed.srv.clone(),
            target: fed.host.clone(),
            port: fed.port,
            priority: fed.srv_priority,
            weight: fed.srv_weight,
            ttl: fed.ttl,
        }],
        StepKind::PortCheck => vec![Action::PortCheck {
            address: IpAddr::V4(pool.external_address),
            port: fed.port,
        }],
        StepKind::Verify => vec![Action::Verify {
            srv: fed.srv.clone(),
            host: fed.host.clone(),
            address: pool.external_address,
            port: fed.port,
            domain: fed.domain.clone(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::fixture::contoso;

    fn pool(s: &str) -> PoolName {
        PoolName::parse(s).expect("valid")
    }

    fn describe(plan: &Plan) -> String {
        let mut out = format!(
            "{:?} -> {} ({})\n",
            plan.from_pool.as_ref().map(|p| p.as_str()),
            plan.to_pool,
            plan.to_site
        );
        for (i, step) in plan.steps.iter().enumerate() {
            out.push_str(&format!("{}. {}: {}\n", i + 1, step.kind.title(), step.summary()));
            for a in &step.actions {
                out.push_str(&format!("   {} @ {}: {}\n", a.id(), a.where_long(), a.command_line()));
            }
        }
        out
    }

    #[test]
    fn resolves_the_runbook_for_edgepool2() {
        let plan = resolve(&contoso(), "edgepool2", Some(&pool("EdgePool1"))).expect("resolves");
        expect_test::expect![[r#"
            Some("EdgePool1") -> EdgePool2 (Site2)
            1. precheck: agents on edge2a, edge2b, mgmt1 answer health
               health @ edge2a.contoso.com: GET /v1/health
               health @ edge2b.contoso.com: GET /v1/health
               health @ mgmt1.contoso.com: GET /v1/health
            2. services: Stop-CsWindowsService on edge2a.contoso.com, edge2b.contoso.com
               services.stop @ edge2a.contoso.com: Stop-CsWindowsService
               services.stop @ edge2b.contoso.com: Stop-CsWindowsService
            3. route: Set-CsSite -Identity Site2 -XmppFederationRoute EdgeServer:edgepool2.contoso.com (on mgmt1.contoso.com)
               route.set @ mgmt1.contoso.com: Set-CsSite -Identity Site2 -XmppFederationRoute EdgeServer:edgepool2.contoso.com
            4. dns A: xmpp.contoso.com -> 203.0.113.20 (RFC 2136 update to ns1.contoso.com:53)
               dns.set_a @ DNS ns1.contoso.com:53 (RFC 2136 + TSIG): update zone contoso.com: delete xmpp.contoso.com A; add xmpp.contoso.com 300 A 203.0.113.20
            5. dns SRV: _xmpp-server._tcp.contoso.com -> xmpp.contoso.com:5269, exactly once (RFC 2136 update to ns1.contoso.com:53)
               dns.ensure_srv @ DNS ns1.contoso.com:53 (RFC 2136 + TSIG): update zone contoso.com: ensure exactly one _xmpp-server._tcp.contoso.com 300 SRV 10 10 5269 xmpp.contoso.com
            6. port: 203.0.113.20:5269 reachable through the firewall
               port.check @ bot: TCP connect 203.0.113.20:5269
            7. services: Start-CsWindowsService on edge2a.contoso.com, edge2b.contoso.com
               services.start @ edge2a.contoso.com: Start-CsWindowsService
               services.start @ edge2b.contoso.com: Start-CsWindowsService
            8. verify: _xmpp-server._tcp.contoso.com resolves to the new pool; an XMPP s2s stream opens on 5269
               verify @ bot: resolve _xmpp-server._tcp.contoso.com SRV -> xmpp.contoso.com:5269 and xmpp.contoso.com A -> 203.0.113.20; open an XMPP s2s stream to 203.0.113.20:5269
        "#]]
        .assert_eq(&describe(&plan));
    }

    #[test]
    fn windows_dns_goes_through_an_agent_and_is_prechecked() {
        let mut inv = contoso();
        inv.dns = DnsProvider::Agent {
            host: Fqdn::parse("dns1.contoso.com").expect("valid"),
            zone: Fqdn::parse("contoso.com").expect("valid"),
        };
        let plan = resolve(&inv, "EdgePool1", Some(&pool("EdgePool2"))).expect("resolves");
        assert_eq!(
            plan.steps[0].summary(),
            "agents on edge1a, edge1b, mgmt1, dns1 answer health"
        );
        assert_eq!(plan.steps[3].actions[0].where_short(), "dns1");
    }

    #[test]
    fn refusals() {
        let inv = contoso();
        let err = |target: &str, current: Option<&str>| {
            resolve(&inv, target, current.map(pool).as_ref())
                .expect_err("refused")
                .to_string()
        };
        assert_eq!(
            err("EdgePool9", None),
            "unknown pool 'EdgePool9'; known pools: EdgePool1, EdgePool2"
        );
        assert_eq!(
            err("EDGEPOOL1", Some("EdgePool1")),
            "EdgePool1 already holds the XMPP federation route; nothing to fail over"
        );
        let mut empty = contoso();
        empty.pools[1].servers.clear();
        assert_eq!(
            resolve(&empty, "EdgePool2", None).expect_err("refused").to_string(),
            "pool EdgePool2 has no servers in the inventory"
        );
    }

    #[test]
    fn hash_is_stable_and_changes_with_the_plan() {
        let inv = contoso();
        let a = resolve(&inv, "EdgePool2", Some(&pool("EdgePool1"))).expect("resolves");
        let b = resolve(&inv, "EdgePool2", Some(&pool("EdgePool1"))).expect("resolves");
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().as_str().len(), 64);
        assert_eq!(a.hash().short().len(), 12);
        // Pinned: a change of the canonical form changes every hash, and pending runs' approvals
        // lapse across such an upgrade. Change it knowingly.
        assert_eq!(a.hash().short(), "85c5fea136fc");
        // Another current route, another address, another server: another hash.
        let c = resolve(&inv, "EdgePool2", None).expect("resolves");
        assert_ne!(a.hash(), c.hash());
        let mut moved = contoso();
        moved.pools[1].external_address = "203.0.113.21".parse().expect("valid");
        assert_ne!(
            a.hash(),
            resolve(&moved, "EdgePool2", Some(&pool("EdgePool1")))
                .expect("resolves")
                .hash()
        );
        let mut grown = contoso();
        grown.pools[1]
            .servers
            .push(Fqdn::parse("edge2c.contoso.com").expect("valid"));
        assert_ne!(
            a.hash(),
            resolve(&grown, "EdgePool2", Some(&pool("EdgePool1")))
                .expect("resolves")
                .hash()
        );
    }
}
