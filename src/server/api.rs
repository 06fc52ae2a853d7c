//! The HTTP API: the seed's v1 reads (answered on the worker, see [`super::reads`]) and the
//! admin writes (answered by the sequencer, in domain terms mapped here to HTTP once).

use std::rc::Rc;

use serde::Deserialize;
use serde_json::Value;

use super::metrics::WorkerStats;
use super::reads;
use super::router::{error, json, Routed};
use super::worker::{Worker, WorkerMsg};
use crate::domain::{parse_minute, EventKind};
use crate::proto::http::Request as HttpRequest;
use crate::proto::response::write_json_error_with;
use crate::sequencer::{Done, Refused, Reply, Request};

/// Seconds a client is told to wait (`Retry-After`) when the write queue is full.
pub const BUSY_RETRY_AFTER_SECS: u32 = 1;

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

/// The HTTP status of a refusal.
pub fn refused_status(refused: &Refused) -> u16 {
    match refused {
        Refused::Invalid(_) | Refused::UnknownTeam(_) | Refused::Rejected(_) => 422,
        Refused::UnknownMatch(_) => 404,
        Refused::MatchExists(_) | Refused::Conflict { .. } | Refused::NotNext { .. } => 409,
        Refused::StoreFailed(_) => 500,
        Refused::Contention
        | Refused::StoreUnreachable
        | Refused::NotReplicated { .. }
        | Refused::Busy
        | Refused::Stopped => 503,
    }
}

/// The HTTP status and JSON body of a sequencer answer.
pub fn reply_status_body(reply: &Reply) -> (u16, String) {
    use serde_json::json;
    let (status, body) = match reply {
        Reply::Done(done) => match done {
            Done::Team { team, created } => (if *created { 201 } else { 200 }, json!(team)),
            Done::MatchCreated { id } => (201, json!({ "id": id })),
            Done::Event { seq, ts } => (201, json!({ "seq": seq, "ts": ts })),
            Done::MatchDeleted { id } => (200, json!({ "id": id })),
            Done::Applied => (200, Value::Null),
        },
        Reply::Refused(refused @ Refused::Conflict { seq, .. }) => {
            (409, json!({ "error": refused.to_string(), "seq": seq }))
        }
        Reply::Refused(refused) => (
            refused_status(refused),
            json!({ "error": refused.to_string() }),
        ),
        Reply::Watch(_) => (500, json!({ "error": "unexpected reply" })),
    };
    (status, body.to_string())
}

/// The HTTP response to a sequencer answer (503 with `Retry-After` when the write queue is
/// full).
pub fn reply_response(reply: &Reply, keep_alive: bool) -> Routed {
    if let Reply::Refused(Refused::Busy) = reply {
        let retry = BUSY_RETRY_AFTER_SECS.to_string();
        let mut bytes = Vec::with_capacity(160);
        write_json_error_with(
            &mut bytes,
            503,
            &Refused::Busy.to_string(),
            &[("Retry-After", &retry)],
            keep_alive,
        );
        return Routed::Response {
            bytes: bytes.into(),
            keep_alive,
        };
    }
    let (status, body) = reply_status_body(reply);
    json(status, &body, keep_alive)
}

async fn answer(worker: &Rc<Worker>, request: Request, keep_alive: bool) -> Routed {
    let reply = ask(worker, request).await;
    if let Reply::Refused(Refused::NotReplicated { .. }) = reply {
        WorkerStats::add(&worker.stats().writes_unreplicated, 1);
    }
    reply_response(&reply, keep_alive)
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
    /// The match minute (an integer 0–130; 422 otherwise).
    #[serde(default)]
    minute: Option<Value>,
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
    let segments = request.path_segments();
    let segments = segments.as_slice();
    let method = request.method.as_str();
    let routed = match (method, segments) {
        ("GET", ["1", "checkin"]) => checkin(worker, request),
        ("GET", ["1", "matches"]) => reads::list_matches(worker, keep_alive).await,
        ("GET", ["1", "match", mid]) => reads::get_match(worker, mid, keep_alive).await,
        ("GET", ["1", "match", mid, "history"]) => match request.query_param("since") {
            None => reads::history(worker, mid, 0, keep_alive).await,
            Some(s) => match s.parse::<u64>() {
                Ok(since) => reads::history(worker, mid, since, keep_alive).await,
                Err(_) => error(400, "since must be a number", keep_alive),
            },
        },
        ("GET", ["1", "team", id]) => reads::get_team(worker, id, keep_alive).await,
        ("POST", ["1", "matches"])
        | ("DELETE", ["1", "match", _])
        | ("POST", ["1", "match", _, "events"])
        | ("PUT", ["1", "team", _]) => write(worker, request, segments).await,
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

/// `GET /1/checkin`: where a new watcher should connect (in a cluster, a live node).
fn checkin(worker: &Rc<Worker>, request: &HttpRequest) -> Routed {
    let keep_alive = request.keep_alive;
    if let Some(peers) = &worker.shared.peers {
        return match peers.choose() {
            Some(node) => {
                let body = serde_json::json!({ "port": node.port, "ws": node.ws });
                json(200, &body.to_string(), keep_alive)
            }
            None => error(503, "no live node", keep_alive),
        };
    }
    let addrs = worker.shared.addrs();
    let host = request
        .header_str("host")
        .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string())
        .unwrap_or_else(|| addrs.http.ip().to_string());
    let body = serde_json::json!({
        "port": addrs.tcp.port(),
        "ws": format!("{}://{host}:{}/1/ws", ws_scheme(worker), addrs.http.port()),
    });
    json(200, &body.to_string(), keep_alive)
}

/// `wss` when the server speaks TLS, else `ws`.
fn ws_scheme(worker: &Worker) -> &'static str {
    match worker.shared.tls {
        Some(_) => "wss",
        None => "ws",
    }
}

/// An admin write: checks the token, builds the sequencer request, answers with its reply.
async fn write(worker: &Rc<Worker>, request: &HttpRequest, segments: &[&str]) -> Routed {
    let keep_alive = request.keep_alive;
    if !authorized(request, &worker.shared.config.admin_token) {
        return unauthorized(keep_alive);
    }
    match write_request(request.method.as_str(), segments, &request.body) {
        Ok(req) => answer(worker, req, keep_alive).await,
        Err((status, message)) => error(status, &message, keep_alive),
    }
}

/// The sequencer request of an admin write, or the status and message refusing its body.
fn write_request(method: &str, segments: &[&str], body: &[u8]) -> Result<Request, (u16, String)> {
    let bad = |e: String| (400, e);
    Ok(match (method, segments) {
        ("POST", ["1", "matches"]) => {
            let b = parse_body::<MatchBody>(body).map_err(bad)?;
            Request::CreateMatch {
                home: b.home,
                visit: b.visit,
                start_date: b.start_date,
                stadium: b.stadium,
            }
        }
        ("DELETE", ["1", "match", mid]) => Request::DeleteMatch {
            mid: mid.to_string(),
        },
        ("POST", ["1", "match", mid, "events"]) => {
            let b = parse_body::<EventBody>(body).map_err(bad)?;
            let kind = b
                .kind
                .parse::<EventKind>()
                .map_err(|e| (422, e.to_string()))?;
            let minute = b
                .minute
                .as_ref()
                .map(parse_minute)
                .transpose()
                .map_err(|e| (422, e.to_string()))?;
            Request::PostEvent {
                mid: mid.to_string(),
                kind,
                data: b.data,
                minute,
                expect_seq: b.seq,
            }
        }
        ("PUT", ["1", "team", id]) => {
            let b = parse_body::<TeamBody>(body).map_err(bad)?;
            Request::PutTeam {
                id: id.to_string(),
                name: b.name,
                division: b.division,
            }
        }
        _ => return Err((405, "method not allowed".into())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{InputError, Rejection};

    fn text(routed: Routed) -> String {
        match routed {
            Routed::Response { bytes, .. } => String::from_utf8(bytes.to_vec()).unwrap(),
            Routed::Upgrade { .. } | Routed::EventStream { .. } => panic!("not a response"),
        }
    }

    #[test]
    fn refusals_map_to_statuses_once() {
        let cases = [
            (Refused::Invalid(InputError::SameTeams("a".into())), 422),
            (Refused::UnknownTeam("a".into()), 422),
            (Refused::Rejected(Rejection::AlreadyStarted), 422),
            (Refused::UnknownMatch("m".into()), 404),
            (Refused::MatchExists("m".into()), 409),
            (Refused::NotNext { want: 5, seq: 2 }, 409),
            (Refused::StoreFailed("disk".into()), 500),
            (Refused::Contention, 503),
            (Refused::StoreUnreachable, 503),
            (Refused::Stopped, 503),
        ];
        for (refused, status) in cases {
            let (s, body) = reply_status_body(&Reply::Refused(refused.clone()));
            assert_eq!(s, status, "{refused:?}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], refused.to_string());
        }
        let (s, body) = reply_status_body(&Reply::Refused(Refused::Conflict { want: 2, seq: 3 }));
        assert_eq!(s, 409);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            serde_json::json!({"error": "event 2 exists: match is at 3", "seq": 3})
        );
        let done = Reply::Done(Done::Event { seq: 7, ts: 9 });
        assert_eq!(
            reply_status_body(&done),
            (201, r#"{"seq":7,"ts":9}"#.into())
        );
    }

    #[test]
    fn an_event_minute_must_be_an_integer_from_0_to_130() {
        let post =
            |body: &str| write_request("POST", &["1", "match", "m", "events"], body.as_bytes());
        match post(r#"{"kind":"goal","data":{"team":"a"},"minute":67}"#) {
            Ok(Request::PostEvent { minute, .. }) => assert_eq!(minute, Some(67)),
            other => panic!("{other:?}"),
        }
        match post(r#"{"kind":"goal"}"#) {
            Ok(Request::PostEvent { minute, .. }) => assert_eq!(minute, None),
            other => panic!("{other:?}"),
        }
        for bad in ["131", "-1", "45.5", "\"67\"", "[1]"] {
            match post(&format!(r#"{{"kind":"goal","minute":{bad}}}"#)) {
                Err((422, message)) => assert!(message.contains("minute"), "{message}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_full_write_queue_answers_503_with_retry_after() {
        let t = text(reply_response(&Reply::Refused(Refused::Busy), true));
        assert!(t.starts_with("HTTP/1.1 503 "), "{t}");
        assert!(t.contains("\r\nRetry-After: 1\r\n"), "{t}");
        assert!(
            t.ends_with(r#"{"error":"too many writes queued: try again"}"#),
            "{t}"
        );
    }
}
