//! Per-connection defences against careless and hostile peers, kept beside each connection
//! task and checked by its worker's periodic sweep (watcher-plane records have their own, in
//! the plane's deadline wheel):
//!
//! * **send timeout** (`--send-timeout-ms`): queued bytes that make no progress that long
//!   close the connection — a peer that stopped reading cannot pin its queue forever;
//! * **message timeout** (`--ws-message-timeout-ms`): a WebSocket message (fragmented, or a
//!   frame still arriving) must be complete that long after it began.
//!
//! It also holds the connection's claim on its address's count (`--max-connections-per-ip`).
//! The clock is the worker's millisecond clock, passed in: this module never reads time.

use std::cell::Cell;
use std::net::IpAddr;

use super::admission::IpTicket;
use super::metrics::WorkerStats;
use super::outbox::Outbox;
use super::worker::{ConnKind, ConnState, Worker};
use crate::proto::close;

/// What a sweep found wrong with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Fine,
    /// Queued bytes made no progress for the send timeout.
    SendTimedOut,
    /// A WebSocket message was begun and not finished within the message timeout.
    MessageTimedOut,
}

/// The defence state of one connection (a few words; it exists once per connection).
pub struct ConnGuard {
    ticket: IpTicket,
    /// The outbox's progress counter when the current stall began.
    seen_progress: Cell<u32>,
    /// When the outbox was first seen non-empty without progress (worker ms, wrapping).
    stalled_since: Cell<Option<u32>>,
    /// When the unfinished WebSocket message began (worker ms, wrapping).
    message_since: Cell<Option<u32>>,
}

/// Milliseconds on the worker clock, wrapping every ~49 days (differences stay right).
fn ms32(now_ms: u64) -> u32 {
    now_ms as u32
}

impl ConnGuard {
    /// The guard of a connection admitted with `ticket`.
    pub fn new(ticket: IpTicket) -> Self {
        ConnGuard {
            ticket,
            seen_progress: Cell::new(0),
            stalled_since: Cell::new(None),
            message_since: Cell::new(None),
        }
    }

    /// The peer's address.
    pub fn peer(&self) -> IpAddr {
        self.ticket.ip()
    }

    /// Hands the connection's per-address claim to its next owner (see [`IpTicket::detach`]).
    pub fn detach_ticket(&self) -> Option<IpAddr> {
        self.ticket.detach()
    }

    /// Checks the send and message deadlines at `now_ms`.
    pub fn check(
        &self,
        outbox: &Outbox,
        now_ms: u64,
        send_timeout_ms: u64,
        message_timeout_ms: u64,
    ) -> Verdict {
        let now = ms32(now_ms);
        if outbox.is_empty() || send_timeout_ms == 0 {
            self.stalled_since.set(None);
        } else {
            let progress = outbox.progress();
            match self.stalled_since.get() {
                Some(since) if progress == self.seen_progress.get() => {
                    if u64::from(now.wrapping_sub(since)) >= send_timeout_ms {
                        return Verdict::SendTimedOut;
                    }
                }
                _ => {
                    self.seen_progress.set(progress);
                    self.stalled_since.set(Some(now));
                }
            }
        }
        if let (Some(since), true) = (self.message_since.get(), message_timeout_ms > 0) {
            if u64::from(now.wrapping_sub(since)) >= message_timeout_ms {
                return Verdict::MessageTimedOut;
            }
        }
        Verdict::Fine
    }

    /// After input was handled: whether a WebSocket message is unfinished now. Starts the
    /// message clock when one begins, stops it when none is pending.
    pub fn set_message_pending(&self, pending: bool, now_ms: u64) {
        match (pending, self.message_since.get()) {
            (true, None) => self.message_since.set(Some(ms32(now_ms))),
            (false, Some(_)) => self.message_since.set(None),
            _ => {}
        }
    }
}

/// The sweep's check of one connection: closes it when a deadline passed, counting why.
pub fn sweep(worker: &Worker, conn: &ConnState, now_ms: u64) {
    let config = &worker.shared.config;
    let verdict = conn.guard.check(
        &conn.outbox,
        now_ms,
        config.send_timeout.as_millis() as u64,
        config.ws_message_timeout.as_millis() as u64,
    );
    let stats = worker.stats();
    match verdict {
        Verdict::Fine => {}
        Verdict::SendTimedOut => {
            // A WebSocket close handshake cannot complete through a queue that does not
            // move: drop the connection.
            WorkerStats::add(&stats.send_timeouts, 1);
            conn.outbox.close_now();
        }
        Verdict::MessageTimedOut => {
            conn.guard.message_since.set(None);
            WorkerStats::add(&stats.message_timeouts, 1);
            match conn.kind.get() {
                ConnKind::WebSocket => conn
                    .outbox
                    .close_after_flush(close::POLICY, "message not completed in time"),
                _ => conn.outbox.close_now(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::Ipv4Addr;

    fn guard() -> ConnGuard {
        ConnGuard::new(IpTicket::uncounted(IpAddr::V4(Ipv4Addr::LOCALHOST)))
    }

    fn write(outbox: &Outbox, n: usize) {
        outbox.write_with(64, |_| Ok::<_, ()>(n)).unwrap();
    }

    #[test]
    fn a_queue_that_does_not_move_times_out_and_progress_resets_the_clock() {
        let g = guard();
        let outbox = Outbox::new(1 << 20);
        assert_eq!(g.check(&outbox, 0, 1000, 10_000), Verdict::Fine);
        outbox.push(Bytes::from(vec![0u8; 100])).unwrap();
        assert_eq!(g.check(&outbox, 100, 1000, 10_000), Verdict::Fine);
        assert_eq!(g.check(&outbox, 900, 1000, 10_000), Verdict::Fine);
        write(&outbox, 10);
        assert_eq!(
            g.check(&outbox, 1200, 1000, 10_000),
            Verdict::Fine,
            "it moved"
        );
        assert_eq!(g.check(&outbox, 2100, 1000, 10_000), Verdict::Fine);
        assert_eq!(
            g.check(&outbox, 2200, 1000, 10_000),
            Verdict::SendTimedOut,
            "1000 ms without progress since 1200"
        );
    }

    #[test]
    fn new_bytes_queued_without_progress_do_not_reset_the_clock() {
        let g = guard();
        let outbox = Outbox::new(1 << 20);
        outbox.push(Bytes::from_static(b"x")).unwrap();
        assert_eq!(g.check(&outbox, 0, 1000, 10_000), Verdict::Fine);
        outbox.push_ping();
        outbox.push(Bytes::from_static(b"y")).unwrap();
        assert_eq!(g.check(&outbox, 1000, 1000, 10_000), Verdict::SendTimedOut);
    }

    #[test]
    fn an_empty_queue_never_times_out() {
        let g = guard();
        let outbox = Outbox::new(1 << 20);
        outbox.push(Bytes::from_static(b"x")).unwrap();
        assert_eq!(g.check(&outbox, 0, 1000, 10_000), Verdict::Fine);
        write(&outbox, 1);
        assert_eq!(g.check(&outbox, 5000, 1000, 10_000), Verdict::Fine);
        outbox.push(Bytes::from_static(b"z")).unwrap();
        assert_eq!(
            g.check(&outbox, 5500, 1000, 10_000),
            Verdict::Fine,
            "a new stall"
        );
        assert_eq!(g.check(&outbox, 6500, 1000, 10_000), Verdict::SendTimedOut);
    }

    #[test]
    fn an_unfinished_message_times_out_a_finished_one_does_not() {
        let g = guard();
        let outbox = Outbox::new(1024);
        g.set_message_pending(true, 100);
        g.set_message_pending(true, 900);
        assert_eq!(g.check(&outbox, 1099, 5000, 1000), Verdict::Fine);
        assert_eq!(g.check(&outbox, 1100, 5000, 1000), Verdict::MessageTimedOut);
        g.set_message_pending(false, 1200);
        assert_eq!(g.check(&outbox, 9000, 5000, 1000), Verdict::Fine);
    }

    #[test]
    fn zero_turns_either_deadline_off() {
        let g = guard();
        let outbox = Outbox::new(1024);
        outbox.push(Bytes::from_static(b"x")).unwrap();
        g.set_message_pending(true, 0);
        assert_eq!(g.check(&outbox, 0, 0, 0), Verdict::Fine);
        assert_eq!(g.check(&outbox, 1_000_000, 0, 0), Verdict::Fine);
    }

    #[test]
    fn the_clock_may_wrap() {
        let g = guard();
        let outbox = Outbox::new(1024);
        let start = u64::from(u32::MAX) - 10;
        g.set_message_pending(true, start);
        assert_eq!(g.check(&outbox, start + 500, 5000, 1000), Verdict::Fine);
        assert_eq!(
            g.check(&outbox, start + 1000, 5000, 1000),
            Verdict::MessageTimedOut
        );
    }
}
