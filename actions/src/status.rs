//! The live outside-in picture behind `!status xmpp`, gathered as data for the renderer: the A
//! and SRV answers of the federation names, a probe of every pool's external address (TCP, then
//! an s2s stream when the port is open) with its latency, and the route each site reports.
//!
//! Everything runs in parallel and every part has a deadline, so the picture comes back within
//! about [`StatusSettings::timeout`] even when hosts are down; a part that did not answer in time
//! says so in its own field.

use crate::dns::{ARecord, DnsQuery, SrvRecord};
use crate::inventory::{Inventory, Pool};
use crate::names::{Fqdn, PoolName, SiteName};
use crate::probe::{PortCheck, PortState, S2sReport, TlsTrust, human_duration, port_check, s2s_probe};
use async_trait::async_trait;
use futures::future::join_all;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Reads the XMPP federation route a site reports (`route.get` on the management agent). The
/// agent dispatcher implements it; `!status xmpp` works without one and then shows no routes.
#[async_trait]
pub trait RouteReader: Send + Sync {
    /// The route as the site reports it (e.g. `EdgeServer:edgepool2.contoso.com`), or why not.
    async fn route(&self, site: &SiteName) -> Result<String, String>;
}

/// Where and how long to look.
#[derive(Clone, Debug)]
pub struct StatusSettings {
    /// The resolver asked for the A and SRV records.
    pub resolver: SocketAddr,
    /// The budget of each part (one DNS query, one pool's probes, one route read).
    pub timeout: Duration,
    /// When set, each pool's s2s probe also completes STARTTLS against these CAs.
    pub tls: Option<TlsTrust>,
}

/// The live picture of XMPP federation.
#[derive(Clone, Debug)]
pub struct XmppStatus {
    pub domain: Fqdn,
    /// The federation host (`xmpp.contoso.com`) and what its A record holds.
    pub host: Fqdn,
    pub a: Result<Vec<ARecord>, String>,
    /// The SRV owner name and what it holds.
    pub srv_name: Fqdn,
    pub srv: Result<Vec<SrvRecord>, String>,
    /// The resolver that gave the answers.
    pub resolver: SocketAddr,
    /// One entry per pool of the inventory, in inventory order.
    pub pools: Vec<PoolStatus>,
    /// One entry per site when a [`RouteReader`] was given; empty otherwise.
    pub routes: Vec<SiteRoute>,
    /// How long gathering took.
    pub elapsed: Duration,
}

/// What one pool's external address answered.
#[derive(Clone, Debug)]
pub struct PoolStatus {
    pub pool: PoolName,
    pub site: SiteName,
    pub fqdn: Fqdn,
    /// The external address and federation port probed.
    pub addr: SocketAddr,
    /// True when the federation host's A record holds this pool's address.
    pub in_dns: bool,
    pub port: PortCheck,
    /// The s2s stream probe, made only when the port is open.
    pub s2s: Option<Result<S2sReport, String>>,
}

/// The route one site reports.
#[derive(Clone, Debug)]
pub struct SiteRoute {
    pub site: SiteName,
    pub route: Result<String, String>,
}

/// Gathers the picture. It never fails and returns within about `settings.timeout`: the DNS
/// queries, the pool probes and the route reads run side by side, each within that budget.
pub async fn gather_xmpp_status(
    inventory: &Inventory,
    settings: &StatusSettings,
    routes: Option<&dyn RouteReader>,
) -> XmppStatus {
    let started = Instant::now();
    let fed = &inventory.federation;
    let dns = DnsQuery::new(settings.resolver, settings.timeout);
    let budget = settings.timeout;
    let bounded = |what: String| move |_| format!("no answer to {what} within {}", human_duration(budget));

    let a = async {
        tokio::time::timeout(budget, dns.a(&fed.host))
            .await
            .map_err(bounded(format!("the A query of {}", fed.host)))
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let srv = async {
        tokio::time::timeout(budget, dns.srv(&fed.srv))
            .await
            .map_err(bounded(format!("the SRV query of {}", fed.srv)))
            .and_then(|r| r.map_err(|e| e.to_string()))
    };
    let probes = join_all(
        inventory
            .pools
            .iter()
            .map(|pool| probe_pool(pool, fed.port, &fed.domain, settings)),
    );
    let site_routes = async {
        match routes {
            None => Vec::new(),
            Some(reader) => {
                join_all(inventory.sites.iter().map(|site| async move {
                    let route = tokio::time::timeout(budget, reader.route(site))
                        .await
                        .map_err(bounded(format!("route.get for {site}")))
                        .and_then(|r| r);
                    SiteRoute {
                        site: site.clone(),
                        route,
                    }
                }))
                .await
            }
        }
    };
    let (a, srv, mut pools, routes) = tokio::join!(a, srv, probes, site_routes);
    if let Ok(records) = &a {
        for p in &mut pools {
            p.in_dns = records.iter().any(|r| IpAddr::V4(r.address) == p.addr.ip());
        }
    }
    XmppStatus {
        domain: fed.domain.clone(),
        host: fed.host.clone(),
        a,
        srv_name: fed.srv.clone(),
        srv,
        resolver: settings.resolver,
        pools,
        routes,
        elapsed: started.elapsed(),
    }
}

/// A TCP connect to the pool's external address, then an s2s stream when something listens; both
/// within one budget.
async fn probe_pool(pool: &Pool, port: u16, domain: &Fqdn, settings: &StatusSettings) -> PoolStatus {
    let started = Instant::now();
    let addr = SocketAddr::new(IpAddr::V4(pool.external_address), port);
    let check = port_check(addr, settings.timeout).await;
    let s2s = if check.state == PortState::Open {
        let left = settings
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100));
        Some(
            s2s_probe(addr, domain, settings.tls.as_ref(), left)
                .await
                .map_err(|e| e.to_string()),
        )
    } else {
        None
    };
    PoolStatus {
        pool: pool.name.clone(),
        site: pool.site.clone(),
        fqdn: pool.fqdn.clone(),
        addr,
        in_dns: false,
        port: check,
        s2s,
    }
}
