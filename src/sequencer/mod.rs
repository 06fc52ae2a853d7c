//! The sequencer: the node's single writer. One thread, outside the workers, owns the store
//! and the authoritative state of every team and match. It handles writes only: every read
//! is answered by the workers from the snapshots it publishes ([`snapshot`]).
//!
//! Workers hand it [`Request`]s through a [`SequencerHandle`] (a bounded queue: past
//! [`Limits::max_queued_writes`] a write is refused at once with [`Refused::Busy`]; `submit`
//! never blocks). The thread takes every request queued at that moment (at most
//! [`Limits::max_batch`]) and handles them in arrival order:
//!
//! * events are **group-committed**: each is validated by the fold ([`Match::apply`])
//!   against the state as the batch folds, given `seq = last + 1` and
//!   `ts = max(clock(), last ts)`; a refused event refuses only itself. The accepted ones are
//!   made durable in one store transaction (one fsync), **then** handed to the sink in order
//!   as [`Broadcast::Event`]s (every worker gets each, with the match's new
//!   [`MatchSnapshot`]), and only **after that** acknowledged through each request's reply
//!   closure ([`Done::Event`]). A lone publisher's batch is its one event: one fsync;
//! * on a store failure nothing is broadcast, the in-memory state is left as it was and
//!   every event of the batch is refused ([`Refused::StoreFailed`]): an event is
//!   acknowledged only once it is durable;
//! * any other request (team, match creation or deletion, watch, a remote change) first
//!   commits the events staged before it, then is handled alone.
//!
//! Answers are in domain terms ([`Done`], [`Refused`]); the HTTP layer maps them to status
//! codes, once.
//!
//! ## In a cluster
//!
//! With a shared store ([`crate::store::RedisStore`]) other nodes append too. The thread
//! stays this node's only writer path: an event is validated against the replica at seq
//! `N` and the store appends it only if the match is still at `N` (atomically, in Redis,
//! one script call per batch); on a conflict the thread reads the events it missed
//! ([`Store::events_after`]), applies and broadcasts them, validates again and retries
//! (at most [`MAX_ATTEMPTS`] times, then [`Refused::Contention`]). When the store is
//! *behind* this node (Redis restored from an older snapshot, a match re-created before
//! this node's reader caught up), the node resyncs the match from the store
//! ([`Broadcast::Cancelled`] then the stored match: its watchers reconnect). Events appended
//! by other nodes arrive as [`Request::Remote`] from the node's stream reader and go through
//! the same apply-and-broadcast step, so they too are broadcast in sequencer order and the
//! watch invariant below holds for them; an event this node already has (its own, or one
//! fetched on a conflict) is skipped by seq. A store that cannot be reached answers
//! [`Refused::StoreUnreachable`] and changes nothing. An append that too few replicas
//! confirmed (`--redis-min-replicas`) answers [`Refused::NotReplicated`] and is not
//! broadcast: it reaches watchers later through the stream reader if, and only if, it is
//! replicated after all.
//! The threads that run beside the sequencer in a cluster (that stream reader and the node
//! registry behind `/1/checkin`) are in [`cluster`].
//!
//! ## The watch invariant
//!
//! Broadcasts and replies leave the sequencer thread in one total order. A worker applies
//! the broadcasts to its [`Catalog`] in that order through its one FIFO inbox, so a watch
//! answered from the worker's catalog (status at seq `N` plus the events of `(since, N]`)
//! is followed by exactly the broadcasts of `N + 1, N + 2…`: no gap, no repeat. (The same
//! holds for a [`Request::Watch`] answered by the sequencer when its reply closure pushes
//! into that inbox.) Never block in a reply closure or in the sink: they run on the
//! sequencer thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

use crate::domain::{error_message, Event, EventKind, InputError, Match, Rejection, Team};
use crate::store::{Store, StoreError};

pub mod snapshot;
pub mod wakeups;
pub use snapshot::{Catalog, History, Loaded, MatchSnapshot};

/// Where accepted events and other published changes go: called on the sequencer thread,
/// once per broadcast, before the writer is answered. Must not block.
pub type Sink = Arc<dyn Fn(Broadcast) + Send + Sync>;

/// Answers one request; called once, on the sequencer thread. Must not block.
pub type ReplyFn = Box<dyn FnOnce(Reply) + Send>;

/// How many times a write is validated and tried against a shared store that keeps moving
/// under it before it is refused with [`Refused::Contention`].
pub const MAX_ATTEMPTS: usize = 32;

/// Milliseconds since the Unix epoch.
pub type Clock = fn() -> i64;

/// The system clock in milliseconds since the Unix epoch.
pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The sequencer's bounds (each a named, documented setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Writes waiting in the queue past which a new write is refused at once with
    /// [`Refused::Busy`] (HTTP 503 with `Retry-After`). `--max-queued-writes`.
    pub max_queued_writes: usize,
    /// Most requests taken from the queue into one group commit.
    pub max_batch: usize,
    /// Ended matches whose history stays in memory; past it the history of the match that
    /// ended longest ago is let go (served from the store when asked).
    /// `--ended-history-matches`. `usize::MAX`: keep everything.
    pub ended_history_matches: usize,
}

/// Default of [`Limits::max_queued_writes`].
pub const DEFAULT_MAX_QUEUED_WRITES: usize = 8_192;
/// Default of [`Limits::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 1_024;
/// Default of [`Limits::ended_history_matches`].
pub const DEFAULT_ENDED_HISTORY_MATCHES: usize = 256;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_queued_writes: DEFAULT_MAX_QUEUED_WRITES,
            max_batch: DEFAULT_MAX_BATCH,
            ended_history_matches: DEFAULT_ENDED_HISTORY_MATCHES,
        }
    }
}

/// What a worker asks of the sequencer: writes, watches (until every worker answers them
/// from its catalog) and changes other nodes made.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `PUT /1/team/{id}`: create or replace a team.
    PutTeam {
        /// The team id (must be a valid slug).
        id: String,
        /// Full name.
        name: String,
        /// Division.
        division: String,
    },
    /// `POST /1/matches`.
    CreateMatch {
        /// Home team id.
        home: String,
        /// Visiting team id.
        visit: String,
        /// `YYYY-MM-DD`.
        start_date: String,
        /// Stadium.
        stadium: String,
    },
    /// `POST /1/match/{id}/events`: [`Done::Event`] once durable.
    PostEvent {
        /// The match id.
        mid: String,
        /// The event kind.
        kind: EventKind,
        /// The event data (a JSON object).
        data: Value,
        /// The match minute the feed gave (0–130; a higher one is [`Refused::Invalid`]).
        minute: Option<u8>,
        /// Post it only as this event number (`"seq"` in the body): [`Refused::Conflict`]
        /// when the match is past it already. A publisher retrying after a lost answer can
        /// never post twice.
        expect_seq: Option<u64>,
    },
    /// `DELETE /1/match/{id}`: watchers get [`Broadcast::Cancelled`].
    DeleteMatch {
        /// The match id.
        mid: String,
    },
    /// A WebSocket or TCP watch: answered with [`Reply::Watch`].
    Watch {
        /// The match id.
        mid: String,
        /// Resume after this seq: the reply carries the events after it.
        since: Option<u64>,
    },
    /// A change another cluster node made, read from Redis by this node's stream reader:
    /// applied to memory (and broadcast) like a local write, but not written again.
    /// Answered with [`Done::Applied`] (nobody waits for it).
    Remote(Remote),
}

impl Request {
    /// Whether this is a client write (bounded by [`Limits::max_queued_writes`]).
    fn is_write(&self) -> bool {
        !matches!(self, Request::Watch { .. } | Request::Remote(_))
    }
}

/// What another node did, as the stream reader saw it in Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum Remote {
    /// A team was created or replaced.
    Team(Team),
    /// A match was created (its state before any event).
    Created(Box<Match>),
    /// A match was deleted.
    Deleted(String),
    /// Events of a match, in seq order; those this node already has are skipped, a gap is
    /// filled from the store first.
    Events {
        /// The match id.
        mid: String,
        /// The events, ascending seq.
        events: Vec<Event>,
    },
}

/// The sequencer's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The write is done (durable and published).
    Done(Done),
    /// The request was refused; nothing changed.
    Refused(Refused),
    /// The answer to [`Request::Watch`].
    Watch(WatchReply),
}

/// A write that is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Done {
    /// A team was stored.
    Team {
        /// The team as stored.
        team: Team,
        /// It did not exist before (else it was replaced).
        created: bool,
    },
    /// A match was created.
    MatchCreated {
        /// Its id.
        id: String,
    },
    /// An event is durable and broadcast.
    Event {
        /// Its seq.
        seq: u64,
        /// Its timestamp (ms since the epoch).
        ts: i64,
    },
    /// A match was deleted.
    MatchDeleted {
        /// Its id.
        id: String,
    },
    /// A remote change was applied.
    Applied,
}

/// Why a request was refused (nothing changed). The HTTP layer maps each to a status.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refused {
    /// A team id, a date or a pair of teams is not valid.
    #[error("{0}")]
    Invalid(#[from] InputError),
    /// A match refers to a team that does not exist.
    #[error("unknown team: {0}")]
    UnknownTeam(String),
    /// No such match.
    #[error("match not found: {0}")]
    UnknownMatch(String),
    /// The match exists already.
    #[error("match already exists: {0}")]
    MatchExists(String),
    /// The event numbered `want` exists already: the match is at `seq`.
    #[error("event {want} exists: match is at {seq}")]
    Conflict {
        /// The seq the publisher asked for.
        want: u64,
        /// Where the match is.
        seq: u64,
    },
    /// The event numbered `want` cannot be the next one: the match is at `seq`.
    #[error("event {want} cannot be next: match is at {seq}")]
    NotNext {
        /// The seq the publisher asked for.
        want: u64,
        /// Where the match is.
        seq: u64,
    },
    /// The fold refused the event.
    #[error("{0}")]
    Rejected(#[from] Rejection),
    /// Other nodes kept appending first ([`MAX_ATTEMPTS`] tries): try again.
    #[error("write contention: try again")]
    Contention,
    /// The shared store (Redis) cannot be reached.
    #[error("redis unavailable")]
    StoreUnreachable,
    /// Written, but fewer than `--redis-min-replicas` replicas confirmed it in time: the
    /// write may or may not survive a failover (watchers get it only if it does).
    #[error(
        "not confirmed by enough redis replicas ({acked} of {wanted}): the write may or may \
         not survive a failover; read it back before posting it again"
    )]
    NotReplicated {
        /// Replicas that confirmed in time.
        acked: usize,
        /// `--redis-min-replicas`.
        wanted: usize,
    },
    /// The store failed the write.
    #[error("store failure: {0}")]
    StoreFailed(String),
    /// The write queue is full ([`Limits::max_queued_writes`]): try again shortly.
    #[error("too many writes queued: try again")]
    Busy,
    /// The sequencer has stopped.
    #[error("sequencer stopped")]
    Stopped,
}

impl Refused {
    fn from_store(e: StoreError) -> Refused {
        if let StoreError::Redis(why) = &e {
            tracing::warn!(error = %why, "redis unavailable; write refused");
            return Refused::StoreUnreachable;
        }
        if let StoreError::NotReplicated { acked, wanted } = e {
            tracing::warn!(acked, wanted, "write not confirmed by enough replicas");
            return Refused::NotReplicated { acked, wanted };
        }
        tracing::error!(error = %e, "store write failed; nothing acknowledged");
        Refused::StoreFailed(e.to_string())
    }
}

/// The answer to a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchReply {
    /// The match exists: start the subscription with these messages.
    Found(WatchStart),
    /// No such match.
    NotFound {
        /// The WebSocket error message, `{"type":"error","error":"match not found: X"}`.
        error: String,
    },
}

/// What a new watcher is sent first, taken at one point of the sequencer order.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchStart {
    /// The match id.
    pub mid: Arc<str>,
    /// The seq `N` of the status; live events follow from `N + 1`.
    pub seq: u64,
    /// The event messages of `(since, N]`, in order (empty without `since`).
    pub events: Vec<Arc<str>>,
    /// The match has ended: send the above and end the subscription.
    pub ended: bool,
    /// The match state at seq `N` (to seed a worker's replica).
    pub state: Arc<Match>,
}

impl WatchStart {
    /// The status message JSON at seq `N`.
    pub fn status(&self) -> String {
        crate::domain::status_message(&self.state)
    }
}

/// What every worker is told, in sequencer order. Cheap to clone (reference counts).
#[derive(Debug, Clone)]
pub enum Broadcast {
    /// An accepted, durable event.
    Event {
        /// The match id.
        mid: Arc<str>,
        /// The event's seq.
        seq: u64,
        /// The event's timestamp (ms since the epoch).
        ts: i64,
        /// The event's kind.
        kind: EventKind,
        /// The match is over after this event (period `ended`).
        ended: bool,
        /// The WebSocket event message, built once.
        ws_text: Arc<str>,
        /// Detail lines for the TCP line protocol block.
        line_fields: Arc<[(String, String)]>,
        /// The match state after this event (for replicas and status snapshots).
        state: Arc<Match>,
        /// The match as published after this event.
        snapshot: Arc<MatchSnapshot>,
    },
    /// The match was deleted: close its watchers (1000, `match cancelled`).
    Cancelled {
        /// The match id.
        mid: Arc<str>,
    },
    /// A match was created, resynced, or its history let go: its new snapshot.
    Match(Arc<MatchSnapshot>),
    /// A team was created or replaced.
    Team {
        /// The team id.
        id: Arc<str>,
        /// The team object's JSON.
        json: Bytes,
    },
    /// Everything, once, when the sequencer starts.
    Loaded(Arc<Loaded>),
}

enum Msg {
    Request(Request, Pending),
    /// Stop after what is queued; `Some`: tell the caller once the store is closed.
    Stop(Option<mpsc::Sender<()>>),
    /// The `wal-sync` thread synced every generation up to `gen` ([`pipeline`]).
    Synced {
        gen: u64,
        result: Result<(), String>,
    },
}

/// Held by every clone of a handle: the last one dropped stops the thread (the queue alone
/// cannot tell, since the `wal-sync` thread holds a sender too).
struct Alive(mpsc::Sender<Msg>);

impl Drop for Alive {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::Stop(None));
    }
}

/// A reply closure that is called exactly once: with the answer, or with
/// [`Refused::Stopped`] when the request is dropped unanswered (queued while the sequencer
/// stopped).
struct Pending {
    watch: bool,
    /// Counted in the handle's queue bound until taken out of the queue.
    queued: Option<Arc<AtomicUsize>>,
    reply: Option<ReplyFn>,
}

impl Pending {
    /// The request left the queue: it no longer counts against the bound.
    fn dequeued(&mut self) {
        if let Some(q) = self.queued.take() {
            q.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn answer(mut self, reply: Reply) {
        self.dequeued();
        if let Some(f) = self.reply.take() {
            f(reply);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.dequeued();
        if let Some(f) = self.reply.take() {
            f(stopped_reply(self.watch));
        }
    }
}

/// The sequencer's constructor; the running sequencer is reached through its handle.
#[derive(Debug)]
pub struct Sequencer;

/// Sends requests to the sequencer thread. Clone one per worker.
#[derive(Clone)]
pub struct SequencerHandle {
    tx: mpsc::Sender<Msg>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
    _alive: Arc<Alive>,
}

impl std::fmt::Debug for SequencerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SequencerHandle")
    }
}

impl Sequencer {
    /// [`Sequencer::start_with`] the default [`Limits`].
    pub fn start(
        store: Box<dyn Store>,
        sink: Sink,
        clock: Clock,
    ) -> Result<SequencerHandle, StoreError> {
        Sequencer::start_with(store, sink, clock, Limits::default())
    }

    /// Starts the sequencer thread: loads everything from `store` into memory, publishes it
    /// ([`Broadcast::Loaded`]), then serves requests until [`SequencerHandle::shutdown`] or
    /// until every handle is dropped. Fails when the store cannot be loaded.
    pub fn start_with(
        store: Box<dyn Store>,
        sink: Sink,
        clock: Clock,
        limits: Limits,
    ) -> Result<SequencerHandle, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        let to_self = tx.clone();
        thread::Builder::new()
            .name("sequencer".into())
            .spawn(move || {
                let mut store = store;
                let core = store
                    .load_all()
                    .and_then(|snap| Core::new(store, snap, sink, clock, limits, to_self));
                match core {
                    Ok(core) => {
                        let _ = ready_tx.send(Ok(()));
                        core.run(rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(SequencerHandle {
                _alive: Arc::new(Alive(tx.clone())),
                tx,
                queued: Arc::default(),
                max_queued: limits.max_queued_writes,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Corrupt(
                "sequencer thread died while loading".into(),
            )),
        }
    }
}

impl SequencerHandle {
    /// Queues a request; never blocks. `reply` is called exactly once: on the sequencer
    /// thread when the request is done; or at once, on the calling thread, with
    /// [`Refused::Busy`] when [`Limits::max_queued_writes`] writes are waiting already; or
    /// with [`Refused::Stopped`] (a `NotFound` "sequencer stopped" for a watch) when the
    /// sequencer has stopped.
    pub fn submit(&self, request: Request, reply: ReplyFn) {
        let queued = if request.is_write() {
            if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                reply(Reply::Refused(Refused::Busy));
                return;
            }
            Some(Arc::clone(&self.queued))
        } else {
            None
        };
        let pending = Pending {
            watch: matches!(request, Request::Watch { .. }),
            queued,
            reply: Some(reply),
        };
        // When the thread is gone the message comes back and dropping it answers Stopped.
        let _ = self.tx.send(Msg::Request(request, pending));
    }

    /// Writes waiting in the queue now.
    pub fn queued_writes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Stops the thread after the requests already queued, and waits until it has closed
    /// the store. Blocks: call it at shutdown, never from a worker's event loop.
    pub fn shutdown(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Msg::Stop(Some(done_tx))).is_ok() {
            let _ = done_rx.recv();
        }
    }
}

fn stopped_reply(watch: bool) -> Reply {
    if watch {
        Reply::Watch(WatchReply::NotFound {
            error: error_message(&Refused::Stopped.to_string()),
        })
    } else {
        Reply::Refused(Refused::Stopped)
    }
}

mod batch;
pub mod cluster;
mod core;
mod pipeline;
mod shared;
use self::core::Core;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod batch_tests;

#[cfg(test)]
mod cluster_tests;

#[cfg(test)]
mod pipeline_tests;

/// Checks that a stored match's history is 1..=N without gaps and matches its state.
fn check_history(state: &Match, events: &[Event]) -> Result<(), StoreError> {
    let contiguous = events
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1);
    if contiguous && state.seq == events.len() as u64 {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "match {}: history of {} events does not end at seq {}",
            state.id,
            events.len(),
            state.seq
        )))
    }
}
