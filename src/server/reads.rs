//! The public reads, answered on the worker from its own [`Catalog`] of published
//! snapshots: `GET /1/matches`, `/1/match/{id}`, `/1/match/{id}/history` and
//! `/1/team/{id}`. No lock and no trip to the sequencer on the hot path.
//!
//! The catalog is fed by the broadcasts, through the worker's FIFO inbox, in sequencer
//! order. A read first waits (without blocking the loop) until the worker has applied every
//! broadcast the sequencer had handed out when the read began, so a read that follows an
//! acknowledged write, on any connection of any worker, sees that write. That wait is one
//! atomic load when the worker is up to date. An ended match whose history was let go from
//! memory is read from the store by the history reader thread ([`super::history`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::history::StoredHistory;
use super::replies::ReplyTable;
use super::router::{error, Routed};
use super::worker::{Worker, WorkerMsg};
use crate::domain::{error_message, event_message, Event};
use crate::proto::response::write_response;
use crate::sequencer::{Broadcast, Catalog, MatchSnapshot, WatchReply, WatchStart};

/// How many broadcasts the sequencer's sink has handed out: shared by the sink and every
/// worker.
pub type Published = Arc<AtomicU64>;

/// A worker's read side: its catalog and the reads waiting on it.
#[derive(Default)]
pub struct Reads {
    catalog: RefCell<Catalog>,
    waiting: RefCell<Vec<Waker>>,
    stored: ReplyTable<StoredHistory>,
    responses: RefCell<ResponseCache>,
}

/// Each match's keep-alive `200` to `GET /1/match/{id}` (status line, headers and body),
/// built once per snapshot and then shared by every answer of this worker: an idle `GET`
/// copies no body and formats nothing.
///
/// An entry names its snapshot by a [`Weak`] pointer: it is current while the catalog holds
/// that very snapshot (the `Weak` keeps the address from being reused). Entries of replaced
/// or deleted matches are swept whenever the table doubles, so it holds at most about twice
/// the matches read.
#[derive(Default)]
struct ResponseCache {
    entries: HashMap<Arc<str>, (Weak<MatchSnapshot>, Bytes)>,
    sweep_at: usize,
}

/// The table size below which [`ResponseCache`] never sweeps.
const RESPONSE_CACHE_MIN_SWEEP: usize = 64;

impl ResponseCache {
    /// The keep-alive response for snapshot `m`, built on first use.
    fn get(&mut self, m: &Arc<MatchSnapshot>) -> Bytes {
        if let Some((snapshot, bytes)) = self.entries.get(&m.mid) {
            if std::ptr::eq(snapshot.as_ptr(), Arc::as_ptr(m)) {
                return bytes.clone();
            }
        }
        let mut out = Vec::with_capacity(128 + m.json().len());
        write_response(&mut out, 200, "application/json", &[], m.json(), true);
        let bytes = Bytes::from(out);
        if self.entries.len() >= self.sweep_at.max(RESPONSE_CACHE_MIN_SWEEP) {
            self.entries
                .retain(|_, (snapshot, _)| snapshot.strong_count() > 0);
            self.sweep_at = 2 * self.entries.len();
        }
        self.entries
            .insert(m.mid.clone(), (Arc::downgrade(m), bytes.clone()));
        bytes
    }
}

impl Reads {
    /// Applies the next broadcast (call for every broadcast, in inbox order) and wakes the
    /// reads waiting for it.
    pub fn apply(&self, broadcast: &Broadcast) {
        self.catalog.borrow_mut().apply(broadcast);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        for w in waiting {
            w.wake();
        }
    }

    /// Waits until this worker has applied every broadcast handed out so far.
    pub async fn caught_up(&self, published: &AtomicU64) {
        let target = published.load(Ordering::Acquire);
        poll_fn(|cx| {
            if self.catalog.borrow().applied() >= target {
                Poll::Ready(())
            } else {
                self.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    /// Match `mid` as this worker knows it now (no wait: watches splice with the inbox).
    pub fn snapshot(&self, mid: &str) -> Option<Arc<MatchSnapshot>> {
        self.catalog.borrow().get(mid).cloned()
    }

    /// Delivers a history read from the store (called through the inbox).
    pub fn stored_history(&self, ticket: u64, answer: StoredHistory) {
        self.stored.fulfil(ticket, answer);
    }
}

/// A `200 application/json` response with a ready body.
fn ok_json(body: &[u8], keep_alive: bool) -> Routed {
    let mut bytes = Vec::with_capacity(128 + body.len());
    write_response(&mut bytes, 200, "application/json", &[], body, keep_alive);
    Routed::Response {
        bytes: bytes.into(),
        keep_alive,
    }
}

/// Whether this worker has applied every broadcast handed out so far (a read may be
/// answered at once).
fn is_caught_up(worker: &Worker) -> bool {
    worker.reads.catalog.borrow().applied() >= worker.shared.published.load(Ordering::Acquire)
}

async fn catalog_ready(worker: &Rc<Worker>) {
    worker.reads.caught_up(&worker.shared.published).await;
}

/// `GET /1/matches`.
pub async fn list_matches(worker: &Rc<Worker>, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
    list_answer(worker, keep_alive)
}

/// `GET /1/matches` answered at once, or `None` when the worker must first catch up.
pub fn list_matches_now(worker: &Worker, keep_alive: bool) -> Option<Routed> {
    is_caught_up(worker).then(|| list_answer(worker, keep_alive))
}

fn list_answer(worker: &Worker, keep_alive: bool) -> Routed {
    let list = worker.reads.catalog.borrow_mut().list();
    ok_json(&list, keep_alive)
}

/// `GET /1/match/{id}`.
pub async fn get_match(worker: &Rc<Worker>, mid: &str, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
    match_answer(worker, mid, keep_alive)
}

/// `GET /1/match/{id}` answered at once, or `None` when the worker must first catch up
/// with the broadcasts (then [`get_match`] waits for that).
pub fn get_match_now(worker: &Worker, mid: &str, keep_alive: bool) -> Option<Routed> {
    is_caught_up(worker).then(|| match_answer(worker, mid, keep_alive))
}

/// `GET /1/match/{id}` from the catalog as it is now.
fn match_answer(worker: &Worker, mid: &str, keep_alive: bool) -> Routed {
    match worker.reads.snapshot(mid) {
        Some(m) if keep_alive => Routed::Response {
            bytes: worker.reads.responses.borrow_mut().get(&m),
            keep_alive,
        },
        Some(m) => ok_json(m.json(), keep_alive),
        None => match_not_found(mid, keep_alive),
    }
}

/// `GET /1/team/{id}`.
pub async fn get_team(worker: &Rc<Worker>, id: &str, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
    team_answer(worker, id, keep_alive)
}

/// `GET /1/team/{id}` answered at once, or `None` when the worker must first catch up.
pub fn get_team_now(worker: &Worker, id: &str, keep_alive: bool) -> Option<Routed> {
    is_caught_up(worker).then(|| team_answer(worker, id, keep_alive))
}

fn team_answer(worker: &Worker, id: &str, keep_alive: bool) -> Routed {
    let team: Option<Bytes> = worker.reads.catalog.borrow().team(id).cloned();
    match team {
        Some(json) => ok_json(&json, keep_alive),
        None => error(404, &format!("team not found: {id}"), keep_alive),
    }
}

/// `GET /1/match/{id}/history?since=N`.
pub async fn history(worker: &Rc<Worker>, mid: &str, since: u64, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
    let Some(m) = worker.reads.snapshot(mid) else {
        return match_not_found(mid, keep_alive);
    };
    if let Some(h) = &m.history {
        return ok_json(&h.json_after(since), keep_alive);
    }
    match stored_history(worker, mid, since).await {
        Ok(Some(body)) => ok_json(&body, keep_alive),
        Ok(None) => match_not_found(mid, keep_alive),
        Err(e) if e == BUSY => error(503, BUSY, keep_alive),
        Err(e) => {
            tracing::error!(mid, error = %e, "history read failed");
            error(500, &format!("store failure: {e}"), keep_alive)
        }
    }
}

/// Answers a watch from this worker's catalog, without the sequencer: `deliver` gets the
/// answer in a synchronous step of this worker (at once when the catalog is up to date and
/// holds what is needed, else from a task once it is) and must subscribe the connection in
/// that same step; then every broadcast the worker handles afterwards is exactly
/// `N + 1, N + 2…` after the status at `N`.
pub fn answer_watch(
    worker: &Rc<Worker>,
    mid: Arc<str>,
    since: Option<u64>,
    deliver: impl FnOnce(&Rc<Worker>, WatchReply) + 'static,
) {
    if is_caught_up(worker) {
        if let Some(answer) = watch_start(worker, &mid, since) {
            deliver(worker, into_watch_reply(answer));
            return;
        }
    }
    let worker = Rc::clone(worker);
    monoio::spawn(async move {
        catalog_ready(&worker).await;
        let answer = match watch_start(&worker, &mid, since) {
            Some(answer) => answer,
            None => watch_start_stored(&worker, &mid, since.unwrap_or(0)).await,
        };
        deliver(&worker, into_watch_reply(answer));
    });
}

fn into_watch_reply(answer: Result<WatchStart, String>) -> WatchReply {
    match answer {
        Ok(start) => WatchReply::Found(start),
        Err(error) => WatchReply::NotFound { error },
    }
}

/// Where a watch starts, answered from this worker's catalog at its current point of the
/// broadcast order: the status at seq `N` and the events of `(since, N]`. Call it and
/// subscribe the connection in the same synchronous step (no `.await` between): every
/// broadcast the worker handles afterwards is then exactly `N + 1, N + 2…`.
///
/// `Some(Err(message))`: no such match (the WebSocket error message). `None`: the match has
/// ended and its history left memory: get the start with [`watch_start_stored`] (an ended
/// match has no live events to splice with).
fn watch_start(
    worker: &Worker,
    mid: &str,
    since: Option<u64>,
) -> Option<Result<WatchStart, String>> {
    let Some(m) = worker.reads.snapshot(mid) else {
        return Some(Err(error_message(&format!("match not found: {mid}"))));
    };
    match since {
        Some(s) if m.history.is_none() && s < m.state.seq => None,
        _ => Some(Ok(m.watch_start(since))),
    }
}

/// [`watch_start`] for an ended match whose history left memory: the events after `since`
/// are read from the store (off the event loop).
async fn watch_start_stored(
    worker: &Rc<Worker>,
    mid: &str,
    since: u64,
) -> Result<WatchStart, String> {
    let not_found = || error_message(&format!("match not found: {mid}"));
    let m = worker.reads.snapshot(mid).ok_or_else(not_found)?;
    let events = match stored_history(worker, mid, since).await {
        Ok(Some(body)) => serde_json::from_slice::<Vec<Event>>(&body).map_err(|e| e.to_string()),
        Ok(None) => return Err(not_found()),
        Err(e) => Err(e),
    }
    .map_err(|e| error_message(&format!("history unavailable: {e}")))?;
    let mut start = m.watch_start(None);
    start.events = events
        .iter()
        .filter(|e| e.seq <= start.seq)
        .map(|e| Arc::from(event_message(mid, e)))
        .collect();
    Ok(start)
}

/// Reads `mid`'s events after `since` from the store on the history reader thread.
async fn stored_history(worker: &Rc<Worker>, mid: &str, since: u64) -> StoredHistory {
    let Some(reader) = &worker.shared.history else {
        return Err("history not in memory".into());
    };
    let ticket = worker.reads.stored.open();
    let inbox = worker.shared.inboxes[worker.index].clone();
    let asked = reader.ask(
        mid,
        since,
        Box::new(move |answer| {
            inbox.send(WorkerMsg::Run(Box::new(move |w: &Worker| {
                w.reads.stored_history(ticket, answer)
            })));
        }),
    );
    if !asked {
        worker.reads.stored.close(ticket);
        return Err(BUSY.into());
    }
    worker.reads.stored.wait(ticket).await
}

/// Why a history read was refused: the reader's queue is full.
const BUSY: &str = "too many history reads: try again";

fn match_not_found(mid: &str, keep_alive: bool) -> Routed {
    error(404, &format!("match not found: {mid}"), keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Match, Team};

    fn snapshot(date: &str, stadium: &str) -> Arc<MatchSnapshot> {
        let home = Team::new("elp", "Estudiantes", "A").unwrap();
        let visit = Team::new("tig", "Tigre", "A").unwrap();
        let state = Match::new(&home, &visit, date, stadium).unwrap();
        Arc::new(MatchSnapshot::new(
            Arc::from(state.id.as_str()),
            Arc::new(state),
            None,
        ))
    }

    fn expected(m: &MatchSnapshot) -> Vec<u8> {
        let mut out = Vec::new();
        write_response(&mut out, 200, "application/json", &[], m.json(), true);
        out
    }

    #[test]
    fn a_snapshot_answer_is_built_once_and_rebuilt_for_the_next_snapshot() {
        let mut cache = ResponseCache::default();
        let first = snapshot("2011-10-01", "old");
        let a = cache.get(&first);
        assert_eq!(a, expected(&first));
        let again = cache.get(&first);
        assert_eq!(again.as_ptr(), a.as_ptr(), "the same bytes, shared");
        // The match changes: the next snapshot gets its own answer, never the old one.
        let second = snapshot("2011-10-01", "new");
        let b = cache.get(&second);
        assert_eq!(b, expected(&second));
        assert_ne!(a, b);
        assert_eq!(cache.entries.len(), 1);
    }

    #[test]
    fn answers_of_gone_snapshots_are_swept() {
        let mut cache = ResponseCache::default();
        let kept = snapshot("2011-01-01", "s");
        cache.get(&kept);
        for day in 1..=28 {
            for month in 2..=12 {
                // Each snapshot is dropped right away (a deleted or replaced match).
                cache.get(&snapshot(&format!("2011-{month:02}-{day:02}"), "s"));
            }
        }
        assert!(
            cache.entries.len() <= 2 * RESPONSE_CACHE_MIN_SWEEP,
            "{}",
            cache.entries.len()
        );
        let a = cache.get(&kept);
        assert_eq!(a, expected(&kept));
    }
}
