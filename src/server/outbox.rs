//! A connection's outbound side as the rest of its worker sees it: a bounded queue of
//! pre-encoded, shared frames plus the means to wake the connection's task.
//!
//! Fan-out hands the same [`Bytes`] to each watcher. While a connection's socket has room
//! (the common case) the bytes are written at once with a non-blocking `send`, without waking
//! the connection's task; only what the socket does not take is queued, and the task is woken
//! to wait for write readiness. The queue is bounded in bytes: a watcher that does not read
//! is closed instead of holding memory or anyone else back.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::task::Waker;

use bytes::Bytes;

use crate::os::sys::{self, Transfer};
use crate::proto::frame::{encode_close, encode_frame, OpCode};

/// What the connection's task must do beyond writing its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseMode {
    /// Keep going.
    Open,
    /// Write everything queued (a close frame is last), then end the connection.
    AfterFlush,
    /// Drop the queue and end the connection now (a slow consumer, a dead peer).
    Now,
}

/// The worker-visible handle of one connection.
pub struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    /// The socket, once direct writes are allowed (`-1` before: everything is queued).
    fd: Cell<i32>,
    sent_of_head: Count32,
    queued_bytes: Count32,
    limit: Count32,
    kicked: Cell<bool>,
    close: Cell<CloseMode>,
    waker: Cell<Option<Waker>>,
    /// Bytes written from the queue so far (wrapping): the send timeout watches it move.
    progress: Cell<u32>,
}

/// A byte count kept in 32 bits: this state exists once per connection, 100K times over.
struct Count32(Cell<u32>);

impl Count32 {
    fn new(value: usize) -> Self {
        Count32(Cell::new(u32::try_from(value).unwrap_or(u32::MAX)))
    }

    fn get(&self) -> usize {
        self.0.get() as usize
    }

    fn set(&self, value: usize) {
        self.0.set(u32::try_from(value).unwrap_or(u32::MAX));
    }
}

/// A push that would exceed the queue bound; the connection is being closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

impl Outbox {
    /// An empty outbox holding at most `limit` queued bytes.
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            fd: Cell::new(-1),
            sent_of_head: Count32::new(0),
            queued_bytes: Count32::new(0),
            limit: Count32::new(limit),
            kicked: Cell::new(false),
            close: Cell::new(CloseMode::Open),
            waker: Cell::new(None),
            progress: Cell::new(0),
        }
    }

    /// Changes the queue bound (the echo endpoint echoes messages larger than the default).
    pub fn set_limit(&self, limit: usize) {
        self.limit.set(limit);
    }

    /// Lets [`push`](Self::push) write straight to `fd` while nothing is queued.
    pub fn enable_direct_writes(&self, fd: i32) {
        self.fd.set(fd);
    }

    /// Writes `frame` now if the socket takes it, else queues (the rest of) it; on overflow
    /// the connection is marked to close at once.
    pub fn push(&self, frame: Bytes) -> Result<(), Overflow> {
        self.push_shared(&frame)
    }

    /// Like [`push`](Self::push) for a frame shared by many connections: the frame is only
    /// cloned (a reference count) when it has to wait in the queue, so the common fan-out
    /// path is one `send` and no atomic operation.
    pub fn push_shared(&self, frame: &Bytes) -> Result<(), Overflow> {
        if self.close.get() != CloseMode::Open {
            return Ok(());
        }
        let fd = self.fd.get();
        if fd >= 0 && self.queue.borrow().is_empty() {
            match sys::send_one_nonblocking(fd, frame) {
                Ok(Transfer::Done(n)) if n == frame.len() => return Ok(()),
                Ok(Transfer::Done(n)) => {
                    self.sent_of_head.set(n);
                    self.queued_bytes.set(frame.len() - n);
                    self.queue.borrow_mut().push_back(frame.clone());
                    self.kick();
                    return Ok(());
                }
                Ok(Transfer::WouldBlock) => {}
                Err(_) => {
                    // The peer is gone; the task notices and ends the connection.
                    self.close_now();
                    return Ok(());
                }
            }
        }
        let total = self.queued_bytes.get() + frame.len();
        if total > self.limit.get() {
            self.close_now();
            return Err(Overflow);
        }
        self.queued_bytes.set(total);
        self.queue.borrow_mut().push_back(frame.clone());
        self.kick();
        Ok(())
    }

    /// Queues a WebSocket close frame and asks the task to end once it is written.
    pub fn close_after_flush(&self, code: u16, reason: &str) {
        if self.close.get() != CloseMode::Open {
            return;
        }
        let mut frame = Vec::with_capacity(4 + reason.len());
        encode_close(&mut frame, code, reason);
        self.push_raw_and_close(Bytes::from(frame));
    }

    /// Queues final bytes (a close frame, an `ERROR:` line) and ends after writing them.
    pub fn push_raw_and_close(&self, bytes: Bytes) {
        if self.close.get() != CloseMode::Open {
            return;
        }
        self.queued_bytes.set(self.queued_bytes.get() + bytes.len());
        self.queue.borrow_mut().push_back(bytes);
        self.close.set(CloseMode::AfterFlush);
        self.kick();
    }

    /// Asks the task to end once everything already queued is written.
    pub fn finish_after_flush(&self) {
        if self.close.get() == CloseMode::Open {
            self.close.set(CloseMode::AfterFlush);
            self.kick();
        }
    }

    /// Drops whatever is queued and asks the task to end now.
    pub fn close_now(&self) {
        self.queue.borrow_mut().clear();
        self.queued_bytes.set(0);
        self.sent_of_head.set(0);
        self.close.set(CloseMode::Now);
        self.kick();
    }

    /// Queues a ping frame (keepalive).
    pub fn push_ping(&self) {
        let mut frame = Vec::with_capacity(2);
        encode_frame(&mut frame, OpCode::Ping, b"");
        let _ = self.push(Bytes::from(frame));
    }

    /// The close state the task must act on.
    pub fn close_mode(&self) -> CloseMode {
        self.close.get()
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// A counter that moves (wrapping) whenever queued bytes are written: while the queue is
    /// not empty and this stands still, the peer is not taking anything.
    pub fn progress(&self) -> u32 {
        self.progress.get()
    }

    /// Wakes the connection's task without queueing anything (something it waits for
    /// besides the socket changed, e.g. a watch answer came back).
    pub fn wake(&self) {
        self.kick();
    }

    /// Takes the kick flag (set by pushes and close requests since the last take).
    pub fn take_kick(&self) -> bool {
        self.kicked.replace(false)
    }

    /// Remembers the task's waker for the next kick.
    pub fn register(&self, waker: &Waker) {
        let kept = match self.waker.take() {
            Some(w) if w.will_wake(waker) => w,
            _ => waker.clone(),
        };
        self.waker.set(Some(kept));
    }

    fn kick(&self) {
        if !self.kicked.replace(true) {
            if let Some(w) = self.waker.take() {
                w.wake_by_ref();
                self.waker.set(Some(w));
            }
        }
    }

    /// Calls `write` with the unwritten bytes (at most `max` slices) and records how many it
    /// took. Returns the count written, or `write`'s error.
    pub fn write_with<E>(
        &self,
        max: usize,
        write: impl FnOnce(&[&[u8]]) -> Result<usize, E>,
    ) -> Result<usize, E> {
        let mut queue = self.queue.borrow_mut();
        let mut slices: [&[u8]; crate::os::sys::MAX_IOVECS] = [&[]; crate::os::sys::MAX_IOVECS];
        let max = max.min(slices.len());
        let mut count = 0;
        for (i, frame) in queue.iter().take(max).enumerate() {
            slices[i] = if i == 0 {
                &frame[self.sent_of_head.get()..]
            } else {
                &frame[..]
            };
            count += 1;
        }
        let mut written = write(&slices[..count])?;
        let total = written;
        while written > 0 {
            let head_left = queue[0].len() - self.sent_of_head.get();
            if written >= head_left {
                written -= head_left;
                queue.pop_front();
                self.sent_of_head.set(0);
            } else {
                self.sent_of_head.set(self.sent_of_head.get() + written);
                written = 0;
            }
        }
        self.queued_bytes.set(self.queued_bytes.get() - total);
        self.progress
            .set(self.progress.get().wrapping_add(total as u32));
        if queue.is_empty() && queue.capacity() > 8 {
            *queue = VecDeque::new();
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &Outbox, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !outbox.is_empty() {
            outbox
                .write_with(64, |slices| {
                    let mut left = chunk;
                    for s in slices {
                        let n = s.len().min(left);
                        out.extend_from_slice(&s[..n]);
                        left -= n;
                    }
                    Ok::<_, ()>(chunk - left)
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let outbox = Outbox::new(1024);
        outbox.push(Bytes::from_static(b"hello ")).unwrap();
        outbox.push(Bytes::from_static(b"world")).unwrap();
        assert_eq!(outbox.queued_bytes(), 11);
        assert_eq!(drain(&outbox, 4), b"hello world");
        assert_eq!(outbox.queued_bytes(), 0);
    }

    #[test]
    fn overflow_closes_and_drops_the_queue() {
        let outbox = Outbox::new(10);
        outbox.push(Bytes::from_static(b"123456")).unwrap();
        assert_eq!(outbox.push(Bytes::from_static(b"789012")), Err(Overflow));
        assert_eq!(outbox.close_mode(), CloseMode::Now);
        assert!(outbox.is_empty());
        assert!(outbox.take_kick());
    }

    #[test]
    fn close_after_flush_queues_a_close_frame_last() {
        let outbox = Outbox::new(1024);
        outbox.push(Bytes::from_static(b"x")).unwrap();
        outbox.close_after_flush(1000, "bye");
        let bytes = drain(&outbox, 100);
        assert_eq!(&bytes[..1], b"x");
        assert_eq!(bytes[1], 0x88, "FIN + close opcode");
        assert_eq!(outbox.close_mode(), CloseMode::AfterFlush);
        outbox.push(Bytes::from_static(b"late")).unwrap();
        assert!(outbox.is_empty(), "nothing is queued after the close frame");
    }
}
