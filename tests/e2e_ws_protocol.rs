//! RFC 6455 rules on `/1/ws` against the real server: close codes for binary (1003), too big
//! (1009), invalid UTF-8 (1007) and unmasked (1002) frames, pings answered, the close
//! handshake, duplicate watches, the bounded HTTP handshake time, and the lingering close
//! (a FIN after the last reply, never a reset) on the plane and the task path.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use matchstream::load::client::{client_frame, next_frame, ServerFrame};
use matchstream::proto::frame::OpCode;

fn watching_raw(server: &Server) -> RawWs {
    let mut raw = RawWs::connect(server.http, None);
    raw.watch(SAMPLE_MID);
    raw
}

#[test]
fn protocol_errors_close_with_the_rfc_codes() {
    let server = Server::start(&["--max-message-bytes", "1024"]);
    post_sample(&server, 1);

    let mut raw = watching_raw(&server);
    raw.send_frame(OpCode::Binary, b"\x01\x02\x03");
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1003), "binary: {frames:?}");

    let mut raw = watching_raw(&server);
    raw.send_frame(OpCode::Text, "a".repeat(2000).as_bytes());
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1009), "too big: {frames:?}");

    let mut raw = watching_raw(&server);
    raw.send_frame(
        OpCode::Text,
        b"{\"command\":\"watch\",\"mid\":\"\xff\xfe\"}",
    );
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1007), "invalid UTF-8: {frames:?}");

    let mut raw = watching_raw(&server);
    let payload = br#"{"command":"unwatch","mid":"x"}"#;
    let mut unmasked = vec![0x81, payload.len() as u8];
    unmasked.extend_from_slice(payload);
    raw.stream.write_all(&unmasked).unwrap();
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1002), "unmasked: {frames:?}");

    let mut raw = watching_raw(&server);
    raw.send_frame(OpCode::Ping, &[b'p'; 200]);
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1002), "control frame over 125 bytes: {frames:?}");

    // The server is fine afterwards.
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 1);
}

#[test]
fn pings_are_answered_and_a_client_close_is_echoed() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut raw = watching_raw(&server);
    raw.send_frame(OpCode::Ping, b"are you there");
    let mut close = vec![0x03, 0xe8]; // 1000
    close.extend_from_slice(b"bye");
    raw.send_frame(OpCode::Close, &close);
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1000), "{frames:?}");
    assert!(
        matches!(frames.first(), Some(ServerFrame::Text(t)) if t.starts_with(br#"{"type":"status""#)),
        "{frames:?}"
    );
    assert!(
        frames.contains(&ServerFrame::Other),
        "no pong in {frames:?}"
    );
    let (_, closed) = raw.drain(WAIT);
    assert!(
        closed,
        "the server closes the TCP connection after the close handshake"
    );
}

/// Reads until the server's FIN, at most [`WAIT`]: the bytes, or the error that ended the
/// stream instead (a reset: the server closed with unread input and the kernel sent an RST,
/// which can destroy the last reply before a client reads it).
fn read_until_fin(raw: &mut RawWs) -> Result<Vec<u8>, std::io::Error> {
    let mut out = std::mem::take(&mut raw.leftover);
    let mut chunk = [0u8; 4096];
    raw.stream.set_read_timeout(Some(WAIT)).unwrap();
    loop {
        match raw.stream.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e),
        }
    }
}

/// A client keeps sending after the frame that failed its connection: the server answers
/// what came before the failure, sends its close frame and a FIN, and drops the late bytes
/// (a lingering close), so the client reads everything and then a clean end, never a reset.
fn failing_then_sending_ends_with_a_fin(mut raw: RawWs, before: &[u8], reply: &[u8]) {
    let mut burst = before.to_vec();
    // Opcode 0x7 is reserved: the connection fails with 1002.
    burst.extend_from_slice(&[0x87, 0x83, 0, 0, 0, 0, b'b', b'a', b'd']);
    raw.stream.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Late bytes, after the server has failed the connection; a client like Autobahn's
    // writes again before it reads, and a reset would make that write fail and the client
    // drop the connection with the reply unread.
    let late = client_frame(OpCode::Ping, b"still there?", [5, 6, 7, 8]);
    raw.stream.write_all(&late).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    raw.stream
        .write_all(&late)
        .expect("the server still drains late bytes: no reset");
    let bytes = read_until_fin(&mut raw).expect("a clean end (FIN), not a reset");
    let mut buf = bytes.clone();
    let mut frames = Vec::new();
    while let Some(frame) = next_frame(&mut buf).expect("valid server frame") {
        frames.push(frame);
    }
    let mut expected = Vec::new();
    if !reply.is_empty() {
        expected.push(ServerFrame::Text(reply.to_vec()));
    }
    expected.push(ServerFrame::Close(1002));
    assert_eq!(
        frames, expected,
        "the reply, then the close frame, then FIN"
    );
}

#[test]
fn a_failed_echo_connection_answers_first_and_ends_with_a_fin() {
    let server = Server::start(&["--enable-echo"]);
    let raw = RawWs::connect_path(server.http, "/1/echo", None);
    let hello = client_frame(OpCode::Text, b"Hello, world!", [1, 2, 3, 4]);
    failing_then_sending_ends_with_a_fin(raw, &hello, b"Hello, world!");
}

#[test]
fn a_failed_watcher_ends_with_a_fin() {
    let server = Server::start(&[]);
    failing_then_sending_ends_with_a_fin(RawWs::connect(server.http, None), &[], &[]);
}

#[test]
fn a_watch_ping_and_close_in_one_burst_are_answered_in_order() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut raw = RawWs::connect(server.http, None);
    // One write: the server reads the three frames together.
    let watch = format!(r#"{{"command":"watch","mid":"{SAMPLE_MID}"}}"#);
    let mut burst = client_frame(OpCode::Text, watch.as_bytes(), [1, 2, 3, 4]);
    burst.extend(client_frame(OpCode::Ping, b"are you there", [5, 6, 7, 8]));
    burst.extend(client_frame(OpCode::Close, &[0x03, 0xe8], [9, 8, 7, 6]));
    raw.stream.write_all(&burst).unwrap();
    let (frames, code) = raw.frames_until_close(WAIT);
    assert_eq!(code, Some(1000), "{frames:?}");
    assert!(
        matches!(&frames[..], [ServerFrame::Text(t), ServerFrame::Other] if t.starts_with(br#"{"type":"status""#)),
        "the status, then the pong, then the close echo: {frames:?}"
    );
    let (_, closed) = raw.drain(WAIT);
    assert!(
        closed,
        "the server closes the TCP connection after the close handshake"
    );
}

#[test]
fn watching_twice_is_an_error_and_events_come_once() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    ws.watch(SAMPLE_MID, None);
    let v = ws.next_json();
    assert_eq!(v["type"], "error", "{v}");
    post_events(&mut server.admin(), 2..=3);
    ws.expect_event(SAMPLE_MID, 2);
    ws.expect_event(SAMPLE_MID, 3);
    ws.expect_silence(Duration::from_millis(200));
}

#[test]
fn slow_or_silent_http_clients_are_cut_off() {
    let server = Server::start(&["--handshake-timeout-ms", "300"]);
    let started = Instant::now();
    let mut silent = LineClient::connect_raw(server.http);
    let mut partial = LineClient::connect_raw(server.http);
    partial
        .write_all(b"GET /1/ws HTTP/1.1\r\nHost: e2e\r\nUpgrade: websocket\r\n")
        .unwrap();
    let mut line_silent = LineClient::connect_raw(server.tcp);
    for (name, s) in [
        ("silent", &mut silent),
        ("partial", &mut partial),
        ("line", &mut line_silent),
    ] {
        let (bytes, closed) = drain(s, Duration::from_secs(5));
        assert!(closed, "{name}: still open after {:?}", started.elapsed());
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("ERROR"),
            "{name}: {text}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn websocket_protocol_errors_are_counted_in_metrics() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let before = server.metric_sum("matchstream_protocol_errors_total");
    let mut raw = watching_raw(&server);
    raw.send_frame(OpCode::Binary, b"\x01");
    assert_eq!(raw.frames_until_close(WAIT).1, Some(1003));
    let mut raw = watching_raw(&server);
    raw.send_frame(OpCode::Text, b"\xff");
    assert_eq!(raw.frames_until_close(WAIT).1, Some(1007));
    wait_until(WAIT, "protocol_errors_total to count both closes", || {
        server.metric_sum("matchstream_protocol_errors_total") >= before + 2
    });
}
