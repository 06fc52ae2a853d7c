//! Shared harness of the end-to-end tests: the real `matchstream serve` binary on
//! `127.0.0.1:0`, an admin HTTP client, WebSocket / raw-socket / TCP-line watchers. Every
//! wait here is bounded (read timeouts, deadlines), so no test can hang.
#![allow(dead_code, unreachable_pub)]

pub mod hostile;
pub mod line;
pub mod load;
pub mod raw_http;
pub mod raw_ws;
pub mod redis;
pub mod sentinel;
pub mod tls;
pub mod watcher;

// Each test binary uses a different subset of the helpers.
#[allow(unused_imports)]
pub use hostile::*;
#[allow(unused_imports)]
pub use line::*;
#[allow(unused_imports)]
pub use raw_http::*;
#[allow(unused_imports)]
pub use raw_ws::*;
#[allow(unused_imports)]
pub use tls::*;
#[allow(unused_imports)]
pub use watcher::*;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use matchstream::domain::script::{MatchScript, Step};
use matchstream::feed::http_client::{HttpClient, Response};
use serde_json::{json, Value};
use tempfile::TempDir;

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
    token: bool,
    /// Client TLS settings when the server speaks TLS (`start_tls`).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The open-files limit (soft and hard) the server runs under (`start_with_nofile`).
    nofile: Option<u64>,
}

impl Server {
    /// Starts a server with `extra` flags (after the listen/data/token/workers ones).
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with(extra, true)
    }

    /// Starts a server without `--admin-token` (`extra` may name `--admin-token-file`, or
    /// none: then the server generates one).
    pub fn start_without_token(extra: &[&str]) -> Server {
        Self::start_with(extra, false)
    }

    /// Starts a server (with `extra` flags) whose open-files limit, soft and hard, is
    /// `nofile`: its fd tables fill up after a few hundred connections.
    pub fn start_with_nofile(nofile: u64, extra: &[&str]) -> Server {
        Self::spawn_with(extra, true, Some(nofile))
    }

    fn start_with(extra: &[&str], token: bool) -> Server {
        Self::spawn_with(extra, token, None)
    }

    fn spawn_with(extra: &[&str], token: bool, nofile: Option<u64>) -> Server {
        let root = tempfile::tempdir().expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let http: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (child, http, tcp) = try_spawn(root.path(), http, http, &extra, token, nofile)
            .unwrap_or_else(|e| panic!("server start: {e}"));
        Server {
            child: Some(child),
            http,
            tcp,
            root,
            extra,
            token,
            tls: None,
            nofile,
        }
    }

    /// Starts a server speaking TLS with `pki`'s certificate (and `extra` flags); its
    /// `admin()`, `public()`, `url()` speak HTTPS.
    pub fn start_tls(pki: &TestPki, extra: &[&str]) -> Server {
        let mut args: Vec<String> = pki.args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Self::start_with(&args, true);
        server.tls = Some(pki.client());
        server
    }

    /// The root of the server's temporary directory (holds `data/`, `server.log`,
    /// `stdout.log`).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Everything the server printed on stdout so far.
    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(self.root.path().join("stdout.log")).unwrap_or_default()
    }

    /// The whole server log (stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.root.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server again on the same data directory and ports, once, with no retry;
    /// the error is what the start-up said.
    pub fn start_again_once(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "stop or kill the server first");
        let (child, http, tcp) = try_spawn(
            self.root.path(),
            self.http,
            self.tcp,
            &self.extra,
            self.token,
            self.nofile,
        )?;
        assert_eq!((http, tcp), (self.http, self.tcp), "same ports");
        self.child = Some(child);
        Ok(())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The server's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("server running").id() as i32
    }

    /// `http://127.0.0.1:PORT` (`https://localhost:PORT` with TLS).
    pub fn url(&self) -> String {
        match self.tls {
            None => format!("http://{}", self.http),
            Some(_) => format!("https://localhost:{}", self.http.port()),
        }
    }

    /// The `--admin-listen` address the server printed (`admin=`), if it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let text = self.stdout_text();
        let line = text
            .lines()
            .find(|l| l.starts_with("matchstream listening"))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("admin="))
            .and_then(|a| a.parse().ok())
    }

    /// An HTTP client with the admin token on the `--admin-listen` address.
    pub fn admin_port(&self) -> HttpClient {
        let addr = self.admin_addr().expect("the server has --admin-listen");
        HttpClient::new(&format!("http://{addr}"), Some(TOKEN.to_string())).expect("http client")
    }

    /// An HTTP client with the admin token.
    pub fn admin(&self) -> HttpClient {
        self.client(Some(TOKEN.to_string()))
    }

    /// An HTTP client without a token.
    pub fn public(&self) -> HttpClient {
        self.client(None)
    }

    fn client(&self, token: Option<String>) -> HttpClient {
        match &self.tls {
            None => HttpClient::new(&self.url(), token).expect("http client"),
            Some(config) => {
                let host = format!("localhost:{}", self.http.port());
                HttpClient::with_addr(self.http, &host, token).with_tls(config.clone())
            }
        }
    }

    /// Client TLS settings (TLS servers only).
    pub fn tls_client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.tls.clone().expect("a TLS server")
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
            match try_spawn(
                self.root.path(),
                self.http,
                self.tcp,
                &self.extra,
                self.token,
                self.nofile,
            ) {
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

fn try_spawn(
    root: &Path,
    http: SocketAddr,
    tcp: SocketAddr,
    extra: &[String],
    token: bool,
    nofile: Option<u64>,
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
        .arg(root.join("data"));
    if token {
        command.args(["--admin-token", TOKEN]);
    }
    if !extra.iter().any(|a| a == "--workers") {
        command.args(["--workers", "2"]);
    }
    if let Some(limit) = nofile {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: runs in the forked child before exec and only calls setrlimit, which is
        // async-signal-safe; the rlimit value lives on this closure's stack.
        unsafe {
            command.pre_exec(move || {
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
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
    let mut stdout_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("stdout.log"))
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Keeps draining stdout after the ready line so the server never blocks on it.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(stdout_log, "{line}");
            if line.starts_with("matchstream listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(WAIT) {
        Ok(line) => line,
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = child.wait().map_err(|e| e.to_string())?;
            let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
            let last = log.lines().last().unwrap_or_default().to_string();
            return Err(format!("server exited ({status}): {last}"));
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
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
            Step::Event { event, data, .. } => Some((event.as_str().to_string(), data.clone())),
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
