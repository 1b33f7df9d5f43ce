//! The agent's durable idempotency journal (SQLite, WAL, synchronous writes): a key is recorded
//! as `running` before its action starts and with its answer after it ends. A key found
//! `running` when the agent starts again is closed as interrupted and never run again.

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
}

pub struct Journal {
    conn: Mutex<Connection>,
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

/// The error reported for a key whose execution was cut short by an agent stop.
pub const INTERRUPTED: &str = "interrupted: the agent stopped while this action was running; it may or may not have \
     taken effect and was not run again (check the host, then retry with a new attempt)";

/// How long finished keys are kept: far longer than any run, its retries and restarts.
const RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

fn now_ms() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Journal {
    /// Opens (or creates) the journal at `path`, closes every key left `running` by a previous
    /// agent process as failed ([`INTERRUPTED`]), and forgets keys finished more than 30 days
    /// ago. Returns the journal and the interrupted keys.
    pub fn open(path: &Path) -> Result<(Journal, Vec<String>), JournalError> {
        let open = || -> rusqlite::Result<Connection> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let mut conn = open().map_err(|source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let tx = conn.transaction()?;
        let stale: Vec<(String, i64)> = {
            let mut stmt = tx.prepare("SELECT key, started_ms FROM calls WHERE state = 'running'")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let now = now_ms();
        for (key, started) in &stale {
            let answer = ActionAnswer::Failed {
                key: IdempotencyKey::parse(key).ok_or_else(|| JournalError::Corrupt { key: key.clone() })?,
                error: INTERRUPTED.to_string(),
                elapsed_ms: u64::try_from(now - started).unwrap_or(0),
                replayed: false,
                stdout_tail: String::new(),
                stderr_tail: String::new(),
            };
            tx.execute(
                "UPDATE calls SET state = 'done', answer = ?2, finished_ms = ?3 WHERE key = ?1",
                params![key, String::from_utf8_lossy(&answer.encode()), now],
            )?;
        }
        tx.execute(
            "DELETE FROM calls WHERE state = 'done' AND finished_ms < ?1",
            [now - RETENTION_MS],
        )?;
        tx.commit()?;
        Ok((
            Journal { conn: Mutex::new(conn) },
            stale.into_iter().map(|(k, _)| k).collect(),
        ))
    }

    /// Looks the key up and, if it is new, records it as running (durably) in the same
    /// transaction, so two calls with one key can never both get [`Begin::Fresh`].
    pub fn begin(&self, key: &IdempotencyKey, action: &Action) -> Result<Begin, JournalError> {
        let wanted = serde_json::to_string(action).expect("an action is plain data and always serializes");
        let mut conn = self.conn.lock().expect("the journal lock is never held across a panic");
        let tx = conn.transaction()?;
        let row: Option<(String, String, Option<String>, i64)> = tx
            .query_row(
                "SELECT action, state, answer, started_ms FROM calls WHERE key = ?1",
                [key.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let begin = match row {
            None => {
                tx.execute(
                    "INSERT INTO calls (key, action, state, started_ms) VALUES (?1, ?2, 'running', ?3)",
                    params![key.as_str(), wanted, now_ms()],
                )?;
                Begin::Fresh
            }
            Some((recorded, _, _, _)) if recorded != wanted => Begin::Conflict { recorded },
            Some((_, state, Some(answer), _)) if state == "done" => Begin::Done(
                ActionAnswer::decode(answer.as_bytes()).map_err(|_| JournalError::Corrupt { key: key.to_string() })?,
            ),
            Some((_, _, _, started)) => Begin::Running {
                since: Duration::from_millis(u64::try_from(now_ms() - started).unwrap_or(0)),
            },
        };
        tx.commit()?;
        Ok(begin)
    }

    /// Records the final answer of a key.
    pub fn finish(&self, key: &IdempotencyKey, answer: &ActionAnswer) -> Result<(), JournalError> {
        let conn = self.conn.lock().expect("the journal lock is never held across a panic");
        conn.execute(
            "UPDATE calls SET state = 'done', answer = ?2, finished_ms = ?3 WHERE key = ?1",
            params![key.as_str(), String::from_utf8_lossy(&answer.encode()), now_ms()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_runbook::names::Fqdn;

    fn stop() -> Action {
        Action::ServicesStop {
            host: Fqdn::parse("edge2a.contoso.com").expect("valid"),
        }
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

    #[test]
    fn keys_are_claimed_once_answers_replay_and_restarts_interrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.sqlite");
        let (j, stale) = Journal::open(&path).expect("opens");
        assert!(stale.is_empty());
        let k1 = IdempotencyKey::parse("s/r1/s2/a1-edge2a/t1").expect("valid");
        let k2 = IdempotencyKey::parse("s/r1/s2/a1-edge2a/t2").expect("valid");
        assert_eq!(j.begin(&k1, &stop()).expect("begin"), Begin::Fresh);
        assert!(matches!(j.begin(&k1, &stop()).expect("begin"), Begin::Running { .. }));
        let other = Action::ServicesStart {
            host: Fqdn::parse("edge2a.contoso.com").expect("valid"),
        };
        assert!(matches!(j.begin(&k1, &other).expect("begin"), Begin::Conflict { .. }));
        j.finish(&k1, &failed(&k1)).expect("finish");
        assert_eq!(j.begin(&k1, &stop()).expect("begin"), Begin::Done(failed(&k1)));
        assert_eq!(j.begin(&k2, &stop()).expect("begin"), Begin::Fresh);
        drop(j);

        let (j, stale) = Journal::open(&path).expect("reopens");
        assert_eq!(stale, vec![k2.to_string()]);
        match j.begin(&k2, &stop()).expect("begin") {
            Begin::Done(ActionAnswer::Failed { error, .. }) => assert_eq!(error, INTERRUPTED),
            other => panic!("expected the interrupted answer, got {other:?}"),
        }
        assert_eq!(
            j.begin(&k1, &stop()).expect("begin"),
            Begin::Done(failed(&k1)),
            "finished keys survive a restart"
        );
        drop(j);

        // Keys finished long ago are forgotten at the next start.
        let conn = Connection::open(&path).expect("opens");
        conn.execute(
            "UPDATE calls SET finished_ms = finished_ms - ?1 WHERE key = ?2",
            params![RETENTION_MS + 1000, k1.as_str()],
        )
        .expect("ages a key");
        drop(conn);
        let (j, _) = Journal::open(&path).expect("reopens");
        assert_eq!(j.begin(&k1, &stop()).expect("begin"), Begin::Fresh);
        assert!(
            matches!(j.begin(&k2, &stop()).expect("begin"), Begin::Done(_)),
            "recent keys stay"
        );
    }
}
