//! Server-Sent Events: `GET /1/match/{id}/events` (`Accept: text/event-stream`) streams the
//! same messages as the WebSocket, as `event: status` / `event: event` with `id: <seq>` and
//! `data: <the WebSocket JSON>`. `Last-Event-ID` (or `?since=N`) resumes after that seq; the
//! stream ends (the connection closes) after the match's `stop`. A watcher of an ended match
//! that has seen everything gets `204 No Content`, which tells an `EventSource` to stop
//! reconnecting.
//!
//! An SSE watcher is a plane record like the others (the same subscription tables, outbound
//! bound and send timeout); each event's SSE message is encoded once per worker
//! ([`LazySse`]). The format is [`crate::proto::sse`]'s.

use std::rc::Rc;

use bytes::Bytes;

use super::plane::driver;
use super::plane::record::Flavour;
use super::router::{error, Routed};
use super::tls::socket::Socket;
use super::watch;
use super::worker::Worker;
use crate::proto::http::Request;
use crate::proto::sse::{
    accepts_event_stream, encode_comment, encode_message, response_head, resume_after,
};

/// What the SSE phase of a connection starts from (its `200` head is already written).
pub struct SseStart {
    /// The socket.
    pub stream: Socket,
    /// The match.
    pub mid: String,
    /// Resume after this seq.
    pub since: Option<u64>,
}

/// The match id of an SSE path `/1/match/{id}/events`.
pub fn event_stream_match(path: &str) -> Option<&str> {
    let mid = path.strip_prefix("/1/match/")?.strip_suffix("/events")?;
    (!mid.is_empty() && !mid.contains('/')).then_some(mid)
}

/// Routes `GET /1/match/{id}/events`: the `200` head (and the hand-off), or an error: 404 for
/// an unknown match, 400 for a bad resume point, 406 when the client does not accept an
/// event stream, 204 when an ended match has nothing after the resume point.
pub async fn route(worker: &Rc<Worker>, request: &Request, mid: &str) -> Routed {
    let keep_alive = request.keep_alive;
    if !accepts_event_stream(request.header("accept")) {
        return error(406, "this endpoint sends text/event-stream", keep_alive);
    }
    let since = match resume_after(
        request.header("last-event-id"),
        request.query_param("since"),
    ) {
        Ok(since) => since,
        Err(e) => return error(400, &e.to_string(), keep_alive),
    };
    worker.reads.caught_up(&worker.shared.published).await;
    let Some(snapshot) = worker.reads.snapshot(mid) else {
        return error(404, &format!("match not found: {mid}"), keep_alive);
    };
    if snapshot.state.is_ended() && since.is_some_and(|s| s >= snapshot.state.seq) {
        let mut bytes = Vec::new();
        crate::proto::response::write_response(&mut bytes, 204, "", &[], b"", keep_alive);
        return Routed::Response {
            bytes: bytes.into(),
            keep_alive,
        };
    }
    Routed::EventStream {
        head: response_head(),
        mid: mid.to_string(),
        since,
    }
}

/// The SSE message of a WebSocket JSON message with seq `seq` (`status` or `event`).
pub fn message(event: &str, seq: u64, json: &str) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 40);
    encode_message(&mut out, event, Some(seq), json);
    Bytes::from(out)
}

/// A broadcast's SSE message, encoded on first use and shared by every SSE watcher of the
/// worker.
pub struct LazySse<'a> {
    seq: u64,
    json: &'a str,
    bytes: Option<Bytes>,
}

impl<'a> LazySse<'a> {
    /// Nothing is encoded until [`get`](Self::get) is first called.
    pub fn new(seq: u64, json: &'a str) -> Self {
        Self {
            seq,
            json,
            bytes: None,
        }
    }

    /// The shared `event: event` message.
    pub fn get(&mut self) -> &Bytes {
        let (seq, json) = (self.seq, self.json);
        self.bytes
            .get_or_insert_with(|| message("event", seq, json))
    }
}

/// A keepalive comment for an idle stream.
pub fn keepalive() -> Bytes {
    let mut out = Vec::with_capacity(16);
    encode_comment(&mut out, "keepalive");
    Bytes::from(out)
}

/// Hands one SSE watcher to the worker's watcher plane (a record of flavour
/// [`Flavour::Sse`]) and starts its watch; the connection leaves its task.
pub fn serve(worker: &Rc<Worker>, start: SseStart, conn: usize) {
    let peer = super::worker::hand_over(worker, conn);
    let id = driver::adopt(worker, start.stream, Flavour::Sse, &[], peer);
    watch::watch(worker, id, &start.mid, start.since);
    driver::pump(worker);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_paths() {
        assert_eq!(
            event_stream_match("/1/match/elp-tig-2011-09-10/events"),
            Some("elp-tig-2011-09-10")
        );
        assert_eq!(event_stream_match("/1/match//events"), None);
        assert_eq!(event_stream_match("/1/match/a/b/events"), None);
        assert_eq!(event_stream_match("/1/match/a/history"), None);
    }

    #[test]
    fn messages() {
        assert_eq!(
            &message("status", 3, "{}")[..],
            b"event: status\nid: 3\ndata: {}\n\n"
        );
        let mut lazy = LazySse::new(4, "{\"seq\":4}");
        let first = lazy.get().clone();
        assert_eq!(&first[..], b"event: event\nid: 4\ndata: {\"seq\":4}\n\n");
        assert_eq!(lazy.get().as_ptr(), first.as_ptr(), "encoded once");
        assert_eq!(&keepalive()[..], b": keepalive\n\n");
    }
}
