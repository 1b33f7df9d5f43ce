//! The store: an append-only journal of events with a hash chain, a `runs` projection, the
//! outbox of chat messages not yet delivered, and the ids of chat messages already handled.
//!
//! The engine's shell commits each batch (events, messages, the handled message's id) in one
//! transaction before acting on it. The trait keeps the engine independent of the database:
//! SQLite (`sqlite.rs`, the embedded default) and PostgreSQL (`postgres.rs`, shared by two
//! replicas, one of them active by `leader.rs`).

pub mod actor;
pub mod chain;
pub mod conformance;
pub mod leader;
pub mod postgres;
mod sqlite;

pub use actor::StoreActor;
pub use chain::{Chain, ChainKey};
pub use postgres::{PgSettings, PostgresStore};
pub use sqlite::SqliteStore;

use crate::chat::{MessageRef, RoomRef};
use crate::event::Recorded;
use crate::outbox::{Queued, Row};
use crate::run::RunId;
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store's thread has stopped")]
    Stopped,
    #[error("store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("journal row {seq} cannot be read ({why}); `baton audit` shows the journal")]
    Corrupt { seq: i64, why: String },
    #[error("store {path} was written by a newer Baton (schema {found}, this one knows {known})")]
    Schema { path: String, found: i64, known: i64 },
    #[error("cannot create the store's folder {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error(
        "the store {path} is in use by another Baton ({holder}); one Baton per store: stop the other one, or give this one a store of its own"
    )]
    InUse { path: String, holder: String },
    #[error("cannot lock the store ({path}): {source}")]
    Lock { path: String, source: std::io::Error },
    #[error("store {target}: {source}")]
    Postgres { target: String, source: ::postgres::Error },
    #[error("store {target}: TLS: {why}")]
    Tls { target: String, why: String },
    /// The database refused a write: another replica leads now (its epoch is newer).
    #[error("the store refused a write from a replica that no longer leads ({why})")]
    Fenced { why: String },
    #[error("not committed: it shared a transaction with a batch that failed ({why})")]
    GroupFailed { why: String },
    #[error("the journal's key {path}: {why}")]
    Key { path: String, why: String },
    #[error("the journal cannot be adopted as it is: {why}")]
    Adopt { why: String },
}

/// One journal row exactly as stored (a migration copies it verbatim, hash chain included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEvent {
    pub seq: i64,
    pub at: String,
    pub run: Option<i64>,
    pub kind: String,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The results of a group of batches whose one transaction failed: the error for the first,
/// and for every other a pointer to it (each batch gets a result, none is taken as committed).
pub fn group_failed(e: StoreError, n: usize) -> Vec<Result<Vec<Queued>, StoreError>> {
    let why = e.to_string();
    std::iter::once(Err(e))
        .chain((1..n).map(|_| Err(StoreError::GroupFailed { why: why.clone() })))
        .take(n)
        .collect()
}

/// An outbox row from its stored columns (both stores keep the same ones). A row of schema 1
/// has no structured body: its plain text stands in.
pub(super) fn stored_row(
    platform: &str,
    room: String,
    run: Option<i64>,
    text: String,
    card: Option<String>,
    lane: &str,
    body: Option<String>,
) -> Row {
    Row {
        room: RoomRef::new(sqlite::platform_of(platform), room),
        run: run.map(|x| RunId(x as u64)),
        lane: crate::outbox::Lane::parse(lane).unwrap_or(crate::outbox::Lane::Line),
        body: body
            .and_then(|b| serde_json::from_str::<crate::chat::Rich>(&b).ok())
            .unwrap_or_else(|| crate::chat::Rich::from(text)),
        card: card.and_then(|c| serde_json::from_str(&c).ok()),
    }
}

/// A run's row in the `runs` projection (for dashboards and `sqlite3` users; the engine itself
/// rebuilds runs from the journal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    pub id: RunId,
    pub phase: String,
    pub requester: String,
    pub from_pool: Option<String>,
    pub to_pool: String,
    pub requested_at: String,
    pub finished_at: Option<String>,
}

/// Who sent a handled chat message, and its id: ids are only unique per sender (RFC 6120
/// §8.1.3), so the key holds all three. Messages without an id are never recorded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handled {
    pub room: RoomRef,
    /// The sender as the platform vouches for it (`xmpp:alice@contoso.com`).
    pub sender: String,
    pub message_id: String,
}

/// What one input produced, committed together.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub events: Vec<Recorded>,
    pub rows: Vec<Row>,
    pub runs: Vec<RunRow>,
    /// The chat message handled, so it is never handled twice.
    pub handled: Option<Handled>,
}

impl Batch {
    /// Whether a run ends in this batch (its head is then logged, see [`Chain::anchor`]).
    pub fn ends_a_run(&self) -> bool {
        self.events.iter().any(|r| {
            matches!(
                r.event,
                crate::event::Event::Succeeded { .. }
                    | crate::event::Event::Failed { .. }
                    | crate::event::Event::Aborted { .. }
                    | crate::event::Event::Denied { .. }
                    | crate::event::Event::Expired { .. }
            )
        })
    }

    /// Nothing to write (answers that only wait behind an earlier batch).
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rows.is_empty() && self.runs.is_empty() && self.handled.is_none()
    }
}

/// One journal row, as `baton audit` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct JournalRow {
    pub seq: i64,
    pub at: String,
    pub run: Option<u64>,
    pub kind: String,
    pub event: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The verdict on the chain (see [`chain`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainReport {
    pub rows: usize,
    /// Empty when the chain is intact; otherwise one sentence per problem, naming the row.
    pub problems: Vec<String>,
    /// What deserves a look without being a problem (a replica without its own checkpoint).
    pub notes: Vec<String>,
    /// The key's id (never the key).
    pub key_id: String,
    /// Rows written before keyed chains, verified unkeyed (the seal vouches for them).
    pub legacy_rows: usize,
    /// The last row: its number and MAC, to compare with a head recorded elsewhere.
    pub head_seq: i64,
    pub head: String,
    /// The row the checkpoint vouches for, when it verified.
    pub checkpoint_seq: Option<i64>,
}

impl ChainReport {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Storage for one Baton instance. Calls block: the daemon keeps the store on a thread of its
/// own ([`actor::StoreActor`]) so its loop never waits on the disk.
pub trait Store: Send {
    /// The store's random id (part of every idempotency key).
    fn store_id(&self) -> &str;
    /// Every journaled event, in order.
    fn load(&mut self) -> Result<Vec<Recorded>, StoreError>;
    /// Commits a batch atomically; returns its outbox rows with their ids.
    fn commit(&mut self, batch: &Batch) -> Result<Vec<Queued>, StoreError>;
    /// Commits batches in order, one result per batch. A store that can should write them in one
    /// transaction (one flush to the disk for all: the daemon groups the batches that pile up
    /// while the previous group is being written); this default commits them one by one.
    fn commit_all(&mut self, batches: &[Batch]) -> Vec<Result<Vec<Queued>, StoreError>> {
        batches
            .iter()
            .map(|b| if b.is_empty() { Ok(Vec::new()) } else { self.commit(b) })
            .collect()
    }
    /// The chat messages handled since `since` (de-duplication after a restart).
    fn handled_since(&mut self, since: DateTime<Utc>) -> Result<Vec<Handled>, StoreError>;
    /// Every undelivered outbox row, oldest first.
    fn outbox(&mut self) -> Result<Vec<Queued>, StoreError>;
    /// Undelivered rows for every room.
    fn outbox_len(&mut self) -> Result<usize, StoreError>;
    /// Marks a row delivered, or dropped with a reason (refused for good, superseded, or
    /// undeliverable to a mirror room).
    fn delivered(&mut self, id: i64, dropped: Option<&str>) -> Result<(), StoreError>;
    /// The reference of each run's card, per room.
    fn cards(&mut self) -> Result<Vec<(RoomRef, RunId, MessageRef)>, StoreError>;
    /// Records (or, with `None`, forgets) the reference of a run's card in a room.
    fn set_card(&mut self, room: &RoomRef, run: RunId, reference: Option<&MessageRef>) -> Result<(), StoreError>;
    /// The journal rows of one run (or all), for `baton audit`.
    fn journal(&mut self, run: Option<RunId>) -> Result<Vec<JournalRow>, StoreError>;
    /// Every journal row exactly as stored, in order (for `baton store migrate`).
    fn export(&mut self) -> Result<Vec<RawEvent>, StoreError>;
    /// Verifies the whole journal: every row's MAC under the key, the seal, the checkpoint.
    fn verify_chain(&mut self) -> Result<ChainReport, StoreError>;
    /// The undelivered outbox rows whose MAC does not verify (read only: `baton audit`);
    /// [`Store::outbox`] marks them dropped and never returns them.
    fn forged(&mut self) -> Result<Vec<Queued>, StoreError>;
    /// The store's seal (`None` before one is made); a migration copies it.
    fn chain_seal(&mut self) -> Result<Option<String>, StoreError>;
    /// `baton store seal`: adopts the journal as it stands (a store from before keyed chains,
    /// or one whose checkpoint was moved): seals it, MACs the undelivered messages that have
    /// none, and writes the checkpoint. Refused when the rows do not verify.
    fn adopt(&mut self) -> Result<Adopted, StoreError>;
    /// Work that may follow a commit's answer rather than hold it: writing the checkpoint of
    /// the last commit. The store's thread calls it after each job; a store's chain also does
    /// it when dropped.
    fn settle(&mut self) {}
}

/// What `baton store seal` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Rows sealed as written before keyed chains (0 when the store was sealed already).
    pub legacy_rows: i64,
    /// Undelivered messages without a MAC that were given one.
    pub messages: usize,
    /// The head now recorded in the checkpoint.
    pub head_seq: i64,
}
