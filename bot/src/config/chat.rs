//! `[chat.*]`: which chat platforms Baton listens on. Each platform's section is read by its
//! own adapter folder through the registry in `adapters/mod.rs`; this file only walks the table.

use super::secret::SecretEnv;
use super::walk::{Errors, Table};
use crate::adapters::{self, PlatformConfig};
use std::sync::Arc;

/// Every enabled chat platform, in the registry's order.
#[derive(Clone, Debug, Default)]
pub struct ChatSettings {
    pub platforms: Vec<Arc<dyn PlatformConfig>>,
}

impl ChatSettings {
    /// One platform's settings, by type (`chat.get::<XmppConfig>()`).
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.platforms.iter().find_map(|p| p.as_any().downcast_ref::<T>())
    }
}

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, env: &SecretEnv<'_>) -> Option<ChatSettings> {
    let before = e.list.len();
    let t = root.sub(e, "chat");
    let mut platforms = Vec::new();
    for entry in adapters::PLATFORMS {
        let section = t.as_ref().and_then(|t| t.sub(e, entry.name));
        if let Some(p) = (entry.read)(e, section, env) {
            platforms.push(p);
        }
    }
    if let Some(t) = t {
        t.finish(e);
    }
    (e.list.len() == before).then_some(ChatSettings { platforms })
}
