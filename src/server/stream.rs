//! The reads of a connection's monoio task before it becomes a plane record (its TLS
//! handshake, its HTTP requests, its line `CONNECT`): wait on io_uring readiness (no buffer
//! pinned while idle), read into the worker's scratch buffer; and the lingering close that
//! ends such a connection after its last answer.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use monoio::time::Sleep;

use super::metrics::TlsHandshakeFailure;
use super::tls::socket::{Received, Socket};
use super::worker::{ConnState, Worker};

/// How long a connection that sent its close frame waits for the peer's.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

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
    state.signal.take_kick();
    let deadline = Instant::now() + CLOSE_HANDSHAKE_TIMEOUT;
    let mut dropped = Vec::new();
    while let ReadMore::Data(_) = read_more(worker, socket, state, deadline, &mut dropped).await {
        dropped.clear();
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
    let mut timer = ReadTimer::new(deadline);
    read_more_timed(worker, socket, state, &mut timer, deadline, buf).await
}

/// A connection's read deadline, kept from one read to the next so that a keep-alive
/// connection's requests do not each allocate and register a new timer.
pub struct ReadTimer(Pin<Box<Sleep>>);

impl ReadTimer {
    /// A timer for `deadline`. Boxed: the timer entry is cache-line aligned (128 bytes) and
    /// would inflate every connection future that waits for a request.
    pub fn new(deadline: Instant) -> ReadTimer {
        ReadTimer(Box::pin(monoio::time::sleep_until(deadline.into())))
    }

    /// The timer, set to fire at `deadline`.
    fn at(&mut self, deadline: Instant) -> Pin<&mut Sleep> {
        let deadline = monoio::time::Instant::from(deadline);
        if self.0.deadline() != deadline {
            self.0.as_mut().reset(deadline);
        }
        self.0.as_mut()
    }
}

/// [`read_more`] with the connection's [`ReadTimer`].
pub async fn read_more_timed(
    worker: &Rc<Worker>,
    socket: &Socket,
    state: &ConnState,
    timer: &mut ReadTimer,
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
    let mut sleep = timer.at(deadline);
    let ready = poll_fn(|cx| {
        if state.signal.take_kick() && state.signal.is_closing() {
            return Poll::Ready(Err(ReadMore::Closed));
        }
        if let Poll::Ready(r) = readable.as_mut().poll(cx) {
            return Poll::Ready(r.map_err(|_| ReadMore::Closed));
        }
        if sleep.as_mut().poll(cx).is_ready() {
            if socket.is_handshaking() {
                worker
                    .stats()
                    .tls_handshake_failed(TlsHandshakeFailure::Timeout);
            }
            return Poll::Ready(Err(ReadMore::TimedOut));
        }
        state.signal.register(cx.waker());
        Poll::Pending
    })
    .await;
    if let Err(outcome) = ready {
        return outcome;
    }
    let mut scratch = worker.scratch.borrow_mut();
    let mut plain = Vec::new();
    let handshaking = socket.is_handshaking();
    match socket.recv(&mut scratch, &mut plain) {
        Err(e) if handshaking => {
            let why = super::tls::handshake_failure(&e);
            tracing::debug!("TLS handshake failed ({}): {e}", why.label());
            worker.stats().tls_handshake_failed(why);
            ReadMore::Closed
        }
        Ok(Received::Eof) | Err(_) => ReadMore::Closed,
        Ok(Received::Data(data)) => {
            buf.extend_from_slice(data);
            ReadMore::Data(data.len())
        }
        Ok(Received::WouldBlock) => ReadMore::Data(0),
    }
}
