//! `[chat.xmpp]`: the XMPP adapter's section of the configuration file, read with every key's
//! problems reported at its line, then checked by [`XmppConfig::validate`].

use super::{TlsMode, XmppAdapter, XmppConfig};
use crate::adapters::PlatformConfig;
use crate::chat::{ChatAdapter, RoomRef};
use crate::config::secret::{self, SecretEnv};
use crate::config::walk::{Errors, Table};
use anyhow::Context;
use baton_policies::Platform;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

impl PlatformConfig for XmppConfig {
    fn platform(&self) -> Platform {
        Platform::Xmpp
    }

    fn mirror_rooms(&self) -> Vec<RoomRef> {
        self.mirror_rooms
            .iter()
            .map(|r| RoomRef::new(Platform::Xmpp, r.jid.to_lowercase()))
            .collect()
    }

    fn build(&self) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>> {
        let adapter = XmppAdapter::new(self.clone()).context("preparing the XMPP adapter")?;
        Ok(Some(Arc::new(adapter)))
    }

    fn build_beside(&self, store: &Path) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>> {
        let mut config = self.clone();
        config.notices_file = Some(notices_file(store));
        let adapter = XmppAdapter::new(config).context("preparing the XMPP adapter")?;
        Ok(Some(Arc::new(adapter)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reads `[chat.xmpp]`: every key, then the adapter's own validation (its messages name the
/// key), reported at the key's line. `None` when disabled or wrong (the errors are in `e`).
pub fn read(e: &mut Errors<'_>, t: Table<'_, '_>, env: &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>> {
    let config = xmpp_settings(e, &t, env);
    t.finish(e);
    config.map(|c| Arc::new(c) as Arc<dyn PlatformConfig>)
}

/// Where the XMPP adapter remembers the rooms it told about hidden JIDs: beside the store,
/// named after it (`baton.sqlite` -> `baton.sqlite.xmpp-notices.json`).
pub fn notices_file(store: &Path) -> PathBuf {
    let name = store
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "baton".to_string());
    store.with_file_name(format!("{name}.xmpp-notices.json"))
}

fn file(base: &Path, name: String) -> PathBuf {
    if Path::new(&name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    }
}

fn xmpp_settings(e: &mut Errors<'_>, t: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<XmppConfig> {
    let enabled: bool = t.opt(e, "enabled").unwrap_or(false);
    let needed =
        |e: &mut Errors<'_>, key: &str| -> Option<String> { if enabled { t.req(e, key) } else { t.opt(e, key) } };
    let jid = needed(e, "jid");
    let server = needed(e, "server");
    let password = secret::read(e, t, "password", env, enabled);
    let tls = match t.opt::<String>(e, "tls").as_deref() {
        None | Some("starttls") => Some(TlsMode::StartTls {
            ca_file: t.opt::<String>(e, "ca_file").map(|f| file(&env.base, f)),
            server_name: t.opt(e, "tls_server_name"),
        }),
        Some("plain") => Some(TlsMode::Plain),
        Some(other) => {
            e.at(
                &t.key_path("tls"),
                t.span_of("tls"),
                format!(
                    "unknown TLS mode '{}' (modes: starttls, plain)",
                    baton_actions::names::shown(other)
                ),
            );
            None
        }
    };
    let nickname: String = t.opt(e, "nickname").unwrap_or_else(|| "baton".to_string());
    let rooms: Vec<String> = if enabled {
        t.req(e, "rooms").unwrap_or_default()
    } else {
        t.opt(e, "rooms").unwrap_or_default()
    };
    let mirrors: Vec<String> = t.opt(e, "mirror_rooms").unwrap_or_default();
    let max_message_bytes: Option<usize> = t.opt(e, "max_message_bytes");
    let reconnect_initial = crate::config::duration(e, t, "reconnect_initial");
    let reconnect_max = crate::config::duration(e, t, "reconnect_max");
    let delivery_timeout = crate::config::duration(e, t, "delivery_timeout");
    if !enabled {
        return None;
    }
    let mut config = XmppConfig::new(jid?, password?, server?, tls?);
    for room in rooms {
        config = config.with_room(room, nickname.clone());
    }
    for room in mirrors {
        config = config.with_mirror_room(room, nickname.clone());
    }
    if let Some(n) = max_message_bytes {
        config.max_message_bytes = n;
    }
    config.reconnect_initial = reconnect_initial.unwrap_or(Duration::from_secs(1));
    config.reconnect_max = reconnect_max.unwrap_or(Duration::from_secs(60));
    if let Some(d) = delivery_timeout {
        config.delivery_timeout = d;
    }
    match config.validate() {
        Ok(_) => Some(config),
        Err(problems) => {
            // The adapter names keys as `xmpp.<key>: message`.
            for p in problems {
                let p = p.strip_prefix("xmpp.").unwrap_or(&p).to_string();
                let (key, message) = p.split_once(": ").unwrap_or(("", p.as_str()));
                let key = key.split('.').next().unwrap_or(key);
                e.at(&t.key_path(key), t.span_of(key), message.to_string());
            }
            None
        }
    }
}
