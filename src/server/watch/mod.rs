//! A worker's subscription tables and the fan-out of events to its local watchers.
//!
//! Each worker keeps, per watched match, a replica of the match state and a slab of its local
//! watchers. An event arrives once per worker (from the sequencer, through the inbox), is
//! encoded once (one WebSocket frame, one TCP-line block) and the same bytes are queued on
//! every local watcher. A new watcher of a match this worker already follows is answered from
//! the replica; otherwise from the worker's catalog of published snapshots
//! ([`super::reads::answer_watch`]: status at seq N plus history), at the same point of the
//! broadcast order as the fan-out, so live events splice in after N without gap or repeat
//! (see `crate::sequencer`). The sequencer is not asked.
//!
//! Every watcher — WebSocket, SSE or line, plain or TLS — is a record of the worker's
//! watcher plane, named by its [`RecordId`]; the few things this module does to a watcher
//! (queue bytes, end it, reach its subscription list) go through the plane's core.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::compress;
use super::metrics::WorkerStats;
use super::plane::frames::FrameId;
use super::plane::record::{Flavour, RecordId};
use super::worker::Worker;
use super::ws::{parse_command, Command};
use crate::domain::{error_message, Match};
use crate::proto::close;
use crate::proto::frame::{encode_frame, OpCode};
use crate::proto::line::{encode_block, encode_error};
use crate::sequencer::{Broadcast, Reply, WatchReply, WatchStart};

mod fanout;
mod slots;
mod subscriptions;
pub use fanout::on_broadcast;
use slots::WatcherSlots;
pub use subscriptions::{MatchName, Subscriptions, WatchList, Watching};

/// A watcher of this worker: its record in the watcher plane.
pub type ConnRef = RecordId;

/// A watched match on this worker.
pub struct MatchWatchers {
    /// The match id.
    mid: Arc<str>,
    /// The match id as its subscriptions hold it (one allocation, shared by its watchers).
    name: MatchName,
    state: Arc<Match>,
    watchers: WatcherSlots,
    /// The status at `state.seq`, encoded once per flavour for the watchers that join now
    /// (a kick-off crowd shares one frame instead of each making its own).
    statuses: [Option<Bytes>; Flavour::COUNT],
}

impl MatchWatchers {
    fn new(mid: Arc<str>, state: Arc<Match>) -> Self {
        MatchWatchers {
            name: MatchName::new(&mid),
            mid,
            state,
            watchers: WatcherSlots::default(),
            statuses: Default::default(),
        }
    }

    /// Moves the replica to `state` (the statuses encoded for the old one are dropped).
    fn set_state(&mut self, state: Arc<Match>) {
        self.state = state;
        self.statuses = Default::default();
    }

    /// The status frame for a `flavour` watcher starting at `start`, encoded once per state:
    /// `None` when `start` carries history (its status then names the point the history
    /// starts from) or is not at the replica's seq.
    fn shared_status(&mut self, flavour: Flavour, start: &WatchStart) -> Option<Bytes> {
        if !start.events.is_empty() || start.seq != self.state.seq {
            return None;
        }
        let status = &mut self.statuses[flavour as usize];
        Some(
            status
                .get_or_insert_with(|| status_bytes(Some(flavour), start, start.seq))
                .clone(),
        )
    }
}

/// A worker's subscription tables.
#[derive(Default)]
pub struct WatchTables {
    matches: RefCell<HashMap<Arc<str>, MatchWatchers>>,
    /// Commands of connections at their most watch requests in flight, waiting for answers
    /// (such a connection does not read meanwhile, so each holds at most a read's worth).
    deferred: RefCell<HashMap<ConnRef, VecDeque<String>>>,
    /// Held-back commands are being run (an answer given at once must not run them again
    /// from inside: the queue is worked off in a loop, not by recursion).
    running_deferred: std::cell::Cell<bool>,
}

/// A WebSocket text frame carrying `json`.
pub fn text_frame(json: &str) -> Bytes {
    let mut frame = Vec::with_capacity(json.len() + 10);
    encode_frame(&mut frame, OpCode::Text, json.as_bytes());
    Bytes::from(frame)
}

/// The TCP-line status block of a match.
pub fn status_block(m: &Match) -> Bytes {
    let fields = [
        ("match", m.id.clone()),
        ("home", m.home.clone()),
        ("visit", m.visit.clone()),
        ("home_score", m.home_score.to_string()),
        ("visit_score", m.visit_score.to_string()),
        ("period", m.period.as_str().to_string()),
        ("stadium", m.stadium.clone()),
        ("start_date", m.start_date.clone()),
        ("seq", m.seq.to_string()),
    ];
    let mut out = Vec::with_capacity(256);
    encode_block(&mut out, m.last_ts, "status", &fields);
    Bytes::from(out)
}

/// Runs `f` on the subscriptions of `conn`; `None` when the connection is gone.
fn with_watching<R>(
    worker: &Worker,
    conn: ConnRef,
    f: impl FnOnce(&mut Subscriptions) -> R,
) -> Option<R> {
    let mut plane = worker.plane.borrow_mut();
    plane.core.app_mut(conn).map(f)
}

/// Which bytes `conn` takes; `None` when it is gone.
fn flavour_of(worker: &Worker, conn: ConnRef) -> Option<Flavour> {
    let plane = worker.plane.borrow();
    plane.core.record(conn).map(|r| r.flavour())
}

/// Whether `conn` speaks the TCP line protocol.
fn is_line(worker: &Worker, conn: ConnRef) -> bool {
    flavour_of(worker, conn) == Some(Flavour::Line)
}

/// A message for `conn` alone (a status, a history event): a WebSocket text frame,
/// compressed for a permessage-deflate watcher, or an SSE message with `id: seq`.
fn message_for(flavour: Option<Flavour>, event: &str, seq: u64, json: &str) -> Bytes {
    match flavour {
        Some(Flavour::Sse) => super::sse::message(event, seq, json),
        Some(Flavour::WsDeflate) => compress::text_frame(json),
        _ => text_frame(json),
    }
}

/// Tells `conn` that its watch failed (`error` is the JSON error message). An SSE stream
/// has nothing else to wait for: it gets `event: error` and ends.
fn watch_failed(worker: &Worker, conn: ConnRef, error: &str) {
    if flavour_of(worker, conn) == Some(Flavour::Sse) {
        let mut out = Vec::new();
        crate::proto::sse::encode_message(&mut out, "error", None, error);
        return send_and_close(worker, conn, Bytes::from(out));
    }
    queue(worker, conn, text_frame(error));
}

/// Queues `bytes` for `conn` alone (a queue overflow closes it, counted by the plane).
fn queue(worker: &Worker, conn: ConnRef, bytes: Bytes) {
    WorkerStats::add(&worker.stats().frames_sent, 1);
    WorkerStats::add(&worker.stats().bytes_sent, bytes.len() as u64);
    let now = worker.now_ms();
    let _ = worker.plane.borrow_mut().core.send(conn, bytes, now);
}

/// Ends a connection whose last subscription ended (1000 and `reason` for a WebSocket; a
/// line or SSE stream ends after what is queued).
fn end_connection(worker: &Worker, conn: ConnRef, reason: &str) {
    close_with(worker, conn, close::NORMAL, reason);
}

/// Closes `conn`: a WebSocket with `code` and `reason`, a line or SSE stream after what is
/// queued.
fn close_with(worker: &Worker, conn: ConnRef, code: u16, reason: &str) {
    let now = worker.now_ms();
    worker
        .plane
        .borrow_mut()
        .core
        .close(conn, code, reason, now);
}

/// Sends final bytes (a line-protocol `ERROR:`) and ends the connection after them.
fn send_and_close(worker: &Worker, conn: ConnRef, bytes: Bytes) {
    let now = worker.now_ms();
    let mut plane = worker.plane.borrow_mut();
    let _ = plane.core.send(conn, bytes, now);
    plane.core.finish(conn, now);
}

/// Handles one command from a WebSocket watcher: run now, or — while the connection has its
/// most watch requests in flight — kept until answers come back, and the connection stops
/// reading meanwhile.
pub fn on_command(worker: &Rc<Worker>, conn: ConnRef, text: String) {
    let max = worker.shared.config.max_watches_per_connection;
    let busy = with_watching(worker, conn, |s| usize::from(s.in_flight) >= max);
    let mut deferred = worker.watch.deferred.borrow_mut();
    if let Some(queue) = deferred.get_mut(&conn) {
        queue.push_back(text);
        return;
    }
    if busy == Some(true) {
        deferred.insert(conn, VecDeque::from([text]));
        drop(deferred);
        set_reading(worker, conn, false);
        return;
    }
    drop(deferred);
    run_command(worker, conn, &text);
}

/// Called once a command of `conn` was handled or answered: when none of its commands is
/// left (no watch request in flight, none held back), what its session produced after them
/// (a pong, the echo of its close) goes out, after their answers.
pub fn settle(worker: &Worker, conn: ConnRef) {
    let idle = with_watching(worker, conn, |s| s.in_flight == 0) == Some(true);
    if idle && !is_deferring(worker, conn) {
        super::plane::driver::release(worker, conn);
    }
}

/// Whether `conn` holds commands back (and must not read).
pub fn is_deferring(worker: &Worker, conn: ConnRef) -> bool {
    worker.watch.deferred.borrow().contains_key(&conn)
}

/// Runs held-back commands of `conn` while it is under its in-flight limit; reading resumes
/// once none is left.
fn run_deferred(worker: &Rc<Worker>, conn: ConnRef) {
    if worker.watch.running_deferred.replace(true) {
        return;
    }
    run_deferred_loop(worker, conn);
    worker.watch.running_deferred.set(false);
}

fn run_deferred_loop(worker: &Rc<Worker>, conn: ConnRef) {
    let max = worker.shared.config.max_watches_per_connection;
    loop {
        if with_watching(worker, conn, |s| usize::from(s.in_flight) >= max) != Some(false) {
            return;
        }
        let next = {
            let mut deferred = worker.watch.deferred.borrow_mut();
            let Some(queue) = deferred.get_mut(&conn) else {
                return;
            };
            let next = queue.pop_front();
            if next.is_none() {
                deferred.remove(&conn);
            }
            next
        };
        match next {
            Some(text) => run_command(worker, conn, &text),
            None => return set_reading(worker, conn, true),
        }
    }
}

/// Pauses or resumes reading from `conn`.
fn set_reading(worker: &Rc<Worker>, conn: ConnRef, on: bool) {
    super::plane::driver::set_reading(worker, conn, on)
}

/// Forgets what a closed connection held back.
pub fn forget_deferred(worker: &Worker, conn: ConnRef) {
    worker.watch.deferred.borrow_mut().remove(&conn);
}

fn run_command(worker: &Rc<Worker>, conn: ConnRef, text: &str) {
    match parse_command(text) {
        Ok(Command::Watch { mid, since, .. }) => watch(worker, conn, &mid, since),
        Ok(Command::Unwatch { mid }) => unwatch(worker, conn, &mid),
        Err(e) => {
            let frame = text_frame(&error_message(&format!("bad command: {e}")));
            queue(worker, conn, frame);
        }
    }
}

/// Refuses a watch request on the worker (not a match id, or over the per-connection limit):
/// an error message, and after `watch_refusals_before_close` of them a close with 1008. A
/// line watcher gets `ERROR:` and is closed at once.
fn refuse_watch(worker: &Worker, conn: ConnRef, reason: &str) {
    WorkerStats::add(&worker.stats().watches_refused, 1);
    if flavour_of(worker, conn) == Some(Flavour::Sse) {
        return watch_failed(worker, conn, &error_message(reason));
    }
    if is_line(worker, conn) {
        let mut out = Vec::new();
        encode_error(&mut out, reason);
        return send_and_close(worker, conn, Bytes::from(out));
    }
    queue(worker, conn, text_frame(&error_message(reason)));
    let refused = with_watching(worker, conn, |s| {
        s.refused = s.refused.saturating_add(1);
        u32::from(s.refused)
    });
    if refused >= Some(worker.shared.config.watch_refusals_before_close) {
        close_with(
            worker,
            conn,
            close::POLICY,
            "too many refused watch requests",
        );
    }
}

/// The start of `text`, at most `max` characters, for an error message.
fn excerpt(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(i, _)| &text[..i])
}

/// Handles `watch` from connection `conn`.
pub fn watch(worker: &Rc<Worker>, conn: ConnRef, mid: &str, since: Option<u64>) {
    if !crate::domain::is_match_id(mid) {
        let reason = format!("not a match id: {}", excerpt(mid, 64));
        return refuse_watch(worker, conn, &reason);
    }
    let already = with_watching(worker, conn, |w| w.iter().any(|w| w.is(mid)));
    match already {
        None => return,
        Some(true) => {
            if !is_line(worker, conn) {
                let error = error_message(&format!("already watching {mid}"));
                queue(worker, conn, text_frame(&error));
            }
            return;
        }
        Some(false) => {}
    }
    let max = worker.shared.config.max_watches_per_connection;
    if with_watching(worker, conn, |w| w.len()).is_some_and(|n| n >= max) {
        let reason = format!("too many watches: at most {max} per connection");
        return refuse_watch(worker, conn, &reason);
    }
    let local = worker
        .watch
        .matches
        .borrow()
        .get(mid)
        .map(|m| (m.mid.clone(), m.name.clone(), m.state.clone()));
    if let Some((shared_mid, name, replica)) = local {
        if since.is_none_or(|s| s >= replica.seq) {
            let start = WatchStart {
                mid: shared_mid,
                seq: replica.seq,
                events: Vec::new(),
                ended: replica.is_ended(),
                state: replica,
            };
            with_watching(worker, conn, |w| {
                w.push(Watching {
                    mid: name,
                    slot: None,
                })
            });
            start_watching(worker, conn, start);
            return;
        }
    }
    let mid: Arc<str> = mid.into();
    with_watching(worker, conn, |w| {
        w.in_flight = w.in_flight.saturating_add(1);
        w.push(Watching {
            mid: MatchName::new(&mid),
            slot: None,
        })
    });
    let answered = Arc::clone(&mid);
    super::reads::answer_watch(worker, mid, since, move |worker, reply| {
        on_watch_reply(worker, conn, &answered, Reply::Watch(reply));
    });
}

/// Handles `unwatch`.
pub fn unwatch(worker: &Rc<Worker>, conn: ConnRef, mid: &str) {
    let removed = with_watching(worker, conn, |watching| watching.take(|w| w.is(mid))).flatten();
    if let Some(w) = removed {
        drop_slot(worker, conn, &w);
    }
}

/// Takes `conn` out of the table of the match `w` names.
fn drop_slot(worker: &Worker, conn: ConnRef, w: &Watching) {
    let Some(slot) = w.slot else {
        return;
    };
    let mut matches = worker.watch.matches.borrow_mut();
    if let Some(entry) = matches.get_mut(w.mid.as_str()) {
        if entry.watchers.remove(slot, conn) {
            worker.stats().set_watchers(&entry.mid, -1);
        }
        if entry.watchers.is_empty() {
            matches.remove(w.mid.as_str());
        }
    }
}

/// Removes the subscriptions of closed connection `conn` (its list, taken from it).
pub fn forget_subscriptions(worker: &Worker, conn: ConnRef, watching: &WatchList) {
    for w in watching.iter() {
        drop_slot(worker, conn, w);
    }
}

/// The sequencer answered a watch: the answer is handled, then commands held back while the
/// connection was at its in-flight limit go on.
pub fn on_watch_reply(worker: &Rc<Worker>, conn: ConnRef, mid: &Arc<str>, reply: Reply) {
    with_watching(worker, conn, |w| {
        w.in_flight = w.in_flight.saturating_sub(1)
    });
    handle_watch_reply(worker, conn, mid, reply);
    run_deferred(worker, conn);
    settle(worker, conn);
}

fn handle_watch_reply(worker: &Rc<Worker>, conn: ConnRef, mid: &Arc<str>, reply: Reply) {
    let pending = with_watching(worker, conn, |w| {
        w.iter().any(|w| w.is(mid) && w.slot.is_none())
    });
    if pending != Some(true) {
        return;
    }
    match reply {
        Reply::Watch(WatchReply::Found(start)) => start_watching(worker, conn, start),
        Reply::Watch(WatchReply::NotFound { error }) => {
            with_watching(worker, conn, |w| w.retain(|w| !w.is(mid)));
            if is_line(worker, conn) {
                let mut out = Vec::new();
                encode_error(&mut out, &format!("match not found: {mid}"));
                send_and_close(worker, conn, Bytes::from(out));
            } else {
                watch_failed(worker, conn, &error);
            }
        }
        Reply::Refused(refused) => {
            with_watching(worker, conn, |w| w.retain(|w| !w.is(mid)));
            watch_failed(worker, conn, &error_message(&refused.to_string()));
        }
        Reply::Done(_) => {
            with_watching(worker, conn, |w| w.retain(|w| !w.is(mid)));
        }
    }
}

fn start_watching(worker: &Rc<Worker>, conn: ConnRef, start: WatchStart) {
    let flavour = flavour_of(worker, conn);
    if start.ended {
        queue_start(worker, conn, flavour, &start, None);
        let left = with_watching(worker, conn, |watching| {
            watching.retain(|w| !w.is(&start.mid));
            watching.len()
        });
        if left == Some(0) {
            end_connection(worker, conn, "match ended");
        }
        return;
    }
    // Subscribed first: if queueing the start closes the connection, its subscription list
    // already names the slot, and the close removes it.
    let (slot, mid, status) = {
        let mut matches = worker.watch.matches.borrow_mut();
        let entry = matches
            .entry(start.mid.clone())
            .or_insert_with(|| MatchWatchers::new(start.mid.clone(), start.state.clone()));
        if start.state.seq > entry.state.seq {
            entry.set_state(start.state.clone());
        }
        let status = flavour.and_then(|f| entry.shared_status(f, &start));
        (entry.watchers.insert(conn), entry.name.clone(), status)
    };
    worker.stats().set_watchers(&start.mid, 1);
    with_watching(worker, conn, |watching| {
        if let Some(w) = watching.iter_mut().find(|w| w.is(&start.mid)) {
            w.slot = Some(slot);
            w.mid = mid;
        }
    });
    queue_start(worker, conn, flavour, &start, status);
}

/// The status of a match as `flavour` takes it; `id` is an SSE message's `id:`.
fn status_bytes(flavour: Option<Flavour>, start: &WatchStart, id: u64) -> Bytes {
    match flavour {
        Some(Flavour::Line) => status_block(&start.state),
        _ => message_for(flavour, "status", id, &start.status()),
    }
}

/// Queues the start of a watch: its status (`shared`, when the match's replica had it
/// encoded) and then its history, in order. A line watcher gets no history.
fn queue_start(
    worker: &Worker,
    conn: ConnRef,
    flavour: Option<Flavour>,
    start: &WatchStart,
    shared: Option<Bytes>,
) {
    // The history is `(since, seq]`, in order. An SSE status's `id` is `since` when history
    // follows it (its own seq otherwise): a stream cut right after the status resumes before
    // the history, not after it.
    let first = start.seq + 1 - start.events.len() as u64;
    let status = shared.unwrap_or_else(|| status_bytes(flavour, start, first - 1));
    queue(worker, conn, status);
    if flavour == Some(Flavour::Line) {
        return;
    }
    for (seq, event) in (first..).zip(&start.events) {
        queue(worker, conn, message_for(flavour, "event", seq, event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{status_message, Team};

    fn state(seq: u64) -> Arc<Match> {
        let home = Team::new("elp", "Estudiantes", "A").unwrap();
        let visit = Team::new("tig", "Tigre", "A").unwrap();
        let mut m = Match::new(&home, &visit, "2011-09-10", "Estadio Ciudad de La Plata").unwrap();
        m.seq = seq;
        Arc::new(m)
    }

    fn start(state: &Arc<Match>, events: Vec<Arc<str>>) -> WatchStart {
        WatchStart {
            mid: state.id.as_str().into(),
            seq: state.seq,
            events,
            ended: false,
            state: state.clone(),
        }
    }

    #[test]
    fn watchers_joining_at_one_seq_share_one_status_frame_per_flavour() {
        let s = state(3);
        let mut m = MatchWatchers::new(s.id.as_str().into(), s.clone());
        let first = m.shared_status(Flavour::Ws, &start(&s, vec![])).unwrap();
        let second = m.shared_status(Flavour::Ws, &start(&s, vec![])).unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "one frame, shared");
        assert_eq!(first, text_frame(&status_message(&s)));
        let line = m.shared_status(Flavour::Line, &start(&s, vec![])).unwrap();
        assert_eq!(line, status_block(&s));
        let sse = m.shared_status(Flavour::Sse, &start(&s, vec![])).unwrap();
        assert!(std::str::from_utf8(&sse).unwrap().contains("id: 3\n"));
    }

    #[test]
    fn a_start_with_history_or_off_the_replica_seq_gets_its_own_status() {
        let s = state(3);
        let mut m = MatchWatchers::new(s.id.as_str().into(), s.clone());
        let history = start(&s, vec![Arc::from("{}")]);
        assert!(m.shared_status(Flavour::Sse, &history).is_none());
        assert!(m
            .shared_status(Flavour::Ws, &start(&state(2), vec![]))
            .is_none());
    }

    #[test]
    fn a_new_state_drops_the_statuses_encoded_for_the_old_one() {
        let s = state(3);
        let mut m = MatchWatchers::new(s.id.as_str().into(), s.clone());
        let old = m.shared_status(Flavour::Ws, &start(&s, vec![])).unwrap();
        let next = state(4);
        m.set_state(next.clone());
        let new = m.shared_status(Flavour::Ws, &start(&next, vec![])).unwrap();
        assert_ne!(old, new);
        assert_eq!(new, text_frame(&status_message(&next)));
    }
}
