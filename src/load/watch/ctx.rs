//! What the tasks of one load thread share: every watcher's outcome, the latency aggregates
//! and one read buffer, and how a watcher's status and events are recorded into them.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::{Outcome, Phase, Progress, WatchConfig};
use crate::load::stats::{self, LatencyStats};
use crate::load::verify::Verdict;
use crate::load::wire::Wire;

/// One load thread's shared state; a watcher is known by its slot in `indices`/`outcomes`.
pub(super) struct Ctx {
    /// The run's settings.
    pub(super) cfg: Arc<WatchConfig>,
    /// The counters the main thread shows and waits on.
    pub(super) progress: Arc<Progress>,
    /// The global numbers of this thread's watchers.
    pub(super) indices: Vec<usize>,
    /// One per watcher, by slot.
    pub(super) outcomes: RefCell<Vec<Outcome>>,
    /// Latency aggregates of this thread.
    pub(super) stats: RefCell<LatencyStats>,
    /// Latency per server the watcher was on (only with several servers).
    pub(super) per_server: RefCell<Vec<(SocketAddr, Histogram<u64>)>>,
    /// The read buffer every watcher of the thread shares (borrowed only for one `recv`).
    pub(super) scratch: RefCell<Vec<u8>>,
    /// Watchers done for good.
    pub(super) done: Cell<usize>,
}

impl Ctx {
    /// Nanoseconds since the run's origin.
    pub(super) fn now_ns(&self) -> u64 {
        self.cfg.origin.elapsed().as_nanos() as u64
    }

    /// Marks watcher `slot` done for good, ending in `phase`.
    pub(super) fn finish(&self, slot: usize, phase: Phase) {
        let mut o = self.outcomes.borrow_mut();
        o[slot].phase = phase;
        if !o[slot].checker.has_status() {
            self.progress.failed_early.fetch_add(1, Ordering::AcqRel);
        }
        drop(o);
        self.done.set(self.done.get() + 1);
        self.progress.done.fetch_add(1, Ordering::AcqRel);
    }

    /// Records why watcher `slot` failed (the first reason wins).
    pub(super) fn fail(&self, slot: usize, error: String) {
        let mut o = self.outcomes.borrow_mut();
        if o[slot].error.is_none() {
            o[slot].error = Some(error);
        }
    }

    /// Records watcher `slot`'s status (the match at `seq`); it is ready for events.
    pub(super) fn on_status(&self, slot: usize, seq: u64) {
        let mut o = self.outcomes.borrow_mut();
        if !o[slot].checker.has_status() {
            o[slot].checker.status(seq);
            self.progress.ready.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Whether watcher `slot` has seen the match's `stop`.
    pub(super) fn stopped(&self, slot: usize) -> bool {
        self.outcomes.borrow()[slot].stop_seq.is_some()
    }

    /// Records that watcher `slot` saw the match's `stop` as event `seq`.
    pub(super) fn set_stop(&self, slot: usize, seq: u64) {
        self.outcomes.borrow_mut()[slot].stop_seq = Some(seq);
    }

    /// Records one event number: the order check, the latency, the progress count.
    pub(super) fn on_event(&self, slot: usize, feed: usize, seq: u64, now_ns: u64) -> Verdict {
        let verdict = self.outcomes.borrow_mut()[slot].checker.event(seq);
        if matches!(
            verdict,
            Verdict::InOrder | Verdict::AfterGap(_) | Verdict::Reordered
        ) {
            self.progress.deliveries.fetch_add(1, Ordering::Relaxed);
            let f = &self.cfg.feeds[feed];
            if let Some(sent) = f.sent_at(seq) {
                let index = (seq - f.base.load(Ordering::Acquire) - 1) as usize;
                let latency = now_ns.saturating_sub(sent);
                self.stats.borrow_mut().record(feed, index, latency);
                let server = self.outcomes.borrow()[slot].server;
                if let (Some(server), true) = (server, self.cfg.targets.len() > 1) {
                    self.record_per_server(server, latency);
                }
            }
        }
        verdict
    }

    /// Adds one latency to `server`'s histogram.
    fn record_per_server(&self, server: SocketAddr, latency_ns: u64) {
        let mut per = self.per_server.borrow_mut();
        let at = match per.iter().position(|(a, _)| *a == server) {
            Some(i) => i,
            None => {
                per.push((server, stats::histogram()));
                per.len() - 1
            }
        };
        per[at]
            .1
            .saturating_record(latency_ns.clamp(1, stats::MAX_TRACKED_NS));
    }

    /// Reads what is there (waiting for readiness) into `buf`; `Ok(false)` at EOF.
    pub(super) async fn read_more(&self, stream: &Wire, buf: &mut Vec<u8>) -> io::Result<bool> {
        Ok(stream.recv_some(&self.scratch, buf).await? > 0)
    }
}
