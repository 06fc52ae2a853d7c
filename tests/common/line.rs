//! The TCP line-protocol client of the end-to-end tests.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::*;

// ---------------------------------------------------------------- TCP line client

/// One block of the TCP line protocol.
#[derive(Debug, Clone)]
pub struct Block {
    /// `YYYY-MM-DD HH:MM:SS`.
    pub time: String,
    /// The kind (`status`, `goal`, …).
    pub kind: String,
    /// Detail lines as `(key, value)`.
    pub fields: Vec<(String, String)>,
}

impl Block {
    /// The value of field `key`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A client of the TCP line protocol.
pub struct LineClient<S: Wire = TcpStream> {
    reader: BufReader<S>,
}

impl LineClient<matchstream::feed::tls::TlsStream> {
    /// Connects over TLS (trusting `config`'s CA) and sends the `CONNECT` line.
    pub fn connect_tls(
        addr: SocketAddr,
        config: &std::sync::Arc<rustls::ClientConfig>,
        mid: &str,
    ) -> Self {
        let mut stream = tls_connect(addr, config);
        write!(stream, "VERSION:1:CONNECT:e2e:MATCH:{mid}\r\n").unwrap();
        stream.flush().unwrap();
        LineClient {
            reader: BufReader::new(stream),
        }
    }
}

impl LineClient {
    /// Connects and sends `VERSION:1:CONNECT:e2e:MATCH:<mid>`.
    pub fn connect(addr: SocketAddr, mid: &str) -> LineClient {
        let mut stream = Self::connect_raw(addr);
        write!(stream, "VERSION:1:CONNECT:e2e:MATCH:{mid}\r\n").unwrap();
        LineClient {
            reader: BufReader::new(stream),
        }
    }

    /// A bare connected socket to the line port, with timeouts.
    pub fn connect_raw(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_write_timeout(Some(WAIT)).unwrap();
        stream
    }
}

impl<S: Wire> LineClient<S> {
    fn read_line(&mut self) -> Option<String> {
        let mut raw = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut raw)
            .expect("line read (timed out?)");
        if n == 0 {
            return None;
        }
        Some(String::from_utf8(raw).expect("UTF-8 line"))
    }

    /// The next block, checking the exact format; `None` at EOF.
    pub fn next_block(&mut self) -> Option<Block> {
        let header = self.read_line()?;
        let rest = header
            .strip_suffix(":\n")
            .unwrap_or_else(|| panic!("bad header line {header:?}"));
        let (time, kind) = rest.split_at(19);
        check_time(time);
        let kind = kind
            .strip_prefix(": ")
            .unwrap_or_else(|| panic!("bad header {header:?}"));
        let mut fields = Vec::new();
        loop {
            let line = self.read_line().expect("EOF inside a block");
            if line == "\r\n" {
                break;
            }
            let detail = line
                .strip_prefix('\t')
                .and_then(|l| l.strip_suffix('\n'))
                .unwrap_or_else(|| panic!("bad detail line {line:?}"));
            let (k, v) = detail
                .split_once(": ")
                .unwrap_or_else(|| panic!("bad detail line {line:?}"));
            fields.push((k.to_string(), v.to_string()));
        }
        Some(Block {
            time: time.to_string(),
            kind: kind.to_string(),
            fields,
        })
    }

    /// Asserts that the server closes the connection next (EOF within the read timeout).
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "unexpected bytes before EOF: {rest:?}"),
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }
}

fn check_time(t: &str) {
    let b = t.as_bytes();
    let shape = "dddd-dd-dd dd:dd:dd".as_bytes();
    assert_eq!(b.len(), shape.len(), "time {t:?}");
    for (c, s) in b.iter().zip(shape) {
        if *s == b'd' {
            assert!(c.is_ascii_digit(), "time {t:?}");
        } else {
            assert_eq!(c, s, "time {t:?}");
        }
    }
}
