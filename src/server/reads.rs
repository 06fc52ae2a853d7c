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
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::history::StoredHistory;
use super::replies::ReplyTable;
use super::router::{error, Routed};
use super::worker::{Worker, WorkerMsg};
use crate::proto::response::write_response;
use crate::sequencer::{Broadcast, Catalog, MatchSnapshot};

/// How many broadcasts the sequencer's sink has handed out: shared by the sink and every
/// worker.
pub type Published = Arc<AtomicU64>;

/// A worker's read side: its catalog and the reads waiting on it.
#[derive(Default)]
pub struct Reads {
    catalog: RefCell<Catalog>,
    waiting: RefCell<Vec<Waker>>,
    stored: ReplyTable<StoredHistory>,
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
    Routed::Response { bytes, keep_alive }
}

async fn catalog_ready(worker: &Rc<Worker>) {
    worker.reads.caught_up(&worker.shared.published).await;
}

/// `GET /1/matches`.
pub async fn list_matches(worker: &Rc<Worker>, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
    let list = worker.reads.catalog.borrow_mut().list();
    ok_json(&list, keep_alive)
}

/// `GET /1/match/{id}`.
pub async fn get_match(worker: &Rc<Worker>, mid: &str, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
    match worker.reads.snapshot(mid) {
        Some(m) => ok_json(&m.json, keep_alive),
        None => match_not_found(mid, keep_alive),
    }
}

/// `GET /1/team/{id}`.
pub async fn get_team(worker: &Rc<Worker>, id: &str, keep_alive: bool) -> Routed {
    catalog_ready(worker).await;
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
    let Some(reader) = &worker.shared.history else {
        return error(500, "history not in memory", keep_alive);
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
        return error(503, "too many history reads: try again", keep_alive);
    }
    match worker.reads.stored.wait(ticket).await {
        Ok(Some(body)) => ok_json(&body, keep_alive),
        Ok(None) => match_not_found(mid, keep_alive),
        Err(e) => {
            tracing::error!(mid, error = %e, "history read failed");
            error(500, &format!("store failure: {e}"), keep_alive)
        }
    }
}

fn match_not_found(mid: &str, keep_alive: bool) -> Routed {
    error(404, &format!("match not found: {mid}"), keep_alive)
}
