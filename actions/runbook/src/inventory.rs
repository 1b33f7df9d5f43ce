//! The inventory: sites, Edge pools and their servers, the management host, the federation
//! names, and where DNS changes are made. Plans are built from it, never from chat text.

use crate::names::{Fqdn, PoolName, SiteName};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// One Edge pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: PoolName,
    pub site: SiteName,
    /// The pool's FQDN, used as the XMPP federation route (`EdgeServer:<fqdn>`).
    pub fqdn: Fqdn,
    /// The Access Edge external IPv4 address that federation partners reach on port 5269 (the
    /// runbook moves an A record to it).
    pub external_address: Ipv4Addr,
    /// Every Edge server of the pool; each runs `baton-agent`.
    pub servers: Vec<Fqdn>,
}

/// The external federation names of the domain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Federation {
    /// The SIP/XMPP domain, e.g. `contoso.com`.
    pub domain: Fqdn,
    /// The host the SRV record points to; its A record moves with the route (`xmpp.contoso.com`).
    pub host: Fqdn,
    /// The SRV owner name, `_xmpp-server._tcp.<domain>`.
    pub srv: Fqdn,
    pub port: u16,
    pub srv_priority: u16,
    pub srv_weight: u16,
    pub ttl: u32,
}

/// Where the external zone is changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum DnsProvider {
    /// RFC 2136 dynamic updates signed with TSIG, sent by the bot to this server (`host:port`).
    Rfc2136 { server: String, zone: Fqdn },
    /// Windows DNS: the DnsServer cmdlets through the agent on this host.
    Agent { host: Fqdn, zone: Fqdn },
}

/// Everything a plan is resolved from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub sites: Vec<SiteName>,
    pub pools: Vec<Pool>,
    /// The host where `Set-CsSite` runs (a Front End or an admin machine with the Lync module).
    pub management_host: Fqdn,
    pub federation: Federation,
    pub dns: DnsProvider,
}

impl Inventory {
    /// Finds a pool by name, ignoring case: operators type under stress.
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name.as_str().eq_ignore_ascii_case(name))
    }

    pub fn pool_names(&self) -> Vec<&str> {
        self.pools.iter().map(|p| p.name.as_str()).collect()
    }

    /// Every agent host the inventory names, each once, in a stable order.
    pub fn agent_hosts(&self) -> Vec<&Fqdn> {
        let mut hosts: Vec<&Fqdn> = self.pools.iter().flat_map(|p| p.servers.iter()).collect();
        hosts.push(&self.management_host);
        if let DnsProvider::Agent { host, .. } = &self.dns {
            hosts.push(host);
        }
        let mut seen = std::collections::BTreeSet::new();
        hosts.retain(|h| seen.insert(h.as_str()));
        hosts
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    //! The Contoso inventory used by this crate's tests (the same shape as `examples/contoso.toml`).
    use super::*;

    fn fqdn(s: &str) -> Fqdn {
        Fqdn::parse(s).expect("fixture names are valid")
    }

    pub fn contoso() -> Inventory {
        let pool = |name: &str, site: &str, addr: &str, servers: &[&str]| Pool {
            name: PoolName::parse(name).expect("fixture pool"),
            site: SiteName::parse(site).expect("fixture site"),
            fqdn: fqdn(&format!("{}.contoso.com", name.to_ascii_lowercase())),
            external_address: addr.parse().expect("fixture address"),
            servers: servers.iter().map(|s| fqdn(s)).collect(),
        };
        Inventory {
            sites: vec![
                SiteName::parse("Site1").expect("site"),
                SiteName::parse("Site2").expect("site"),
            ],
            pools: vec![
                pool(
                    "EdgePool1",
                    "Site1",
                    "203.0.113.10",
                    &["edge1a.contoso.com", "edge1b.contoso.com"],
                ),
                pool(
                    "EdgePool2",
                    "Site2",
                    "203.0.113.20",
                    &["edge2a.contoso.com", "edge2b.contoso.com"],
                ),
            ],
            management_host: fqdn("mgmt1.contoso.com"),
            federation: Federation {
                domain: fqdn("contoso.com"),
                host: fqdn("xmpp.contoso.com"),
                srv: fqdn("_xmpp-server._tcp.contoso.com"),
                port: 5269,
                srv_priority: 10,
                srv_weight: 10,
                ttl: 300,
            },
            dns: DnsProvider::Rfc2136 {
                server: "ns1.contoso.com:53".into(),
                zone: fqdn("contoso.com"),
            },
        }
    }
}
