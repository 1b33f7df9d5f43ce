//! The simulated executor: carries out every action of the catalog in-process, with a delay per
//! action and injected failures, keeping a durable record of every execution in a SQLite file.
//!
//! It honours idempotency keys the way `baton-agent` does: a key already executed returns the
//! recorded outcome and executes nothing again, also after a restart. Like the agent, it records
//! an execution when it starts (before its delay), and a key that had started when the process
//! died is reported interrupted at the next start and never run again. A simulated action takes
//! effect only when its outcome is recorded, so one cancelled in-process before that (a clean
//! stop drops it) had no effect: its start is taken back and the key runs when asked again. Tests count executions
//! from the record (`executions` table, one row per start) to prove that nothing ran twice
//! across crashes.

use crate::catalog::Action;
use crate::executor::{ActionOutcome, ActionReport, ActionRequest, Executor, IdempotencyKey};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Makes matching actions fail: `ACTION[@HOST][:TIMES]`, e.g. `services.start@edge2b:1` fails
/// the first execution of `services.start` on edge2b and lets the next one succeed. Without
/// `:TIMES` every matching execution fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureRule {
    pub action: String,
    /// A host's short name or FQDN; `None` matches every host.
    pub host: Option<String>,
    pub times: Option<u32>,
}

impl FromStr for FailureRule {
    type Err = String;
    fn from_str(s: &str) -> Result<FailureRule, String> {
        let (rest, times) = match s.rsplit_once(':') {
            Some((rest, n)) => (
                rest,
                Some(
                    n.parse::<u32>()
                        .map_err(|_| format!("'{n}' in '{s}' is not a number of failures"))?,
                ),
            ),
            None => (s, None),
        };
        let (action, host) = match rest.split_once('@') {
            Some((a, h)) => (a, Some(h.to_ascii_lowercase())),
            None => (rest, None),
        };
        if !crate::ACTION_IDS.contains(&action) {
            return Err(format!(
                "unknown action '{action}' (actions: {})",
                crate::ACTION_IDS.join(", ")
            ));
        }
        Ok(FailureRule {
            action: action.to_string(),
            host,
            times,
        })
    }
}

impl FailureRule {
    fn matches(&self, action: &Action) -> bool {
        if self.action != action.id() {
            return false;
        }
        match (&self.host, action.target()) {
            (None, _) => true,
            (Some(h), crate::Target::Agent(host)) => host.as_str() == h || host.short() == h,
            (Some(h), crate::Target::Bot) => action.where_short() == *h,
        }
    }
}

/// How the simulation behaves.
#[derive(Clone, Debug, Default)]
pub struct SimulationConfig {
    /// How long each action takes unless `delays` names its action id.
    pub default_delay: Duration,
    pub delays: BTreeMap<String, Duration>,
    pub failures: Vec<FailureRule>,
    /// Crash drills: the process aborts right after recording an execution of a matching action,
    /// before anyone hears of its outcome (the worst moment for a crash).
    pub crash_after: Option<FailureRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error("cannot open the simulation record {path}: {source}")]
    Open { path: String, source: rusqlite::Error },
}

/// The in-process executor used by `baton demo` and by tests of the engine.
pub struct SimulatedExecutor {
    db: Mutex<Connection>,
    in_flight: Mutex<HashSet<IdempotencyKey>>,
    config: SimulationConfig,
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS outcomes (
        key TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        elapsed_ms INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS executions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        action TEXT NOT NULL,
        place TEXT NOT NULL,
        ok INTEGER NOT NULL,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    );
";

/// `executions.ok` of an execution that has started and not ended (1 ok, 0 failed).
const STARTED: i64 = -1;

/// This process, as the record names the starter of an execution: a start left by another
/// process that never ended was cut short by its death; one of this process may still be
/// running in another executor on the same record (a daemon restarted in-process).
fn this_process() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    })
}

/// The outcome of a simulated execution that was running when the process died.
pub const INTERRUPTED: &str = "interrupted: Baton stopped while this simulated action was running; it was not run \
     again (retry with a new attempt)";

impl SimulatedExecutor {
    /// Opens (or creates) the durable record at `path`.
    pub fn open(path: &Path, config: SimulationConfig) -> Result<SimulatedExecutor, SimulationError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            let has_process: bool = conn.query_row(
                "SELECT COUNT(*) FROM pragma_table_info('executions') WHERE name = 'process'",
                [],
                |r| r.get::<_, i64>(0).map(|n| n > 0),
            )?;
            if !has_process {
                conn.execute_batch("ALTER TABLE executions ADD COLUMN process TEXT")?;
            }
            Ok(conn)
        };
        let mut conn = open().map_err(|source| SimulationError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::interrupt_started(&mut conn).map_err(|source| SimulationError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(SimulatedExecutor {
            db: Mutex::new(conn),
            in_flight: Mutex::new(HashSet::new()),
            config,
        })
    }

    /// Closes every execution another (dead) process started and never ended as interrupted, as
    /// the agent does with its journal: their keys answer [`INTERRUPTED`] and never run again.
    fn interrupt_started(conn: &mut Connection) -> rusqlite::Result<()> {
        let tx = conn.transaction()?;
        let json = serde_json::to_string(&ActionOutcome::Failed {
            error: INTERRUPTED.to_string(),
        })
        .expect("an outcome is plain data and always serializes");
        tx.execute(
            "INSERT OR IGNORE INTO outcomes (key, outcome, elapsed_ms)
             SELECT key, ?1, 0 FROM executions WHERE ok = ?2 AND (process IS NULL OR process != ?3)",
            params![json, STARTED, this_process()],
        )?;
        tx.commit()
    }

    /// Records that an execution of `key` starts, before it does anything.
    fn record_start(&self, key: &IdempotencyKey, action: &Action) -> rusqlite::Result<i64> {
        let db = self
            .db
            .lock()
            .expect("the simulation lock is never held across a panic");
        db.execute(
            "INSERT INTO executions (key, action, place, ok, process) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key.as_str(), action.id(), action.where_short(), STARTED, this_process()],
        )?;
        Ok(db.last_insert_rowid())
    }

    /// True while another executor of this process runs `key` on the same record.
    fn running_here(&self, key: &IdempotencyKey) -> bool {
        let db = self
            .db
            .lock()
            .expect("the simulation lock is never held across a panic");
        db.query_row(
            "SELECT COUNT(*) FROM executions WHERE key = ?1 AND ok = ?2 AND process = ?3",
            params![key.as_str(), STARTED, this_process()],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n > 0)
    }

    fn recorded(&self, key: &IdempotencyKey) -> Option<ActionReport> {
        let db = self
            .db
            .lock()
            .expect("the simulation lock is never held across a panic");
        let row: Option<(String, i64)> = db
            .query_row(
                "SELECT outcome, elapsed_ms FROM outcomes WHERE key = ?1",
                [key.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .unwrap_or(None);
        row.and_then(|(json, elapsed)| {
            let outcome = serde_json::from_str(&json).ok()?;
            Some(ActionReport {
                outcome,
                elapsed_ms: u64::try_from(elapsed).unwrap_or(0),
                replayed: true,
            })
        })
    }

    fn failures_so_far(&self, action: &Action) -> u32 {
        let db = self
            .db
            .lock()
            .expect("the simulation lock is never held across a panic");
        db.query_row(
            "SELECT COUNT(*) FROM executions WHERE action = ?1 AND place = ?2 AND ok = 0",
            params![action.id(), action.where_short()],
            |r| r.get::<_, u32>(0),
        )
        .unwrap_or(0)
    }

    fn record(&self, execution: i64, key: &IdempotencyKey, report: &ActionReport) -> rusqlite::Result<()> {
        let mut db = self
            .db
            .lock()
            .expect("the simulation lock is never held across a panic");
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE executions SET ok = ?2 WHERE id = ?1",
            params![execution, report.outcome.is_ok()],
        )?;
        let json = serde_json::to_string(&report.outcome).expect("an outcome is plain data and always serializes");
        tx.execute(
            "INSERT INTO outcomes (key, outcome, elapsed_ms) VALUES (?1, ?2, ?3)",
            params![key.as_str(), json, i64::try_from(report.elapsed_ms).unwrap_or(i64::MAX)],
        )?;
        tx.commit()
    }

    fn delay_for(&self, action: &Action) -> Duration {
        self.config
            .delays
            .get(action.id())
            .copied()
            .unwrap_or(self.config.default_delay)
    }

    fn simulate(&self, action: &Action) -> ActionOutcome {
        for rule in self.config.failures.iter().filter(|r| r.matches(action)) {
            if rule.times.is_none_or(|n| self.failures_so_far(action) < n) {
                return ActionOutcome::Failed {
                    error: format!("simulated failure of {} on {}", action.id(), action.where_short()),
                };
            }
        }
        let detail = match action {
            Action::Health { .. } => "agent answers (simulated)".to_string(),
            Action::ServicesStop { .. } => "services stopped (simulated)".to_string(),
            Action::ServicesStart { .. } => "services running (simulated)".to_string(),
            Action::ServicesStatus { .. } => "services running (simulated)".to_string(),
            Action::RouteGet { site, .. } => format!("{site} route unknown (simulated)"),
            Action::RouteSet { edge_pool, .. } => format!("route now EdgeServer:{edge_pool} (simulated)"),
            Action::DnsSetA { name, address, .. } => format!("{name} A {address} (simulated)"),
            Action::DnsEnsureSrv { name, .. } => format!("{name} SRV present once (simulated)"),
            Action::PortCheck { .. } => "refused, nothing listening yet (simulated)".to_string(),
            Action::Verify { .. } => "SRV ok, s2s stream ok (simulated)".to_string(),
        };
        ActionOutcome::Ok { detail }
    }
}

/// Takes back the start of an execution that is dropped before its outcome is recorded (a clean
/// stop cancelled it, so it had no effect); a crash runs no destructor and leaves the start on
/// record, to be reported interrupted.
struct Started<'a> {
    db: &'a Mutex<Connection>,
    id: i64,
    ended: bool,
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Ok(db) = self.db.lock()
            && let Err(e) = db.execute(
                "DELETE FROM executions WHERE id = ?1 AND ok = ?2",
                params![self.id, STARTED],
            )
        {
            tracing::error!(error = %e, "simulation could not take back a cancelled start");
        }
    }
}

/// Removes a key from the in-flight set when the execution ends, however it ends.
struct InFlight<'a>(&'a Mutex<HashSet<IdempotencyKey>>, IdempotencyKey);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&self.1);
        }
    }
}

#[async_trait]
impl Executor for SimulatedExecutor {
    async fn execute(&self, request: ActionRequest) -> ActionReport {
        let ActionRequest { key, action, timeout } = request;
        // Wait while another request with the same key is executing (here or in another
        // executor of this process on the same record): like the agent's "running" answer,
        // polled until the outcome is recorded.
        let guard = loop {
            if let Some(report) = self.recorded(&key) {
                return report;
            }
            if self.running_here(&key) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let claimed = self
                .in_flight
                .lock()
                .expect("the in-flight lock is never held across a panic")
                .insert(key.clone());
            if claimed {
                break InFlight(&self.in_flight, key.clone());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(report) = self.recorded(&key) {
            return report;
        }
        let started = Instant::now();
        let mut execution = match self.record_start(&key, &action) {
            Ok(id) => Started {
                db: &self.db,
                id,
                ended: false,
            },
            Err(e) => {
                tracing::error!(key = %key, error = %e, "simulation could not record an execution; nothing ran");
                return ActionReport {
                    outcome: ActionOutcome::Failed {
                        error: format!("the simulation could not record the execution, so it did not run it: {e}"),
                    },
                    elapsed_ms: 0,
                    replayed: false,
                };
            }
        };
        let delay = self.delay_for(&action);
        let outcome = if delay > timeout {
            tokio::time::sleep(timeout).await;
            ActionOutcome::Failed {
                error: format!(
                    "timed out after {}s; the simulated action was stopped",
                    timeout.as_secs_f32()
                ),
            }
        } else {
            tokio::time::sleep(delay).await;
            self.simulate(&action)
        };
        let report = ActionReport {
            outcome,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            replayed: false,
        };
        if let Err(e) = self.record(execution.id, &key, &report) {
            tracing::error!(key = %key, error = %e, "simulation could not record an execution");
        }
        execution.ended = true;
        if self.config.crash_after.as_ref().is_some_and(|r| r.matches(&action)) {
            eprintln!(
                "simulated crash after executing {} on {} (key {key})",
                action.id(),
                action.where_short()
            );
            std::process::abort();
        }
        drop(guard);
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Fqdn;

    fn stop(host: &str) -> Action {
        Action::ServicesStop {
            host: Fqdn::parse(host).expect("valid"),
        }
    }

    fn count(path: &Path) -> i64 {
        let c = Connection::open(path).expect("opens");
        c.query_row("SELECT COUNT(*) FROM executions", [], |r| r.get(0))
            .expect("counts")
    }

    #[tokio::test]
    async fn a_key_executes_once_even_across_reopen_and_concurrent_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.sqlite");
        let cfg = SimulationConfig {
            default_delay: Duration::from_millis(50),
            ..Default::default()
        };
        let sim = std::sync::Arc::new(SimulatedExecutor::open(&path, cfg.clone()).expect("opens"));
        let key = IdempotencyKey::new("s", 1, 1, 0, "edge2a", 1);
        let req = ActionRequest {
            key: key.clone(),
            action: stop("edge2a.contoso.com"),
            timeout: Duration::from_secs(5),
        };
        let (a, b) = tokio::join!(sim.execute(req.clone()), sim.execute(req.clone()));
        assert!(a.outcome.is_ok() && b.outcome.is_ok());
        assert!(
            a.replayed != b.replayed,
            "exactly one of two concurrent requests executes"
        );
        drop(sim);
        let again = SimulatedExecutor::open(&path, cfg).expect("reopens");
        let c = again.execute(req).await;
        assert!(c.replayed);
        assert_eq!(count(&path), 1);
    }

    #[tokio::test]
    async fn an_execution_is_recorded_when_it_starts_and_one_cut_short_is_interrupted_not_run_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.sqlite");
        let cfg = SimulationConfig {
            default_delay: Duration::from_secs(60),
            ..Default::default()
        };
        let sim = SimulatedExecutor::open(&path, cfg.clone()).expect("opens");
        let req = ActionRequest {
            key: IdempotencyKey::new("s", 1, 1, 0, "edge2a", 1),
            action: stop("edge2a.contoso.com"),
            timeout: Duration::from_secs(120),
        };
        // Cancelled in-process (a clean stop): no effect, the start is taken back.
        let cut = tokio::time::timeout(Duration::from_millis(100), sim.execute(req.clone())).await;
        assert!(cut.is_err(), "still running when cut");
        assert_eq!(count(&path), 0, "a cancelled start is taken back");
        // The process dies mid-action: the execution is started and its destructor never runs.
        let mut crashed = Box::pin(sim.execute(req.clone()));
        assert!(
            tokio::time::timeout(Duration::from_millis(100), crashed.as_mut())
                .await
                .is_err(),
            "still running when the process dies"
        );
        std::mem::forget(crashed);
        assert_eq!(count(&path), 1, "the start is on record before the delay");
        drop(sim);
        // That process is gone: its start is on record under its name, not this process's.
        Connection::open(&path)
            .expect("opens")
            .execute("UPDATE executions SET process = 'a-process-that-died'", [])
            .expect("names the dead process");
        let again = SimulatedExecutor::open(&path, cfg).expect("reopens");
        let report = again.execute(req).await;
        assert!(report.replayed, "{report:?}");
        assert_eq!(report.outcome.text(), INTERRUPTED);
        assert_eq!(count(&path), 1, "an interrupted key is not run again");
    }

    #[tokio::test]
    async fn failures_are_injected_and_timeouts_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sim.sqlite");
        let cfg = SimulationConfig {
            default_delay: Duration::from_millis(1),
            delays: [("services.start".to_string(), Duration::from_secs(60))].into(),
            failures: vec!["services.stop@edge2b:1".parse().expect("valid rule")],
            crash_after: None,
        };
        let sim = SimulatedExecutor::open(&path, cfg).expect("opens");
        let run = |attempt, host: &str| ActionRequest {
            key: IdempotencyKey::new("s", 1, 1, 0, host, attempt),
            action: stop(&format!("{host}.contoso.com")),
            timeout: Duration::from_secs(5),
        };
        assert!(sim.execute(run(1, "edge2a")).await.outcome.is_ok());
        let failed = sim.execute(run(1, "edge2b")).await;
        assert_eq!(
            failed.outcome,
            ActionOutcome::Failed {
                error: "simulated failure of services.stop on edge2b".into()
            }
        );
        assert!(
            sim.execute(run(2, "edge2b")).await.outcome.is_ok(),
            "fails once, then succeeds"
        );
        let slow = ActionRequest {
            key: IdempotencyKey::new("s", 1, 6, 0, "edge2a", 1),
            action: Action::ServicesStart {
                host: Fqdn::parse("edge2a.contoso.com").expect("valid"),
            },
            timeout: Duration::from_millis(30),
        };
        let timed_out = sim.execute(slow).await;
        assert_eq!(
            timed_out.outcome.text(),
            "timed out after 0.03s; the simulated action was stopped"
        );
    }

    #[test]
    fn failure_rules_parse() {
        assert_eq!(
            "services.start@Edge2B:2".parse::<FailureRule>(),
            Ok(FailureRule {
                action: "services.start".into(),
                host: Some("edge2b".into()),
                times: Some(2)
            })
        );
        assert!(
            "rm@edge2b"
                .parse::<FailureRule>()
                .expect_err("unknown")
                .starts_with("unknown action 'rm'")
        );
        assert!("verify:x".parse::<FailureRule>().is_err());
    }
}
