//! `[chat.teams]`: the Teams adapter's section of the configuration file, read with every key's
//! problems reported at its line, then checked by [`TeamsConfig::validate`].

use super::TeamsAdapter;
use super::config::{EndpointTls, TeamsConfig, token_url_for};
use crate::adapters::PlatformConfig;
use crate::chat::{ChatAdapter, RoomRef};
use crate::config::secret::{self, SecretEnv};
use crate::config::walk::{Errors, Table};
use anyhow::Context;
use baton_policies::Platform;
use std::any::Any;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl PlatformConfig for TeamsConfig {
    fn platform(&self) -> Platform {
        Platform::Teams
    }

    fn mirror_rooms(&self) -> Vec<RoomRef> {
        self.mirror_channels
            .iter()
            .map(|c| RoomRef::new(Platform::Teams, c.clone()))
            .collect()
    }

    fn build(&self) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>> {
        let adapter = TeamsAdapter::new(self.clone()).context("preparing the Teams adapter")?;
        Ok(Some(Arc::new(adapter)))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Reads `[chat.teams]`: every key, then the adapter's own validation, reported at the key's
/// line. `None` when disabled or wrong (the errors are in `e`).
pub fn read(e: &mut Errors<'_>, t: Table<'_, '_>, env: &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>> {
    let config = settings(e, &t, env);
    t.finish(e);
    config.map(|c| Arc::new(c) as Arc<dyn PlatformConfig>)
}

fn file(base: &Path, name: String) -> PathBuf {
    if Path::new(&name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    }
}

fn settings(e: &mut Errors<'_>, t: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<TeamsConfig> {
    let enabled: bool = t.opt(e, "enabled").unwrap_or(false);
    let needed =
        |e: &mut Errors<'_>, key: &str| -> Option<String> { if enabled { t.req(e, key) } else { t.opt(e, key) } };
    let app_id = needed(e, "app_id");
    let tenant_id = needed(e, "tenant_id");
    let app_secret = secret::read(e, t, "app_secret", env, enabled);
    let listen = match needed(e, "listen") {
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                e.at(
                    &t.key_path("listen"),
                    t.span_of("listen"),
                    format!(
                        "'{}' must be an address and port like 0.0.0.0:3978",
                        baton_actions::names::shown(&text)
                    ),
                );
                None
            }
        },
        None => None,
    };
    let allowed_tenants: Option<Vec<String>> = t.opt(e, "allowed_tenants");
    let channels: Vec<String> = t.opt(e, "channels").unwrap_or_default();
    let mirrors: Vec<String> = t.opt(e, "mirror_channels").unwrap_or_default();
    let service_url: Option<String> = t.opt(e, "service_url");
    let openid: Option<String> = t.opt(e, "openid_metadata_url");
    let issuer: Option<String> = t.opt(e, "issuer");
    let token_url: Option<String> = t.opt(e, "token_url");
    let token_scope: Option<String> = t.opt(e, "token_scope");
    let allowlist: Option<Vec<String>> = t.opt(e, "service_url_allowlist");
    let tls_cert: Option<String> = t.opt(e, "tls_cert");
    let tls_key: Option<String> = t.opt(e, "tls_key");
    let edit_interval = crate::config::duration(e, t, "edit_interval");
    let click_wait = crate::config::duration(e, t, "click_wait");
    let request_timeout = crate::config::duration(e, t, "request_timeout");
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(EndpointTls {
            cert: file(&env.base, cert),
            key: file(&env.base, key),
        }),
        (None, None) => None,
        _ => {
            let key = if t.has("tls_cert") { "tls_key" } else { "tls_cert" };
            e.at(&t.key_path(key), t.span_of(key), "tls_cert and tls_key go together");
            None
        }
    };
    if !enabled {
        return None;
    }
    let (app_id, tenant_id) = (app_id?, tenant_id?);
    let mut config = TeamsConfig::new(&app_id, app_secret?, &tenant_id, listen?);
    config.tls = tls;
    config.channels = channels;
    config.mirror_channels = mirrors;
    if let Some(list) = allowed_tenants {
        config.allowed_tenants = list.into_iter().map(|t| t.to_ascii_lowercase()).collect();
    }
    if let Some(u) = service_url {
        config.service_url = u;
    }
    if let Some(u) = openid {
        config.openid_metadata_url = u;
    }
    if let Some(i) = issuer {
        config.issuer = i;
    }
    config.token_url = token_url.unwrap_or_else(|| token_url_for(&tenant_id));
    if let Some(s) = token_scope {
        config.token_scope = s;
    }
    if let Some(list) = allowlist {
        config.service_url_allowlist = list;
    }
    if let Some(d) = edit_interval {
        config.edit_interval = d;
    }
    if let Some(d) = click_wait {
        config.click_wait = d;
    }
    if let Some(d) = request_timeout {
        config.request_timeout = d;
    }
    match config.validate() {
        Ok(_) => Some(config),
        Err(problems) => {
            for (key, message) in problems {
                e.at(&t.key_path(key), t.span_of(key), message);
            }
            None
        }
    }
}
