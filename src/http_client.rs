//! A small blocking HTTP/1.1 client for the admin API (replay, load driver, tests): one
//! keep-alive connection, `Content-Length` bodies, JSON in and out.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Most bytes of a response body read.
pub const MAX_RESPONSE_BODY: usize = 16 << 20;

/// A keep-alive connection to one server.
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

/// A response: status and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

impl HttpClient {
    /// A client for `server` (`http://HOST:PORT` or `HOST:PORT`), sending `token` as bearer.
    pub fn new(server: &str, token: Option<String>) -> io::Result<Self> {
        let host = server
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let addr = host
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("cannot resolve {host}")))?;
        Ok(HttpClient {
            addr,
            host,
            token,
            conn: None,
        })
    }

    /// Sends one request (retrying once on a fresh connection if a kept-alive one was
    /// closed by the server) and reads the response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> io::Result<Response> {
        match self.try_request(method, path, body) {
            Ok(r) => Ok(r),
            Err(_) if self.conn.is_none() => self.try_request(method, path, body),
            Err(e) => Err(e),
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> io::Result<Response> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let result = self.exchange(method, path, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn exchange(&mut self, method: &str, path: &str, body: Option<&str>) -> io::Result<Response> {
        let conn = self.conn.as_mut().expect("connected above");
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line: {line:?}")))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    length = v
                        .parse()
                        .map_err(|_| io::Error::other("bad Content-Length"))?;
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                }
            }
        }
        if length > MAX_RESPONSE_BODY {
            return Err(io::Error::other("response body too large"));
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        if close {
            self.conn = None;
        }
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}
