//! The I/O loop of a connection after its HTTP phase: waits on io_uring readiness for reads
//! (no buffer pinned while idle), reads into the worker's scratch buffer, hands the bytes to
//! a sans-I/O handler, and writes the outbound queue with non-blocking `sendmsg`, waiting for
//! write readiness only when the socket is full.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::outbox::CloseMode;
use super::tls::socket::{Received, Socket};
use super::worker::{ConnState, Worker};
use crate::os::sys::{self, Transfer};

/// How long a connection that sent its close frame waits for the peer's.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The protocol side of a driven connection.
pub trait Handler {
    /// Bytes arrived (borrowed from the worker's scratch buffer); replies go to the outbox.
    fn on_data(&mut self, data: &[u8], state: &ConnState);
    /// The peer closed its sending side (EOF); true to keep writing to it.
    fn on_eof(&mut self, _state: &ConnState) -> bool {
        false
    }
    /// Whether the protocol is finished once the outbox is flushed (close handshake done).
    fn finished(&self) -> bool;
    /// Whether to read more now; false pauses reading (e.g. too many watch requests in
    /// flight) until a kick makes the loop ask again.
    fn wants_input(&self, _state: &ConnState) -> bool {
        true
    }
}

enum Wake {
    Kick,
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Timeout,
}

/// Writes what the outbox holds (and, with TLS, the ciphertext left over) until both are
/// empty or the socket is full. Returns `Ok(true)` when everything was written.
fn flush(socket: &Socket, state: &ConnState) -> io::Result<bool> {
    while !state.outbox.is_empty() {
        let res = state
            .outbox
            .write_with(sys::MAX_IOVECS, |slices| match socket.send(slices) {
                Ok(Transfer::Done(n)) => Ok(n),
                Ok(Transfer::WouldBlock) => Ok(0),
                Err(e) => Err(e),
            })?;
        if res == 0 {
            return Ok(false);
        }
    }
    socket.flush_pending()
}

/// What a connection's loop may wait for besides readability (boxed: rarely needed).
struct Waits<W> {
    /// Write readiness, only while the socket is full.
    writable: Option<std::pin::Pin<Box<W>>>,
    /// The end of the close handshake's grace period, once our close frame is out.
    close_deadline: Option<std::pin::Pin<Box<monoio::time::Sleep>>>,
    /// The socket did not take everything queued.
    write_blocked: bool,
    /// The peer has not closed its side.
    read_open: bool,
}

/// Drives `stream` with `handler` until either side ends the connection, then closes it
/// with a [`linger`] when the peer may still be sending.
#[allow(clippy::manual_async_fn)] // an `async fn` would store every argument twice
pub fn drive<'a, H: Handler>(
    worker: &'a Rc<Worker>,
    socket: &'a Socket,
    state: &'a Rc<ConnState>,
    handler: &'a mut H,
) -> impl Future<Output = ()> + 'a {
    async move {
        let stream = socket.stream();
        let mut readable = pin!(stream.readable(false));
        let mut waits = Waits {
            writable: None,
            close_deadline: None,
            write_blocked: false,
            read_open: true,
        };
        loop {
            match state.outbox.close_mode() {
                CloseMode::Now => return,
                CloseMode::Open | CloseMode::AfterFlush => {}
            }
            if !waits.write_blocked {
                match flush(socket, state) {
                    Ok(true) => {}
                    Ok(false) => waits.write_blocked = true,
                    Err(_) => return,
                }
            }
            if waits.write_blocked && waits.writable.is_none() {
                waits.writable = Some(Box::pin(stream.writable(false)));
            }
            if !waits.write_blocked && state.outbox.close_mode() == CloseMode::AfterFlush {
                if !waits.read_open {
                    return;
                }
                if handler.finished() {
                    // Boxed: the linger's read future is several times the size of an idle
                    // connection's whole future, and it is needed only once, at the end.
                    Box::pin(linger(worker, socket, state)).await;
                    return;
                }
                if waits.close_deadline.is_none() {
                    waits.close_deadline =
                        Some(Box::pin(monoio::time::sleep(CLOSE_HANDSHAKE_TIMEOUT)));
                }
            }
            let reading = waits.read_open && handler.wants_input(state);
            // The closure captures three references: its size is part of every idle
            // connection's future.
            let wake = poll_fn(|cx| {
                if state.outbox.take_kick() {
                    return Poll::Ready(Wake::Kick);
                }
                if reading {
                    if let Poll::Ready(r) = readable.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Readable(r));
                    }
                }
                if let Some(pending) = waits.writable.as_mut() {
                    if let Poll::Ready(r) = pending.as_mut().poll(cx) {
                        return Poll::Ready(Wake::Writable(r));
                    }
                }
                if let Some(deadline) = waits.close_deadline.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Wake::Timeout);
                    }
                }
                state.outbox.register(cx.waker());
                Poll::Pending
            })
            .await;
            match wake {
                Wake::Kick => {}
                Wake::Timeout => return,
                Wake::Writable(r) => {
                    if r.is_err() {
                        return;
                    }
                    waits.writable = None;
                    waits.write_blocked = false;
                }
                Wake::Readable(r) => {
                    if r.is_err() {
                        return;
                    }
                    readable.set(stream.readable(false));
                    if !read_ready(worker, socket, state, handler, &mut waits.read_open) {
                        return;
                    }
                }
            }
        }
    }
}

/// A lingering close (as nginx's): closing a socket whose peer still sends makes the kernel
/// answer with an RST, and an RST can destroy the last reply (the echo before a protocol
/// error, a close frame, the `413` of an upload still under way) before the peer reads it. So
/// send a FIN after everything written (a TLS `close_notify` first) and read and drop the
/// peer's bytes until it closes too, for [`CLOSE_HANDSHAKE_TIMEOUT`] at most.
pub async fn linger(worker: &Rc<Worker>, socket: &Socket, state: &ConnState) {
    if socket.shutdown_write().is_err() {
        return;
    }
    // A wake-up left from the last reply (the close that queued it) is not a reason to stop;
    // a later one (the worker closing every connection) is.
    state.outbox.take_kick();
    let deadline = Instant::now() + CLOSE_HANDSHAKE_TIMEOUT;
    let mut dropped = Vec::new();
    while let ReadMore::Data(_) = read_more(worker, socket, state, deadline, &mut dropped).await {
        dropped.clear();
    }
}

/// Reads what a readable socket holds into the worker's scratch buffer and hands it to the
/// handler (or tells it the peer closed its side). `false`: the connection is over (a read
/// error, or a peer gone without a close handshake).
fn read_ready<H: Handler>(
    worker: &Rc<Worker>,
    socket: &Socket,
    state: &Rc<ConnState>,
    handler: &mut H,
    read_open: &mut bool,
) -> bool {
    let mut scratch = worker.scratch.borrow_mut();
    let mut plain = Vec::new();
    match socket.recv(&mut scratch, &mut plain) {
        Ok(Received::Eof) => {
            *read_open = false;
            drop(scratch);
            let keep_writing = handler.on_eof(state);
            // Not keeping on writing while still open: the peer vanished without a close
            // handshake.
            keep_writing || state.outbox.close_mode() != CloseMode::Open
        }
        Ok(Received::Data(data)) => {
            state.keepalive.borrow_mut().on_activity(worker.now_ms());
            handler.on_data(data, state);
            true
        }
        Ok(Received::WouldBlock) => true,
        Err(_) => false,
    }
}

/// What [`read_more`] found.
pub enum ReadMore {
    /// This many bytes were appended.
    Data(usize),
    /// The peer closed, the worker asked the connection to close, or an error occurred.
    Closed,
    /// The deadline passed first.
    TimedOut,
}

/// Waits (until `deadline`) for bytes and appends them to `buf`: the HTTP phase's read.
pub async fn read_more(
    worker: &Rc<Worker>,
    socket: &Socket,
    state: &ConnState,
    deadline: Instant,
    buf: &mut Vec<u8>,
) -> ReadMore {
    let stream = socket.stream();
    if socket.has_pending() {
        // TLS handshake bytes the socket did not take at once.
        let flushed = monoio::time::timeout_at(deadline.into(), socket.write_all(&[])).await;
        if !matches!(flushed, Ok(Ok(()))) {
            return ReadMore::Closed;
        }
    }
    let mut readable = pin!(stream.readable(false));
    // Boxed: the timer entry is cache-line aligned (128 bytes) and would inflate every
    // connection future that waits for a request.
    let mut sleep = Box::pin(monoio::time::sleep_until(deadline.into()));
    let ready = poll_fn(|cx| {
        if state.outbox.take_kick() && state.outbox.close_mode() != CloseMode::Open {
            return Poll::Ready(Err(ReadMore::Closed));
        }
        if let Poll::Ready(r) = readable.as_mut().poll(cx) {
            return Poll::Ready(r.map_err(|_| ReadMore::Closed));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(ReadMore::TimedOut));
        }
        state.outbox.register(cx.waker());
        Poll::Pending
    })
    .await;
    if let Err(outcome) = ready {
        return outcome;
    }
    let mut scratch = worker.scratch.borrow_mut();
    let mut plain = Vec::new();
    match socket.recv(&mut scratch, &mut plain) {
        Ok(Received::Eof) | Err(_) => ReadMore::Closed,
        Ok(Received::Data(data)) => {
            buf.extend_from_slice(data);
            ReadMore::Data(data.len())
        }
        Ok(Received::WouldBlock) => ReadMore::Data(0),
    }
}
