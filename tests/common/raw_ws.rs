//! A WebSocket client on a bare socket, for what a well-behaved client would not do.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use matchstream::load::client::{client_frame, handshake_request, next_frame, ServerFrame};
use matchstream::proto::frame::OpCode;
use serde_json::json;

use super::*;

// ---------------------------------------------------------------- raw WebSocket client

/// A WebSocket client on a bare socket: handshakes and sends frames, reads only when told.
pub struct RawWs {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read after the handshake.
    pub leftover: Vec<u8>,
}

impl RawWs {
    /// Connects to `/1/ws` and handshakes; `rcvbuf` sets a small SO_RCVBUF before connecting.
    pub fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> RawWs {
        RawWs::connect_path(addr, "/1/ws", rcvbuf)
    }

    /// Connects to `path` and handshakes; `rcvbuf` sets a small SO_RCVBUF before connecting.
    pub fn connect_path(addr: SocketAddr, path: &str, rcvbuf: Option<usize>) -> RawWs {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        if let Some(n) = rcvbuf {
            socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        socket.connect_timeout(&addr.into(), WAIT).expect("connect");
        let mut stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        stream
            .write_all(&handshake_request(&addr.to_string(), path, key))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk).expect("handshake read");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(
            buf.starts_with(b"HTTP/1.1 101"),
            "handshake: {}",
            String::from_utf8_lossy(&buf)
        );
        let leftover = buf.split_off(end + 4);
        RawWs { stream, leftover }
    }

    /// Sends a masked text frame.
    pub fn send_text(&mut self, text: &str) {
        let frame = client_frame(OpCode::Text, text.as_bytes(), [1, 2, 3, 4]);
        self.stream.write_all(&frame).unwrap();
    }

    /// Sends `watch`.
    pub fn watch(&mut self, mid: &str) {
        self.send_text(&json!({"command": "watch", "mid": mid}).to_string());
    }

    /// Reads until EOF or a connection reset, at most `timeout`; returns the bytes read and
    /// whether the server closed the connection.
    pub fn drain(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        drain(&mut self.stream, timeout)
    }
}

/// Reads `stream` until EOF / reset or `timeout`; returns the bytes and whether it ended.
pub fn drain(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return (out, true),
        }
    }
}

impl RawWs {
    /// Sends a masked frame of any opcode.
    pub fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let frame = client_frame(opcode, payload, [9, 8, 7, 6]);
        let _ = self.stream.write_all(&frame);
    }

    /// Reads frames until a close frame, EOF or `timeout`; returns the frames read and the
    /// close code (`None` when the connection ended or timed out without one).
    pub fn frames_until_close(&mut self, timeout: Duration) -> (Vec<ServerFrame>, Option<u16>) {
        let deadline = Instant::now() + timeout;
        let mut buf = std::mem::take(&mut self.leftover);
        let mut frames = Vec::new();
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            while let Some(frame) = next_frame(&mut buf).expect("valid server frame") {
                if let ServerFrame::Close(code) = frame {
                    return (frames, Some(code));
                }
                frames.push(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (frames, None);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return (frames, None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}
