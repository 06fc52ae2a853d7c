//! The plane's I/O shell: one io_uring ring per worker, beside monoio's own.
//!
//! The core's operations become SQEs — a multishot `POLL_ADD` per record for inbound bytes,
//! one `SEND` per record per frame, `ASYNC_CANCEL` for a record's poll — and are submitted
//! together: a broadcast to every record of a worker is one `io_uring_enter` (as long as the
//! submission queue holds one SQE per record; past it, one more per full queue). Completions
//! are read from the mapped completion queue without a system call. The ring signals an
//! eventfd (`IORING_REGISTER_EVENTFD`) whenever it posts a completion; the driver awaits that
//! descriptor with monoio. Both are created by the worker after it unshared its fd table and
//! are used by that worker only.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::core::{IoOp, PlaneCore};
use crate::os::sys::{self, Transfer};
use crate::server::tls::ktls;

/// What a completion belongs to (the top two bits of its `user_data`).
const TAG_POLL: u64 = 0;
const TAG_SEND: u64 = 1;
const TAG_CANCEL: u64 = 2;

/// Most reads of one socket per poll completion (each up to the scratch buffer's size).
pub const MAX_READS_PER_WAKE: usize = 64;

fn user_data(tag: u64, key: u32) -> u64 {
    (tag << 62) | u64::from(key)
}

fn split(user_data: u64) -> (u64, u32) {
    (user_data >> 62, user_data as u32)
}

/// A worker's plane ring and its eventfd.
pub struct PlaneRing {
    ring: IoUring,
    eventfd: Option<OwnedFd>,
    enters: u64,
    overflow_flushes: u64,
}

impl PlaneRing {
    /// A ring of `entries` submission slots (the completion queue is twice as large)
    /// with an eventfd registered.
    pub fn new(entries: u32) -> io::Result<Self> {
        let entries = entries.clamp(64, 32_768);
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .build(entries)?;
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(fd)?;
        Ok(Self {
            ring,
            eventfd: Some(eventfd),
            enters: 0,
            overflow_flushes: 0,
        })
    }

    /// Hands over the eventfd (to be awaited by the driver; it stays registered).
    pub fn take_eventfd(&mut self) -> Option<OwnedFd> {
        self.eventfd.take()
    }

    /// `io_uring_enter` calls made so far.
    pub fn enters(&self) -> u64 {
        self.enters
    }

    fn enter(&mut self) -> io::Result<()> {
        self.enters += 1;
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: the completion queue overflowed; the SQEs stay queued and go with
                // the next submit, once the caller has reaped.
                Err(e) => return Err(e),
            }
        }
    }

    /// Turns the core's pending operations into SQEs and submits them: one
    /// `io_uring_enter` unless the submission queue fills first.
    pub fn submit<T: Default>(&mut self, core: &mut PlaneCore<T>) -> io::Result<()> {
        let mut pushed = false;
        while let Some(op) = core.poll_io() {
            let entry = match op {
                IoOp::Poll { key, fd } => {
                    opcode::PollAdd::new(types::Fd(fd), (libc::POLLIN | libc::POLLRDHUP) as u32)
                        .multi(true)
                        .build()
                        .user_data(user_data(TAG_POLL, key))
                }
                IoOp::Send {
                    key,
                    fd,
                    frame,
                    offset,
                } => {
                    let bytes = &core.frame_bytes(frame)[offset as usize..];
                    opcode::Send::new(types::Fd(fd), bytes.as_ptr(), bytes.len() as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(user_data(TAG_SEND, key))
                }
                IoOp::CancelPoll { key } => opcode::AsyncCancel::new(user_data(TAG_POLL, key))
                    .build()
                    .user_data(user_data(TAG_CANCEL, key)),
                IoOp::Shutdown { fd } => {
                    // SAFETY: `fd` is the record's open socket (closed only by `Close`).
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    continue;
                }
                IoOp::ShutdownWrite { fd } => {
                    // SAFETY: `fd` is the record's open socket (closed only by `Close`).
                    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
                    continue;
                }
                IoOp::SendAlert { fd, alert } => {
                    let sent = ktls::send_record(fd, ktls::ALERT, &alert);
                    if let Err(e) = sent {
                        tracing::debug!(fd, "kTLS alert not sent: {e}");
                    }
                    continue;
                }
                IoOp::Close { fd } => {
                    // SAFETY: nothing is in flight on `fd` any more and nothing else owns it.
                    unsafe { libc::close(fd) };
                    continue;
                }
            };
            if let Err(e) = self.push(entry) {
                core.requeue_io(op);
                return Err(e);
            }
            pushed = true;
        }
        if pushed {
            self.enter()?;
        }
        Ok(())
    }

    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: a Send SQE points into a frame the core keeps alive until its
            // completion; the other SQEs carry no pointers.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.enter()?;
        }
    }

    /// Feeds every posted completion to the core, reading (into `scratch`) from sockets whose
    /// poll fired. Returns how many completions there were.
    pub fn complete<T: Default>(
        &mut self,
        core: &mut PlaneCore<T>,
        scratch: &mut [u8],
        now: u64,
    ) -> usize {
        let mut count = 0;
        loop {
            let batch: Vec<cqueue::Entry> = self.ring.completion().take(1024).collect();
            if batch.is_empty() {
                // Completions that found the queue full wait in the kernel's overflow list
                // (and every later one joins them, to keep the order) until an enter asks
                // for events: without this a burst bigger than the queue (a worker that did
                // not run for a while at 1M connections) strands sends and polls for good.
                if self.ring.submission().cq_overflow() && self.flush_overflow().is_ok() {
                    continue;
                }
                return count;
            }
            count += batch.len();
            for cqe in batch {
                let (tag, key) = split(cqe.user_data());
                match tag {
                    TAG_POLL => {
                        if cqe.result() > 0 {
                            read_ready(core, key, scratch, now);
                        }
                        core.on_poll_done(key, cqueue::more(cqe.flags()));
                    }
                    TAG_SEND => core.on_send_done(key, cqe.result(), now),
                    _ => debug_assert_eq!(tag, TAG_CANCEL),
                }
            }
        }
    }

    /// Moves the kernel's overflowed completions into the queue (an enter with GETEVENTS,
    /// which also submits whatever SQEs are queued).
    fn flush_overflow(&mut self) -> io::Result<()> {
        self.enters += 1;
        self.overflow_flushes += 1;
        loop {
            match self.ring.submitter().submit_and_wait(0) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Completions the kernel dropped: its overflow list could not take them (with
    /// `IORING_FEAT_NODROP` only when that allocation fails). Each one strands a send or a
    /// poll; the send timeout ends such a record.
    pub fn dropped_completions(&mut self) -> u32 {
        self.ring.completion().overflow()
    }

    /// Times the completion queue overflowed and was flushed (a metric).
    pub fn overflow_flushes(&self) -> u64 {
        self.overflow_flushes
    }

    /// Drains the eventfd's counter (after a wake-up, before reaping).
    pub fn reset_eventfd(fd: RawFd) {
        let mut buf = [0u8; 8];
        let _ = sys::read_nonblocking(fd, &mut buf);
    }
}

/// Reads what record `key`'s socket holds and hands it to the core.
pub fn read_ready<T: Default>(core: &mut PlaneCore<T>, key: u32, scratch: &mut [u8], now: u64) {
    for _ in 0..MAX_READS_PER_WAKE {
        let Some(fd) = core.wants_read(key) else {
            return;
        };
        match sys::recv_nonblocking(fd, scratch) {
            Ok(Transfer::Done(0)) => return core.on_eof(key, now),
            Ok(Transfer::Done(n)) => {
                core.on_data(key, &scratch[..n], now);
                if n < scratch.len() {
                    return;
                }
            }
            Ok(Transfer::WouldBlock) => return,
            Err(_) => return core.on_read_error(key),
        }
    }
    // Bytes may be left that no new readiness event announces (a multishot poll fires on
    // new data, not on data still waiting): read again at the next turn.
    core.owe_read(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for (tag, key) in [(TAG_POLL, 0), (TAG_SEND, u32::MAX), (TAG_CANCEL, 12345)] {
            assert_eq!(split(user_data(tag, key)), (tag, key));
        }
    }
}

#[cfg(test)]
mod socket_tests {
    //! The shell on real sockets (a Unix stream pair), with a real ring.
    use super::*;
    use crate::proto::keepalive::KeepalivePolicy;
    use crate::server::plane::core::{PlaneConfig, PlaneEvent};
    use crate::server::plane::record::Flavour;
    use bytes::Bytes;
    use std::io::{Read, Write};
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::{Duration, Instant};

    fn core() -> PlaneCore<()> {
        PlaneCore::new(
            PlaneConfig {
                ws_limits: Default::default(),
                echo_limits: Default::default(),
                echo_max_outbound_bytes: 64 << 20,
                keepalive: KeepalivePolicy {
                    ping_after_ms: 60_000,
                    dead_after_ms: 60_000,
                },
                max_outbound_bytes: 64 << 20,
                send_timeout_ms: 0,
                close_linger_ms: 2_000,
                message_timeout_ms: 0,
                sends_defer_pings: false,
            },
            0,
        )
    }

    /// Reaps until `done` holds (bounded).
    fn reap_until(
        ring: &mut PlaneRing,
        core: &mut PlaneCore<()>,
        mut done: impl FnMut(&mut PlaneCore<()>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut scratch = vec![0u8; 4096];
        while !done(core) {
            assert!(Instant::now() < deadline, "timed out");
            ring.complete(core, &mut scratch, 1);
            ring.submit(core).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn frames_reach_the_socket_and_commands_come_back() {
        let mut ring = PlaneRing::new(64).unwrap();
        let mut core = core();
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let id = core.adopt(ours.into_raw_fd(), Flavour::Ws, 0);
        let frame = core.share(Bytes::from_static(b"\x81\x02hi"));
        core.push(id, frame, 0).unwrap();
        core.unshare(frame);
        ring.submit(&mut core).unwrap();
        assert_eq!(ring.enters(), 1, "poll and send in one submit");
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"\x81\x02hi");
        // A masked text frame "ab" from the peer.
        peer.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'a', b'b'])
            .unwrap();
        let mut events = Vec::new();
        reap_until(&mut ring, &mut core, |c| {
            events.extend(c.take_events());
            !events.is_empty()
        });
        assert!(matches!(&events[0], PlaneEvent::Text { text, .. } if text == "ab"));
        drop(peer);
        reap_until(&mut ring, &mut core, |c| c.is_empty());
        assert_eq!(core.frames_alive(), 0);
    }

    #[test]
    fn completions_past_a_full_queue_are_all_reaped() {
        // 64 entries: a completion queue of 128, and 200 sends that complete before any is
        // reaped (a worker that did not run for a while).
        let mut ring = PlaneRing::new(64).unwrap();
        let mut core = core();
        let mut peers = Vec::new();
        let mut ids = Vec::new();
        for i in 0..200 {
            let (ours, peer) = UnixStream::pair().unwrap();
            let id = core.adopt(ours.into_raw_fd(), Flavour::Line, i);
            core.send(id, Bytes::from_static(b"hello\n"), 0).unwrap();
            peers.push(peer);
            ids.push(id);
        }
        ring.submit(&mut core).unwrap();
        // What the driver does on a wake-up: reap, then submit what the core has.
        let mut scratch = vec![0u8; 4096];
        ring.complete(&mut core, &mut scratch, 1);
        ring.submit(&mut core).unwrap();
        let stranded = ids
            .iter()
            .filter(|&&id| core.record(id).unwrap().queued_bytes() > 0)
            .count();
        assert_eq!(stranded, 0, "every send's completion was seen");
        assert!(ring.overflow_flushes() > 0, "the queue did overflow");
        for id in ids {
            core.abort(id);
        }
        reap_until(&mut ring, &mut core, |c| c.is_empty());
    }

    #[test]
    fn a_send_to_a_full_socket_waits_in_the_kernel_and_a_close_ends_it() {
        let mut ring = PlaneRing::new(64).unwrap();
        let mut core = core();
        let (ours, _peer) = UnixStream::pair().unwrap();
        let id = core.adopt(ours.into_raw_fd(), Flavour::Line, 0);
        // Far more than the socket buffer holds: the send stays in flight.
        core.send(id, Bytes::from(vec![b'x'; 8 << 20]), 0).unwrap();
        ring.submit(&mut core).unwrap();
        let mut scratch = vec![0u8; 4096];
        std::thread::sleep(Duration::from_millis(20));
        ring.complete(&mut core, &mut scratch, 1);
        ring.submit(&mut core).unwrap();
        let queued = core.record(id).unwrap().queued_bytes();
        assert!(queued > 0, "the peer reads nothing");
        core.abort(id);
        reap_until(&mut ring, &mut core, |c| c.is_empty());
        assert_eq!(core.frames_alive(), 0);
    }
}
