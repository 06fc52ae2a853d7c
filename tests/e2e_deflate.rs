//! permessage-deflate against the real server: the negotiation in the 101, the sample match
//! to a compressing and a plain watcher side by side (the same messages, the compressing one
//! in RSV1 frames and fewer bytes), compressed commands and echoes, and the inflate bound
//! (a zip bomb closes with 1009, corrupt data with 1007).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use common::*;
use flate2::{Compress, Compression, FlushCompress};
use matchstream::proto::deflate::{inflate_message, RSV1};
use matchstream::proto::frame::{FrameHeader, OpCode};
use matchstream::proto::mask::apply_mask;
use serde_json::{json, Value};

/// A frame from the server: opcode, RSV1, payload as sent (still compressed when RSV1).
struct Frame {
    opcode: OpCode,
    compressed: bool,
    wire_len: usize,
    payload: Vec<u8>,
}

impl Frame {
    /// The message payload, inflated when compressed.
    fn message(&self) -> Vec<u8> {
        if self.compressed {
            inflate_message(&self.payload, 1 << 24).expect("server frame inflates")
        } else {
            self.payload.clone()
        }
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.message()).expect("JSON message")
    }

    fn close_code(&self) -> Option<u16> {
        (self.opcode == OpCode::Close && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// A WebSocket client on a bare socket that may offer permessage-deflate.
struct DeflateClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
}

impl DeflateClient {
    fn connect(addr: SocketAddr, path: &str, offer: Option<&str>) -> DeflateClient {
        let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let offer = offer.map_or(String::new(), |o| {
            format!("Sec-WebSocket-Extensions: {o}\r\n")
        });
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk).expect("handshake read");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .map(str::to_string);
        DeflateClient {
            stream,
            buf: buf.split_off(end + 4),
            extensions,
        }
    }

    fn send(&mut self, rsv: u8, opcode: OpCode, payload: &[u8]) {
        let mask = [7, 1, 9, 3];
        let header = FrameHeader {
            fin: true,
            rsv,
            opcode,
            mask: Some(mask),
            payload_len: payload.len() as u64,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], mask, 0);
        let _ = self.stream.write_all(&out);
    }

    fn send_compressed(&mut self, opcode: OpCode, payload: &[u8]) {
        self.send(RSV1, opcode, &compress(payload));
    }

    /// The next frame, within `WAIT`; `None` at EOF.
    fn next(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + WAIT;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            if let Some((h, n)) = FrameHeader::parse_with(&self.buf, RSV1).expect("valid frame") {
                let total = n + h.payload_len as usize;
                if self.buf.len() >= total {
                    assert!(h.fin && h.mask.is_none());
                    let payload = self.buf[n..total].to_vec();
                    self.buf.drain(..total);
                    return Some(Frame {
                        opcode: h.opcode,
                        compressed: h.rsv & RSV1 != 0,
                        wire_len: total,
                        payload,
                    });
                }
            }
            assert!(Instant::now() < deadline, "no frame within {WAIT:?}");
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Frames until (and including) the close frame or EOF.
    fn until_close(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next() {
            let close = frame.opcode == OpCode::Close;
            frames.push(frame);
            if close {
                break;
            }
        }
        frames
    }
}

/// A client's compressed payload (RFC 7692 §7.2.1: sync flush, `00 00 ff ff` removed).
fn compress(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    loop {
        let done = c.total_in() as usize;
        c.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out.truncate(out.len() - 4);
    out
}

const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";

#[test]
fn sample_match_to_a_deflate_and_a_plain_watcher() {
    sample_match_both_ways(&[]);
}

fn sample_match_both_ways(flags: &[&str]) {
    let server = Server::start(flags);
    post_sample(&server, 0);
    let mut zipped = DeflateClient::connect(server.http, "/1/ws", Some(BROWSER_OFFER));
    assert_eq!(
        zipped.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    let mut plain = DeflateClient::connect(server.http, "/1/ws", None);
    assert_eq!(plain.extensions, None);
    let watch = json!({"command": "watch", "mid": SAMPLE_MID}).to_string();
    zipped.send_compressed(OpCode::Text, watch.as_bytes());
    plain.send(0, OpCode::Text, watch.as_bytes());
    for client in [&mut zipped, &mut plain] {
        let status = client.next().expect("status").json();
        assert_eq!(
            (status["type"].as_str(), status["seq"].as_u64()),
            (Some("status"), Some(0))
        );
    }
    wait_until(WAIT, "both watchers registered", || {
        server.metric_sum("matchstream_watchers") == 2
    });
    assert_eq!(server.metric_sum("matchstream_deflate_websockets"), 1);

    let mut admin = server.admin();
    post_events(&mut admin, 1..=sample_events().len());
    let zipped_frames = zipped.until_close();
    let plain_frames = plain.until_close();
    let messages = |frames: &[Frame]| -> Vec<Value> {
        frames
            .iter()
            .filter(|f| f.opcode == OpCode::Text)
            .map(Frame::json)
            .collect()
    };
    let got = messages(&zipped_frames);
    assert_eq!(got, messages(&plain_frames), "the same messages either way");
    assert_eq!(got.len(), sample_events().len());
    for (i, event) in got.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1);
    }
    assert!(plain_frames.iter().all(|f| !f.compressed));
    let compressed = zipped_frames.iter().filter(|f| f.compressed).count();
    assert!(
        compressed * 2 > got.len(),
        "most events compressed: {compressed} of {}",
        got.len()
    );
    let bytes = |frames: &[Frame]| frames.iter().map(|f| f.wire_len).sum::<usize>();
    let (z, p) = (bytes(&zipped_frames), bytes(&plain_frames));
    eprintln!("sample match events on the wire: deflate {z} B, plain {p} B");
    assert!(z < p, "deflate {z} B, plain {p} B");
    assert_eq!(zipped_frames.last().and_then(Frame::close_code), Some(1000));
}

#[test]
fn echo_answers_compressed_messages_compressed() {
    let server = Server::start(&["--enable-echo"]);
    let mut client = DeflateClient::connect(server.http, "/1/echo", Some("permessage-deflate"));
    assert!(client.extensions.is_some());
    let text = "goal! ".repeat(400);
    client.send_compressed(OpCode::Text, text.as_bytes());
    let reply = client.next().expect("echo");
    assert!(reply.compressed && reply.opcode == OpCode::Text);
    assert!(reply.payload.len() < 200, "{} B", reply.payload.len());
    assert_eq!(reply.message(), text.as_bytes());
    // Uncompressed in, small: echoed plain (compression would not help).
    client.send(0, OpCode::Binary, b"\x01\x02");
    let reply = client.next().expect("echo");
    assert!(!reply.compressed);
    assert_eq!(reply.payload, b"\x01\x02");
    // A client asking for a 512-byte window gets plain frames (our window is 32 KiB).
    let mut small = DeflateClient::connect(
        server.http,
        "/1/echo",
        Some("permessage-deflate; server_max_window_bits=9"),
    );
    assert!(small
        .extensions
        .as_deref()
        .unwrap()
        .ends_with("server_max_window_bits=9"));
    small.send_compressed(OpCode::Text, text.as_bytes());
    let reply = small.next().expect("echo");
    assert!(!reply.compressed);
    assert_eq!(reply.payload, text.as_bytes());
}

#[test]
fn inflate_is_bounded_by_max_message_bytes() {
    let server = Server::start(&["--max-message-bytes", "4096"]);
    post_sample(&server, 1);
    // 64 KiB of spaces: a few hundred bytes compressed, 16 times the message limit inflated.
    let mut bomb = DeflateClient::connect(server.http, "/1/ws", Some("permessage-deflate"));
    let small_bomb = compress(&[b' '; 64 << 10]);
    assert!(
        small_bomb.len() < 4096,
        "fits the compressed limit: {}",
        small_bomb.len()
    );
    bomb.send(RSV1, OpCode::Text, &small_bomb);
    let frames = bomb.until_close();
    assert_eq!(frames.last().and_then(Frame::close_code), Some(1009));
    // Corrupt compressed data.
    let mut corrupt = DeflateClient::connect(server.http, "/1/ws", Some("permessage-deflate"));
    corrupt.send(RSV1, OpCode::Text, &[0xff, 0xff, 0xff]);
    let frames = corrupt.until_close();
    assert_eq!(frames.last().and_then(Frame::close_code), Some(1007));
    // RSV1 without having negotiated the extension.
    let mut plain = DeflateClient::connect(server.http, "/1/ws", None);
    plain.send(RSV1, OpCode::Text, &compress(b"{}"));
    let frames = plain.until_close();
    assert_eq!(frames.last().and_then(Frame::close_code), Some(1002));
    // The server is fine afterwards.
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 1);
}
