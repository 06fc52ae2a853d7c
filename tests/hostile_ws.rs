//! WebSocket messages that never end, against the real binary: a fragmented message (or a
//! frame) begun and not finished within `--ws-message-timeout-ms` closes the connection with
//! 1008, even while the client keeps it busy with pings; a fragmented message finished in
//! time is served.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use matchstream::load::client::ServerFrame;
use matchstream::proto::frame::OpCode;

/// A masked client frame with the FIN bit as given (`client_frame` always sets it).
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [3u8, 1, 4, 1];
    let mut out = vec![(u8::from(fin) << 7) | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Sends pings every 300 ms until the server closes; returns the close code and how long it
/// took.
fn ping_until_closed(ws: &mut RawWs) -> (Option<u16>, Duration) {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(15), "never closed");
        ws.send_frame(OpCode::Ping, b"busy");
        let (frames, code) = ws.frames_until_close(Duration::from_millis(300));
        if code.is_some() {
            return (code, started.elapsed());
        }
        assert!(
            frames.iter().all(|f| matches!(f, ServerFrame::Other)),
            "{frames:?}"
        );
    }
}

#[test]
fn an_unfinished_fragmented_message_is_closed_with_1008() {
    unfinished_fragmented_message(&[]);
}

fn unfinished_fragmented_message(extra: &[&str]) {
    let mut args = vec!["--ws-message-timeout-ms", "1000"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let mut ws = RawWs::connect(server.http, None);
    ws.stream
        .write_all(&frame(false, 0x1, br#"{"command":"wat"#))
        .unwrap();
    let (code, took) = ping_until_closed(&mut ws);
    assert_eq!(code, Some(1008));
    eprintln!("closed {took:?} after the first fragment");
    assert_eq!(server.metric_sum("matchstream_message_timeouts_total"), 1);
}

#[test]
fn an_unfinished_frame_is_closed_with_1008() {
    let server = Server::start(&["--ws-message-timeout-ms", "1000"]);
    let mut ws = RawWs::connect(server.http, None);
    // A header announcing 100 bytes, then 10 of them.
    let mut bytes = vec![0x81, 0x80 | 100, 0, 0, 0, 0];
    bytes.extend_from_slice(&[b' '; 10]);
    ws.stream.write_all(&bytes).unwrap();
    let started = Instant::now();
    let (_, code) = ws.frames_until_close(Duration::from_secs(10));
    assert_eq!(code, Some(1008));
    eprintln!("closed {:?} after the partial frame", started.elapsed());
}

#[test]
fn a_fragmented_message_finished_in_time_is_served() {
    let server = Server::start(&["--ws-message-timeout-ms", "2000"]);
    post_sample(&server, 1);
    let mut ws = RawWs::connect(server.http, None);
    let text = format!(r#"{{"command":"watch","mid":"{SAMPLE_MID}"}}"#);
    let (a, b) = text.as_bytes().split_at(10);
    ws.stream.write_all(&frame(false, 0x1, a)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ws.send_frame(OpCode::Ping, b"x");
    std::thread::sleep(Duration::from_millis(500));
    ws.stream.write_all(&frame(true, 0x0, b)).unwrap();
    // Well past the timeout: the connection lives on (the message was finished).
    std::thread::sleep(Duration::from_millis(2500));
    let (frames, code) = ws.frames_until_close(Duration::from_millis(500));
    assert_eq!(code, None, "{frames:?}");
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Text(t) if String::from_utf8_lossy(t).contains(r#""type":"status""#))),
        "{frames:?}"
    );
    assert_eq!(server.metric_sum("matchstream_message_timeouts_total"), 0);
}
