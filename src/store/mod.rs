//! Durable storage of teams, matches and each match's event log, behind one small trait.
//!
//! The [`Store`] is used only from the sequencer thread (never from a worker's event loop):
//! it loads everything once at start ([`Store::load_all`]) and then writes each change as it
//! is accepted; events in group commits ([`Store::append_batch`]: one transaction, one fsync,
//! for every event of a batch). A [`HistorySource`] reads an ended match's history back on
//! its own thread when it is no longer kept in memory. [`SqliteStore`] is the embedded default; [`MemoryStore`] keeps everything in
//! memory (tests, throwaway demos); [`RedisStore`] is shared by the nodes of a cluster
//! (`--redis`), where other nodes append too: its writes may answer
//! [`StoreError::Conflict`] and [`Store::events_after`] reads what they appended.

mod memory;
pub mod redis;
pub mod redis_link;
pub mod sentinel_watch;
mod sqlite;

pub use memory::MemoryStore;
pub use redis::RedisStore;
pub use sqlite::{
    SqliteStore, Synchronous, CHECKPOINT_EVERY, DB_FILE, DEFAULT_WAL_RESTART_COMMITS,
};

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
    /// The shared store's log of a match is *behind* this node's replica (Redis restored
    /// from an older snapshot, or the match deleted and re-created): the node must reload
    /// the match from the store.
    #[error("match {mid}: the store is at seq {stored}, behind this node")]
    Behind {
        /// The match id.
        mid: String,
        /// The seq the store holds.
        stored: u64,
    },
    /// The events were appended but fewer than `--redis-min-replicas` replicas confirmed
    /// them within `--redis-wait-ms` (cluster store; HTTP 503): they may or may not survive
    /// a failover.
    #[error("written but confirmed by {acked} of {wanted} replicas")]
    NotReplicated {
        /// Replicas that confirmed in time.
        acked: usize,
        /// `--redis-min-replicas`.
        wanted: usize,
    },
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

/// One event of a group commit: the match, the event, and the match state after it.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The match id.
    pub mid: &'a str,
    /// The event (its seq is the match's next).
    pub event: &'a Event,
    /// The match after the event.
    pub state: &'a Match,
}

/// The outcome of each event of a batch, in order: `Ok` when appended, else
/// [`StoreError::Conflict`], [`StoreError::Behind`] or [`StoreError::NoSuchMatch`] (only a
/// shared store answers those; every later event of the same match is then refused too).
pub type BatchOutcome = Vec<Result<()>>;

/// Reads a match's stored history; runs on a thread of its own, never on an event loop.
pub trait HistorySource: Send {
    /// The events of `mid` after `since`, or `None` for an unknown match.
    fn history(&mut self, mid: &str, since: u64) -> Result<Option<Vec<Event>>>;
}

/// Makes durable everything a store wrote before the call started ([`Store::write_batch`]);
/// called on a thread of its own, never on the sequencer's.
pub type Syncer = std::sync::Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

/// Durable storage used by the sequencer thread. Every method either makes its change
/// durable or returns an error having changed nothing — except [`Store::write_batch`] of a
/// store with a [`Store::deferred_sync`], whose batch is durable only after that sync.
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
    /// Appends a batch of events in one transaction (one fsync). `Err`: nothing was
    /// written. The default appends one at a time (stores without transactions).
    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome> {
        let mut out = Vec::with_capacity(batch.len());
        let mut failed: Vec<&str> = Vec::new();
        for a in batch {
            if failed.contains(&a.mid) {
                out.push(Err(StoreError::Conflict(format!(
                    "an earlier event of {} failed",
                    a.mid
                ))));
                continue;
            }
            match self.append_event(a.mid, a.event, a.state) {
                Ok(()) => out.push(Ok(())),
                Err(
                    e @ (StoreError::Conflict(_)
                    | StoreError::Behind { .. }
                    | StoreError::NoSuchMatch(_)),
                ) => {
                    failed.push(a.mid);
                    out.push(Err(e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
    /// `Some` when [`Store::write_batch`] returns before its batch is on disk: the batch is
    /// durable once a call of this syncer that started after `write_batch` returned has
    /// returned `Ok`. Lets the sequencer write the next batch while one syncs.
    fn deferred_sync(&self) -> Option<Syncer> {
        None
    }
    /// [`Store::append_batch`], except that with a [`Store::deferred_sync`] it returns once
    /// the batch is written, before it is durable.
    fn write_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome> {
        self.append_batch(batch)
    }
    /// Reads one match as stored now (`None` when it is not): to resync a node whose
    /// replica is ahead of a shared store.
    fn load_match(&mut self, mid: &str) -> Result<Option<StoredMatch>> {
        let _ = mid;
        Ok(None)
    }
    /// Whether other nodes write to this store too (then a refused event is judged again
    /// after catching up with it).
    fn is_shared(&self) -> bool {
        false
    }
    /// A reader of stored histories for another thread, when the store has one.
    fn history_source(&self) -> Option<Box<dyn HistorySource>> {
        None
    }
    /// Removes a match and its history (nothing happens for an unknown id).
    fn delete_match(&mut self, mid: &str) -> Result<()>;
    /// The events of `mid` after `seq` that this node has not seen: only a shared (cluster)
    /// store has any; the embedded ones, written by this node alone, answer none.
    fn events_after(&mut self, mid: &str, seq: u64) -> Result<Vec<Event>> {
        let _ = (mid, seq);
        Ok(Vec::new())
    }
}
