//! The watchers behind `/readyz` and the state metrics of `baton run`: the store (writable, the
//! outbox's depth and oldest message), every agent (its health answer and protocol version),
//! and every chat platform's link (online and in its rooms, reconnections). Each runs on an interval until
//! shutdown and writes only to `Readiness` and `Metrics`.

use crate::metrics::Metrics;
use crate::readiness::Readiness;
use baton_actions::Fqdn;
use baton_actions::dispatcher::Dispatcher;
use baton_policies::Platform;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The readiness condition of the store.
pub const STORE: &str = "store";

/// The readiness condition of a chat platform.
pub fn chat_condition(platform: Platform) -> String {
    format!("chat:{platform}")
}

/// The readiness condition of a host's agent.
pub fn agent_condition(host: &Fqdn) -> String {
    format!("agent:{host}")
}

/// What one look at the store found.
#[derive(Debug)]
struct StoreLook {
    writable: Result<(), String>,
    /// Per platform: undelivered messages and the oldest one's age.
    outbox: Vec<(Platform, usize, Option<Duration>)>,
}

/// Opens the SQLite store beside the daemon's own connection (WAL lets both work), takes and
/// releases the write lock to prove the store is writable, and reads the outbox.
fn look_at_store(path: &Path, now: DateTime<Utc>) -> StoreLook {
    use rusqlite::{Connection, OpenFlags};
    let conn = match Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok(c) => c,
        Err(e) => {
            return StoreLook {
                writable: Err(format!("cannot open the store {}: {e}", path.display())),
                outbox: Vec::new(),
            };
        }
    };
    let _ = conn.busy_timeout(Duration::from_secs(2));
    let writable = conn
        .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|e| format!("the store {} cannot be written: {e}", path.display()));
    let outbox = conn
        .prepare("SELECT platform, COUNT(*), MIN(created_at) FROM outbox WHERE delivered_at IS NULL GROUP BY platform")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .map(|rows| {
            rows.into_iter()
                .filter_map(|(platform, n, oldest)| {
                    let platform = Platform::parse(&platform)?;
                    let age = DateTime::parse_from_rfc3339(&oldest)
                        .ok()
                        .and_then(|t| (now - t.with_timezone(&Utc)).to_std().ok());
                    Some((platform, usize::try_from(n).unwrap_or(0), age))
                })
                .collect()
        })
        .unwrap_or_default();
    StoreLook { writable, outbox }
}

/// Watches the store every `interval`.
pub async fn store(
    path: PathBuf,
    platforms: Vec<Platform>,
    interval: Duration,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    loop {
        let p = path.clone();
        let look = tokio::task::spawn_blocking(move || look_at_store(&p, Utc::now())).await;
        match look {
            Ok(look) => {
                if let Err(why) = &look.writable {
                    tracing::warn!(store = %path.display(), reason = %why, "the store is not writable");
                }
                readiness.set(STORE, look.writable);
                for p in &platforms {
                    let (depth, age) = look
                        .outbox
                        .iter()
                        .find(|(q, _, _)| q == p)
                        .map_or((0, None), |(_, n, a)| (*n, *a));
                    metrics.set_outbox(*p, depth, age);
                }
            }
            Err(e) => readiness.set(STORE, Err(format!("the store check failed: {e}"))),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Asks every agent for its health every `interval`; warns once when an agent speaks an older
/// protocol than this bot.
pub async fn agents(
    dispatcher: Arc<Dispatcher>,
    hosts: Vec<Fqdn>,
    interval: Duration,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    let mut warned: HashMap<Fqdn, String> = HashMap::new();
    loop {
        let looks = futures::future::join_all(hosts.iter().map(|h| {
            let d = dispatcher.clone();
            async move {
                (
                    h,
                    tokio::time::timeout(interval.max(Duration::from_secs(5)), d.health(h)).await,
                )
            }
        }))
        .await;
        for (host, look) in looks {
            let condition = agent_condition(host);
            match look {
                Ok(Ok(health)) => {
                    metrics.set_agent(host.short(), Some(health.protocol));
                    match health.older_protocol() {
                        Some(warning) => {
                            if warned.get(host) != Some(&health.agent_version) {
                                tracing::warn!(host = %host, agent_version = %health.agent_version,
                                    protocol = health.protocol, "{warning}");
                                warned.insert(host.clone(), health.agent_version.clone());
                            }
                            readiness.set(&condition, Err(warning));
                        }
                        None => {
                            warned.remove(host);
                            readiness.set(&condition, Ok(()));
                        }
                    }
                }
                Ok(Err(e)) => {
                    metrics.set_agent(host.short(), None);
                    readiness.set(&condition, Err(e.to_string()));
                }
                Err(_) => {
                    metrics.set_agent(host.short(), None);
                    readiness.set(&condition, Err("no health answer in time".into()));
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Follows a chat adapter's link: connected once online and in every room it must join; each
/// new session after the first is a reconnection.
pub async fn chat(
    platform: Platform,
    mut link: watch::Receiver<crate::chat::Link>,
    rooms: BTreeSet<String>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    stop: CancellationToken,
) {
    let condition = chat_condition(platform);
    let mut sessions = 0;
    loop {
        let status = link.borrow_and_update().clone();
        for _ in sessions.max(1)..status.sessions {
            metrics.chat_reconnected(platform);
        }
        sessions = sessions.max(status.sessions);
        let missing: Vec<&String> = rooms.difference(&status.joined).collect();
        let state = if !status.online {
            Err(format!("not connected to the {platform} server"))
        } else if !missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            Err(format!("not in room {}", names.join(", ")))
        } else {
            Ok(())
        };
        metrics.set_chat_connected(platform, state.is_ok());
        readiness.set(&condition, state);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = link.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_looked_at_without_changing_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        let missing = look_at_store(&path, Utc::now());
        assert!(missing.writable.is_err_and(|e| e.contains("cannot open the store")));
        assert!(!path.exists(), "the check never creates a store");
        let conn = rusqlite::Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY, created_at TEXT NOT NULL, platform TEXT NOT NULL, delivered_at TEXT);
             INSERT INTO outbox (created_at, platform) VALUES ('2030-01-01T10:00:00.000Z', 'xmpp'), ('2030-01-01T10:00:30.000Z', 'xmpp');
             INSERT INTO outbox (created_at, platform, delivered_at) VALUES ('2030-01-01T09:00:00.000Z', 'console', '2030-01-01T09:00:01.000Z');",
        )
        .expect("schema");
        let now = DateTime::parse_from_rfc3339("2030-01-01T10:01:00Z")
            .expect("valid")
            .with_timezone(&Utc);
        let look = look_at_store(&path, now);
        assert_eq!(look.writable, Ok(()));
        assert_eq!(look.outbox, vec![(Platform::Xmpp, 2, Some(Duration::from_secs(60)))]);
        // A reader holding the write lock makes the store unwritable for the check's duration.
        let mut holder = rusqlite::Connection::open(&path).expect("open");
        let tx = holder
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .expect("lock");
        let busy = look_at_store(&path, now);
        assert!(busy.writable.is_err_and(|e| e.contains("cannot be written")));
        drop(tx);
    }
}
