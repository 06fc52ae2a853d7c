//! The HTTP phase of a connection: keep-alive request/response over the sans-I/O parser,
//! routing, and the WebSocket upgrade hand-off.

use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::metrics::WorkerStats;
use super::router::{route, Routed};
use super::stream::{read_more, write_all, ReadMore};
use super::worker::{ConnState, Worker};
use crate::proto::http::parse_request;
use crate::proto::response::write_json_error;

/// Serves HTTP requests on `stream` until it closes, times out, or upgrades.
pub async fn serve(worker: &Rc<Worker>, stream: TcpStream, state: &Rc<ConnState>) {
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
                    match route(worker, &request).await {
                        Routed::Response { bytes, keep_alive } => {
                            if write_all(&stream, &bytes).await.is_err() || !keep_alive {
                                return;
                            }
                        }
                        Routed::Upgrade { response, mode } => {
                            if write_all(&stream, &response).await.is_err() {
                                return;
                            }
                            let leftover = std::mem::take(&mut inbuf);
                            super::ws::serve(worker, stream, state, mode, leftover).await;
                            return;
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
                    return;
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
            ReadMore::Closed => return,
            ReadMore::TimedOut => {
                if !inbuf.is_empty() {
                    let mut out = Vec::new();
                    write_json_error(&mut out, 408, "request timed out", false);
                    let _ = write_all(&stream, &out).await;
                }
                return;
            }
        }
    }
}
