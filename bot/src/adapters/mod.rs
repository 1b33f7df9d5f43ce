//! Chat adapters, one folder per platform, each implementing [`crate::chat::ChatAdapter`], and
//! the one registry of platforms ([`PLATFORMS`]): adding a platform is a folder here and a line
//! in that list. Each entry owns its `[chat.<name>]` section, the construction of its adapter and
//! its mirror rooms; nothing else in Baton names a platform.

pub mod console;
pub mod memory;
pub mod teams;
pub mod xmpp;

use crate::chat::{ChatAdapter, RoomRef};
use crate::config::secret::SecretEnv;
use crate::config::walk::{Errors, Table};
use baton_policies::Platform;
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// A platform's validated settings.
pub trait PlatformConfig: Send + Sync + fmt::Debug + 'static {
    fn platform(&self) -> Platform;

    /// Rooms that receive a copy of every run message (commands are not read there).
    fn mirror_rooms(&self) -> Vec<RoomRef>;

    /// Builds the adapter `baton run` uses.
    fn build(&self) -> anyhow::Result<Arc<dyn ChatAdapter>>;

    fn as_any(&self) -> &dyn Any;
}

/// One chat platform: the name of its `[chat.<name>]` section and how to read it.
pub struct Entry {
    pub name: &'static str,
    /// Reads the section (absent: `None`); returns the settings when the platform is enabled and
    /// the section is valid, and records every problem in the errors otherwise.
    pub read: fn(&mut Errors<'_>, Option<Table<'_, '_>>, &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>>,
}

/// Every chat platform Baton knows.
pub const PLATFORMS: &[Entry] = &[
    Entry {
        name: "console",
        read: console::read,
    },
    Entry {
        name: "xmpp",
        read: |e, t, env| t.and_then(|t| xmpp::section::read(e, t, env)),
    },
    Entry {
        name: "teams",
        read: |e, t, env| t.and_then(|t| teams::section::read(e, t, env)),
    },
    Entry {
        name: "discord",
        read: |e, t, env| later(e, t, env, "discord", &["application_id", "channels"], "token"),
    },
];

/// A platform whose adapter arrives in a later version: its section may be written (disabled) so
/// a configuration can be prepared, and its secret is checked for shape.
fn later(
    e: &mut Errors<'_>,
    t: Option<Table<'_, '_>>,
    env: &SecretEnv<'_>,
    platform: &str,
    keys: &[&str],
    secret_key: &str,
) -> Option<Arc<dyn PlatformConfig>> {
    let s = t?;
    let enabled: bool = s.opt(e, "enabled").unwrap_or(false);
    for key in keys {
        let _ = s.get(key);
    }
    if s.has(secret_key) {
        let _ = crate::config::secret::read(e, &s, secret_key, env, false);
    }
    if enabled {
        e.at(
            &s.key_path("enabled"),
            s.span_of("enabled"),
            format!("the {platform} adapter is not available in this version of Baton"),
        );
    }
    s.finish(e);
    None
}
