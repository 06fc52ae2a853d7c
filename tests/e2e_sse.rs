//! Server-Sent Events against the real server: the sample match as `event: status` then
//! `event: event` messages whose `data` is the WebSocket JSON and whose `id` is the seq; the
//! stream ending after `stop`; resuming with `Last-Event-ID` or `?since=` with no gap or
//! repeat; `204` for an ended match already seen whole; 404 / 400 / 406; keepalive comments;
//! an event's match minute (422 out of range) in the SSE, WebSocket and line messages alike.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use matchstream::proto::sse::{SseMessage, SseParser};
use serde_json::{json, Value};

/// An `EventSource`-like client on a bare socket.
struct SseClient {
    stream: TcpStream,
    parser: SseParser,
    messages: Vec<SseMessage>,
    head: String,
    eof: bool,
}

impl SseClient {
    /// Sends the request and reads the response head; the head is returned in `head`.
    fn get(addr: SocketAddr, path: &str, headers: &str) -> SseClient {
        let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk).expect("read head");
            assert!(
                n > 0,
                "closed before the head: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut client = SseClient {
            stream,
            parser: SseParser::new(),
            messages: Vec::new(),
            head,
            eof: false,
        };
        let rest = buf.split_off(end + 4);
        client.parser.feed(&rest, &mut client.messages).unwrap();
        client
    }

    fn stream(addr: SocketAddr, path: &str, headers: &str) -> SseClient {
        let client = SseClient::get(
            addr,
            path,
            &format!("Accept: text/event-stream\r\n{headers}"),
        );
        assert!(
            client.head.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}",
            client.head
        );
        assert!(
            client.head.contains("Content-Type: text/event-stream"),
            "{}",
            client.head
        );
        client
    }

    /// Reads until `count` messages are in, or EOF, within `WAIT`.
    fn read_until(&mut self, count: usize) -> &[SseMessage] {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 16384];
        while self.messages.len() < count && !self.eof {
            assert!(
                Instant::now() < deadline,
                "only {} messages",
                self.messages.len()
            );
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => self.eof = true,
                Ok(n) => self.parser.feed(&chunk[..n], &mut self.messages).unwrap(),
            }
        }
        &self.messages
    }

    /// Reads until EOF (within `WAIT`).
    fn read_to_end(&mut self) -> &[SseMessage] {
        self.read_until(usize::MAX)
    }
}

fn ids(messages: &[SseMessage]) -> Vec<(String, u64)> {
    messages
        .iter()
        .map(|m| (m.event.clone(), m.id.as_deref().unwrap().parse().unwrap()))
        .collect()
}

/// Asserts: a status with `id` = `status_id` (its seq, or the resume point when history
/// follows), then events `first..=last`, each with `id` = its seq.
fn expect_events(messages: &[SseMessage], status_id: u64, first: u64, last: u64) {
    let mut want = vec![("status".to_string(), status_id)];
    want.extend((first..=last).map(|s| ("event".to_string(), s)));
    assert_eq!(ids(messages), want);
}

#[test]
fn the_sample_match_streams_the_websocket_messages_and_ends_after_stop() {
    sample_match(&[]);
}

fn sample_match(flags: &[&str]) {
    let server = Server::start(flags);
    post_sample(&server, 5);
    let path = format!("/1/match/{SAMPLE_MID}/events");
    let mut sse = SseClient::stream(server.http, &path, "");
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    let ws_status = ws.expect_status(SAMPLE_MID);
    let status = &sse.read_until(1)[0];
    assert_eq!(
        (status.event.as_str(), status.id.as_deref()),
        ("status", Some("5"))
    );
    let sse_status: Value = serde_json::from_str(&status.data).unwrap();
    assert_eq!(sse_status, ws_status, "the same JSON as the WebSocket");
    wait_until(WAIT, "the stream is counted", || {
        server.metric_sum("matchstream_sse_connections") == 1
    });
    let total = sample_events().len();
    post_events(&mut server.admin(), 6..=total);
    let messages = sse.read_to_end().to_vec();
    assert!(sse.eof, "the stream ends after stop");
    expect_events(&messages, 5, 6, total as u64);
    for (i, m) in messages[1..].iter().enumerate() {
        let ws_event = ws.expect_event(SAMPLE_MID, 6 + i as u64);
        assert_eq!(serde_json::from_str::<Value>(&m.data).unwrap(), ws_event);
    }
    assert_eq!(
        serde_json::from_str::<Value>(&messages.last().unwrap().data).unwrap()["kind"],
        "stop"
    );
    // A browser reconnecting with the last id it saw is told to stop (204).
    let again = SseClient::get(
        server.http,
        &path,
        &format!("Accept: text/event-stream\r\nLast-Event-ID: {total}\r\n"),
    );
    assert!(
        again.head.starts_with("HTTP/1.1 204 No Content"),
        "{}",
        again.head
    );
    // Without a resume point, an ended match is its status, then the end.
    let mut late = SseClient::stream(server.http, &path, "");
    let messages = late.read_to_end().to_vec();
    expect_events(&messages, total as u64, 1, 0);
}

#[test]
fn resume_with_last_event_id_or_since_has_no_gap_or_repeat() {
    let server = Server::start(&[]);
    post_sample(&server, 12);
    let path = format!("/1/match/{SAMPLE_MID}/events");
    let mut by_id = SseClient::stream(server.http, &path, "Last-Event-ID: 7\r\n");
    expect_events(by_id.read_until(6), 7, 8, 12);
    let status: Value = serde_json::from_str(&by_id.messages[0].data).unwrap();
    assert_eq!(status["seq"], 12, "the status itself is at 12");
    let mut by_since = SseClient::stream(server.http, &format!("{path}?since=3"), "");
    expect_events(by_since.read_until(10), 3, 4, 12);
    // Last-Event-ID (what a reconnecting EventSource sends) wins over the URL's since.
    let mut both = SseClient::stream(
        server.http,
        &format!("{path}?since=3"),
        "Last-Event-ID: 10\r\n",
    );
    expect_events(both.read_until(3), 10, 11, 12);
    // Resuming from the status's own seq: the status alone.
    let mut current = SseClient::stream(server.http, &path, "Last-Event-ID: 12\r\n");
    expect_events(current.read_until(1), 12, 13, 12);
    post_events(&mut server.admin(), 13..=14);
    for client in [&mut by_id, &mut by_since, &mut both, &mut current] {
        let n = client.messages.len();
        let got = client.read_until(n + 2)[n..].to_vec();
        assert_eq!(ids(&got), [("event".into(), 13), ("event".into(), 14)]);
    }
}

#[test]
fn bad_requests_get_clear_errors() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let path = format!("/1/match/{SAMPLE_MID}/events");
    for (path, headers, status) in [
        ("/1/match/nope-nop-2011-01-01/events".to_string(), "", "404"),
        (path.clone(), "Last-Event-ID: abc\r\n", "400"),
        (format!("{path}?since=x"), "", "400"),
        (path.clone(), "Accept: application/json\r\n", "406"),
    ] {
        let r = SseClient::get(server.http, &path, headers);
        assert!(
            r.head.starts_with(&format!("HTTP/1.1 {status}")),
            "{path} {headers}: {}",
            r.head
        );
    }
    // The admin POST on the same path still works.
    post_events(&mut server.admin(), 2..=2);
}

fn idle_stream_keepalive(flags: &[&str]) {
    let server = Server::start(&[&["--ws-ping-after-ms", "200"], flags].concat());
    post_sample(&server, 1);
    let mut sse = SseClient::stream(server.http, &format!("/1/match/{SAMPLE_MID}/events"), "");
    sse.read_until(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 1024];
    while sse.parser.comments() < 2 {
        assert!(Instant::now() < deadline, "no keepalive comments");
        let n = sse.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "the idle stream was closed");
        sse.parser.feed(&chunk[..n], &mut sse.messages).unwrap();
    }
    assert_eq!(sse.messages.len(), 1, "comments are not messages");
}

#[test]
fn an_event_minute_reaches_sse_websocket_and_line_watchers_and_history() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    let mut line = server.line(SAMPLE_MID);
    assert_eq!(line.next_block().expect("status block").kind, "status");
    let path = format!("/1/match/{SAMPLE_MID}/events");
    let mut sse = SseClient::stream(server.http, &path, "");
    assert_eq!(sse.read_until(1)[0].event, "status");

    let mut admin = server.admin();
    let goal = |minute: &str| {
        format!(r#"{{"kind":"goal","data":{{"team":"tig","player":7}},"minute":{minute}}}"#)
    };
    for bad in ["131", "-1", "45.5", "\"67\""] {
        let r = admin.request("POST", &path, Some(&goal(bad))).unwrap();
        assert_eq!(r.status, 422, "minute {bad}: {r:?}");
        assert!(body_json(&r)["error"].as_str().unwrap().contains("minute"));
    }
    let r = admin.request("POST", &path, Some(&goal("67"))).unwrap();
    assert_eq!((r.status, body_json(&r)["seq"].as_u64()), (201, Some(2)));

    assert_eq!(ws.expect_event(SAMPLE_MID, 2)["minute"], 67);
    let block = line.next_block().expect("goal block");
    assert_eq!(
        (block.kind.as_str(), block.field("minute")),
        ("goal", Some("67"))
    );
    let pushed: Value = serde_json::from_str(&sse.read_until(2)[1].data).unwrap();
    assert_eq!(
        (pushed["seq"].as_u64(), &pushed["minute"]),
        (Some(2), &json!(67))
    );
    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history[1]["minute"], 67);
    assert!(
        history[0].get("minute").is_none(),
        "posted without one: {history}"
    );
}

#[test]
fn idle_streams_get_keepalive_comments() {
    idle_stream_keepalive(&[]);
}
