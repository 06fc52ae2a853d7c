//! Durable storage of teams, matches and each match's event log, behind one small trait.
//!
//! The [`Store`] is used only from the sequencer thread (never from a worker's event loop):
//! it loads everything once at start ([`Store::load_all`]) and then writes each change as it
//! is accepted. [`SqliteStore`] is the embedded default; [`MemoryStore`] keeps everything in
//! memory (tests, throwaway demos); [`RedisStore`] is shared by the nodes of a cluster
//! (`--redis`), where other nodes append too: its writes may answer
//! [`StoreError::Conflict`] and [`Store::events_after`] reads what they appended.

mod memory;
pub mod redis;
mod sqlite;

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use sqlite::{SqliteStore, Synchronous, DB_FILE};

use thiserror::Error;

use crate::domain::{Event, Match, Team};

/// Why a store operation failed. The sequencer answers 500 and acknowledges nothing.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The data directory could not be created or opened.
    #[error("data directory: {0}")]
    Io(#[from] std::io::Error),
    /// SQLite refused or failed an operation.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded (JSON or an unknown event kind).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database was written by a newer matchstream (schema `user_version` too high).
    #[error("database schema version {found} is newer than this build's {supported}")]
    SchemaTooNew {
        /// The `user_version` found on disk.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// An event was appended to a match that is not stored.
    #[error("no such match: {0}")]
    NoSuchMatch(String),
    /// Another node changed the record first (cluster store): the match already exists, or
    /// the match's log has moved past the seq this node validated against.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Redis could not be reached or failed the call (cluster store; HTTP 503).
    #[error("redis: {0}")]
    Redis(String),
    /// The store was told to fail (test stores only).
    #[error("store unavailable")]
    Unavailable,
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One match as stored: its current state and its whole event log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMatch {
    /// The state after the last event (with `last_ts`).
    pub state: Match,
    /// Every event, in `seq` order (1, 2, 3…).
    pub events: Vec<Event>,
}

/// Everything a store holds, to rebuild the sequencer's memory at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every team.
    pub teams: Vec<Team>,
    /// Every match with its history, ordered by id.
    pub matches: Vec<StoredMatch>,
}

/// Durable storage used by the sequencer thread. Every method either makes its change
/// durable or returns an error having changed nothing.
pub trait Store: Send {
    /// Reads everything: teams, matches and every match's events.
    fn load_all(&mut self) -> Result<Snapshot>;
    /// Creates or replaces a team.
    fn put_team(&mut self, team: &Team) -> Result<()>;
    /// Stores a new match (its state before any event).
    fn create_match(&mut self, m: &Match) -> Result<()>;
    /// Appends `event` to match `mid` and stores `state`, the match after it, in one
    /// transaction.
    fn append_event(&mut self, mid: &str, event: &Event, state: &Match) -> Result<()>;
    /// Removes a match and its history (nothing happens for an unknown id).
    fn delete_match(&mut self, mid: &str) -> Result<()>;
    /// The events of `mid` after `seq` that this node has not seen: only a shared (cluster)
    /// store has any; the embedded ones, written by this node alone, answer none.
    fn events_after(&mut self, mid: &str, seq: u64) -> Result<Vec<Event>> {
        let _ = (mid, seq);
        Ok(Vec::new())
    }
}
