//! The sequencer: the node's single writer. One thread, outside the workers, owns the store
//! and the authoritative state of every team and match.
//!
//! Workers hand it [`Request`]s through a [`SequencerHandle`] (a channel; `submit` never
//! blocks). The thread handles them one at a time, in arrival order:
//!
//! * an event is validated by the fold ([`Match::apply`]), given `seq = last + 1` and
//!   `ts = max(clock(), last ts)`, made durable in the store, **then** handed to the sink as
//!   a [`Broadcast::Event`] (every worker gets it), and only **after that** acknowledged
//!   through the request's reply closure (`201 {"seq","ts"}`);
//! * on a store failure nothing is broadcast, the in-memory state is left as it was and the
//!   reply is a 500: an event is acknowledged only once it is durable;
//! * reads are answered from memory, which mirrors the store.
//!
//! ## In a cluster
//!
//! With a shared store ([`crate::store::RedisStore`]) other nodes append too. The thread
//! stays this node's only writer path: an event is validated against the replica at seq
//! `N` and the store appends it only if the match is still at `N` (atomically, in Redis);
//! on a [`StoreError::Conflict`] the thread reads the events it missed
//! ([`Store::events_after`]), applies and broadcasts them, validates again and retries
//! (at most [`MAX_ATTEMPTS`] times, then 503). Events appended by other nodes arrive as
//! [`Request::Remote`] from the node's stream reader and go through the same apply-and-
//! broadcast step, so they too are broadcast in sequencer order and the watch invariant
//! below holds for them; an event this node already has (its own, or one fetched on a
//! conflict) is skipped by seq. A store that cannot be reached answers 503
//! `{"error":"redis unavailable"}` and changes nothing.
//! The threads that run beside the sequencer in a cluster (that stream reader and the node
//! registry behind `/1/checkin`) are in [`cluster`].
//!
//! ## The watch invariant
//!
//! Broadcasts and replies leave the sequencer thread in one total order, the order in which
//! it handled the requests. A [`Request::Watch`] is answered with the match's status at seq
//! `N` plus the event messages of `(since, N]`, all taken at that point of the order: every
//! event with a seq above `N` is broadcast *after* the watch reply was handed over, every
//! event up to `N` *before* it. So when the sink and the reply closure of a worker both push
//! into that worker's one FIFO inbox, a worker that subscribes the connection when it takes
//! the watch reply out of the inbox and from then on forwards the match's broadcasts gets
//! every event after `since` exactly once, in order, without gap or repeat. Never block in a
//! reply closure or in the sink: they run on the sequencer thread.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use serde_json::Value;

use crate::domain::{error_body, error_message, Event, EventKind, Match, Team};
use crate::store::{Store, StoreError};

/// Where accepted events and cancellations go: called on the sequencer thread, once per
/// broadcast, before the writer is answered. Must not block.
pub type Sink = Arc<dyn Fn(Broadcast) + Send + Sync>;

/// Answers one request; called once, on the sequencer thread. Must not block.
pub type ReplyFn = Box<dyn FnOnce(Reply) + Send>;

/// How many times a write is validated and tried against a shared store that keeps moving
/// under it before it is refused with 503.
pub const MAX_ATTEMPTS: usize = 32;

/// Milliseconds since the Unix epoch.
pub type Clock = fn() -> i64;

/// The system clock in milliseconds since the Unix epoch.
pub fn system_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What a worker asks of the sequencer.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `PUT /1/team/{id}`: create (201) or replace (200) a team.
    PutTeam {
        /// The team id (must be a valid slug, else 422).
        id: String,
        /// Full name.
        name: String,
        /// Division.
        division: String,
    },
    /// `POST /1/matches`: 201 `{"id"}`, 409 duplicate, 422 unknown team or bad date.
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
    /// `POST /1/match/{id}/events`: 201 `{"seq","ts"}` once durable, 404, 422.
    PostEvent {
        /// The match id.
        mid: String,
        /// The event kind.
        kind: EventKind,
        /// The event data (a JSON object).
        data: Value,
        /// Post it only as this event number (`"seq"` in the body): 409 when the match is
        /// past it already. A publisher retrying after a lost answer can never post twice.
        expect_seq: Option<u64>,
    },
    /// `DELETE /1/match/{id}`: 200 `{"id"}`, 404; watchers get [`Broadcast::Cancelled`].
    DeleteMatch {
        /// The match id.
        mid: String,
    },
    /// `GET /1/team/{id}`: 200 team object, 404.
    GetTeam {
        /// The team id.
        id: String,
    },
    /// `GET /1/matches`: 200 array of match ids, sorted.
    ListMatches,
    /// `GET /1/match/{id}`: 200 match object, 404.
    GetMatch {
        /// The match id.
        mid: String,
    },
    /// `GET /1/match/{id}/history?since=SEQ`: 200 array of events after `since`, 404.
    History {
        /// The match id.
        mid: String,
        /// Only events with a greater seq (0: all).
        since: u64,
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
    /// Answered with 200 (nobody waits for it).
    Remote(Remote),
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
    /// An HTTP-style answer to an API request.
    Api(ApiReply),
    /// The answer to [`Request::Watch`].
    Watch(WatchReply),
}

/// An HTTP status and JSON body (`{"error": "…"}` for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiReply {
    /// HTTP status: 200, 201, 404, 409, 422, 500 or 503.
    pub status: u16,
    /// JSON text.
    pub body: String,
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
    /// The status message JSON at seq `N`.
    pub status: String,
    /// The event messages of `(since, N]`, in order (empty without `since`).
    pub events: Vec<Arc<str>>,
    /// The match has ended: send the above and end the subscription.
    pub ended: bool,
    /// The match state at seq `N` (to seed a worker's replica).
    pub state: Arc<Match>,
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
    },
    /// The match was deleted: close its watchers (1000, `match cancelled`).
    Cancelled {
        /// The match id.
        mid: Arc<str>,
    },
}

enum Msg {
    Request(Request, Pending),
    Stop(mpsc::Sender<()>),
}

/// A reply closure that is called exactly once: with the answer, or with a 503 when the
/// request is dropped unanswered (queued while the sequencer stopped).
struct Pending {
    watch: bool,
    reply: Option<ReplyFn>,
}

impl Pending {
    fn answer(mut self, reply: Reply) {
        if let Some(f) = self.reply.take() {
            f(reply);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
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
}

impl std::fmt::Debug for SequencerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SequencerHandle")
    }
}

impl Sequencer {
    /// Starts the sequencer thread: loads everything from `store` into memory, then serves
    /// requests until [`SequencerHandle::shutdown`] or until every handle is dropped.
    /// Fails when the store cannot be loaded.
    pub fn start(
        store: Box<dyn Store>,
        sink: Sink,
        clock: Clock,
    ) -> Result<SequencerHandle, StoreError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), StoreError>>(1);
        thread::Builder::new()
            .name("sequencer".into())
            .spawn(move || {
                let mut store = store;
                let core = store
                    .load_all()
                    .and_then(|snap| Core::new(store, snap, sink, clock));
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
            Ok(Ok(())) => Ok(SequencerHandle { tx }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Corrupt(
                "sequencer thread died while loading".into(),
            )),
        }
    }
}

impl SequencerHandle {
    /// Queues a request; never blocks. `reply` is called exactly once: on the sequencer
    /// thread when the request is done, or with a 503 (a `NotFound` "sequencer stopped" for a
    /// watch) when the sequencer has stopped — then possibly on the calling thread.
    pub fn submit(&self, request: Request, reply: ReplyFn) {
        let pending = Pending {
            watch: matches!(request, Request::Watch { .. }),
            reply: Some(reply),
        };
        // When the thread is gone the message comes back and dropping it answers 503.
        let _ = self.tx.send(Msg::Request(request, pending));
    }

    /// Stops the thread after the requests already queued, and waits until it has closed
    /// the store. Blocks: call it at shutdown, never from a worker's event loop.
    pub fn shutdown(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Msg::Stop(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }
}

fn stopped_reply(watch: bool) -> Reply {
    const STOPPED: &str = "sequencer stopped";
    if watch {
        Reply::Watch(WatchReply::NotFound {
            error: error_message(STOPPED),
        })
    } else {
        Reply::Api(ApiReply {
            status: 503,
            body: error_body(STOPPED),
        })
    }
}

pub mod cluster;
mod core;
use self::core::Core;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cluster_tests;

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

/// Builds the JSON reply for a successful request.
fn ok(status: u16, body: Value) -> Reply {
    Reply::Api(ApiReply {
        status,
        body: body.to_string(),
    })
}

/// Builds an error reply `{"error": message}`.
fn err(status: u16, message: impl std::fmt::Display) -> Reply {
    Reply::Api(ApiReply {
        status,
        body: error_body(&message.to_string()),
    })
}
