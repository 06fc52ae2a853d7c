//! Maps a parsed request to a response or a WebSocket upgrade.

use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::admin_auth::{self, Gate};
use super::metrics::{self, WorkerStats};
use super::worker::Worker;
use super::ws::WsMode;
use crate::proto::deflate::Agreed;
use crate::proto::handshake::{accept_handshake_with, is_upgrade_request, HandshakePolicy};
use crate::proto::http::Request;
use crate::proto::response::{write_json_error, write_response};

/// The outcome of routing one request.
pub enum Routed {
    /// Bytes of a complete HTTP response; close afterwards unless `keep_alive`.
    Response {
        /// The response bytes (shared: a snapshot's prebuilt answer is not copied).
        bytes: Bytes,
        /// Whether the connection stays open.
        keep_alive: bool,
    },
    /// Switch to WebSocket after writing `response` (the 101).
    Upgrade {
        /// The 101 response bytes.
        response: Vec<u8>,
        /// What the WebSocket connection serves.
        mode: WsMode,
        /// permessage-deflate, if negotiated.
        deflate: Option<Agreed>,
    },
    /// Switch to a Server-Sent Events stream after writing `head` (see [`super::sse`]).
    EventStream {
        /// The `200 text/event-stream` head (and the `retry:` line).
        head: Vec<u8>,
        /// The match to watch.
        mid: String,
        /// Resume after this seq.
        since: Option<u64>,
    },
}

/// A JSON response.
pub fn json(status: u16, body: &str, keep_alive: bool) -> Routed {
    let mut bytes = Vec::with_capacity(128 + body.len());
    write_response(
        &mut bytes,
        status,
        "application/json",
        &[],
        body.as_bytes(),
        keep_alive,
    );
    Routed::Response {
        bytes: bytes.into(),
        keep_alive,
    }
}

/// A JSON error response `{"error": message}`.
pub fn error(status: u16, message: &str, keep_alive: bool) -> Routed {
    let mut bytes = Vec::with_capacity(128);
    write_json_error(&mut bytes, status, message, keep_alive);
    Routed::Response {
        bytes: bytes.into(),
        keep_alive,
    }
}

fn upgrade(request: &Request, mode: WsMode) -> Routed {
    // A watcher shares its worker's compressed frame (a 32 KiB window) or gets none; the
    // echo endpoint (the Autobahn suite's peer) also takes smaller windows, uncompressed.
    let policy = HandshakePolicy {
        permessage_deflate: true,
        deflate_small_windows: mode == WsMode::Echo,
        ..HandshakePolicy::default()
    };
    match accept_handshake_with(request, &policy) {
        Ok(accepted) => Routed::Upgrade {
            response: accepted.response,
            mode,
            deflate: accepted.deflate,
        },
        Err(e) => {
            let mut bytes = Vec::new();
            e.write_response(&mut bytes);
            Routed::Response {
                bytes: bytes.into(),
                keep_alive: false,
            }
        }
    }
}

/// Answers `request` at once when it is a snapshot read the worker can answer without
/// waiting (`GET /1/match/{id}`, `/1/matches`, `/1/team/{id}` with the catalog up to date):
/// the keep-alive hot path, which then allocates no routing future. `None`: route it with
/// [`route`]. Same answers as [`route`].
pub fn route_now(worker: &Worker, request: &Request) -> Option<Routed> {
    if request.method != "GET" {
        return None;
    }
    match request.path_segments().as_slice() {
        ["1", "match", mid] => super::reads::get_match_now(worker, mid, request.keep_alive),
        ["1", "matches"] => super::reads::list_matches_now(worker, request.keep_alive),
        ["1", "team", id] => super::reads::get_team_now(worker, id, request.keep_alive),
        _ => None,
    }
}

/// Routes `request`, which came from `peer`.
pub async fn route(worker: &Rc<Worker>, request: &Request, peer: IpAddr) -> Routed {
    let keep_alive = request.keep_alive;
    let config = &worker.shared.config;
    let method = request.method.as_str();
    // Only an admin request reads the clock (the login limiter's).
    let gate = match admin_auth::is_admin_request(request) {
        false => Gate::Pass,
        true => admin_auth::check(
            &worker.shared.logins,
            request,
            &config.admin_token,
            peer,
            Instant::now(),
        ),
    };
    match gate {
        Gate::Pass => {}
        Gate::Unauthorized => return error(401, "missing or wrong bearer token", keep_alive),
        Gate::TooManyFailures { retry_after_secs } => {
            WorkerStats::add(&worker.stats().logins_rate_limited, 1);
            let mut bytes = Vec::with_capacity(160);
            let retry = retry_after_secs.to_string();
            crate::proto::response::write_json_error_with(
                &mut bytes,
                429,
                "too many failed logins from this address",
                &[("Retry-After", &retry)],
                keep_alive,
            );
            return Routed::Response {
                bytes: bytes.into(),
                keep_alive,
            };
        }
    }
    match request.path() {
        "/healthz" => match method {
            "GET" | "HEAD" => json(200, r#"{"status":"ok"}"#, keep_alive),
            _ => error(405, "method not allowed", keep_alive),
        },
        "/metrics" => match method {
            "GET" => {
                let text = metrics::render(&worker.shared.stats, "");
                let mut bytes = Vec::with_capacity(text.len() + 128);
                write_response(
                    &mut bytes,
                    200,
                    "text/plain; version=0.0.4",
                    &[],
                    text.as_bytes(),
                    keep_alive,
                );
                Routed::Response {
                    bytes: bytes.into(),
                    keep_alive,
                }
            }
            _ => error(405, "method not allowed", keep_alive),
        },
        "/1/echo" if config.enable_echo => upgrade(request, WsMode::Echo),
        "/1/ws" | "/" if is_upgrade_request(request) => upgrade(request, WsMode::Watch),
        "/1/ws" => error(426, "this endpoint speaks WebSocket", keep_alive),
        path if method == "GET" && super::sse::event_stream_match(path).is_some() => {
            let mid = super::sse::event_stream_match(path).unwrap_or_default();
            super::sse::route(worker, request, mid).await
        }
        _ => match super::api::route(worker, request).await {
            Some(routed) => routed,
            None => match super::page::asset(request.path()) {
                Some((content_type, body)) if method == "GET" || method == "HEAD" => {
                    let mut bytes = Vec::with_capacity(body.len() + 160);
                    write_response(
                        &mut bytes,
                        200,
                        content_type,
                        &[("Cache-Control", "no-cache")],
                        body,
                        keep_alive,
                    );
                    Routed::Response {
                        bytes: bytes.into(),
                        keep_alive,
                    }
                }
                Some(_) => error(405, "method not allowed", keep_alive),
                None => error(404, "not found", keep_alive),
            },
        },
    }
}
