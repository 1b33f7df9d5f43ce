//! `[agents]`: how the bot reaches `baton-agent` on each host (certificates and addresses).

use super::walk::{Errors, Table};
use std::path::PathBuf;

/// The validated `[agents]` section.
#[derive(Clone, Debug)]
pub struct AgentsSettings {
    /// The CA that signs agents' server certificates and the bot's client certificate.
    pub ca: PathBuf,
    /// The bot's client certificate and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The port agents listen on unless a host says otherwise.
    pub port: u16,
}

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>) -> Option<AgentsSettings> {
    let t = root.sub(e, "agents")?;
    let ca: Option<String> = t.req(e, "ca");
    let cert: Option<String> = t.req(e, "cert");
    let key: Option<String> = t.req(e, "key");
    let port: u16 = t.opt(e, "port").unwrap_or(4443);
    t.finish(e);
    Some(AgentsSettings { ca: ca?.into(), cert: cert?.into(), key: key?.into(), port })
}
