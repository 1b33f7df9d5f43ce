//! `[chat.*]`: which chat platforms Baton listens on, and how it connects to each.

use super::secret::{self, SecretEnv};
use super::walk::{Errors, Table};
use crate::adapters::xmpp::{TlsMode, XmppConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[chat.console]`: the console of `baton demo` (lines on stdin, replies on stdout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub room: String,
}

/// Every `[chat.*]` section.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    pub console: Option<ConsoleSettings>,
    /// `[chat.xmpp]` when enabled, validated by the adapter's own rules.
    pub xmpp: Option<XmppConfig>,
}

/// Platforms whose adapters arrive in later versions: their sections may be written (disabled)
/// so a configuration can be prepared, and their secrets are checked for shape.
const LATER: &[(&str, &[&str], &str)] = &[
    ("teams", &["app_id", "tenant_id", "conversations"], "app_secret"),
    ("discord", &["application_id", "channels"], "token"),
];

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<ChatSettings> {
    let Some(t) = root.sub(e, "chat") else {
        return Some(ChatSettings {
            console: Some(ConsoleSettings {
                room: "incident".into(),
            }),
            xmpp: None,
        });
    };
    let before = e.list.len();
    let console = t.sub(e, "console").and_then(|c| {
        let enabled: bool = c.opt(e, "enabled").unwrap_or(true);
        let room: String = c.opt(e, "room").unwrap_or_else(|| "incident".into());
        if room.is_empty() || room.len() > 64 || room.chars().any(char::is_control) {
            e.at(&c.key_path("room"), c.span_of("room"), "must be a short room name");
        }
        c.finish(e);
        enabled.then_some(ConsoleSettings { room })
    });
    let xmpp = t.sub(e, "xmpp").and_then(|x| xmpp(e, x, env));
    for (platform, keys, secret_key) in LATER {
        let Some(s) = t.sub(e, platform) else { continue };
        let enabled: bool = s.opt(e, "enabled").unwrap_or(false);
        for key in *keys {
            let _ = s.get(key);
        }
        if s.has(secret_key) {
            let _ = secret::read(e, &s, secret_key, env, false);
        }
        if enabled {
            e.at(
                &s.key_path("enabled"),
                s.span_of("enabled"),
                format!("the {platform} adapter is not available in this version of Baton"),
            );
        }
        s.finish(e);
    }
    t.finish(e);
    (e.list.len() == before).then_some(ChatSettings { console, xmpp })
}

fn file(base: &Path, name: String) -> PathBuf {
    if Path::new(&name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    }
}

/// `[chat.xmpp]`: read every key, then let the adapter's own validation speak (its messages
/// name the key), reported at the section's line.
fn xmpp(e: &mut Errors<'_>, t: Table<'_, '_>, env: &SecretEnv<'_>) -> Option<XmppConfig> {
    let config = xmpp_settings(e, &t, env);
    t.finish(e);
    config
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
    let reconnect_initial = super::duration(e, t, "reconnect_initial");
    let reconnect_max = super::duration(e, t, "reconnect_max");
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
