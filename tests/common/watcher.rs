//! The WebSocket watcher of the end-to-end tests (tungstenite, an independent peer).
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::*;

// ---------------------------------------------------------------- WebSocket watcher

/// What a watcher read.
#[derive(Debug)]
pub enum WsRead {
    /// A text message, parsed.
    Json(Value),
    /// A close frame: code and reason (`None` when the frame had no code).
    Close(Option<(u16, String)>),
}

/// A WebSocket watcher over `tungstenite` (an independent peer); answers pings by itself.
pub struct Watcher<S: Wire = TcpStream> {
    ws: WebSocket<S>,
}

impl Watcher {
    /// Connects to `ws://addr/1/ws`.
    pub fn connect(addr: SocketAddr) -> Watcher {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let (ws, response) =
            tungstenite::client(format!("ws://{addr}/1/ws"), stream).expect("ws handshake");
        assert_eq!(response.status(), 101);
        Watcher { ws }
    }
}

impl Watcher<matchstream::feed::tls::TlsStream> {
    /// Connects to `wss://localhost:PORT/1/ws` trusting `config`'s CA.
    pub fn connect_tls(addr: SocketAddr, config: &std::sync::Arc<rustls::ClientConfig>) -> Self {
        let stream = tls_connect(addr, config);
        let url = format!("wss://localhost:{}/1/ws", addr.port());
        let (ws, response) = tungstenite::client(url, stream).expect("wss handshake");
        assert_eq!(response.status(), 101);
        Watcher { ws }
    }
}

impl<S: Wire> Watcher<S> {
    /// The socket underneath (to drive TLS by hand).
    pub fn stream_mut(&mut self) -> &mut S {
        self.ws.get_mut()
    }

    /// Sends a JSON command.
    pub fn send(&mut self, command: &Value) {
        self.ws
            .send(Message::text(command.to_string()))
            .expect("ws send");
    }

    /// Sends `watch`.
    pub fn watch(&mut self, mid: &str, since: Option<u64>) {
        let mut command = json!({"command": "watch", "mid": mid, "uid": "e2e"});
        if let Some(s) = since {
            command["since"] = json!(s);
        }
        self.send(&command);
    }

    /// Sends `unwatch`.
    pub fn unwatch(&mut self, mid: &str) {
        self.send(&json!({"command": "unwatch", "mid": mid}));
    }

    /// The next text message or close frame, waiting at most `timeout`; `None` on timeout.
    /// Pings are answered (by tungstenite) along the way.
    pub fn read_within(&mut self, timeout: Duration) -> Option<WsRead> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.ws
                .get_ref()
                .tcp()
                .set_read_timeout(Some(left))
                .unwrap();
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    let v = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"));
                    return Some(WsRead::Json(v));
                }
                Ok(Message::Close(frame)) => {
                    return Some(WsRead::Close(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Ok(Message::Binary(b)) => panic!("unexpected binary message {b:?}"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("ws read failed: {e}"),
            }
        }
    }

    /// The next JSON message (panics on timeout or close).
    pub fn next_json(&mut self) -> Value {
        match self.read_within(WAIT) {
            Some(WsRead::Json(v)) => v,
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }

    /// Expects a close frame next; returns its code and reason.
    pub fn expect_close(&mut self) -> (u16, String) {
        match self.read_within(WAIT) {
            Some(WsRead::Close(Some(cr))) => cr,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Reads the status of a watch and returns it (asserting type and match).
    pub fn expect_status(&mut self, mid: &str) -> Value {
        let v = self.next_json();
        assert_eq!(v["type"], "status", "expected status, got {v}");
        assert_eq!(v["match"], mid);
        v
    }

    /// Reads the next event of `mid` and checks its seq.
    pub fn expect_event(&mut self, mid: &str, seq: u64) -> Value {
        let v = self.next_json();
        assert_eq!(v["type"], "event", "expected event {seq}, got {v}");
        assert_eq!(v["match"], mid, "{v}");
        assert_eq!(v["seq"], seq, "expected seq {seq}, got {v}");
        v
    }

    /// Asserts that nothing arrives within `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        if let Some(r) = self.read_within(d) {
            panic!("expected nothing, got {r:?}");
        }
    }

    /// Sends a normal close (best effort).
    pub fn close(&mut self) {
        let _ = self.ws.close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }));
        let _ = self.ws.flush();
    }
}
