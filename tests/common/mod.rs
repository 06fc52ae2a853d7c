//! Shared harness of the end-to-end tests: the real `matchstream serve` binary on
//! `127.0.0.1:0`, an admin HTTP client, WebSocket / raw-socket / TCP-line watchers. Every
//! wait here is bounded (read timeouts, deadlines), so no test can hang.
#![allow(dead_code, unreachable_pub)]

pub mod redis;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use matchstream::domain::script::{MatchScript, Step};
use matchstream::http_client::{HttpClient, Response};
use matchstream::load::client::{client_frame, handshake_request, next_frame, ServerFrame};
use matchstream::proto::frame::OpCode;
use serde_json::{json, Value};
use tempfile::TempDir;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// The admin token every test server is started with.
pub const TOKEN: &str = "e2e-secret-token";
/// The sample match's id.
pub const SAMPLE_MID: &str = "elp-tig-2011-09-10";
/// How long any single wait for the server may take by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `matchstream serve` process with its own temporary data directory.
pub struct Server {
    child: Option<Child>,
    /// HTTP + WebSocket address.
    pub http: SocketAddr,
    /// TCP line-protocol address.
    pub tcp: SocketAddr,
    root: TempDir,
    extra: Vec<String>,
}

impl Server {
    /// Starts a server with `extra` flags (after the listen/data/token/workers ones).
    pub fn start(extra: &[&str]) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let http: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (child, http, tcp) = spawn(root.path(), http, http, &extra);
        Server {
            child: Some(child),
            http,
            tcp,
            root,
            extra,
        }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("server running").id() as i32
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// An HTTP client with the admin token.
    pub fn admin(&self) -> HttpClient {
        HttpClient::new(&self.url(), Some(TOKEN.to_string())).expect("http client")
    }

    /// An HTTP client without a token.
    pub fn public(&self) -> HttpClient {
        HttpClient::new(&self.url(), None).expect("http client")
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns whether it exited
    /// by itself within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// `kill -9`: no chance to flush or close anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGTERM; SIGKILL after 10 s) if it runs, then starts it again on the
    /// same data directory and the same ports.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            assert!(
                self.terminate(WAIT),
                "server did not stop on SIGTERM; log:\n{}",
                self.log_tail()
            );
        }
        let deadline = Instant::now() + WAIT;
        loop {
            // The ports may take a moment to be free again; retry a few times.
            match try_spawn(self.root.path(), self.http, self.tcp, &self.extra) {
                Ok((child, http, tcp)) => {
                    assert_eq!((http, tcp), (self.http, self.tcp), "same ports");
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart failed, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("restart failed: {e}"),
            }
        }
    }

    /// The last lines of the server's log (stderr).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `/metrics` as text.
    pub fn metrics(&self) -> String {
        let r = self.public().request("GET", "/metrics", None).unwrap();
        assert_eq!(r.status, 200);
        r.body
    }

    /// Sum over every sample of metric `name` (any labels).
    pub fn metric_sum(&self, name: &str) -> u64 {
        metric_sum(&self.metrics(), name)
    }

    /// A WebSocket watcher connected to `/1/ws`.
    pub fn ws(&self) -> Watcher {
        Watcher::connect(self.http)
    }

    /// A TCP line watcher of `mid`.
    pub fn line(&self, mid: &str) -> LineClient {
        LineClient::connect(self.tcp, mid)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(5));
    }
}

/// Sum of every sample of `name` in Prometheus text `text`.
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok())?
        })
        .sum::<f64>() as u64
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we spawned and have not reaped yet.
    unsafe {
        libc::kill(pid, sig);
    }
}

fn spawn(
    root: &Path,
    http: SocketAddr,
    tcp: SocketAddr,
    extra: &[String],
) -> (Child, SocketAddr, SocketAddr) {
    try_spawn(root, http, tcp, extra).unwrap_or_else(|e| panic!("server start: {e}"))
}

fn try_spawn(
    root: &Path,
    http: SocketAddr,
    tcp: SocketAddr,
    extra: &[String],
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("server.log"))
        .map_err(|e| e.to_string())?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_matchstream"));
    command
        .arg("serve")
        .args(["--listen", &http.to_string()])
        .args(["--tcp-listen", &tcp.to_string()])
        .arg("--data-dir")
        .arg(root.join("data"))
        .args(["--admin-token", TOKEN]);
    if !extra.iter().any(|a| a == "--workers") {
        command.args(["--workers", "2"]);
    }
    let mut child = command
        .args(extra)
        .env("MATCHSTREAM_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining stdout after the ready line so the server never blocks on it.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("matchstream listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
            return Err(format!("no listening line within 10 s; log:\n{log}"));
        }
    };
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    Ok((child, field("http="), field("tcp=")))
}

/// Waits until `check` holds, polling every 50 ms, at most `timeout`; panics with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- the sample match

/// The sample script.
pub fn sample() -> MatchScript {
    MatchScript::sample()
}

/// The sample's events as `(kind, data)`, in order (31 of them).
pub fn sample_events() -> Vec<(String, Value)> {
    sample()
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Event { event, data } => Some((event.as_str().to_string(), data.clone())),
            Step::Sleep { .. } => None,
        })
        .collect()
}

/// Creates the sample's teams and match.
pub fn create_sample(client: &mut HttpClient) {
    let s = sample();
    for team in [&s.home, &s.visit] {
        let body = json!({"name": team.name, "division": team.division}).to_string();
        let r = client
            .request("PUT", &format!("/1/team/{}", team.id), Some(&body))
            .unwrap();
        assert!(matches!(r.status, 200 | 201), "PUT team: {r:?}");
    }
    let body = json!({"home": s.home.id, "visit": s.visit.id,
        "start_date": s.start_date, "stadium": s.stadium})
    .to_string();
    let r = client.request("POST", "/1/matches", Some(&body)).unwrap();
    assert_eq!(r.status, 201, "POST /1/matches: {r:?}");
}

/// Posts one event; returns the response.
pub fn post_event(client: &mut HttpClient, mid: &str, kind: &str, data: &Value) -> Response {
    let body = json!({"kind": kind, "data": data}).to_string();
    client
        .request("POST", &format!("/1/match/{mid}/events"), Some(&body))
        .unwrap()
}

/// Posts sample events with 1-based numbers in `range` (e.g. `1..=10`); each must get 201
/// with the seq equal to its number.
pub fn post_events(client: &mut HttpClient, range: std::ops::RangeInclusive<usize>) {
    let events = sample_events();
    for n in range {
        let (kind, data) = &events[n - 1];
        let r = post_event(client, SAMPLE_MID, kind, data);
        assert_eq!(r.status, 201, "event {n} ({kind}): {r:?}");
        assert_eq!(body_json(&r)["seq"], n as u64, "seq of event {n}");
    }
}

/// Creates the sample match and posts its first `upto` events (seq 1..=upto; 0 posts none).
pub fn post_sample(server: &Server, upto: usize) {
    let mut client = server.admin();
    create_sample(&mut client);
    post_events(&mut client, 1..=upto);
}

/// A response body as JSON.
pub fn body_json(r: &Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("body {:?} not JSON: {e}", r.body))
}

/// `GET path` as JSON, asserting 200.
pub fn get_json(server: &Server, path: &str) -> Value {
    let r = server.public().request("GET", path, None).unwrap();
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    body_json(&r)
}

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
pub struct Watcher {
    ws: WebSocket<TcpStream>,
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
            self.ws.get_ref().set_read_timeout(Some(left)).unwrap();
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

// ---------------------------------------------------------------- raw WebSocket client

/// A WebSocket client on a bare socket: handshakes and sends frames, reads only when told.
pub struct RawWs {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read after the handshake.
    pub leftover: Vec<u8>,
}

impl RawWs {
    /// Connects and handshakes; `rcvbuf` sets a small SO_RCVBUF before connecting.
    pub fn connect(addr: SocketAddr, rcvbuf: Option<usize>) -> RawWs {
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
            .write_all(&handshake_request(&addr.to_string(), "/1/ws", key))
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
pub struct LineClient {
    reader: BufReader<TcpStream>,
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
