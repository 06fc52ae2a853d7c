//! A small blocking HTTP/1.1 client for the admin API (replay, the load harness's publisher,
//! tests) and for a raw publish URL: one keep-alive connection, JSON bodies,
//! `Content-Length` or chunked responses; no redirects. `https://` with [`HttpClient::with_tls`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::tls::{self, TlsStream};

/// Largest response body read (the match object, an error).
const MAX_BODY: usize = 8 << 20;

/// An HTTP response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text (lossy UTF-8).
    pub body: String,
}

impl Response {
    /// The body as text.
    pub fn text(&self) -> &str {
        &self.body
    }
}

/// `http://HOST:PORT[/path]` split into a resolved address, the `Host` header and the path.
#[derive(Debug, Clone)]
pub struct Url {
    /// Resolved IPv4 address.
    pub addr: SocketAddr,
    /// `HOST:PORT` as given.
    pub host: String,
    /// The path, `/` when none.
    pub path: String,
    /// `https://` or `wss://`.
    pub tls: bool,
    /// The client TLS settings to speak to it with ([`HttpClient::for_url`]); `None`: plain.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl Url {
    /// Parses `http://…`, `ws://…`, `https://…` or `wss://…` (the scheme is optional: plain).
    pub fn parse(url: &str) -> io::Result<Url> {
        let tls = url.starts_with("https://") || url.starts_with("wss://");
        let rest = ["http://", "ws://", "https://", "wss://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .unwrap_or(url);
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = host
            .to_socket_addrs()
            .map_err(|e| io::Error::other(format!("cannot resolve {host}: {e}")))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| io::Error::other(format!("{host}: no IPv4 address")))?;
        Ok(Url {
            addr,
            host: host.to_string(),
            path: path.to_string(),
            tls,
            tls_config: None,
        })
    }
}

/// One keep-alive connection to a server; reconnects once when the server closed it.
pub struct HttpClient {
    addr: SocketAddr,
    host: String,
    token: Option<String>,
    conn: Option<BufReader<Conn>>,
    timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// A client connection: plain, or TLS.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl HttpClient {
    /// A client for `server` (`http://HOST:PORT`), sending `token` as a bearer. An
    /// `https://` server needs [`with_tls`](Self::with_tls) before the first request.
    pub fn new(server: &str, token: Option<String>) -> io::Result<HttpClient> {
        let url = Url::parse(server)?;
        Ok(HttpClient::with_addr(url.addr, &url.host, token))
    }

    /// A client for `url` (over TLS when it carries TLS settings).
    pub fn for_url(url: &Url, token: Option<String>) -> HttpClient {
        let client = HttpClient::with_addr(url.addr, &url.host, token);
        match &url.tls_config {
            Some(config) => client.with_tls(config.clone()),
            None => client,
        }
    }

    /// Speaks HTTPS with `config` (the certificate must name the host of the URL).
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> HttpClient {
        self.tls = Some(config);
        self.conn = None;
        self
    }

    /// A client for `addr` (sends `host` as the `Host` header and `token` as a bearer).
    pub fn with_addr(addr: SocketAddr, host: &str, token: Option<String>) -> HttpClient {
        HttpClient {
            addr,
            host: host.to_string(),
            token,
            conn: None,
            timeout: Duration::from_secs(30),
            tls: None,
        }
    }

    /// Sends one request and reads the response; retries once on a fresh connection when
    /// the kept-alive one turns out closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> io::Result<Response> {
        let reused = self.conn.is_some();
        match self.try_request(method, path, body) {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.conn = None;
                self.try_request(method, path, body)
            }
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
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)
                .map_err(|e| io::Error::new(e.kind(), format!("connect {}: {e}", self.addr)))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            let conn = match &self.tls {
                None => Conn::Plain(s),
                Some(config) => Conn::Tls(Box::new(tls::connect(
                    config,
                    tls::server_name(&self.host)?,
                    s,
                )?)),
            };
            self.conn = Some(BufReader::new(conn));
        }
        let conn = self.conn.as_mut().expect("connected above");
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        head.push_str(body);
        conn.get_mut().write_all(head.as_bytes())?;
        conn.get_mut().flush()?;
        let result = read_response(conn);
        if result.as_ref().map_or(true, |(_, close)| *close) {
            self.conn = None;
        }
        result.map(|(r, _)| r)
    }
}

/// Reads one response; returns it and whether the server will close the connection.
fn read_response(conn: &mut BufReader<Conn>) -> io::Result<(Response, bool)> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "server closed",
        ));
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line: {}", line.trim_end())))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed in head",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = if chunked {
        read_chunked(conn)?
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(io::Error::other(format!("response body too large: {n}")));
        }
        let mut body = vec![0; n];
        conn.read_exact(&mut body)?;
        body
    } else if status == 204 || status == 304 || status < 200 {
        Vec::new()
    } else {
        close = true;
        let mut body = Vec::new();
        conn.take(MAX_BODY as u64).read_to_end(&mut body)?;
        body
    };
    Ok((
        Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
        close,
    ))
}

fn read_chunked(conn: &mut BufReader<Conn>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| io::Error::other("bad chunk size"))?;
        if body.len() + size > MAX_BODY {
            return Err(io::Error::other("response body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..])?;
        line.clear();
        conn.read_line(&mut line)?;
        if size == 0 {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn urls_split_into_address_host_and_path() {
        let u = Url::parse("http://127.0.0.1:8080/1/ws").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/1/ws")
        );
        assert_eq!(Url::parse("ws://127.0.0.1:1").unwrap().path, "/");
        assert!(!u.tls);
        let tls = Url::parse("https://127.0.0.1:1/x").unwrap();
        assert!(tls.tls);
        assert_eq!(
            (tls.host.as_str(), tls.path.as_str()),
            ("127.0.0.1:1", "/x")
        );
        assert!(Url::parse("wss://127.0.0.1:1").unwrap().tls);
    }

    #[test]
    fn keep_alive_requests_reuse_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            for body in ["{\"seq\":1}", "{\"seq\":2}"] {
                let mut line = String::new();
                let mut length = 0;
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut b = vec![0; length];
                r.read_exact(&mut b).unwrap();
                write!(
                    w,
                    "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
            }
        });
        let mut c = HttpClient::with_addr(addr, "x", Some("t".into()));
        let a = c.request("POST", "/a", Some("{}")).unwrap();
        let b = c.request("POST", "/b", Some("{}")).unwrap();
        assert_eq!((a.status, a.text()), (201, "{\"seq\":1}"));
        assert_eq!(b.text(), "{\"seq\":2}");
        server.join().unwrap();
    }
}
