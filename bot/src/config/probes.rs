//! `[probes]`: how Baton looks at federation from outside (`port.check`, `verify`,
//! `!status xmpp`).

use super::walk::{Errors, Table};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The validated `[probes]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Bounds each TCP connect and each s2s stream probe.
    pub timeout: Duration,
    /// When set, s2s probes also complete STARTTLS and check the certificate against this CA.
    pub ca_file: Option<PathBuf>,
}

pub fn read(e: &mut Errors<'_>, root: &Table<'_, '_>, base: &Path) -> ProbeSettings {
    let mut settings = ProbeSettings {
        timeout: Duration::from_secs(3),
        ca_file: None,
    };
    let Some(t) = root.sub(e, "probes") else {
        return settings;
    };
    if let Some(d) = super::duration(e, &t, "timeout") {
        if d < Duration::from_millis(100) || d > Duration::from_secs(60) {
            e.at(
                &t.key_path("timeout"),
                t.span_of("timeout"),
                "must be between 100ms and 60s",
            );
        } else {
            settings.timeout = d;
        }
    }
    if let Some(file) = t.opt::<String>(e, "ca_file") {
        let path = if Path::new(&file).is_absolute() {
            PathBuf::from(&file)
        } else {
            base.join(&file)
        };
        if !path.is_file() {
            e.at(
                &t.key_path("ca_file"),
                t.span_of("ca_file"),
                format!("{} is not a readable file", path.display()),
            );
        }
        settings.ca_file = Some(path);
    }
    t.finish(e);
    settings
}
