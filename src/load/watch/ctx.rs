//! What the tasks of one load thread share: every watcher's outcome, the latency aggregates,
//! one read buffer and the event payloads already checked ([`KnownEvents`]), and how a
//! watcher's status and events are recorded into them.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hdrhistogram::Histogram;

use super::known::KnownEvents;
use super::{Outcome, Phase, Progress, WatchConfig};
use crate::load::stats::{self, LatencyStats};
use crate::load::verify::Verdict;
use crate::load::wire::Wire;

/// The room a waiting watcher's read offers: a few event frames. It is what each watcher
/// holds while it waits, so it is small; a watcher that falls behind reads more at once
/// ([`next_room`]).
pub(super) const READ_ROOM: usize = 512;
/// The most room one read offers (a watcher catching up after a burst).
pub(super) const MAX_READ_ROOM: usize = 64 << 10;

/// The room of the next read after one that offered `room` and got `got` bytes: four times as
/// much after a read that filled it (more is waiting), back to [`READ_ROOM`] otherwise.
pub(super) fn next_room(room: usize, got: usize) -> usize {
    if got >= room {
        (room * 4).min(MAX_READ_ROOM)
    } else {
        READ_ROOM
    }
}

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
    /// Event payloads of this thread's feeds already checked by a full parse.
    pub(super) known: RefCell<KnownEvents>,
    /// Deliveries recorded but not yet added to `progress.deliveries` (one shared add per
    /// batch of frames, not one per frame).
    pub(super) unreported: Cell<u64>,
}

impl Ctx {
    /// Nanoseconds since the run's origin.
    pub(super) fn now_ns(&self) -> u64 {
        self.cfg.origin.elapsed().as_nanos() as u64
    }

    /// Marks watcher `slot` done for good, ending in `phase`.
    pub(super) fn finish(&self, slot: usize, phase: Phase) {
        self.report_deliveries();
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
            self.unreported.set(self.unreported.get() + 1);
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

    /// The event number watcher `slot` expects next, once it has its status.
    pub(super) fn expected_next(&self, slot: usize) -> Option<u64> {
        let o = self.outcomes.borrow();
        let checker = &o[slot].checker;
        checker.has_status().then(|| checker.last() + 1)
    }

    /// Adds the deliveries recorded since the last call to the shared progress counter.
    pub(super) fn report_deliveries(&self) {
        let n = self.unreported.replace(0);
        if n > 0 {
            self.progress.deliveries.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads what is there (waiting for readiness) into `buf`; `Ok(false)` at EOF.
    pub(super) async fn read_more(&self, stream: &Wire, buf: &mut Vec<u8>) -> io::Result<bool> {
        self.report_deliveries();
        Ok(stream.recv_some(&self.scratch, buf).await? > 0)
    }

    /// [`Ctx::read_more`] for a watcher that keeps reading: one read of at most `room` bytes
    /// into the watcher's own `buf` (see [`Wire::recv_into`]). Returns the bytes read (0 at
    /// EOF).
    pub(super) async fn read_next(
        &self,
        stream: &mut Wire,
        buf: &mut Vec<u8>,
        room: usize,
    ) -> io::Result<usize> {
        self.report_deliveries();
        stream.recv_into(&self.scratch, buf, room).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_read_offers_more_room_and_a_short_one_goes_back() {
        assert_eq!(next_room(READ_ROOM, 100), READ_ROOM);
        assert_eq!(next_room(READ_ROOM, READ_ROOM), 4 * READ_ROOM);
        assert_eq!(next_room(4 * READ_ROOM, 4 * READ_ROOM), 16 * READ_ROOM);
        assert_eq!(next_room(MAX_READ_ROOM, MAX_READ_ROOM), MAX_READ_ROOM);
        assert_eq!(next_room(MAX_READ_ROOM, 10), READ_ROOM);
    }
}
