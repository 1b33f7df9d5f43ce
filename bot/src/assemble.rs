//! Assembles what a configuration names into running parts: the executor, the `!status xmpp`
//! look. Shared by `baton run` and `baton demo`, so both build the same way.

use crate::config::Config;
use crate::daemon::StatusLook;
use baton_actions::DnsProvider;
use baton_actions::dns::resolve_server;
use baton_actions::probe::TlsTrust;
use baton_actions::status::StatusSettings;

/// The resolver `verify` and `!status xmpp` ask: `[dns] resolver`, else the update server.
fn resolver_name(config: &Config) -> Option<&str> {
    config.dns.resolver.as_deref().or(match &config.dns.provider {
        DnsProvider::Rfc2136 { server, .. } => Some(server.as_str()),
        DnsProvider::Agent { .. } => None,
    })
}

/// The `!status xmpp` look, or why there is none (logged; the command then says so).
pub async fn status_look(config: &Config) -> Option<StatusLook> {
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
    let tls = match &config.probes.ca_file {
        Some(path) => match TlsTrust::from_ca_file(path) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(ca_file = %path.display(), error = %e, "s2s probes will not check STARTTLS");
                None
            }
        },
        None => None,
    };
    Some(StatusLook { settings: StatusSettings { resolver, timeout: config.probes.timeout, tls }, routes: None })
}
