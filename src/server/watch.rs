//! A worker's subscription tables and the fan-out of events to its local watchers.
//!
//! Each worker keeps, per watched match, a replica of the match state and a slab of its local
//! watchers. An event arrives once per worker (from the sequencer, through the inbox), is
//! encoded once (one WebSocket frame, one TCP-line block) and the same bytes are queued on
//! every local watcher. A new watcher of a match this worker already follows is answered from
//! the replica without asking the sequencer; otherwise the sequencer's watch reply (status at
//! seq N plus history) comes back through the same FIFO inbox as the broadcasts, so live
//! events splice in after N without gap or repeat (see `crate::sequencer`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use slab::Slab;

use super::metrics::WorkerStats;
use super::worker::{ConnKind, ConnState, Worker, WorkerMsg};
use crate::domain::{error_message, status_message, Match};
use crate::proto::frame::{encode_frame, OpCode};
use crate::proto::line::{encode_block, encode_error};
use crate::sequencer::{Broadcast, Reply, Request, WatchReply, WatchStart};

/// A subscription of one connection.
#[derive(Debug)]
pub struct Watching {
    /// The match.
    pub mid: Arc<str>,
    /// Key in the match's watcher slab once active; `None` while the sequencer is asked.
    pub slot: Option<usize>,
}

/// One local watcher of a match: the connection's slab key and serial.
#[derive(Debug, Clone, Copy)]
struct WatcherRef {
    conn: usize,
    serial: u64,
}

/// A watched match on this worker.
pub struct MatchWatchers {
    state: Arc<Match>,
    watchers: Slab<WatcherRef>,
}

/// A worker's subscription tables.
#[derive(Default)]
pub struct WatchTables {
    matches: RefCell<HashMap<Arc<str>, MatchWatchers>>,
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

fn queue(worker: &Worker, state: &ConnState, bytes: Bytes) {
    WorkerStats::add(&worker.stats().frames_sent, 1);
    WorkerStats::add(&worker.stats().bytes_sent, bytes.len() as u64);
    if state.outbox.push(bytes).is_err() {
        WorkerStats::add(&worker.stats().slow_consumer_closes, 1);
    }
}

/// Ends a connection whose last subscription ended.
fn end_connection(state: &ConnState, reason: &str) {
    match state.kind.get() {
        ConnKind::Line => state.outbox.finish_after_flush(),
        _ => state.outbox.close_after_flush(1000, reason),
    }
}

/// Handles `watch` from connection `conn`.
pub fn watch(worker: &Rc<Worker>, conn: usize, state: &ConnState, mid: &str, since: Option<u64>) {
    if state.watching.borrow().iter().any(|w| &*w.mid == mid) {
        if state.kind.get() != ConnKind::Line {
            queue(
                worker,
                state,
                text_frame(&error_message(&format!("already watching {mid}"))),
            );
        }
        return;
    }
    let local = worker
        .watch
        .matches
        .borrow()
        .get(mid)
        .map(|m| m.state.clone());
    if let Some(replica) = local {
        if since.is_none_or(|s| s >= replica.seq) {
            let start = WatchStart {
                mid: replica.id.as_str().into(),
                seq: replica.seq,
                status: status_message(&replica),
                events: Vec::new(),
                ended: replica.is_ended(),
                state: replica,
            };
            state.watching.borrow_mut().push(Watching {
                mid: start.mid.clone(),
                slot: None,
            });
            start_watching(worker, conn, state, start);
            return;
        }
    }
    let mid: Arc<str> = mid.into();
    state.watching.borrow_mut().push(Watching {
        mid: mid.clone(),
        slot: None,
    });
    let inbox = worker.shared.inboxes[worker.index].clone();
    let serial = state.serial;
    worker.shared.sequencer.submit(
        Request::Watch {
            mid: mid.to_string(),
            since,
        },
        Box::new(move |reply| {
            inbox.send(WorkerMsg::WatchReply {
                conn,
                serial,
                mid,
                reply,
            });
        }),
    );
}

/// Handles `unwatch`.
pub fn unwatch(worker: &Rc<Worker>, state: &ConnState, mid: &str) {
    let removed = {
        let mut watching = state.watching.borrow_mut();
        watching
            .iter()
            .position(|w| &*w.mid == mid)
            .map(|i| watching.swap_remove(i))
    };
    if let Some(w) = removed {
        drop_slot(worker, &w);
    }
}

fn drop_slot(worker: &Worker, w: &Watching) {
    if let Some(slot) = w.slot {
        let mut matches = worker.watch.matches.borrow_mut();
        if let Some(entry) = matches.get_mut(&w.mid) {
            if entry.watchers.contains(slot) {
                entry.watchers.remove(slot);
            }
            if entry.watchers.is_empty() {
                matches.remove(&w.mid);
            }
            worker.stats().set_watchers(&w.mid, -1);
        }
    }
}

/// Removes every subscription of a closing connection.
pub fn forget_connection(worker: &Worker, state: &ConnState) {
    let watching = std::mem::take(&mut *state.watching.borrow_mut());
    for w in &watching {
        drop_slot(worker, w);
    }
}

/// The sequencer answered a watch.
pub fn on_watch_reply(worker: &Rc<Worker>, conn: usize, serial: u64, mid: &Arc<str>, reply: Reply) {
    let state = match worker.conns.borrow().get(conn) {
        Some(s) if s.serial == serial => s.clone(),
        _ => return,
    };
    let pending = state
        .watching
        .borrow()
        .iter()
        .any(|w| w.mid == *mid && w.slot.is_none());
    if !pending {
        return;
    }
    match reply {
        Reply::Watch(WatchReply::Found(start)) => start_watching(worker, conn, &state, start),
        Reply::Watch(WatchReply::NotFound { error }) => {
            state.watching.borrow_mut().retain(|w| w.mid != *mid);
            if state.kind.get() == ConnKind::Line {
                let mut out = Vec::new();
                encode_error(&mut out, &format!("match not found: {mid}"));
                state.outbox.push_raw_and_close(Bytes::from(out));
            } else {
                queue(worker, &state, text_frame(&error));
            }
        }
        Reply::Refused(refused) => {
            state.watching.borrow_mut().retain(|w| w.mid != *mid);
            queue(
                worker,
                &state,
                text_frame(&error_message(&refused.to_string())),
            );
        }
        Reply::Done(_) => state.watching.borrow_mut().retain(|w| w.mid != *mid),
    }
}

fn start_watching(worker: &Rc<Worker>, conn: usize, state: &ConnState, start: WatchStart) {
    let line = state.kind.get() == ConnKind::Line;
    if line {
        queue(worker, state, status_block(&start.state));
    } else {
        queue(worker, state, text_frame(&start.status));
        for event in &start.events {
            queue(worker, state, text_frame(event));
        }
    }
    if start.ended {
        let left = {
            let mut watching = state.watching.borrow_mut();
            watching.retain(|w| w.mid != start.mid);
            watching.len()
        };
        if left == 0 {
            end_connection(state, "match ended");
        }
        return;
    }
    let slot = {
        let mut matches = worker.watch.matches.borrow_mut();
        let entry = matches
            .entry(start.mid.clone())
            .or_insert_with(|| MatchWatchers {
                state: start.state.clone(),
                watchers: Slab::new(),
            });
        if start.state.seq > entry.state.seq {
            entry.state = start.state.clone();
        }
        entry.watchers.insert(WatcherRef {
            conn,
            serial: state.serial,
        })
    };
    worker.stats().set_watchers(&start.mid, 1);
    if let Some(w) = state
        .watching
        .borrow_mut()
        .iter_mut()
        .find(|w| w.mid == start.mid)
    {
        w.slot = Some(slot);
    }
}

/// Fans a sequenced event (or a cancellation) out to this worker's watchers.
pub fn on_broadcast(worker: &Rc<Worker>, broadcast: Broadcast, sent_at: Instant) {
    match broadcast {
        Broadcast::Event {
            mid,
            ts,
            kind,
            ended,
            ws_text,
            line_fields,
            state,
            ..
        } => {
            let mut matches = worker.watch.matches.borrow_mut();
            let Some(entry) = matches.get_mut(&mid) else {
                return;
            };
            entry.state = state;
            let ws_frame = text_frame(&ws_text);
            let mut line_block: Option<Bytes> = None;
            let conns = worker.conns.borrow();
            let mut delivered = 0u64;
            let mut overflowed = 0u64;
            let mut delivered_bytes = 0u64;
            for (_, w) in entry.watchers.iter() {
                let Some(conn) = conns.get(w.conn).filter(|c| c.serial == w.serial) else {
                    continue;
                };
                let bytes = if conn.kind.get() == ConnKind::Line {
                    line_block.get_or_insert_with(|| {
                        let fields: Vec<(&str, String)> = line_fields
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.clone()))
                            .collect();
                        let mut out = Vec::with_capacity(256);
                        encode_block(&mut out, ts, kind.as_str(), &fields);
                        Bytes::from(out)
                    })
                } else {
                    &ws_frame
                };
                if conn.outbox.push_shared(bytes).is_err() {
                    overflowed += 1;
                }
                delivered += 1;
                delivered_bytes += bytes.len() as u64;
            }
            let stats = worker.stats();
            WorkerStats::add(&stats.events, 1);
            WorkerStats::add(&stats.frames_sent, delivered);
            WorkerStats::add(&stats.bytes_sent, delivered_bytes);
            WorkerStats::add(&stats.slow_consumer_closes, overflowed);
            stats.observe_latency(sent_at.elapsed().as_micros() as u64);
            if ended {
                let entry = matches.remove(&mid);
                drop(matches);
                if let Some(entry) = entry {
                    end_subscriptions(worker, &conns, &mid, entry, "match ended");
                }
            }
        }
        Broadcast::Cancelled { mid } => {
            let entry = worker.watch.matches.borrow_mut().remove(&mid);
            if let Some(entry) = entry {
                let conns = worker.conns.borrow();
                end_subscriptions(worker, &conns, &mid, entry, "match cancelled");
            }
        }
        // Catalog changes (served by `super::reads`), nothing to fan out.
        Broadcast::Match(_) | Broadcast::Team { .. } | Broadcast::Loaded(_) => {}
    }
}

fn end_subscriptions(
    worker: &Worker,
    conns: &Slab<Rc<ConnState>>,
    mid: &Arc<str>,
    entry: MatchWatchers,
    reason: &str,
) {
    for (_, w) in entry.watchers.iter() {
        let Some(conn) = conns.get(w.conn).filter(|c| c.serial == w.serial) else {
            continue;
        };
        worker.stats().set_watchers(mid, -1);
        let left = {
            let mut watching = conn.watching.borrow_mut();
            watching.retain(|x| x.mid != *mid);
            watching.len()
        };
        if left == 0 {
            end_connection(conn, reason);
        }
    }
}
