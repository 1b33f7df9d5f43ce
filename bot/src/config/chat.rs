//! `[chat.*]`: which chat platforms Baton listens on, and how it connects to each.

use super::secret::{self, SecretEnv};
use super::walk::{Errors, Table};

/// `[chat.console]`: the console of `baton demo` (lines on stdin, replies on stdout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleSettings {
    pub room: String,
}

/// Every `[chat.*]` section.
#[derive(Clone, Debug)]
pub struct ChatSettings {
    pub console: Option<ConsoleSettings>,
}

/// Platforms whose adapters arrive in later versions: their sections may be written (disabled)
/// so a configuration can be prepared, and their secrets are checked for shape.
const LATER: &[(&str, &[&str], &str)] = &[
    ("xmpp", &["jid", "server", "rooms", "nickname"], "password"),
    ("teams", &["app_id", "tenant_id", "conversations"], "app_secret"),
    ("discord", &["application_id", "channels"], "token"),
];

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<ChatSettings> {
    let Some(t) = root.sub(e, "chat") else {
        return Some(ChatSettings { console: Some(ConsoleSettings { room: "incident".into() }) });
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
            e.at(&s.key_path("enabled"), s.span_of("enabled"), format!("the {platform} adapter is not available in this version of Baton"));
        }
        s.finish(e);
    }
    t.finish(e);
    (e.list.len() == before).then_some(ChatSettings { console })
}
