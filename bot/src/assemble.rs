//! Assembles what a configuration names into running parts: the executor (simulated, or agents
//! plus DNS and probes), the `!status xmpp` look. Shared by `baton run` and `baton demo`.

use crate::config::{Config, ExecutorKind};
use crate::daemon::StatusLook;
use anyhow::Context;
use baton_actions::direct::{DirectConfig, DirectExecutor};
use baton_actions::dispatcher::{AgentAddress, AgentRoutes, Dispatcher, DispatcherConfig};
use baton_actions::dns::{DnsUpdater, TsigKey, resolve_server};
use baton_actions::probe::TlsTrust;
use baton_actions::router::Router;
use baton_actions::simulated::SimulatedExecutor;
use baton_actions::status::StatusSettings;
use baton_actions::{DnsProvider, Executor};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The executor and, when there are agents, the dispatcher (for route reads).
pub struct Executors {
    pub executor: Arc<dyn Executor>,
    pub dispatcher: Option<Arc<Dispatcher>>,
}

/// The resolver `verify` and `!status xmpp` ask: `[dns] resolver`, else the update server.
fn resolver_name(config: &Config) -> Option<&str> {
    config.dns.resolver.as_deref().or(match &config.dns.provider {
        DnsProvider::Rfc2136 { server, .. } => Some(server.as_str()),
        DnsProvider::Agent { .. } => None,
    })
}

fn trust(config: &Config) -> anyhow::Result<Option<TlsTrust>> {
    match &config.probes.ca_file {
        Some(path) => {
            Ok(Some(TlsTrust::from_ca_file(path).with_context(|| {
                format!("reading [probes] ca_file {}", path.display())
            })?))
        }
        None => Ok(None),
    }
}

/// Builds the executor the configuration names. `record` is the simulation's record file.
pub async fn executors(config: &Config, record: &Path) -> anyhow::Result<Executors> {
    match config.bot.executor {
        ExecutorKind::Simulated => Ok(Executors {
            executor: Arc::new(SimulatedExecutor::open(record, config.simulation.clone())?),
            dispatcher: None,
        }),
        ExecutorKind::Agents => {
            let a = config.agents.as_ref().context("executor \"agents\" needs [agents]")?;
            let mut dc = DispatcherConfig::new(
                a.ca.clone(),
                a.cert.clone(),
                a.key.clone(),
                a.addresses
                    .iter()
                    .map(|(h, s)| (h.clone(), AgentAddress::Socket(*s)))
                    .collect(),
            );
            dc.default_port = Some(a.port);
            dc.connect_timeout = a.connect_timeout;
            dc.request_timeout = a.request_timeout;
            dc.attempts = a.attempts;
            let dispatcher = Arc::new(Dispatcher::new(dc).context("preparing the agent dispatcher")?);
            let direct = direct_executor(config).await?;
            let executor: Arc<dyn Executor> = Arc::new(Router::new(dispatcher.clone(), Arc::new(direct)));
            Ok(Executors {
                executor,
                dispatcher: Some(dispatcher),
            })
        }
    }
}

/// The executor of the bot's own actions: RFC 2136 updates, port probes, verify.
pub async fn direct_executor(config: &Config) -> anyhow::Result<DirectExecutor> {
    let mut updaters = BTreeMap::new();
    if let DnsProvider::Rfc2136 { server, zone } = &config.dns.provider {
        let name = config
            .dns
            .tsig_key_name
            .as_deref()
            .context("[dns] tsig_key_name is needed for RFC 2136 updates")?;
        let secret = config
            .dns
            .tsig_secret
            .as_ref()
            .context("[dns] tsig_secret is needed for RFC 2136 updates")?;
        let key = TsigKey::from_base64(name, secret)?;
        let addr = resolve_server(server)
            .await
            .with_context(|| format!("resolving the DNS server {server}"))?;
        updaters.insert(
            server.clone(),
            DnsUpdater::new(addr, zone.clone(), key, config.dns.timeout),
        );
    }
    let resolver_text = resolver_name(config).context("set [dns] resolver: verify needs a resolver to ask")?;
    let resolver = resolve_server(resolver_text)
        .await
        .with_context(|| format!("resolving the DNS resolver {resolver_text}"))?;
    Ok(DirectExecutor::new(DirectConfig {
        updaters,
        resolver,
        dns_timeout: config.dns.timeout,
        probe_timeout: config.probes.timeout,
        tls: trust(config)?,
    }))
}

/// The `!status xmpp` look, or why there is none (logged; the command then says so).
pub async fn status_look(config: &Config, dispatcher: Option<Arc<Dispatcher>>) -> Option<StatusLook> {
    let Some(name) = resolver_name(config) else {
        tracing::warn!("!status xmpp has no resolver: set [dns] resolver (the zone is on Windows DNS)");
        return None;
    };
    let resolver = match resolve_server(name).await {
        Ok(addr) => addr,
        Err(e) => {
            tracing::warn!(resolver = %name, error = %e, "!status xmpp will not work: the resolver cannot be resolved");
            return None;
        }
    };
    let tls = trust(config).unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "s2s probes will not check STARTTLS");
        None
    });
    let routes = dispatcher.map(|d| {
        Arc::new(AgentRoutes::new(
            d,
            config.inventory.management_host.clone(),
            config.probes.timeout,
        )) as Arc<dyn baton_actions::status::RouteReader>
    });
    Some(StatusLook {
        settings: StatusSettings {
            resolver,
            timeout: config.probes.timeout,
            tls,
        },
        routes,
    })
}
