//! The store: an append-only journal of events with a hash chain, a `runs` projection, the
//! outbox of chat messages not yet delivered, and the ids of chat messages already handled.
//!
//! The engine's shell commits each batch (events, messages, the handled message's id) in one
//! transaction before acting on it. The trait keeps the engine independent of the database, so
//! that replicas sharing PostgreSQL can come later.

mod sqlite;

pub use sqlite::SqliteStore;

use crate::chat::{Outbound, RoomRef};
use crate::engine::Message;
use crate::event::Recorded;
use crate::run::RunId;
use baton_policies::Platform;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("journal row {seq} cannot be read ({why}); `baton audit` shows the journal")]
    Corrupt { seq: i64, why: String },
    #[error("store {path} was written by a newer Baton (schema {found}, this one knows {known})")]
    Schema { path: String, found: i64, known: i64 },
    #[error("cannot create the store's folder {path}: {source}")]
    Folder { path: String, source: std::io::Error },
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

/// What one input produced, committed together.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub events: &'a [Recorded],
    pub messages: &'a [Message],
    pub runs: Vec<RunRow>,
    /// The chat message handled, so it is never handled twice.
    pub handled: Option<(&'a RoomRef, &'a str)>,
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

/// The verdict on the hash chain.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChainReport {
    pub rows: usize,
    /// Empty when the chain is intact; otherwise one sentence per problem, naming the row.
    pub problems: Vec<String>,
}

impl ChainReport {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Storage for one Baton instance.
pub trait Store: Send {
    /// The store's random id (part of every idempotency key).
    fn store_id(&self) -> &str;
    /// Every journaled event, in order.
    fn load(&mut self) -> Result<Vec<Recorded>, StoreError>;
    /// Commits a batch atomically.
    fn commit(&mut self, batch: &Batch<'_>) -> Result<(), StoreError>;
    /// Whether a chat message was handled already.
    fn handled(&mut self, room: &RoomRef, message_id: &str) -> Result<bool, StoreError>;
    /// Undelivered messages for one platform, oldest first.
    fn outbox(&mut self, platform: Platform, limit: usize) -> Result<Vec<Outbound>, StoreError>;
    /// Undelivered messages for every platform.
    fn outbox_len(&mut self) -> Result<usize, StoreError>;
    /// Marks a message delivered, or dropped with a reason (the platform refused it for good).
    fn delivered(&mut self, id: i64, dropped: Option<&str>) -> Result<(), StoreError>;
    /// The journal rows of one run (or all), for `baton audit`.
    fn journal(&mut self, run: Option<RunId>) -> Result<Vec<JournalRow>, StoreError>;
    /// Recomputes the hash chain over the whole journal.
    fn verify_chain(&mut self) -> Result<ChainReport, StoreError>;
}
