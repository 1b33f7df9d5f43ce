//! `[dns]`: where the external zone is changed (RFC 2136 with TSIG from the bot, or Windows DNS
//! through an agent) and the key that signs the updates.

use super::secret::{self, SecretEnv};
use super::walk::{Errors, Table};
use baton_actions::{DnsProvider, Fqdn};
use secrecy::SecretString;

/// The validated `[dns]` section.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    pub provider: DnsProvider,
    /// TSIG key name and secret (base64, as `tsig-keygen` prints it), for `rfc2136`.
    pub tsig_key_name: Option<String>,
    pub tsig_secret: Option<SecretString>,
}

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<DnsSettings> {
    let Some(t) = root.sub(e, "dns") else {
        if !root.has("dns") {
            e.at("dns", None, "is missing: provider = \"rfc2136\" (server, zone, tsig_key_name, tsig_secret) or \"agent\" (host, zone)");
        }
        return None;
    };
    let provider: Option<String> = t.req(e, "provider");
    let zone: Option<Fqdn> = t.req(e, "zone");
    let settings = match provider.as_deref() {
        Some("rfc2136") => {
            let server: Option<String> = t.req(e, "server");
            if let Some(s) = &server
                && !valid_server(s)
            {
                e.at(&t.key_path("server"), t.span_of("server"), "must be host:port, e.g. ns1.contoso.com:53 or 198.51.100.53:53");
            }
            let key_name: Option<String> = t.req(e, "tsig_key_name");
            // The secret is only needed when updates are really sent; the simulated executor
            // never sends them, so the demo runs without it.
            let tsig_secret = secret::read(e, &t, "tsig_secret", env, false);
            server.zip(zone).map(|(server, zone)| DnsSettings {
                provider: DnsProvider::Rfc2136 { server, zone },
                tsig_key_name: key_name,
                tsig_secret,
            })
        }
        Some("agent") => {
            let host: Option<Fqdn> = t.req(e, "host");
            host.zip(zone).map(|(host, zone)| DnsSettings { provider: DnsProvider::Agent { host, zone }, tsig_key_name: None, tsig_secret: None })
        }
        Some(other) => {
            e.at(&t.key_path("provider"), t.span_of("provider"), format!("unknown provider '{}' (providers: rfc2136, agent)", baton_actions::names::shown(other)));
            None
        }
        None => None,
    };
    t.finish(e);
    settings
}

fn valid_server(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Fqdn::parse(host).is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}
