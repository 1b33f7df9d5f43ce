//! The rooms already told that Baton cannot see their members' real JIDs, remembered in a small
//! JSON file next to the store, so that a restart does not say it again. A room leaves the list
//! when Baton sees it show real JIDs (so a later change back is said again). Without a file, or
//! when it cannot be read or written, the notice is remembered for the process only (and the
//! problem logged).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tracing::warn;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct File {
    /// Rooms told about their hidden JIDs.
    hidden_jids_told: BTreeSet<String>,
}

/// The rooms told, and where they are remembered.
#[derive(Debug, Default)]
pub struct Told {
    path: Option<PathBuf>,
    file: File,
}

impl Told {
    /// Reads the list at `path` (none there yet: an empty list).
    pub fn load(path: Option<&Path>) -> Told {
        let file = match path.map(std::fs::read_to_string) {
            Some(Ok(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                warn!(file = %path.map(|p| p.display().to_string()).unwrap_or_default(), error = %e,
                    "cannot read the rooms already told about hidden JIDs; they may be told again");
                File::default()
            }),
            Some(Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!(file = %path.map(|p| p.display().to_string()).unwrap_or_default(), error = %e,
                    "cannot read the rooms already told about hidden JIDs; they may be told again");
                File::default()
            }
            _ => File::default(),
        };
        Told {
            path: path.map(Path::to_path_buf),
            file,
        }
    }

    pub fn contains(&self, room: &str) -> bool {
        self.file.hidden_jids_told.contains(room)
    }

    /// Records that `room` was told.
    pub fn insert(&mut self, room: &str) {
        if self.file.hidden_jids_told.insert(room.to_string()) {
            self.save();
        }
    }

    /// Forgets `room` (it shows real JIDs now).
    pub fn remove(&mut self, room: &str) {
        if self.file.hidden_jids_told.remove(room) {
            self.save();
        }
    }

    /// Writes the list beside its final name, then renames it into place.
    fn save(&self) {
        let Some(path) = &self.path else { return };
        let text = serde_json::to_string_pretty(&self.file).expect("a set of strings is plain JSON");
        let tmp = path.with_extension("tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            warn!(file = %path.display(), error = %e, "cannot remember the rooms told about hidden JIDs; a restart may tell them again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_told_survive_a_reload_and_forgotten_ones_do_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite.xmpp-notices.json");
        let mut told = Told::load(Some(&path));
        assert!(!told.contains("lobby@conference.contoso.test"));
        told.insert("lobby@conference.contoso.test");
        told.insert("other@conference.contoso.test");
        let mut again = Told::load(Some(&path));
        assert!(again.contains("lobby@conference.contoso.test"));
        again.remove("other@conference.contoso.test");
        assert!(!Told::load(Some(&path)).contains("other@conference.contoso.test"));
        // A damaged file is an empty list, not an error.
        std::fs::write(&path, "{not json").expect("write");
        assert!(!Told::load(Some(&path)).contains("lobby@conference.contoso.test"));
        // Without a file, the process remembers.
        let mut mem = Told::load(None);
        mem.insert("lobby@conference.contoso.test");
        assert!(mem.contains("lobby@conference.contoso.test"));
    }
}
