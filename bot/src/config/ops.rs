//! `[server]` (the health and metrics listener) and `[log]` (the log format and filter): the
//! settings an operator's platform reads Baton through.

use super::walk::{Errors, Table};
use std::net::SocketAddr;
use std::time::Duration;

/// `[server]`: where `/healthz`, `/readyz` and `/metrics` are served. Absent: no listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// How often the store and the agents are checked for `/readyz` and the state metrics.
    pub check_interval: Duration,
}

/// The port the documentation, the Dockerfile and the alert rules assume.
pub const DEFAULT_PORT: u16 = 9464;

pub fn read_server(e: &mut Errors<'_>, root: &Table<'_, '_>) -> Option<ServerSettings> {
    let t = root.sub(e, "server")?;
    let enabled: bool = t.opt(e, "enabled").unwrap_or(true);
    let public: bool = t.opt(e, "public").unwrap_or(false);
    let listen = t
        .req::<String>(e, "listen")
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(addr) if !addr.ip().is_loopback() && !public => {
                e.at(
                    &t.key_path("listen"),
                    t.span_of("listen"),
                    format!(
                        "{addr} is not a loopback address: health and metrics are served without authentication, \
                     so listening beyond this host needs `public = true` in [server]"
                    ),
                );
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                e.at(
                    &t.key_path("listen"),
                    t.span_of("listen"),
                    format!(
                        "'{}' is not an address like 127.0.0.1:{DEFAULT_PORT}",
                        baton_actions::names::shown(&text)
                    ),
                );
                None
            }
        });
    let mut check_interval = Duration::from_secs(15);
    if let Some(d) = super::duration(e, &t, "check_interval") {
        if d < Duration::from_millis(200) || d > Duration::from_secs(600) {
            e.at(
                &t.key_path("check_interval"),
                t.span_of("check_interval"),
                "must be between 200ms and 10m",
            );
        } else {
            check_interval = d;
        }
    }
    t.finish(e);
    listen
        .filter(|_| enabled)
        .map(|listen| ServerSettings { listen, check_interval })
}

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

/// `[log]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter (`info,baton=debug`); the `RUST_LOG` variable overrides it.
    pub filter: Option<String>,
}

pub fn read_log(e: &mut Errors<'_>, root: &Table<'_, '_>) -> LogSettings {
    let mut settings = LogSettings::default();
    let Some(t) = root.sub(e, "log") else {
        return settings;
    };
    match t.opt::<String>(e, "format").as_deref() {
        None | Some("text") => {}
        Some("json") => settings.format = LogFormat::Json,
        Some(other) => e.at(
            &t.key_path("format"),
            t.span_of("format"),
            format!(
                "unknown log format '{}' (formats: text, json)",
                baton_actions::names::shown(other)
            ),
        ),
    }
    if let Some(filter) = t.opt::<String>(e, "filter") {
        match tracing_subscriber::EnvFilter::builder().parse(&filter) {
            Ok(_) => settings.filter = Some(filter),
            Err(err) => e.at(
                &t.key_path("filter"),
                t.span_of("filter"),
                format!("not a log filter like \"info,baton=debug\": {err}"),
            ),
        }
    }
    t.finish(e);
    settings
}
