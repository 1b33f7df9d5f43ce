//! The SQLite store: one file in WAL mode with `synchronous = FULL`, so a committed batch
//! survives a crash or a power cut. The journal is append-only (triggers refuse UPDATE and
//! DELETE); each row carries a MAC over the one before, and each outbox row a MAC of its own,
//! under a key kept outside the file (`chain.rs`), with the head anchored in a checkpoint file.

use super::chain::{Chain, ChainKey, ChainRow, GENESIS};
use super::{Adopted, Batch, ChainReport, Handled, JournalRow, RawEvent, Store, StoreError};
use crate::chat::{MessageRef, RoomRef};
use crate::event::{Event, Recorded};
use crate::outbox::Queued;
use crate::run::RunId;
use baton_policies::Platform;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCHEMA_VERSION: i64 = 3;

/// The most SQLite keeps of the file in Baton's memory, in KiB (its default is about 2 MiB).
/// The cache fills as the journal grows and never gives pages back, so without this bound a
/// long-lived bot grows with every run until the default is reached (0.15-0.4 MiB per run of
/// 100 servers in `bot_fanout`). A commit touches a few dozen pages (the tables' and indexes'
/// last leaves and their parents), which fit; anything older is read through the operating
/// system's cache.
const CACHE_KIB: i64 = 256;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        run INTEGER,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_run ON events (run);
    CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the journal is append-only'); END;
    CREATE TABLE IF NOT EXISTS runs (
        id INTEGER PRIMARY KEY,
        phase TEXT NOT NULL,
        requester TEXT NOT NULL,
        from_pool TEXT,
        to_pool TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        run INTEGER,
        text TEXT NOT NULL,
        card TEXT,
        delivered_at TEXT,
        dropped TEXT
    );
    CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (platform, id) WHERE delivered_at IS NULL;
";

/// Schema 2: the outbox gets lanes (lines and card updates) and a structured body, runs' cards
/// keep their platform reference per room, and handled message ids are keyed by sender.
const SCHEMA_2: &str = "
    ALTER TABLE outbox ADD COLUMN lane TEXT NOT NULL DEFAULT 'line';
    ALTER TABLE outbox ADD COLUMN body TEXT;
    CREATE TABLE cards (
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        run INTEGER NOT NULL,
        reference TEXT NOT NULL,
        PRIMARY KEY (platform, room, run)
    );
    DROP TABLE IF EXISTS handled;
    CREATE TABLE handled (
        platform TEXT NOT NULL,
        room TEXT NOT NULL,
        sender TEXT NOT NULL,
        message_id TEXT NOT NULL,
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        PRIMARY KEY (platform, room, sender, message_id)
    );
    CREATE INDEX handled_at ON handled (at);
";

/// Schema 3: outbox rows carry a MAC (see `chain.rs`); rows from before have none and are
/// not posted until `baton store seal` adopts them.
const SCHEMA_3: &str = "ALTER TABLE outbox ADD COLUMN mac TEXT;";

/// The embedded default store.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    store_id: String,
    chain: Chain,
    /// Held for the store's lifetime: one Baton per store (see [`SqliteStore::open`]).
    _lock: Option<std::fs::File>,
}

/// The lock file beside the store: `baton.sqlite` -> `baton.sqlite.lock`.
fn lock_path(path: &Path) -> PathBuf {
    super::chain::beside(path, ".lock")
}

/// Takes the store's exclusive lock, or says who holds it.
fn lock(path: &Path) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let lock_file = lock_path(path);
    let shown = lock_file.display().to_string();
    let io = |source| StoreError::Lock {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_file)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::InUse {
                path: path.display().to_string(),
                holder: holder.trim().chars().take(100).collect(),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    // Say who holds it, for the next one that tries.
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    writeln!(file, "pid {} {host}", std::process::id()).map_err(io)?;
    Ok(file)
}

/// What a batch is written with: the store's chain and id, and the head it leaves (for the
/// checkpoint once the transaction commits).
struct Writer<'a> {
    chain: &'a Chain,
    store_id: &'a str,
    path: &'a str,
    head: Option<(i64, String)>,
}

/// Makes the store's folder if it is missing.
pub(super) fn make_folder(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
            path: dir.display().to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Writes one batch within `tx` (not committed): its events on the chain, its outbox rows
/// (returned with their ids, each MACed), its runs and its handled message.
fn write_batch(tx: &rusqlite::Transaction<'_>, batch: &Batch, w: &mut Writer<'_>) -> Result<Vec<Queued>, StoreError> {
    let path = w.path;
    let err = |source| StoreError::Sqlite {
        path: path.to_string(),
        source,
    };
    let mut queued = Vec::with_capacity(batch.rows.len());
    {
        // A batch without events (a read-only command's reply) does not touch the chain.
        let (mut seq, mut prev): (i64, String) = if batch.events.is_empty() {
            (0, String::new())
        } else {
            tx.prepare_cached("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")
                .map_err(err)?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(err)?
                .unwrap_or((0, GENESIS.to_string()))
        };
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (seq, at, run, kind, body, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(err)?;
        for r in &batch.events {
            seq += 1;
            let at = millis(r.at);
            let body = serde_json::to_string(&r.event).expect("events are plain data and always serialize");
            let kind = r.event.kind();
            let hash = w.chain.link(&prev, seq, &at, kind, &body);
            insert
                .execute(params![
                    seq,
                    at,
                    r.event.run().map(|id| id.0 as i64),
                    kind,
                    body,
                    prev,
                    hash
                ])
                .map_err(err)?;
            prev = hash;
        }
        if !batch.events.is_empty() {
            w.head = Some((seq, prev));
        }
        let mut out = tx
            .prepare_cached(
                "INSERT INTO outbox (platform, room, run, text, card, lane, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(err)?;
        for row in &batch.rows {
            let card = row
                .card
                .as_ref()
                .map(|c| serde_json::to_string(c).expect("a card is plain data and always serializes"));
            let body = serde_json::to_string(&row.body).expect("a message is plain data and always serializes");
            out.execute(params![
                row.room.platform.as_str(),
                row.room.id,
                row.run.map(|id| id.0 as i64),
                row.body.plain(),
                card,
                row.lane.as_str(),
                body
            ])
            .map_err(err)?;
            let id = tx.last_insert_rowid();
            tx.prepare_cached("UPDATE outbox SET mac = ?2 WHERE id = ?1")
                .map_err(err)?
                .execute(params![id, w.chain.outbox_mac(w.store_id, id, row)])
                .map_err(err)?;
            queued.push(Queued { id, row: row.clone() });
        }
        let mut runs = tx
            .prepare_cached(
                "INSERT INTO runs (id, phase, requester, from_pool, to_pool, requested_at, finished_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, finished_at = excluded.finished_at,
                         from_pool = excluded.from_pool, to_pool = excluded.to_pool",
            )
            .map_err(err)?;
        for r in &batch.runs {
            runs.execute(params![
                r.id.0 as i64,
                r.phase,
                r.requester,
                r.from_pool,
                r.to_pool,
                r.requested_at,
                r.finished_at
            ])
            .map_err(err)?;
        }
        if let Some(h) = &batch.handled {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO handled (platform, room, sender, message_id) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(err)?
            .execute(params![h.room.platform.as_str(), h.room.id, h.sender, h.message_id])
            .map_err(err)?;
        }
    }
    Ok(queued)
}

impl SqliteStore {
    /// [`SqliteStore::open_with`] the default chain: the key and the checkpoint beside the
    /// store (the key made on first use).
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, Chain::beside(path)?)
    }

    /// Opens (or creates) the store at `path` for a Baton that acts on it: takes the store's
    /// exclusive lock (a second `baton run` on the same store is refused: both would handle the
    /// same commands and dispatch the same keys), and brings the schema up to date. A new store
    /// is sealed with the chain's key.
    pub fn open_with(path: &Path, chain: Chain) -> Result<SqliteStore, StoreError> {
        make_folder(path)?;
        let lock = lock(path)?;
        let mut store = SqliteStore::open_unlocked(path, chain)?;
        store._lock = Some(lock);
        let empty: bool = store
            .conn
            .query_row("SELECT NOT EXISTS (SELECT 1 FROM events)", [], |r| r.get(0))
            .map_err(store.err())?;
        if empty && store.chain_seal()?.is_none() {
            let seal = store.chain.seal(&store.store_id, 0, GENESIS);
            store
                .conn
                .execute("INSERT INTO meta (key, value) VALUES ('chain_seal', ?1)", [&seal])
                .map_err(store.err())?;
        }
        Ok(store)
    }

    /// [`SqliteStore::open_read_only_with`] the key and checkpoint beside the store (the key
    /// must exist: reading never makes one).
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let key = ChainKey::load(&super::chain::beside(path, ".key"))?;
        let chain = Chain::new(key, Some(super::chain::beside(path, ".head")), true);
        SqliteStore::open_read_only_with(path, chain)
    }

    /// Opens an existing store to read it (`baton audit`), beside a running Baton: no lock, no
    /// schema change.
    pub fn open_read_only_with(path: &Path, chain: Chain) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        let store_id: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0))
            .map_err(err)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            store_id,
            chain,
            _lock: None,
        })
    }

    fn open_unlocked(path: &Path, chain: Chain) -> Result<SqliteStore, StoreError> {
        let shown = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        // A negative size is in KiB.
        conn.pragma_update(None, "cache_size", -CACHE_KIB).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let found = version.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: shown,
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            // A new store, or an older one: the handled ids of schema 1 lack their sender and
            // are dropped (they only guard against a replayed command, and Baton asks rooms for
            // no history); schema 3 adds the outbox's MACs.
            let tx = conn.unchecked_transaction().map_err(err)?;
            if found < 2 {
                tx.execute_batch(SCHEMA_2).map_err(err)?;
            }
            tx.execute_batch(SCHEMA_3).map_err(err)?;
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?1)",
                [SCHEMA_VERSION.to_string()],
            )
            .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        let store_id: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| r.get(0))
            .optional()
            .map_err(err)?;
        let store_id = match store_id {
            Some(id) => id,
            None => {
                let id = new_store_id(path);
                conn.execute("INSERT INTO meta (key, value) VALUES ('store_id', ?1)", [&id])
                    .map_err(err)?;
                id
            }
        };
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            store_id,
            chain,
            _lock: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn chain_rows(&self) -> Result<Vec<ChainRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, kind, body, prev_hash, hash FROM events ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn seal_value(&self) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'chain_seal'", [], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Every undelivered outbox row with its MAC as stored, oldest first.
    fn outbox_rows(&self) -> Result<Vec<(Queued, Option<String>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, platform, room, run, text, card, lane, body, mac FROM outbox
                 WHERE delivered_at IS NULL ORDER BY id",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let row = super::stored_row(
                    &r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    &r.get::<_, String>(6)?,
                    r.get(7)?,
                );
                Ok((Queued { id: r.get(0)?, row }, r.get::<_, Option<String>>(8)?))
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Writes a group of batches in one transaction, then notes the head for the checkpoint
    /// (written by [`Store::settle`], after the answer).
    fn write_all(&mut self, batches: &[Batch]) -> Result<Vec<Vec<Queued>>, StoreError> {
        let path = self.path.display().to_string();
        let tx = self.conn.transaction().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let mut w = Writer {
            chain: &self.chain,
            store_id: &self.store_id,
            path: &path,
            head: None,
        };
        let mut all = Vec::with_capacity(batches.len());
        for batch in batches {
            all.push(write_batch(&tx, batch, &mut w)?);
        }
        let head = w.head.take();
        tx.commit().map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            source,
        })?;
        if let Some((seq, hash)) = head {
            let ended = batches.iter().any(Batch::ends_a_run);
            self.chain.anchor_later(&self.store_id, seq, &hash, ended);
        }
        Ok(all)
    }
}

/// A store id unique enough to keep idempotency keys of different stores apart at an agent:
/// a hash of the path, the time and the process id.
pub(super) fn new_store_id(path: &Path) -> String {
    let mut h = Sha256::new();
    h.update(path.display().to_string().as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    hex::encode(&h.finalize()[..6])
}

pub(super) fn platform_of(s: &str) -> Platform {
    Platform::parse(s).unwrap_or(Platform::Console)
}

pub(super) fn millis(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Store for SqliteStore {
    fn settle(&mut self) {
        self.chain.settle();
    }

    fn store_id(&self) -> &str {
        &self.store_id
    }

    fn load(&mut self) -> Result<Vec<Recorded>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, body FROM events ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, body) = row.map_err(self.err())?;
            let at = chrono::DateTime::parse_from_rfc3339(&at)
                .map_err(|e| StoreError::Corrupt {
                    seq,
                    why: format!("bad time: {e}"),
                })?
                .with_timezone(&chrono::Utc);
            let event: Event = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                seq,
                why: e.to_string(),
            })?;
            out.push(Recorded { at, event });
        }
        Ok(out)
    }

    fn commit(&mut self, batch: &Batch) -> Result<Vec<Queued>, StoreError> {
        Ok(self.write_all(std::slice::from_ref(batch))?.pop().unwrap_or_default())
    }

    fn commit_all(&mut self, batches: &[Batch]) -> Vec<Result<Vec<Queued>, StoreError>> {
        if batches.iter().all(Batch::is_empty) {
            return batches.iter().map(|_| Ok(Vec::new())).collect();
        }
        match self.write_all(batches) {
            Ok(all) => all.into_iter().map(Ok).collect(),
            Err(e) => super::group_failed(e, batches.len()),
        }
    }

    fn handled_since(&mut self, since: DateTime<Utc>) -> Result<Vec<Handled>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT platform, room, sender, message_id FROM handled WHERE at >= ?1 ORDER BY at")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([millis(since)], |r| {
                Ok(Handled {
                    room: RoomRef::new(platform_of(&r.get::<_, String>(0)?), r.get::<_, String>(1)?),
                    sender: r.get(2)?,
                    message_id: r.get(3)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn outbox(&mut self) -> Result<Vec<Queued>, StoreError> {
        let (genuine, forged): (Vec<_>, Vec<_>) = self
            .outbox_rows()?
            .into_iter()
            .partition(|(q, mac)| self.chain.outbox_genuine(&self.store_id, q.id, &q.row, mac.as_deref()));
        for (q, _) in forged {
            super::chain::refuse_forged(&q);
            self.delivered(q.id, Some(super::chain::FORGED))?;
        }
        Ok(genuine.into_iter().map(|(q, _)| q).collect())
    }

    fn forged(&mut self) -> Result<Vec<Queued>, StoreError> {
        Ok(self
            .outbox_rows()?
            .into_iter()
            .filter(|(q, mac)| !self.chain.outbox_genuine(&self.store_id, q.id, &q.row, mac.as_deref()))
            .map(|(q, _)| q)
            .collect())
    }

    fn outbox_len(&mut self) -> Result<usize, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(self.err())
    }

    fn delivered(&mut self, id: i64, dropped: Option<&str>) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET delivered_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), dropped = ?2 WHERE id = ?1",
            )
            .map_err(self.err())?
            .execute(params![id, dropped])
            .map(|_| ())
            .map_err(self.err())
    }

    fn cards(&mut self) -> Result<Vec<(RoomRef, RunId, MessageRef)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT platform, room, run, reference FROM cards ORDER BY run")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    RoomRef::new(platform_of(&r.get::<_, String>(0)?), r.get::<_, String>(1)?),
                    RunId(r.get::<_, i64>(2)? as u64),
                    MessageRef(r.get(3)?),
                ))
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn set_card(&mut self, room: &RoomRef, run: RunId, reference: Option<&MessageRef>) -> Result<(), StoreError> {
        let (platform, id, run) = (room.platform.as_str(), room.id.as_str(), run.0 as i64);
        let result = match reference {
            Some(r) => self.conn.execute(
                "INSERT INTO cards (platform, room, run, reference) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (platform, room, run) DO UPDATE SET reference = excluded.reference",
                params![platform, id, run, r.0],
            ),
            None => self.conn.execute(
                "DELETE FROM cards WHERE platform = ?1 AND room = ?2 AND run = ?3",
                params![platform, id, run],
            ),
        };
        result.map(|_| ()).map_err(self.err())
    }

    fn journal(&mut self, run: Option<RunId>) -> Result<Vec<JournalRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, run, kind, body, prev_hash, hash FROM events WHERE ?1 IS NULL OR run = ?1 ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([run.map(|r| r.0 as i64)], |r| {
                let body: String = r.get(4)?;
                Ok(JournalRow {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    run: r.get::<_, Option<i64>>(2)?.map(|x| x as u64),
                    kind: r.get(3)?,
                    event: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)),
                    prev_hash: r.get(5)?,
                    hash: r.get(6)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn export(&mut self) -> Result<Vec<RawEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, run, kind, body, prev_hash, hash FROM events ORDER BY seq")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RawEvent {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    run: r.get(2)?,
                    kind: r.get(3)?,
                    body: r.get(4)?,
                    prev_hash: r.get(5)?,
                    hash: r.get(6)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    fn verify_chain(&mut self) -> Result<ChainReport, StoreError> {
        // The checkpoint first: rows only grow, so a Baton committing meanwhile cannot make
        // the journal look shorter than its checkpoint.
        let checkpoint = self.chain.read_checkpoint();
        let tx = self.conn.unchecked_transaction().map_err(self.err())?;
        let seal = self.seal_value()?;
        let rows = self.chain_rows()?;
        drop(tx);
        Ok(self.chain.report(&self.store_id, seal.as_deref(), checkpoint, rows))
    }

    fn chain_seal(&mut self) -> Result<Option<String>, StoreError> {
        self.seal_value()
    }

    fn adopt(&mut self) -> Result<Adopted, StoreError> {
        let seal = self.chain_seal()?;
        let rows = self.chain_rows()?;
        let a = self
            .chain
            .adoption(&self.store_id, seal.as_deref(), rows)
            .map_err(|why| StoreError::Adopt { why })?;
        let tx = self.conn.transaction().map_err(|source| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        })?;
        let err = |source| StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        };
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('chain_seal', ?1)",
            [&a.seal],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        let mut messages = 0;
        for (q, _) in self.outbox_rows()?.iter().filter(|(_, mac)| mac.is_none()) {
            let mac = self.chain.outbox_mac(&self.store_id, q.id, &q.row);
            self.conn
                .execute("UPDATE outbox SET mac = ?2 WHERE id = ?1", params![q.id, mac])
                .map_err(self.err())?;
            messages += 1;
        }
        self.chain.anchor(&self.store_id, a.head_seq, &a.head, false);
        Ok(Adopted {
            legacy_rows: if seal.is_some() { 0 } else { a.legacy_rows },
            messages,
            head_seq: a.head_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::Rich;
    use crate::outbox::{Lane, Row};

    fn recorded(run: u64) -> Recorded {
        Recorded {
            at: chrono::DateTime::parse_from_rfc3339("2026-11-26T14:00:00Z")
                .expect("valid")
                .with_timezone(&chrono::Utc),
            event: Event::Expired { run: RunId(run) },
        }
    }

    fn row(room: &RoomRef, lane: Lane, text: &str) -> Row {
        Row {
            room: room.clone(),
            run: Some(RunId(1)),
            lane,
            body: Rich::from("Reason: ").quoted(text),
            card: None,
        }
    }

    /// The bytes SQLite's page cache holds for `conn` now.
    fn cache_used(conn: &Connection) -> i64 {
        let (mut current, mut highest) = (0, 0);
        // SAFETY: the handle is the live connection's, and the two out-pointers are valid.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_db_status(
                conn.handle(),
                rusqlite::ffi::SQLITE_DBSTATUS_CACHE_USED,
                &mut current,
                &mut highest,
                0,
            )
        };
        assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
        i64::from(current)
    }

    #[test]
    fn the_page_cache_stays_bounded_while_the_journal_grows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        let mut store = SqliteStore::open(&path).expect("opens");
        let room = RoomRef::new(Platform::Console, "ops");
        let mut peak = 0;
        // About 4 MiB of journal and outbox, twice SQLite's default cache: each batch an event
        // and a message of 2 KiB, as a run's step lines are.
        for n in 1..=2_000u64 {
            let text = format!("{n:06}").repeat(340);
            store
                .commit(&Batch {
                    events: vec![recorded(n)],
                    rows: vec![row(&room, Lane::Line, &text)],
                    ..Batch::default()
                })
                .expect("commits");
            peak = peak.max(cache_used(&store.conn));
        }
        store.settle();
        let file = std::fs::metadata(&path).expect("the store exists").len()
            + std::fs::metadata(path.with_extension("sqlite-wal")).map_or(0, |m| m.len());
        assert!(file > 4 * 1024 * 1024, "the journal grew to {file} bytes only");
        // The bound, with room for the cache's bookkeeping per page and for pages a
        // transaction holds beyond it (0.27-0.37 MB seen here, the larger when other tests
        // share the process): far below the 2 MB it reaches without the bound.
        let limit = CACHE_KIB * 1024 * 2;
        assert!(
            peak > CACHE_KIB * 1024 / 2 && peak <= limit,
            "page cache peaked at {peak} bytes; bound {limit}"
        );
        let rows = store.journal(None).expect("reads");
        assert_eq!(rows.len(), 2_000, "every batch is there");
    }

    #[test]
    fn the_checkpoint_is_written_after_the_commit_answers_and_when_the_store_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        let mut store = SqliteStore::open(&path).expect("opens");
        let commit = |store: &mut SqliteStore, n: u64| {
            store
                .commit(&Batch {
                    events: vec![recorded(n)],
                    ..Batch::default()
                })
                .expect("commits");
            store.verify_chain().expect("verifies")
        };
        commit(&mut store, 1);
        store.settle();
        let settled = store.verify_chain().expect("verifies");
        assert_eq!(settled.checkpoint_seq, Some(settled.head_seq));
        // The next commit answers before its head is in the checkpoint, which lags the
        // journal meanwhile (allowed: it may lag, never lead).
        let answered = commit(&mut store, 2);
        assert_eq!(answered.checkpoint_seq, Some(settled.head_seq));
        assert!(
            answered.head_seq > settled.head_seq && answered.intact(),
            "{answered:?}"
        );
        store.settle();
        assert_eq!(
            store.verify_chain().expect("verifies").checkpoint_seq,
            Some(answered.head_seq)
        );
        // Two commits before a settle: the later head is the one written, here when the store
        // is dropped (a command that commits and exits).
        commit(&mut store, 3);
        let last = commit(&mut store, 4);
        assert_eq!(last.checkpoint_seq, Some(answered.head_seq));
        drop(store);
        let mut store = SqliteStore::open(&path).expect("reopens");
        let reopened = store.verify_chain().expect("verifies");
        assert_eq!(reopened.checkpoint_seq, Some(last.head_seq));
        assert!(reopened.intact(), "{:?}", reopened.problems);
    }

    #[test]
    fn a_group_of_batches_commits_in_order_in_one_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        let mut store = SqliteStore::open(&path).expect("opens");
        let room = RoomRef::new(Platform::Console, "incident");
        let results = store.commit_all(&[
            Batch {
                events: vec![recorded(1)],
                rows: vec![row(&room, Lane::Line, "first")],
                ..Batch::default()
            },
            Batch::default(),
            Batch {
                events: vec![recorded(2), recorded(3)],
                rows: vec![row(&room, Lane::Line, "second"), row(&room, Lane::Line, "third")],
                ..Batch::default()
            },
        ]);
        let results: Vec<Vec<Queued>> = results.into_iter().map(|r| r.expect("commits")).collect();
        assert_eq!(results.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 0, 2]);
        assert!(results[0][0].id < results[2][0].id && results[2][0].id < results[2][1].id);
        // Nothing to write: no transaction, an empty result each.
        let empty = store.commit_all(&[Batch::default(), Batch::default()]);
        assert!(empty.iter().all(|r| r.as_ref().is_ok_and(Vec::is_empty)) && empty.len() == 2);
        drop(store);
        let mut store = SqliteStore::open(&path).expect("reopens");
        assert_eq!(
            store.load().expect("loads"),
            vec![recorded(1), recorded(2), recorded(3)]
        );
        assert!(
            store.verify_chain().expect("verifies").intact(),
            "one chain across the group"
        );
        let texts: Vec<String> = store
            .outbox()
            .expect("reads")
            .iter()
            .map(|q| q.row.body.plain())
            .collect();
        assert_eq!(texts, vec!["Reason: first", "Reason: second", "Reason: third"]);
    }

    #[test]
    fn a_failed_group_fails_every_batch_naming_the_cause() {
        let results = crate::store::group_failed(StoreError::Stopped, 3);
        let texts: Vec<String> = results
            .iter()
            .map(|r| r.as_ref().expect_err("none committed").to_string())
            .collect();
        assert_eq!(texts[0], "the store's thread has stopped");
        assert_eq!(
            texts[1],
            "not committed: it shared a transaction with a batch that failed (the store's thread has stopped)"
        );
        assert_eq!(texts.len(), 3);
        assert!(crate::store::group_failed(StoreError::Stopped, 0).is_empty());
    }

    #[test]
    fn commits_reload_and_chain() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s").join("baton.sqlite");
        let mut store = SqliteStore::open(&path).expect("opens");
        let id = store.store_id().to_string();
        let room = RoomRef::new(Platform::Console, "incident");
        let handled = Handled {
            room: room.clone(),
            sender: "console:alice".into(),
            message_id: "m1".into(),
        };
        let queued = store
            .commit(&Batch {
                events: vec![recorded(1), recorded(2)],
                rows: vec![row(&room, Lane::Line, "hello"), row(&room, Lane::Card, "card")],
                runs: vec![],
                handled: Some(handled.clone()),
            })
            .expect("commits");
        assert_eq!(queued.len(), 2);
        assert!(queued[0].id < queued[1].id, "ids follow the rows' order");
        drop(store);
        let mut store = SqliteStore::open(&path).expect("reopens");
        assert_eq!(store.store_id(), id, "the store id is stable");
        assert_eq!(store.load().expect("loads"), vec![recorded(1), recorded(2)]);
        let since = chrono::Utc::now() - chrono::Duration::hours(1);
        assert_eq!(store.handled_since(since).expect("reads"), vec![handled]);
        let later = chrono::Utc::now() + chrono::Duration::hours(1);
        assert!(store.handled_since(later).expect("reads").is_empty());
        let pending = store.outbox().expect("reads");
        assert_eq!(pending, queued, "rows come back as committed, body and lane included");
        assert_eq!(pending[0].row.body.plain(), "Reason: hello");
        store.delivered(pending[0].id, None).expect("marks");
        store.delivered(pending[1].id, Some("superseded")).expect("marks");
        assert_eq!(store.outbox_len().expect("counts"), 0);
        assert!(store.verify_chain().expect("verifies").intact());
        assert_eq!(store.journal(Some(RunId(2))).expect("reads").len(), 1);
        let card = MessageRef("m-42".into());
        store.set_card(&room, RunId(1), Some(&card)).expect("records");
        store
            .set_card(&room, RunId(1), Some(&MessageRef("m-43".into())))
            .expect("replaces");
        assert_eq!(
            store.cards().expect("reads"),
            vec![(room.clone(), RunId(1), MessageRef("m-43".into()))]
        );
        store.set_card(&room, RunId(1), None).expect("forgets");
        assert!(store.cards().expect("reads").is_empty());
    }

    #[test]
    fn passes_the_store_conformance_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.sqlite");
        crate::store::conformance::check(|| Box::new(SqliteStore::open(&path).expect("opens")));
    }

    #[test]
    fn one_baton_per_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        let first = SqliteStore::open(&path).expect("opens");
        let second = SqliteStore::open(&path).err().expect("a second Baton is refused");
        let text = second.to_string();
        assert!(text.contains("in use by another Baton"), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        let mut reader = SqliteStore::open_read_only(&path).expect("an audit may read beside it");
        assert!(reader.verify_chain().expect("reads").intact());
        drop(first);
        SqliteStore::open(&path).expect("free again once the first is gone");
    }

    #[test]
    fn a_schema_1_store_is_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        {
            let conn = Connection::open(&path).expect("opens");
            conn.execute_batch(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 INSERT INTO meta VALUES ('schema', '1'), ('store_id', 'abc123');
                 CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                     platform TEXT NOT NULL, room TEXT NOT NULL, run INTEGER, text TEXT NOT NULL,
                     card TEXT, delivered_at TEXT, dropped TEXT);
                 INSERT INTO outbox (platform, room, run, text) VALUES ('xmpp', 'incident@c.test', 3, '#3 [2/8] services');
                 CREATE TABLE handled (platform TEXT NOT NULL, room TEXT NOT NULL, message_id TEXT NOT NULL,
                     at TEXT NOT NULL DEFAULT 'x', PRIMARY KEY (platform, room, message_id));
                 INSERT INTO handled (platform, room, message_id) VALUES ('xmpp', 'incident@c.test', 'm1');",
            )
            .expect("writes a schema 1 store");
        }
        let mut store = SqliteStore::open(&path).expect("upgrades");
        assert_eq!(store.store_id(), "abc123");
        // A message from before keyed outboxes has no MAC: held until `baton store seal`.
        assert_eq!(store.forged().expect("reads").len(), 1);
        let adopted = store.adopt().expect("adopts");
        assert_eq!((adopted.messages, adopted.head_seq), (1, 0));
        let pending = store.outbox().expect("reads");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].row.lane, Lane::Line);
        assert_eq!(pending[0].row.body.plain(), "#3 [2/8] services");
        assert!(
            store
                .handled_since(chrono::DateTime::UNIX_EPOCH)
                .expect("reads")
                .is_empty()
        );
        drop(store);
        SqliteStore::open(&path).expect("opens again without migrating twice");
    }

    #[test]
    fn the_journal_refuses_updates_and_audit_names_an_altered_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baton.sqlite");
        let mut store = SqliteStore::open(&path).expect("opens");
        store
            .commit(&Batch {
                events: vec![recorded(1), recorded(2), recorded(3)],
                ..Default::default()
            })
            .expect("commits");
        store.settle();
        let refused = store.conn.execute("UPDATE events SET body = '{}' WHERE seq = 2", []);
        assert!(refused.expect_err("append-only").to_string().contains("append-only"));
        store
            .conn
            .execute_batch(
                "DROP TRIGGER events_no_update; UPDATE events SET body = replace(body, '2', '7') WHERE seq = 2;",
            )
            .expect("tampers");
        let report = store.verify_chain().expect("verifies");
        assert_eq!(
            report.problems,
            ["row 2 (expired) was altered or written without the journal's key: its content does not match its MAC"]
        );
        store
            .conn
            .execute_batch("DROP TRIGGER events_no_delete; DELETE FROM events WHERE seq = 2;")
            .expect("tampers");
        let report = store.verify_chain().expect("verifies");
        assert_eq!(
            report.problems,
            [
                "row 2 is missing",
                "row 3 does not follow the row before it (rows removed, inserted or reordered)"
            ]
        );
    }
}
