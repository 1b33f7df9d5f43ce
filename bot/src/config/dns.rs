//! `[dns]`: where the external zone is changed (RFC 2136 with TSIG from the bot, or Windows DNS
//! through an agent) and the key that signs the updates.

use super::secret::{self, SecretEnv};
use super::walk::{Errors, Table};
use baton_actions::{DnsProvider, Fqdn};
use secrecy::SecretString;
use std::time::Duration;

/// The validated `[dns]` section.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub provider: DnsProvider,
    /// TSIG key name and secret (base64, as `tsig-keygen` prints it), for `rfc2136`.
    pub tsig_key_name: Option<String>,
    pub tsig_secret: Option<SecretString>,
    /// Where `verify` and `!status xmpp` look the federation names up (`host:port`); by default
    /// the `rfc2136` server itself.
    pub resolver: Option<String>,
    /// Bounds each DNS exchange.
    pub timeout: Duration,
}

/// `resolve`: the executor really sends updates, so the TSIG secret is read now.
pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &SecretEnv<'_>, resolve: bool) -> Option<DnsSettings> {
    let Some(t) = root.sub(e, "dns") else {
        if !root.has("dns") {
            e.at("dns", None, "is missing: provider = \"rfc2136\" (server, zone, tsig_key_name, tsig_secret) or \"agent\" (host, zone)");
        }
        return None;
    };
    let provider: Option<String> = t.req(e, "provider");
    let zone: Option<Fqdn> = t.req(e, "zone");
    let resolver: Option<String> = t.opt(e, "resolver");
    if let Some(r) = &resolver
        && !valid_server(r)
    {
        e.at(
            &t.key_path("resolver"),
            t.span_of("resolver"),
            "must be host:port, e.g. 198.51.100.53:53",
        );
    }
    let timeout = super::duration(e, &t, "timeout").unwrap_or(Duration::from_secs(5));
    let settings = match provider.as_deref() {
        Some("rfc2136") => {
            let server: Option<String> = t.req(e, "server");
            if let Some(s) = &server
                && !valid_server(s)
            {
                e.at(
                    &t.key_path("server"),
                    t.span_of("server"),
                    "must be host:port, e.g. ns1.contoso.com:53 or 198.51.100.53:53",
                );
            }
            let key_name: Option<String> = t.req(e, "tsig_key_name");
            // The secret is only needed when updates are really sent; the simulated executor
            // never sends them, so the demo runs without it.
            let tsig_secret = secret::read(e, &t, "tsig_secret", env, resolve);
            if let (Some(name), Some(secret)) = (&key_name, &tsig_secret)
                && let Err(err) = baton_actions::dns::TsigKey::from_base64(name, secret)
            {
                e.at(&t.key_path("tsig_secret"), t.span_of("tsig_secret"), err.to_string());
            }
            server.zip(zone).map(|(server, zone)| DnsSettings {
                provider: DnsProvider::Rfc2136 { server, zone },
                tsig_key_name: key_name,
                tsig_secret,
                resolver,
                timeout,
            })
        }
        Some("agent") => {
            let host: Option<Fqdn> = t.req(e, "host");
            host.zip(zone).map(|(host, zone)| DnsSettings {
                provider: DnsProvider::Agent { host, zone },
                tsig_key_name: None,
                tsig_secret: None,
                resolver,
                timeout,
            })
        }
        Some(other) => {
            e.at(
                &t.key_path("provider"),
                t.span_of("provider"),
                format!(
                    "unknown provider '{}' (providers: rfc2136, agent)",
                    baton_actions::names::shown(other)
                ),
            );
            None
        }
        None => None,
    };
    t.finish(e);
    settings
}

pub(super) fn valid_server(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Fqdn::parse(host).is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
