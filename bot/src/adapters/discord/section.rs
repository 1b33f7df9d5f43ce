//! `[chat.discord]`: the Discord adapter's section of the configuration file, read with every
//! key's problems reported at its line, then checked by [`DiscordConfig::validate`].

use super::DiscordAdapter;
use super::config::{DiscordConfig, StandIn};
use crate::adapters::PlatformConfig;
use crate::chat::{ChatAdapter, RoomRef};
use crate::config::secret::{self, SecretEnv};
use crate::config::walk::{Errors, Table};
use anyhow::Context;
use baton_policies::Platform;
use serde::Deserialize;
use std::any::Any;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl PlatformConfig for DiscordConfig {
    fn platform(&self) -> Platform {
        Platform::Discord
    }

    fn mirror_rooms(&self) -> Vec<RoomRef> {
        self.mirror_channels
            .iter()
            .map(|c| RoomRef::new(Platform::Discord, c.to_string()))
            .collect()
    }

    fn build(&self) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>> {
        let adapter = DiscordAdapter::new(self.clone()).context("preparing the Discord adapter")?;
        Ok(Some(Arc::new(adapter)))
    }

    fn note(&self) -> Option<String> {
        self.stand_in.as_ref().map(|s| {
            format!(
                "chat.discord talks to a Discord stand-in at {} (tests), not to discord.com",
                s.address
            )
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A Discord id as written: a quoted string of digits (or, as TOML allows, an integer).
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Number(i64),
}

/// Reads `[chat.discord]`: every key, then the adapter's own validation, reported at the key's
/// line. `None` when disabled or wrong (the errors are in `e`).
pub fn read(e: &mut Errors<'_>, t: Table<'_, '_>, env: &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>> {
    let config = settings(e, &t, env);
    t.finish(e);
    config.map(|c| Arc::new(c) as Arc<dyn PlatformConfig>)
}

/// A list of Discord ids at `key`; each bad one is reported.
fn ids(e: &mut Errors<'_>, t: &Table<'_, '_>, key: &str, required: bool) -> Vec<u64> {
    let written: Vec<Written> = if required {
        t.req(e, key).unwrap_or_default()
    } else {
        t.opt(e, key).unwrap_or_default()
    };
    let mut out = Vec::new();
    for w in written {
        let parsed = match &w {
            Written::Text(s) if !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>().ok().filter(|n| *n > 0)
            }
            Written::Text(_) => None,
            Written::Number(n) => u64::try_from(*n).ok().filter(|n| *n > 0),
        };
        match parsed {
            Some(id) => out.push(id),
            None => {
                let shown = match w {
                    Written::Text(s) => format!("'{}'", baton_actions::names::shown(&s)),
                    Written::Number(n) => n.to_string(),
                };
                e.at(
                    &t.key_path(key),
                    t.span_of(key),
                    format!(
                        "{shown} is not a Discord id (Developer Mode, right click, Copy ID: digits like \"80351110224678912\")"
                    ),
                );
            }
        }
    }
    out
}

fn file(base: &Path, name: String) -> PathBuf {
    if Path::new(&name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    }
}

fn stand_in(e: &mut Errors<'_>, t: &Table<'_, '_>, base: &Path) -> Option<StandIn> {
    let s = t.sub(e, "stand_in")?;
    let address: Option<String> = s.req(e, "address");
    let ca_file: Option<String> = s.req(e, "ca_file");
    let address = address.and_then(|a| match a.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            e.at(
                &s.key_path("address"),
                s.span_of("address"),
                format!(
                    "'{}' is not an address like 127.0.0.1:8443",
                    baton_actions::names::shown(&a)
                ),
            );
            None
        }
    });
    s.finish(e);
    Some(StandIn {
        address: address?,
        ca_file: file(base, ca_file?),
    })
}

fn settings(e: &mut Errors<'_>, t: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<DiscordConfig> {
    let enabled: bool = t.opt(e, "enabled").unwrap_or(false);
    let token = secret::read(e, t, "token", env, enabled);
    let guilds = ids(e, t, "guilds", enabled);
    let channels = ids(e, t, "channels", enabled);
    let mirrors = ids(e, t, "mirror_channels", false);
    let edit_interval = crate::config::duration(e, t, "edit_interval");
    let reconnect_initial = crate::config::duration(e, t, "reconnect_initial");
    let reconnect_max = crate::config::duration(e, t, "reconnect_max");
    let stand_in = if t.has("stand_in") {
        Some(stand_in(e, t, &env.base))
    } else {
        None
    };
    if !enabled {
        return None;
    }
    let mut config = DiscordConfig::new(token?, guilds, channels);
    config.mirror_channels = mirrors;
    if let Some(d) = edit_interval {
        config.edit_interval = d;
    }
    if let Some(d) = reconnect_initial {
        config.reconnect_initial = d;
    }
    if let Some(d) = reconnect_max {
        config.reconnect_max = d;
    }
    config.stand_in = match stand_in {
        Some(s) => Some(s?),
        None => None,
    };
    match config.validate() {
        Ok(()) => Some(config),
        Err(problems) => {
            for (key, message) in problems {
                e.at(&t.key_path(key), t.span_of(key), message);
            }
            None
        }
    }
}
