//! The HTTP phase of a connection: keep-alive request/response over the sans-I/O parser,
//! routing, and the WebSocket upgrade hand-off.
//!
//! Requests are read with [`RequestReader`] (incremental head parsing; pipelined requests
//! consumed by advancing an offset). `HEAD` is answered as RFC 9110 §9.3.2 asks: the head of
//! the `GET` answer, `Content-Length` included, and no body. A response the client does not
//! take for `--send-timeout-ms` closes the connection.

use std::io;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::metrics::WorkerStats;
use super::router::{route, route_now, Routed};
use super::sse::SseStart;
use super::stream::{linger, read_more_timed, ReadMore, ReadTimer};
use super::tls::socket::Socket;
use super::worker::{ConnState, Worker};
use super::ws::WsMode;
use crate::os::sys::Transfer;
use crate::proto::http::RequestReader;
use crate::proto::response::write_json_error;

/// A connection that switched to WebSocket: what the WebSocket phase starts from.
pub struct Upgraded {
    /// The socket.
    pub stream: Socket,
    /// What the WebSocket serves.
    pub mode: WsMode,
    /// Bytes that arrived after the handshake request.
    pub leftover: Vec<u8>,
    /// permessage-deflate, if negotiated.
    pub deflate: Option<crate::proto::deflate::Agreed>,
}

/// What a connection's HTTP phase hands over to a long-lived phase.
pub enum Handoff {
    /// A WebSocket after its `101`.
    WebSocket(Upgraded),
    /// A Server-Sent Events stream after its `200` head (bytes that followed the request
    /// are dropped: an SSE client has nothing to say).
    EventStream(SseStart),
}

/// Serves HTTP requests on `stream` until it closes, times out, or upgrades; an upgrade is
/// returned so that this phase's state is freed before the long-lived WebSocket phase.
pub async fn serve(worker: &Rc<Worker>, stream: Socket, state: &Rc<ConnState>) -> Option<Handoff> {
    let config = &worker.shared.config;
    let mut reader = RequestReader::new();
    let mut request_started = Instant::now();
    let mut timer = ReadTimer::new(request_started + config.handshake_timeout);
    let mut served_one = false;
    loop {
        let mut served_now = false;
        loop {
            match reader.next_request(&config.http) {
                Ok(Some(mut request)) => {
                    WorkerStats::add(&worker.stats().http_requests, 1);
                    let head = request.method == "HEAD";
                    if head {
                        request.method.clear();
                        request.method.push_str("GET");
                    }
                    let routed = match route_now(worker, &request) {
                        Some(routed) => routed,
                        // Boxed: an idle keep-alive connection holds no routing state.
                        None => Box::pin(route(worker, &request, state.guard.peer())).await,
                    };
                    reader.recycle(request);
                    if head {
                        let (bytes, keep_alive) = head_answer(routed);
                        if !answer(worker, &stream, state, &bytes, keep_alive).await {
                            return None;
                        }
                    } else {
                        match routed {
                            Routed::Response { bytes, keep_alive } => {
                                if !answer(worker, &stream, state, &bytes, keep_alive).await {
                                    return None;
                                }
                            }
                            Routed::Upgrade {
                                response,
                                mode,
                                deflate,
                            } => {
                                if send(worker, &stream, &response).await.is_err() {
                                    return None;
                                }
                                return Some(Handoff::WebSocket(Upgraded {
                                    stream,
                                    mode,
                                    leftover: reader.into_pending(),
                                    deflate,
                                }));
                            }
                            Routed::EventStream { head, mid, since } => {
                                if send(worker, &stream, &head).await.is_err() {
                                    return None;
                                }
                                return Some(Handoff::EventStream(SseStart { stream, mid, since }));
                            }
                        }
                    }
                    served_one = true;
                    served_now = true;
                }
                Ok(None) => break,
                Err(e) => {
                    WorkerStats::add(&worker.stats().protocol_errors, 1);
                    let mut out = Vec::new();
                    write_json_error(&mut out, e.status(), &e.to_string(), false);
                    answer(worker, &stream, state, &out, false).await;
                    return None;
                }
            }
        }
        // The next request's time (or the idle time) counts from now: one clock read.
        if served_now || (reader.is_empty() && served_one) {
            request_started = Instant::now();
        }
        let budget = if reader.is_empty() && served_one {
            config.http_idle_timeout
        } else {
            config.handshake_timeout
        };
        let deadline = request_started + budget;
        if !read_or_time_out(worker, &stream, state, &mut timer, deadline, &mut reader).await {
            return None;
        }
    }
}

/// Sends a response; `true` when the connection goes on (kept alive and the send worked). A
/// response that ends the connection ends it with a [`linger`]: the rest of an oversized
/// upload or pipelined requests must not turn the close into a reset that destroys it.
async fn answer(
    worker: &Rc<Worker>,
    stream: &Socket,
    state: &Rc<ConnState>,
    bytes: &[u8],
    keep_alive: bool,
) -> bool {
    if send(worker, stream, bytes).await.is_err() {
        return false;
    }
    if !keep_alive {
        linger(worker, stream, state).await;
    }
    keep_alive
}

/// Reads more of the request into `reader` before `deadline`. `false`: the peer closed, or the
/// deadline passed (a `408` first when a request was under way); the connection ends.
async fn read_or_time_out(
    worker: &Rc<Worker>,
    stream: &Socket,
    state: &Rc<ConnState>,
    timer: &mut ReadTimer,
    deadline: Instant,
    reader: &mut RequestReader,
) -> bool {
    let buf = reader.buffer_for_read();
    match read_more_timed(worker, stream, state, timer, deadline, buf).await {
        ReadMore::Data(_) => true,
        ReadMore::Closed => false,
        ReadMore::TimedOut => {
            if !reader.is_empty() {
                let mut out = Vec::new();
                write_json_error(&mut out, 408, "request timed out", false);
                let _ = send(worker, stream, &out).await;
            }
            false
        }
    }
}

/// What a `HEAD` request gets (RFC 9110): the head the `GET` would get and no body, and
/// whether the connection stays open. A stream or an upgrade is not started.
fn head_answer(routed: Routed) -> (Bytes, bool) {
    let (bytes, keep_alive) = match routed {
        Routed::Response { bytes, keep_alive } => (bytes, keep_alive),
        Routed::EventStream { head, .. } => (head.into(), false),
        Routed::Upgrade { .. } => {
            let mut out = Vec::new();
            write_json_error(&mut out, 400, "a WebSocket handshake is a GET", false);
            (out.into(), false)
        }
    };
    (strip_body(&bytes), keep_alive)
}

/// A response cut down to its head (the answer to `HEAD`): everything after the blank
/// line goes, the header fields (`Content-Length` included) stay.
pub fn strip_body(response: &Bytes) -> Bytes {
    match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => response.slice(..end + 4),
        None => response.clone(),
    }
}

/// Writes all of `bytes` (through TLS when the connection has it), waiting for write
/// readiness as needed, but never longer than the send timeout without progress (then the
/// connection is counted and dropped; a zero timeout waits as long as it takes).
async fn send(worker: &Worker, stream: &Socket, bytes: &[u8]) -> io::Result<()> {
    let timeout = worker.shared.config.send_timeout;
    let mut done = 0;
    loop {
        let progress = if done < bytes.len() {
            stream.send(&[&bytes[done..]])?
        } else if stream.flush_pending()? {
            return Ok(());
        } else {
            Transfer::WouldBlock
        };
        match progress {
            Transfer::Done(n) => done += n,
            Transfer::WouldBlock if timeout.is_zero() => stream.stream().writable(false).await?,
            Transfer::WouldBlock => {
                match monoio::time::timeout(timeout, stream.stream().writable(false)).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        WorkerStats::add(&worker.stats().send_timeouts, 1);
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::response::write_response;

    #[test]
    fn strip_body_keeps_the_head_and_its_content_length() {
        let mut out = Vec::new();
        write_response(&mut out, 200, "application/json", &[], b"{\"a\":1}", true);
        let full = out.clone();
        let out = strip_body(&Bytes::from(out)).to_vec();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.ends_with("\r\n\r\n"), "{text}");
        assert!(text.contains("Content-Length: 7\r\n"), "{text}");
        assert_eq!(&full[..out.len()], &out[..]);
    }
}
