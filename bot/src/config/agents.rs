//! `[agents]`: how the bot reaches `baton-agent` on each host (certificates, port, addresses,
//! timeouts).

use super::walk::{Errors, Table, value};
use baton_actions::Fqdn;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated `[agents]` section.
#[derive(Clone, Debug)]
pub struct AgentsSettings {
    /// The CA that signs agents' server certificates (PEM).
    pub ca: PathBuf,
    /// The bot's client certificate and private key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The port agents listen on, on each host's name, unless `addresses` says otherwise.
    pub port: u16,
    /// Where to reach hosts whose name is not enough (`"edge2a.contoso.com" = "10.0.2.11:4443"`).
    pub addresses: BTreeMap<Fqdn, SocketAddr>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Transport attempts per action before it fails (same idempotency key each time).
    pub attempts: u32,
}

fn file(base: &Path, name: String) -> PathBuf {
    if Path::new(&name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    }
}

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, base: &Path) -> Option<AgentsSettings> {
    let t = root.sub(e, "agents")?;
    let mut paths = Vec::new();
    for key in ["ca", "cert", "key"] {
        let p: Option<String> = t.req(e, key);
        let p = p.map(|p| file(base, p));
        if let Some(p) = &p
            && !p.is_file()
        {
            e.at(
                &t.key_path(key),
                t.span_of(key),
                format!("{} is not a readable file", p.display()),
            );
        }
        paths.push(p);
    }
    let port: u16 = t.opt(e, "port").unwrap_or(4443);
    let mut addresses = BTreeMap::new();
    if let Some(at) = t.sub(e, "addresses") {
        for (host, v) in at.entries() {
            let path = super::walk::join(&at.path, &host);
            match (Fqdn::parse(&host), value::<String>(e, &path, v)) {
                (Ok(h), Some(addr)) => match addr.parse::<SocketAddr>() {
                    Ok(a) => {
                        addresses.insert(h, a);
                    }
                    Err(_) => e.at(&path, Some(v.span()), "must be ip:port, e.g. 10.0.2.11:4443"),
                },
                (Err(err), _) => e.at(&path, Some(v.span()), err.to_string()),
                _ => {}
            }
        }
        at.finish(e);
    }
    let connect_timeout = super::duration(e, &t, "connect_timeout").unwrap_or(Duration::from_secs(3));
    let request_timeout = super::duration(e, &t, "request_timeout").unwrap_or(Duration::from_secs(10));
    let attempts: u32 = t.opt(e, "attempts").unwrap_or(4);
    if !(1..=10).contains(&attempts) {
        e.at(
            &t.key_path("attempts"),
            t.span_of("attempts"),
            "must be between 1 and 10",
        );
    }
    t.finish(e);
    let mut paths = paths.into_iter();
    Some(AgentsSettings {
        ca: paths.next().flatten()?,
        cert: paths.next().flatten()?,
        key: paths.next().flatten()?,
        port,
        addresses,
        connect_timeout,
        request_timeout,
        attempts,
    })
}
