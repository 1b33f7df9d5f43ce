//! The agent's durable idempotency journal (SQLite, WAL): a key is recorded as `running` before
//! its action starts, with the process group (and boot) of its executor as soon as that exists,
//! and with its answer after it ends. A key found `running` when the agent starts again is
//! closed as interrupted and never run again; its process record lets the new agent end what
//! the old one left behind before it answers.
//!
//! One flush to disk per action, before it starts. Each write says how durable it must be
//! ([`Durability`]): the writes that decide whether a key may ever run (a key claimed as
//! `running`, a key retired) are flushed before the agent acts on them; the process record and
//! the answer are only ordered (written to the log, which the operating system keeps, and
//! flushed with the next flushed write). What that costs after a crash is argued at
//! [`Durability::Ordered`]: never a second execution.
//!
//! Time is passed in (milliseconds since the epoch), and retention never trusts the wall clock
//! alone: finished keys are forgotten only when they are both beyond the newest
//! [`Retention::keep_last`] keys and older than [`Retention::max_age`] counted back from the
//! newest row, so a clock that jumps forward cannot make a restarted agent forget every key.

use baton_runbook::IdempotencyKey;
use baton_runbook::catalog::Action;
use baton_runbook::protocol::ActionAnswer;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal {}: {source}", path.display())]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("the journal failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("the journal holds an unreadable answer for key {key}")]
    Corrupt { key: String },
}

/// What the journal knows of a key when a call arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Never seen: it is now recorded as running, and the caller must execute it.
    Fresh,
    /// Recorded as running since `since`; do not execute.
    Running { since: Duration },
    /// Executed before: this is the recorded answer.
    Done(ActionAnswer),
    /// The key was used before for another action (shown as recorded).
    Conflict { recorded: String },
    /// Another key of the same kind of action is running on this host; nothing was recorded.
    Busy { key: String, since: Duration },
}

/// What the journal knows of a key when the bot asks about it without running anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Never received; it is now recorded as retired, so a late delivery cannot run it.
    Retired(ActionAnswer),
    Running {
        since: Duration,
    },
    Done(ActionAnswer),
    Conflict {
        recorded: String,
    },
}

/// The executor process of a key that was running when an agent stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub key: String,
    /// The process group (Unix) or process id (Windows) of its executor, if it had started.
    pub process: Option<i64>,
    /// The boot the process ran in (Linux's boot id); a process of another boot is long gone.
    pub boot: Option<String>,
}

/// How long finished keys are kept (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: u32,
    pub max_age: Duration,
}

impl Default for Retention {
    /// The newest 10,000 keys, and any key younger than 30 days: far more than any run, its
    /// retries and restarts.
    fn default() -> Retention {
        Retention {
            keep_last: 10_000,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

pub struct Journal {
    conn: Mutex<Connection>,
}

/// One key's row: the action as recorded (JSON), its state, its answer once done, and when it
/// started.
type Row = (String, String, Option<String>, i64);

/// How durable one write must be when it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// On disk (`synchronous = FULL`: the log is flushed at the commit). For the writes that
    /// decide whether a key may run: a claim ([`Journal::begin`]), which must survive any crash
    /// before the executor starts, or the restarted agent would not know the key ran and could
    /// run it again; and a retirement ([`Journal::lookup`]), which must survive so that a late
    /// copy of the call never runs after the bot has moved on.
    Flushed,
    /// In the log, in order, not yet flushed (`synchronous = NORMAL` in WAL mode). The write is
    /// in the operating system's page cache when it returns: a crash of the agent process loses
    /// nothing; only a crash of the operating system (or a power cut) can lose it, and then only
    /// together with every later unflushed write, since WAL frames are written in order and the
    /// next flushed commit flushes all of them. Used for:
    /// - the executor's process record ([`Journal::record_process`]): it lets a restarted agent
    ///   end what an agent process left behind. A crash that loses it is a crash of the
    ///   operating system, which ends every process of that boot anyway (that is why the boot is
    ///   recorded); the key itself is still `running` on disk, so the restarted agent closes it
    ///   as interrupted and never runs it again.
    /// - the answer ([`Journal::finish`]): if an operating-system crash loses it, the key is
    ///   still `running` on disk and is closed as interrupted at the restart, not run again. The
    ///   bot had the answer if the exchange completed (and journals it on its side); a bot that
    ///   asks again after such a crash is told the outcome is unknown, never given a second run.
    Ordered,
}

impl Durability {
    fn apply(self, conn: &Connection) -> rusqlite::Result<()> {
        let level = match self {
            Durability::Flushed => "FULL",
            Durability::Ordered => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", level)
    }
}

const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = FULL;
    CREATE TABLE IF NOT EXISTS calls (
        key TEXT PRIMARY KEY,
        action TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('running', 'done')),
        answer TEXT,
        started_ms INTEGER NOT NULL,
        finished_ms INTEGER
    );
";

/// Columns added after the first release, with their types.
const ADDED_COLUMNS: &[(&str, &str)] = &[("kind", "TEXT"), ("process", "INTEGER"), ("boot", "TEXT")];

/// The error reported for a key whose execution was cut short by an agent stop.
pub const INTERRUPTED: &str = "interrupted: the agent stopped while this action was running; it may or may not have \
     taken effect and was not run again (check the host, then retry with a new attempt)";

/// The error recorded for a key the bot asked about before the agent had received it.
pub const RETIRED: &str = "never received: the bot asked about this key before it arrived, so it is retired and will \
     never run";

/// The wall clock in milliseconds since the epoch, for callers outside tests.
pub fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn since(now: i64, started: i64) -> Duration {
    Duration::from_millis(u64::try_from(now - started).unwrap_or(0))
}

fn failed(key: &str, error: &str, elapsed_ms: u64) -> Result<ActionAnswer, JournalError> {
    Ok(ActionAnswer::Failed {
        key: IdempotencyKey::parse(key).ok_or_else(|| JournalError::Corrupt { key: key.to_string() })?,
        error: error.to_string(),
        elapsed_ms,
        replayed: false,
        stdout_tail: String::new(),
        stderr_tail: String::new(),
    })
}

fn encoded(answer: &ActionAnswer) -> String {
    String::from_utf8_lossy(&answer.encode()).into_owned()
}

impl Journal {
    /// Opens (or creates) the journal at `path` at time `now`, closes every key left `running`
    /// by a previous agent process as failed ([`INTERRUPTED`]), and forgets finished keys as
    /// [`Retention`] says. Returns the journal and the interrupted keys with their processes.
    pub fn open(path: &Path, now: i64, retention: Retention) -> Result<(Journal, Vec<Interrupted>), JournalError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            let present: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info('calls')")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for (column, kind) in ADDED_COLUMNS {
                if !present.iter().any(|p| p == column) {
                    conn.execute_batch(&format!("ALTER TABLE calls ADD COLUMN {column} {kind}"))?;
                }
            }
            Ok(conn)
        };
        let mut conn = open().map_err(|source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let tx = conn.transaction()?;
        let stale: Vec<(String, i64, Option<i64>, Option<String>)> = {
            let mut stmt = tx.prepare("SELECT key, started_ms, process, boot FROM calls WHERE state = 'running'")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?
        };
        for (key, started, _, _) in &stale {
            let answer = failed(key, INTERRUPTED, u64::try_from(now - started).unwrap_or(0))?;
            // The time it ended is not known; its start keeps the newest row's time honest.
            tx.execute(
                "UPDATE calls SET state = 'done', answer = ?2, finished_ms = ?3 WHERE key = ?1",
                params![key, encoded(&answer), started],
            )?;
        }
        let max_age = i64::try_from(retention.max_age.as_millis()).unwrap_or(i64::MAX);
        tx.execute(
            "DELETE FROM calls WHERE state = 'done'
               AND rowid <= (SELECT MAX(rowid) FROM calls) - ?1
               AND COALESCE(finished_ms, started_ms)
                   < (SELECT MAX(MAX(started_ms, COALESCE(finished_ms, started_ms))) FROM calls) - ?2",
            params![retention.keep_last, max_age],
        )?;
        tx.commit()?;
        Ok((
            Journal { conn: Mutex::new(conn) },
            stale
                .into_iter()
                .map(|(key, _, process, boot)| Interrupted { key, process, boot })
                .collect(),
        ))
    }

    /// Looks the key up and, if it is new, records it as running (durably) in the same
    /// transaction, so two calls with one key can never both get [`Begin::Fresh`]. A new key of
    /// an action that changes the host is refused ([`Begin::Busy`]) while another key of the same
    /// kind is running.
    pub fn begin(&self, key: &IdempotencyKey, action: &Action, now: i64) -> Result<Begin, JournalError> {
        let wanted = serde_json::to_string(action).expect("an action is plain data and always serializes");
        let mut conn = self.conn.lock().expect("the journal lock is never held across a panic");
        Durability::Flushed.apply(&conn)?;
        let tx = conn.transaction()?;
        let begin = match Self::row(&tx, key)? {
            None => {
                let busy: Option<(String, i64)> = if action.kind().changes_state() {
                    tx.query_row(
                        "SELECT key, started_ms FROM calls WHERE state = 'running' AND kind = ?1 LIMIT 1",
                        [action.id()],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?
                } else {
                    None
                };
                match busy {
                    Some((other, started)) => Begin::Busy {
                        key: other,
                        since: since(now, started),
                    },
                    None => {
                        tx.execute(
                            "INSERT INTO calls (key, action, kind, state, started_ms) VALUES (?1, ?2, ?3, 'running', ?4)",
                            params![key.as_str(), wanted, action.id(), now],
                        )?;
                        Begin::Fresh
                    }
                }
            }
            Some((recorded, _, _, _)) if recorded != wanted => Begin::Conflict { recorded },
            Some((_, state, Some(answer), _)) if state == "done" => Begin::Done(
                ActionAnswer::decode(answer.as_bytes()).map_err(|_| JournalError::Corrupt { key: key.to_string() })?,
            ),
            Some((_, _, _, started)) => Begin::Running {
                since: since(now, started),
            },
        };
        tx.commit()?;
        Ok(begin)
    }

    /// What is known of `key`, running nothing. A key never received is recorded as retired
    /// ([`RETIRED`]) in the same transaction, so that a copy of its call still on its way can
    /// never run it after the bot has moved on.
    pub fn lookup(&self, key: &IdempotencyKey, action: &Action, now: i64) -> Result<Lookup, JournalError> {
        let wanted = serde_json::to_string(action).expect("an action is plain data and always serializes");
        let mut conn = self.conn.lock().expect("the journal lock is never held across a panic");
        Durability::Flushed.apply(&conn)?;
        let tx = conn.transaction()?;
        let lookup = match Self::row(&tx, key)? {
            None => {
                let answer = failed(key.as_str(), RETIRED, 0)?;
                tx.execute(
                    "INSERT INTO calls (key, action, kind, state, answer, started_ms, finished_ms)
                     VALUES (?1, ?2, ?3, 'done', ?4, ?5, ?5)",
                    params![key.as_str(), wanted, action.id(), encoded(&answer), now],
                )?;
                Lookup::Retired(answer)
            }
            Some((recorded, _, _, _)) if recorded != wanted => Lookup::Conflict { recorded },
            Some((_, state, Some(answer), _)) if state == "done" => Lookup::Done(
                ActionAnswer::decode(answer.as_bytes()).map_err(|_| JournalError::Corrupt { key: key.to_string() })?,
            ),
            Some((_, _, _, started)) => Lookup::Running {
                since: since(now, started),
            },
        };
        tx.commit()?;
        Ok(lookup)
    }

    fn row(tx: &rusqlite::Transaction<'_>, key: &IdempotencyKey) -> rusqlite::Result<Option<Row>> {
        tx.query_row(
            "SELECT action, state, answer, started_ms FROM calls WHERE key = ?1",
            [key.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
    }

    /// Records the executor process of a running key (its process group on Unix, with the boot
    /// it runs in), so that a restarted agent can find it. Ordered, not flushed (see
    /// [`Durability::Ordered`]).
    pub fn record_process(&self, key: &IdempotencyKey, process: i64, boot: Option<&str>) -> Result<(), JournalError> {
        let conn = self.conn.lock().expect("the journal lock is never held across a panic");
        Durability::Ordered.apply(&conn)?;
        conn.execute(
            "UPDATE calls SET process = ?2, boot = ?3 WHERE key = ?1 AND state = 'running'",
            params![key.as_str(), process, boot],
        )?;
        Ok(())
    }

    /// Records the final answer of a key. Ordered, not flushed (see [`Durability::Ordered`]).
    pub fn finish(&self, key: &IdempotencyKey, answer: &ActionAnswer, now: i64) -> Result<(), JournalError> {
        let conn = self.conn.lock().expect("the journal lock is never held across a panic");
        Durability::Ordered.apply(&conn)?;
        conn.execute(
            "UPDATE calls SET state = 'done', answer = ?2, finished_ms = ?3 WHERE key = ?1",
            params![key.as_str(), encoded(answer), now],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_runbook::names::Fqdn;

    const T0: i64 = 1_800_000_000_000;
    const DAY: i64 = 24 * 3600 * 1000;

    fn edge() -> Fqdn {
        Fqdn::parse("edge2a.contoso.com").expect("valid")
    }

    fn stop() -> Action {
        Action::ServicesStop { host: edge() }
    }

    fn k(s: &str) -> IdempotencyKey {
        IdempotencyKey::parse(s).expect("valid")
    }

    fn failed(key: &IdempotencyKey) -> ActionAnswer {
        ActionAnswer::Failed {
            key: key.clone(),
            error: "boom".into(),
            elapsed_ms: 3,
            replayed: false,
            stdout_tail: String::new(),
            stderr_tail: "e".into(),
        }
    }

    fn open(path: &Path, now: i64) -> (Journal, Vec<Interrupted>) {
        Journal::open(path, now, Retention::default()).expect("opens")
    }

    #[test]
    fn keys_are_claimed_once_answers_replay_and_restarts_interrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sqlite");
        let (j, stale) = open(&path, T0);
        assert!(stale.is_empty());
        let k1 = k("s/r1/s2/a1-edge2a/t1");
        let k2 = k("s/r1/s2/a1-edge2a/t2");
        assert_eq!(j.begin(&k1, &stop(), T0).expect("begin"), Begin::Fresh);
        assert!(matches!(
            j.begin(&k1, &stop(), T0).expect("begin"),
            Begin::Running { .. }
        ));
        let other = Action::ServicesStart { host: edge() };
        assert!(matches!(
            j.begin(&k1, &other, T0).expect("begin"),
            Begin::Conflict { .. }
        ));
        j.finish(&k1, &failed(&k1), T0 + 5).expect("finish");
        assert_eq!(j.begin(&k1, &stop(), T0).expect("begin"), Begin::Done(failed(&k1)));
        assert_eq!(j.begin(&k2, &stop(), T0 + 10).expect("begin"), Begin::Fresh);
        j.record_process(&k2, 4242, Some("boot-1"))
            .expect("records the process");
        drop(j);

        let (j, stale) = open(&path, T0 + 1000);
        assert_eq!(
            stale,
            [Interrupted {
                key: k2.to_string(),
                process: Some(4242),
                boot: Some("boot-1".into())
            }]
        );
        match j.begin(&k2, &stop(), T0 + 1000).expect("begin") {
            Begin::Done(ActionAnswer::Failed { error, .. }) => assert_eq!(error, INTERRUPTED),
            other => panic!("expected the interrupted answer, got {other:?}"),
        }
        assert_eq!(
            j.begin(&k1, &stop(), T0 + 1000).expect("begin"),
            Begin::Done(failed(&k1)),
            "finished keys survive a restart"
        );
    }

    /// The `synchronous` level the journal's connection holds now (2 FULL, 1 NORMAL).
    fn synchronous(j: &Journal) -> i64 {
        let conn = j.conn.lock().expect("not poisoned");
        conn.query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("readable")
    }

    #[test]
    fn claims_and_retirements_are_flushed_and_process_records_and_answers_only_ordered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sqlite");
        let (j, _) = open(&path, T0);
        let (t1, t2) = (k("s/r1/s2/a1-edge2a/t1"), k("s/r1/s2/a1-edge2a/t2"));
        assert_eq!(j.begin(&t1, &stop(), T0).expect("begin"), Begin::Fresh);
        assert_eq!(
            synchronous(&j),
            2,
            "a claim commits with FULL: on disk before the executor starts"
        );
        j.record_process(&t1, 4242, Some("boot-1")).expect("records");
        assert_eq!(synchronous(&j), 1, "the process record is only ordered");
        j.finish(&t1, &failed(&t1), T0 + 5).expect("finish");
        assert_eq!(synchronous(&j), 1, "the answer is only ordered");
        assert!(matches!(
            j.lookup(&t2, &stop(), T0).expect("lookup"),
            Lookup::Retired(_)
        ));
        assert_eq!(synchronous(&j), 2, "a retirement commits with FULL");
        // Ordered writes are still there for the next agent process.
        drop(j);
        let (j, stale) = open(&path, T0 + 10);
        assert!(stale.is_empty());
        assert_eq!(j.begin(&t1, &stop(), T0 + 10).expect("begin"), Begin::Done(failed(&t1)));
    }

    #[test]
    fn one_changing_action_of_a_kind_runs_at_a_time_and_looks_run_side_by_side() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = open(&dir.path().join("journal.sqlite"), T0);
        let (t1, t2) = (k("s/r1/s2/a1-edge2a/t1"), k("s/r1/s2/a1-edge2a/t2"));
        assert_eq!(j.begin(&t1, &stop(), T0).expect("begin"), Begin::Fresh);
        assert_eq!(
            j.begin(&t2, &stop(), T0 + 2000).expect("begin"),
            Begin::Busy {
                key: t1.to_string(),
                since: Duration::from_secs(2)
            }
        );
        // Another kind is not held up; nor are looks.
        let start = Action::ServicesStart { host: edge() };
        assert_eq!(
            j.begin(&k("s/r1/s7/a1-edge2a/t1"), &start, T0).expect("begin"),
            Begin::Fresh
        );
        let look = Action::ServicesStatus { host: edge() };
        assert_eq!(j.begin(&k("read/1"), &look, T0).expect("begin"), Begin::Fresh);
        assert_eq!(j.begin(&k("read/2"), &look, T0).expect("begin"), Begin::Fresh);
        // Once the first has ended, the second may run.
        j.finish(&t1, &failed(&t1), T0 + 3000).expect("finish");
        assert_eq!(j.begin(&t2, &stop(), T0 + 3000).expect("begin"), Begin::Fresh);
    }

    #[test]
    fn a_lookup_runs_nothing_and_retires_a_key_never_received() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (j, _) = open(&dir.path().join("journal.sqlite"), T0);
        let (t1, t2) = (k("s/r1/s2/a1-edge2a/t1"), k("s/r1/s2/a1-edge2a/t2"));
        assert_eq!(j.begin(&t1, &stop(), T0).expect("begin"), Begin::Fresh);
        assert_eq!(
            j.lookup(&t1, &stop(), T0 + 1500).expect("lookup"),
            Lookup::Running {
                since: Duration::from_millis(1500)
            }
        );
        j.finish(&t1, &failed(&t1), T0 + 2000).expect("finish");
        assert_eq!(j.lookup(&t1, &stop(), T0).expect("lookup"), Lookup::Done(failed(&t1)));
        let Lookup::Retired(retired) = j.lookup(&t2, &stop(), T0).expect("lookup") else {
            panic!("an unseen key is retired");
        };
        assert!(matches!(&retired, ActionAnswer::Failed { error, .. } if error == RETIRED));
        // The call arriving late finds the key retired and runs nothing.
        assert_eq!(j.begin(&t2, &stop(), T0).expect("begin"), Begin::Done(retired));
        let other = Action::ServicesStart { host: edge() };
        assert!(matches!(
            j.lookup(&t1, &other, T0).expect("lookup"),
            Lookup::Conflict { .. }
        ));
    }

    #[test]
    fn retention_counts_back_from_the_newest_row_so_a_clock_jump_forgets_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sqlite");
        let keep_two = Retention {
            keep_last: 2,
            max_age: Duration::from_millis(u64::try_from(30 * DAY).expect("positive")),
        };
        let (j, _) = Journal::open(&path, T0, keep_two).expect("opens");
        let keys: Vec<IdempotencyKey> = (1..=4).map(|i| k(&format!("s/r{i}/s2/a1-edge2a/t1"))).collect();
        for (i, key) in keys.iter().enumerate() {
            let at = T0 + i64::try_from(i).expect("small") * 1000;
            assert_eq!(j.begin(key, &stop(), at).expect("begin"), Begin::Fresh);
            j.finish(key, &failed(key), at + 10).expect("finish");
        }
        // The key a bot would resume is running when the agent stops.
        let resumed = k("s/r5/s2/a1-edge2a/t1");
        assert_eq!(j.begin(&resumed, &stop(), T0 + 5000).expect("begin"), Begin::Fresh);
        drop(j);

        // The clock jumps a year forward: every key is 'older than 30 days' by the wall clock,
        // yet the newest row is recent, so nothing is forgotten and nothing runs again.
        let jumped = T0 + 365 * DAY;
        let (j, stale) = Journal::open(&path, jumped, keep_two).expect("reopens");
        assert_eq!(stale.len(), 1);
        for key in keys.iter().chain([&resumed]) {
            assert!(
                matches!(j.begin(key, &stop(), jumped).expect("begin"), Begin::Done(_)),
                "{key} is remembered after the clock jump"
            );
        }
        // Keys made after the jump make the old ones old; beyond the newest two they go.
        for i in 6..=7 {
            let key = k(&format!("s/r{i}/s2/a1-edge2a/t1"));
            assert_eq!(j.begin(&key, &stop(), jumped).expect("begin"), Begin::Fresh);
            j.finish(&key, &failed(&key), jumped + 10).expect("finish");
        }
        drop(j);
        let (j, _) = Journal::open(&path, jumped, keep_two).expect("reopens");
        assert_eq!(
            j.begin(&keys[0], &stop(), jumped).expect("begin"),
            Begin::Fresh,
            "aged out"
        );
        for i in 6..=7 {
            let key = k(&format!("s/r{i}/s2/a1-edge2a/t1"));
            assert!(
                matches!(j.begin(&key, &stop(), jumped).expect("begin"), Begin::Done(_)),
                "{key}"
            );
        }
    }
}
