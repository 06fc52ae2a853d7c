//! The HTTP phase of a connection: keep-alive request/response over the sans-I/O parser,
//! routing, and the WebSocket upgrade hand-off.

use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::metrics::WorkerStats;
use super::router::{route, Routed};
use super::stream::{read_more, ReadMore};
use super::worker::{ConnState, Worker};
use super::ws::WsMode;
use crate::os::stream::write_all;
use crate::proto::http::parse_request;
use crate::proto::response::write_json_error;

/// A connection that switched to WebSocket: what the WebSocket phase starts from.
pub struct Upgraded {
    /// The socket.
    pub stream: TcpStream,
    /// What the WebSocket serves.
    pub mode: WsMode,
    /// Bytes that arrived after the handshake request.
    pub leftover: Vec<u8>,
}

/// Serves HTTP requests on `stream` until it closes, times out, or upgrades; an upgrade is
/// returned so that this phase's state is freed before the long-lived WebSocket phase.
pub async fn serve(
    worker: &Rc<Worker>,
    stream: TcpStream,
    state: &Rc<ConnState>,
) -> Option<Upgraded> {
    let config = &worker.shared.config;
    let mut inbuf: Vec<u8> = Vec::new();
    let mut request_started = Instant::now();
    let mut served_one = false;
    loop {
        loop {
            match parse_request(&inbuf, &config.http) {
                Ok(Some((request, used))) => {
                    inbuf.drain(..used);
                    WorkerStats::add(&worker.stats().http_requests, 1);
                    // Boxed: an idle keep-alive connection holds no routing state.
                    match Box::pin(route(worker, &request)).await {
                        Routed::Response { bytes, keep_alive } => {
                            if write_all(&stream, &bytes).await.is_err() || !keep_alive {
                                return None;
                            }
                        }
                        Routed::Upgrade { response, mode } => {
                            if write_all(&stream, &response).await.is_err() {
                                return None;
                            }
                            let leftover = std::mem::take(&mut inbuf);
                            return Some(Upgraded {
                                stream,
                                mode,
                                leftover,
                            });
                        }
                    }
                    served_one = true;
                    request_started = Instant::now();
                }
                Ok(None) => break,
                Err(e) => {
                    WorkerStats::add(&worker.stats().protocol_errors, 1);
                    let mut out = Vec::new();
                    write_json_error(&mut out, e.status(), &e.to_string(), false);
                    let _ = write_all(&stream, &out).await;
                    return None;
                }
            }
        }
        if inbuf.is_empty() && served_one {
            request_started = Instant::now();
        }
        let budget = if inbuf.is_empty() && served_one {
            config.http_idle_timeout
        } else {
            config.handshake_timeout
        };
        match read_more(worker, &stream, state, request_started + budget, &mut inbuf).await {
            ReadMore::Data(_) => {}
            ReadMore::Closed => return None,
            ReadMore::TimedOut => {
                if !inbuf.is_empty() {
                    let mut out = Vec::new();
                    write_json_error(&mut out, 408, "request timed out", false);
                    let _ = write_all(&stream, &out).await;
                }
                return None;
            }
        }
    }
}
