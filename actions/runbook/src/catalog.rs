//! The closed catalog of actions a plan may contain. An action is one unit of work on one
//! target (an agent host, the DNS server, or the bot itself); a step fans out over its actions.
//! [`ActionKind`] is the one list of action ids: [`ACTION_IDS`] and [`AGENT_ACTIONS`] are derived
//! from it, and [`Action::kind`] maps every action to it.

use crate::names::{Fqdn, SiteName};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Where a DNS change is made: the inventory's provider, carried by each DNS action.
pub type DnsVia = crate::inventory::DnsProvider;

/// Declares [`ActionKind`] from one table: each kind's variant, its id, and whether an agent's
/// executor carries it out. The id lists below are derived from it, so they cannot drift apart.
macro_rules! action_kinds {
    ($($kind:ident = $id:literal, agent: $agent:literal;)*) => {
        /// The kind of an [`Action`], without its parameters.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ActionKind {
            $($kind,)*
        }

        impl ActionKind {
            /// Every kind, in catalog order.
            pub const ALL: &[ActionKind] = &[$(ActionKind::$kind),*];

            /// The id the wire protocol, the configuration files and the chat use.
            pub const fn id(self) -> &'static str {
                match self {
                    $(ActionKind::$kind => $id,)*
                }
            }

            /// True when an agent's executor carries it out: the services and route actions, and
            /// the DNS actions for zones on Windows DNS. `health` is answered by the agent itself;
            /// the port check and verify run in the bot.
            pub const fn agent_executes(self) -> bool {
                match self {
                    $(ActionKind::$kind => $agent,)*
                }
            }
        }
    };
}

action_kinds! {
    Health = "health", agent: false;
    ServicesStop = "services.stop", agent: true;
    ServicesStart = "services.start", agent: true;
    ServicesStatus = "services.status", agent: true;
    RouteGet = "route.get", agent: true;
    RouteSet = "route.set", agent: true;
    DnsSetA = "dns.set_a", agent: true;
    DnsEnsureSrv = "dns.ensure_srv", agent: true;
    PortCheck = "port.check", agent: false;
    Verify = "verify", agent: false;
}

const KINDS: usize = ActionKind::ALL.len();

/// Every action id of the catalog, in catalog order.
pub const ACTION_IDS: &[&str] = &{
    let mut ids = [""; KINDS];
    let mut i = 0;
    while i < KINDS {
        ids[i] = ActionKind::ALL[i].id();
        i += 1;
    }
    ids
};

const AGENT_KINDS: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < KINDS {
        if ActionKind::ALL[i].agent_executes() {
            n += 1;
        }
        i += 1;
    }
    n
};

/// The ids of the actions an agent can carry out, in catalog order; `health` is answered by the
/// agent itself.
pub const AGENT_ACTIONS: &[&str] = &{
    let mut ids = [""; AGENT_KINDS];
    let (mut i, mut n) = (0, 0);
    while i < KINDS {
        if ActionKind::ALL[i].agent_executes() {
            ids[n] = ActionKind::ALL[i].id();
            n += 1;
        }
        i += 1;
    }
    ids
};

/// One action of the catalog, with its exact parameters. The serde tags are the kinds' ids (a
/// test checks each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", deny_unknown_fields)]
pub enum Action {
    /// The agent answers `GET /v1/health`.
    #[serde(rename = "health")]
    Health { host: Fqdn },
    /// `Stop-CsWindowsService` on an Edge server.
    #[serde(rename = "services.stop")]
    ServicesStop { host: Fqdn },
    /// `Start-CsWindowsService` on an Edge server.
    #[serde(rename = "services.start")]
    ServicesStart { host: Fqdn },
    /// `Get-CsWindowsService` on an Edge server: reads the services' state, changes nothing.
    #[serde(rename = "services.status")]
    ServicesStatus { host: Fqdn },
    /// `Get-CsSite <site>` on the management host: reads the site's XMPP federation route.
    #[serde(rename = "route.get")]
    RouteGet { host: Fqdn, site: SiteName },
    /// `Set-CsSite <site> -XmppFederationRoute EdgeServer:<pool>` on the management host.
    #[serde(rename = "route.set")]
    RouteSet {
        host: Fqdn,
        site: SiteName,
        edge_pool: Fqdn,
    },
    /// Replace the A record of the federation host with one address.
    #[serde(rename = "dns.set_a")]
    DnsSetA {
        dns: DnsVia,
        name: Fqdn,
        address: Ipv4Addr,
        ttl: u32,
    },
    /// Make sure the SRV record exists exactly once.
    #[serde(rename = "dns.ensure_srv")]
    DnsEnsureSrv {
        dns: DnsVia,
        name: Fqdn,
        target: Fqdn,
        port: u16,
        priority: u16,
        weight: u16,
        ttl: u32,
    },
    /// A TCP probe of the external port, from the bot.
    #[serde(rename = "port.check")]
    PortCheck { address: IpAddr, port: u16 },
    /// Resolve the SRV and A records and open an XMPP server-to-server stream.
    #[serde(rename = "verify")]
    Verify {
        srv: Fqdn,
        host: Fqdn,
        address: Ipv4Addr,
        port: u16,
        domain: Fqdn,
    },
}

/// Who carries out an action.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// `baton-agent` on this host.
    Agent(Fqdn),
    /// The bot itself (DNS updates over RFC 2136, probes).
    Bot,
}

impl Action {
    /// Its kind in the catalog.
    pub fn kind(&self) -> ActionKind {
        match self {
            Action::Health { .. } => ActionKind::Health,
            Action::ServicesStop { .. } => ActionKind::ServicesStop,
            Action::ServicesStart { .. } => ActionKind::ServicesStart,
            Action::ServicesStatus { .. } => ActionKind::ServicesStatus,
            Action::RouteGet { .. } => ActionKind::RouteGet,
            Action::RouteSet { .. } => ActionKind::RouteSet,
            Action::DnsSetA { .. } => ActionKind::DnsSetA,
            Action::DnsEnsureSrv { .. } => ActionKind::DnsEnsureSrv,
            Action::PortCheck { .. } => ActionKind::PortCheck,
            Action::Verify { .. } => ActionKind::Verify,
        }
    }

    /// The catalog id, as the agent protocol names it.
    pub fn id(&self) -> &'static str {
        self.kind().id()
    }

    /// How long the action may take before it is stopped and the step fails. Stopping and
    /// starting Lync services takes minutes on a loaded server; probes take seconds.
    pub fn default_timeout(&self) -> std::time::Duration {
        let secs = match self {
            Action::Health { .. } | Action::PortCheck { .. } => 10,
            Action::ServicesStatus { .. } | Action::RouteGet { .. } => 60,
            Action::ServicesStop { .. } | Action::ServicesStart { .. } => 300,
            Action::RouteSet { .. } => 120,
            Action::DnsSetA { .. } | Action::DnsEnsureSrv { .. } | Action::Verify { .. } => 30,
        };
        std::time::Duration::from_secs(secs)
    }

    pub fn target(&self) -> Target {
        match self {
            Action::Health { host }
            | Action::ServicesStop { host }
            | Action::ServicesStart { host }
            | Action::ServicesStatus { host }
            | Action::RouteGet { host, .. }
            | Action::RouteSet { host, .. } => Target::Agent(host.clone()),
            Action::DnsSetA {
                dns: DnsVia::Agent { host, .. },
                ..
            }
            | Action::DnsEnsureSrv {
                dns: DnsVia::Agent { host, .. },
                ..
            } => Target::Agent(host.clone()),
            Action::DnsSetA { .. } | Action::DnsEnsureSrv { .. } | Action::PortCheck { .. } | Action::Verify { .. } => {
                Target::Bot
            }
        }
    }

    /// A short name for where it runs, for one-line status (`edge2a`, `dns`, `bot`).
    pub fn where_short(&self) -> String {
        match (self, self.target()) {
            (_, Target::Agent(host)) => host.short().to_string(),
            (Action::DnsSetA { .. } | Action::DnsEnsureSrv { .. }, Target::Bot) => "dns".to_string(),
            (_, Target::Bot) => "bot".to_string(),
        }
    }

    /// Where it runs, in full, for the plan (`edge2a.contoso.com`, `DNS ns1:53 (RFC 2136)`).
    pub fn where_long(&self) -> String {
        match self {
            Action::DnsSetA {
                dns: DnsVia::Rfc2136 { server, .. },
                ..
            }
            | Action::DnsEnsureSrv {
                dns: DnsVia::Rfc2136 { server, .. },
                ..
            } => format!("DNS {server} (RFC 2136 + TSIG)"),
            _ => match self.target() {
                Target::Agent(host) => host.to_string(),
                Target::Bot => "bot".to_string(),
            },
        }
    }

    /// The exact command the target runs, as the plan shows it before anyone approves.
    pub fn command_line(&self) -> String {
        match self {
            Action::Health { .. } => "GET /v1/health".to_string(),
            Action::ServicesStop { .. } => "Stop-CsWindowsService".to_string(),
            Action::ServicesStart { .. } => "Start-CsWindowsService".to_string(),
            Action::ServicesStatus { .. } => "Get-CsWindowsService".to_string(),
            Action::RouteGet { site, .. } => format!("Get-CsSite -Identity {site}"),
            Action::RouteSet { site, edge_pool, .. } => {
                format!(
                    "Set-CsSite -Identity {site} -XmppFederationRoute {}",
                    xmpp_route(edge_pool)
                )
            }
            Action::DnsSetA {
                dns: DnsVia::Rfc2136 { zone, .. },
                name,
                address,
                ttl,
            } => {
                format!("update zone {zone}: delete {name} A; add {name} {ttl} A {address}")
            }
            Action::DnsSetA {
                dns: DnsVia::Agent { zone, .. },
                name,
                address,
                ttl,
            } => format!(
                "Remove-DnsServerResourceRecord -ZoneName {zone} -RRType A -Name {}; \
                 Add-DnsServerResourceRecordA -ZoneName {zone} -Name {} -IPv4Address {address} -TimeToLive {}",
                relative(name, zone),
                relative(name, zone),
                hms(*ttl)
            ),
            Action::DnsEnsureSrv {
                dns: DnsVia::Rfc2136 { zone, .. },
                name,
                target,
                port,
                priority,
                weight,
                ttl,
            } => {
                format!("update zone {zone}: ensure exactly one {name} {ttl} SRV {priority} {weight} {port} {target}")
            }
            Action::DnsEnsureSrv {
                dns: DnsVia::Agent { zone, .. },
                name,
                target,
                port,
                priority,
                weight,
                ttl,
            } => format!(
                "Add-DnsServerResourceRecord -ZoneName {zone} -Srv -Name {} -DomainName {target} -Priority {priority} \
                 -Weight {weight} -Port {port} -TimeToLive {} (if missing)",
                relative(name, zone),
                hms(*ttl)
            ),
            Action::PortCheck { address, port } => format!("TCP connect {}", socket(*address, *port)),
            Action::Verify {
                srv,
                host,
                address,
                port,
                ..
            } => format!(
                "resolve {srv} SRV -> {host}:{port} and {host} A -> {address}; open an XMPP s2s stream to {}",
                socket(IpAddr::V4(*address), *port)
            ),
        }
    }
}

fn socket(address: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(address, port).to_string()
}

/// The XMPP federation route of an Edge pool as `Set-CsSite -XmppFederationRoute` takes it: the
/// pool's service identity, `EdgeServer:<pool fqdn>`.
pub fn xmpp_route(edge_pool: &Fqdn) -> String {
    format!("EdgeServer:{edge_pool}")
}

/// `xmpp` for `xmpp.contoso.com` in zone `contoso.com`; `@` for the apex.
pub fn relative(name: &Fqdn, zone: &Fqdn) -> String {
    let n = name.as_str();
    if n == zone.as_str() {
        return "@".to_string();
    }
    n.strip_suffix(zone.as_str())
        .and_then(|s| s.strip_suffix('.'))
        .unwrap_or(n)
        .to_string()
}

/// A TTL as PowerShell's `-TimeToLive` takes it (`00:05:00`).
fn hms(ttl: u32) -> String {
    format!("{:02}:{:02}:{:02}", ttl / 3600, (ttl / 60) % 60, ttl % 60)
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.id(), self.where_short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fqdn(s: &str) -> Fqdn {
        Fqdn::parse(s).expect("valid")
    }

    #[test]
    fn wire_form_is_tagged_and_strict() {
        let a = Action::RouteSet {
            host: fqdn("mgmt1.contoso.com"),
            site: SiteName::parse("Site2").expect("valid"),
            edge_pool: fqdn("edgepool2.contoso.com"),
        };
        let json = serde_json::to_string(&a).expect("serializes");
        assert_eq!(
            json,
            r#"{"action":"route.set","host":"mgmt1.contoso.com","site":"Site2","edge_pool":"edgepool2.contoso.com"}"#
        );
        assert_eq!(serde_json::from_str::<Action>(&json).expect("round trip"), a);
        let extra =
            r#"{"action":"route.set","host":"mgmt1.contoso.com","site":"Site2","edge_pool":"e.contoso.com","x":1}"#;
        assert!(serde_json::from_str::<Action>(extra).is_err());
        let injected = r#"{"action":"route.set","host":"mgmt1.contoso.com","site":"Site2; Stop-Computer","edge_pool":"e.contoso.com"}"#;
        assert!(serde_json::from_str::<Action>(injected).is_err());
        assert!(serde_json::from_str::<Action>(r#"{"action":"shell","cmd":"rm -rf /"}"#).is_err());
    }

    /// One action of the kind; DNS actions go through an agent, so that every kind an agent
    /// executes targets one.
    fn sample(kind: ActionKind) -> Action {
        let host = fqdn("edge2a.contoso.com");
        let site = SiteName::parse("Site2").expect("valid");
        let dns = DnsVia::Agent {
            host: fqdn("dns1.contoso.com"),
            zone: fqdn("contoso.com"),
        };
        let address = Ipv4Addr::new(203, 0, 113, 20);
        match kind {
            ActionKind::Health => Action::Health { host },
            ActionKind::ServicesStop => Action::ServicesStop { host },
            ActionKind::ServicesStart => Action::ServicesStart { host },
            ActionKind::ServicesStatus => Action::ServicesStatus { host },
            ActionKind::RouteGet => Action::RouteGet { host, site },
            ActionKind::RouteSet => Action::RouteSet {
                host,
                site,
                edge_pool: fqdn("edgepool2.contoso.com"),
            },
            ActionKind::DnsSetA => Action::DnsSetA {
                dns,
                name: fqdn("xmpp.contoso.com"),
                address,
                ttl: 300,
            },
            ActionKind::DnsEnsureSrv => Action::DnsEnsureSrv {
                dns,
                name: fqdn("_xmpp-server._tcp.contoso.com"),
                target: fqdn("xmpp.contoso.com"),
                port: 5269,
                priority: 10,
                weight: 10,
                ttl: 300,
            },
            ActionKind::PortCheck => Action::PortCheck {
                address: IpAddr::V4(address),
                port: 5269,
            },
            ActionKind::Verify => Action::Verify {
                srv: fqdn("_xmpp-server._tcp.contoso.com"),
                host: fqdn("xmpp.contoso.com"),
                address,
                port: 5269,
                domain: fqdn("contoso.com"),
            },
        }
    }

    #[test]
    fn the_id_lists_are_derived_from_the_kinds() {
        assert_eq!(
            ACTION_IDS,
            [
                "health",
                "services.stop",
                "services.start",
                "services.status",
                "route.get",
                "route.set",
                "dns.set_a",
                "dns.ensure_srv",
                "port.check",
                "verify"
            ]
        );
        assert_eq!(
            AGENT_ACTIONS,
            [
                "services.stop",
                "services.start",
                "services.status",
                "route.get",
                "route.set",
                "dns.set_a",
                "dns.ensure_srv"
            ]
        );
        for &kind in ActionKind::ALL {
            let action = sample(kind);
            assert_eq!(action.kind(), kind);
            // The wire tag is the kind's id.
            let json = serde_json::to_value(&action).expect("serializes");
            assert_eq!(json["action"], kind.id(), "{kind:?}");
            // An agent executes exactly the kinds that target an agent, but health.
            let on_agent = matches!(action.target(), Target::Agent(_)) && kind != ActionKind::Health;
            assert_eq!(kind.agent_executes(), on_agent, "{kind:?}");
        }
    }

    #[test]
    fn command_lines() {
        let win = DnsVia::Agent {
            host: fqdn("dns1.contoso.com"),
            zone: fqdn("contoso.com"),
        };
        let a = Action::DnsSetA {
            dns: win.clone(),
            name: fqdn("xmpp.contoso.com"),
            address: Ipv4Addr::new(203, 0, 113, 20),
            ttl: 300,
        };
        assert_eq!(
            a.command_line(),
            "Remove-DnsServerResourceRecord -ZoneName contoso.com -RRType A -Name xmpp; \
             Add-DnsServerResourceRecordA -ZoneName contoso.com -Name xmpp -IPv4Address 203.0.113.20 -TimeToLive 00:05:00"
        );
        assert_eq!(a.target(), Target::Agent(fqdn("dns1.contoso.com")));
        let p = Action::PortCheck {
            address: "2001:db8::1".parse().expect("valid"),
            port: 5269,
        };
        assert_eq!(p.command_line(), "TCP connect [2001:db8::1]:5269");
        assert_eq!(p.where_short(), "bot");
        let status = Action::ServicesStatus {
            host: fqdn("edge2a.contoso.com"),
        };
        assert_eq!(
            (status.id(), status.command_line().as_str()),
            ("services.status", "Get-CsWindowsService")
        );
        let get = Action::RouteGet {
            host: fqdn("mgmt1.contoso.com"),
            site: SiteName::parse("Site2").expect("valid"),
        };
        assert_eq!(get.command_line(), "Get-CsSite -Identity Site2");
        assert_eq!(get.target(), Target::Agent(fqdn("mgmt1.contoso.com")));
        for a in [status, get] {
            assert!(ACTION_IDS.contains(&a.id()), "{} is listed", a.id());
        }
    }
}
