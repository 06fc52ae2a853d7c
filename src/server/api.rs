//! The HTTP API: the seed's v1 reads and the admin writes, answered by the sequencer.

use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;

use super::router::{error, json, Routed};
use super::worker::{Worker, WorkerMsg};
use crate::domain::EventKind;
use crate::proto::http::Request as HttpRequest;
use crate::sequencer::{Reply, Request};

/// Whether `request` carries `Authorization: Bearer <token>` (compared in constant time).
pub fn authorized(request: &HttpRequest, token: &str) -> bool {
    let Some(value) = request.header("authorization") else {
        return false;
    };
    let Some(given) = value.strip_prefix(b"Bearer ") else {
        return false;
    };
    constant_time_eq(given, token.as_bytes())
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Sends `request` to the sequencer and waits (without blocking the worker) for its answer.
pub async fn ask(worker: &Rc<Worker>, request: Request) -> Reply {
    let ticket = worker.replies.open();
    let inbox = worker.shared.inboxes[worker.index].clone();
    worker.shared.sequencer.submit(
        request,
        Box::new(move |reply| {
            inbox.send(WorkerMsg::Reply { ticket, reply });
        }),
    );
    worker.replies.wait(ticket).await
}

async fn answer(worker: &Rc<Worker>, request: Request, keep_alive: bool) -> Routed {
    match ask(worker, request).await {
        Reply::Api(api) => json(api.status, &api.body, keep_alive),
        Reply::Watch(_) => error(500, "unexpected reply", keep_alive),
    }
}

#[derive(Deserialize)]
struct TeamBody {
    name: String,
    division: String,
}

#[derive(Deserialize)]
struct MatchBody {
    home: String,
    visit: String,
    start_date: String,
    #[serde(default)]
    stadium: String,
}

#[derive(Deserialize)]
struct EventBody {
    kind: String,
    #[serde(default = "empty_object")]
    data: Value,
    /// Post only as this event number (409 when the match is past it).
    #[serde(default)]
    seq: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

fn unauthorized(keep_alive: bool) -> Routed {
    error(401, "missing or wrong bearer token", keep_alive)
}

/// Routes `/1/...` API paths; `None` when the path is not an API path.
pub async fn route(worker: &Rc<Worker>, request: &HttpRequest) -> Option<Routed> {
    let keep_alive = request.keep_alive;
    let path = request.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method.as_str();
    let token = &worker.shared.config.admin_token;
    let routed = match (method, segments.as_slice()) {
        ("GET", ["1", "checkin"]) if worker.shared.peers.is_some() => {
            match worker.shared.peers.as_ref().and_then(|p| p.choose()) {
                Some(node) => {
                    let body = serde_json::json!({ "port": node.port, "ws": node.ws });
                    json(200, &body.to_string(), keep_alive)
                }
                None => error(503, "no live node", keep_alive),
            }
        }
        ("GET", ["1", "checkin"]) => {
            let addrs = worker.shared.addrs();
            let host = request
                .header_str("host")
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string())
                .unwrap_or_else(|| addrs.http.ip().to_string());
            let body = serde_json::json!({
                "port": addrs.tcp.port(),
                "ws": format!("ws://{host}:{}/1/ws", addrs.http.port()),
            });
            json(200, &body.to_string(), keep_alive)
        }
        ("GET", ["1", "matches"]) => answer(worker, Request::ListMatches, keep_alive).await,
        ("POST", ["1", "matches"]) => {
            if !authorized(request, token) {
                return Some(unauthorized(keep_alive));
            }
            match parse_body::<MatchBody>(&request.body) {
                Ok(b) => {
                    let req = Request::CreateMatch {
                        home: b.home,
                        visit: b.visit,
                        start_date: b.start_date,
                        stadium: b.stadium,
                    };
                    answer(worker, req, keep_alive).await
                }
                Err(e) => error(400, &e, keep_alive),
            }
        }
        ("GET", ["1", "match", mid]) => {
            let req = Request::GetMatch {
                mid: mid.to_string(),
            };
            answer(worker, req, keep_alive).await
        }
        ("DELETE", ["1", "match", mid]) => {
            if !authorized(request, token) {
                return Some(unauthorized(keep_alive));
            }
            let req = Request::DeleteMatch {
                mid: mid.to_string(),
            };
            answer(worker, req, keep_alive).await
        }
        ("GET", ["1", "match", mid, "history"]) => {
            let since = match request.query_param("since") {
                None => 0,
                Some(s) => match s.parse::<u64>() {
                    Ok(n) => n,
                    Err(_) => return Some(error(400, "since must be a number", keep_alive)),
                },
            };
            let req = Request::History {
                mid: mid.to_string(),
                since,
            };
            answer(worker, req, keep_alive).await
        }
        ("POST", ["1", "match", mid, "events"]) => {
            if !authorized(request, token) {
                return Some(unauthorized(keep_alive));
            }
            match parse_body::<EventBody>(&request.body) {
                Ok(b) => match b.kind.parse::<EventKind>() {
                    Ok(kind) => {
                        let req = Request::PostEvent {
                            mid: mid.to_string(),
                            kind,
                            data: b.data,
                            expect_seq: b.seq,
                        };
                        answer(worker, req, keep_alive).await
                    }
                    Err(e) => error(422, &e.to_string(), keep_alive),
                },
                Err(e) => error(400, &e, keep_alive),
            }
        }
        ("GET", ["1", "team", id]) => {
            let req = Request::GetTeam { id: id.to_string() };
            answer(worker, req, keep_alive).await
        }
        ("PUT", ["1", "team", id]) => {
            if !authorized(request, token) {
                return Some(unauthorized(keep_alive));
            }
            match parse_body::<TeamBody>(&request.body) {
                Ok(b) => {
                    let req = Request::PutTeam {
                        id: id.to_string(),
                        name: b.name,
                        division: b.division,
                    };
                    answer(worker, req, keep_alive).await
                }
                Err(e) => error(400, &e, keep_alive),
            }
        }
        (_, ["1", "checkin"])
        | (_, ["1", "matches"])
        | (_, ["1", "match", _])
        | (_, ["1", "match", _, "history"])
        | (_, ["1", "match", _, "events"])
        | (_, ["1", "team", _]) => error(405, "method not allowed", keep_alive),
        _ => return None,
    };
    Some(routed)
}
