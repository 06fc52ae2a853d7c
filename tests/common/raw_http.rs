//! A bare HTTP connection for requests the client library will not send.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::*;

// ---------------------------------------------------------------- raw HTTP

/// A parsed HTTP response from a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body {:?} not JSON: {e}", self.body))
    }
}

/// A bare HTTP connection for requests the client library will not send.
pub struct RawHttp {
    reader: BufReader<TcpStream>,
}

impl RawHttp {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> RawHttp {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        RawHttp {
            reader: BufReader::new(stream),
        }
    }

    /// Writes raw bytes (a write error — the server may already have answered and closed —
    /// is ignored).
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.reader.get_mut().write_all(bytes);
    }

    /// Reads one response (Content-Length framed).
    pub fn read_response(&mut self) -> RawResponse {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).expect("header line");
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').expect("header");
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).expect("body");
        RawResponse {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Sends `bytes` and reads one response.
    pub fn exchange(&mut self, bytes: &[u8]) -> RawResponse {
        self.send(bytes);
        self.read_response()
    }

    /// Whether the server closed the connection (EOF or reset within 2 s).
    pub fn is_closed(&mut self) -> bool {
        drain(self.reader.get_mut(), Duration::from_secs(2)).1
    }
}
