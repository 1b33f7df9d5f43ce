//! Chat adapters, one folder per platform, each implementing [`crate::chat::ChatAdapter`], and
//! the one registry of platforms ([`PLATFORMS`]): adding a platform is a folder here and a line
//! in that list. Each entry owns its `[chat.<name>]` section, the construction of its adapter and
//! its mirror rooms; nothing else in Baton names a platform.

pub mod console;
pub mod discord;
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

    /// Builds the adapter `baton run` uses; `None` when this section is not for `baton run`
    /// (the reason is in [`PlatformConfig::note`]).
    fn build(&self) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>>;

    /// A remark for `check-config` and the log, about what the settings mean.
    fn note(&self) -> Option<String> {
        None
    }

    /// Builds the adapter with a place for the little state it keeps across restarts, beside
    /// the store (`store` is the store's file). Platforms that keep none build as `build` does.
    fn build_beside(&self, store: &std::path::Path) -> anyhow::Result<Option<Arc<dyn ChatAdapter>>> {
        let _ = store;
        self.build()
    }

    fn as_any(&self) -> &dyn Any;
}

/// Reads a platform's `[chat.<name>]` section (see [`Entry::read`]).
pub type ReadSection = fn(&mut Errors<'_>, Option<Table<'_, '_>>, &SecretEnv<'_>) -> Option<Arc<dyn PlatformConfig>>;

/// One chat platform: the name of its `[chat.<name>]` section and how to read it.
pub struct Entry {
    pub name: &'static str,
    /// Reads the section (absent: `None`); returns the settings when the platform is enabled and
    /// the section is valid, and records every problem in the errors otherwise.
    pub read: ReadSection,
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
        read: |e, t, env| t.and_then(|t| discord::section::read(e, t, env)),
    },
];
