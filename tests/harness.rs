//! `matchstream load` as a blackbox tester: it fails (non-zero exit, `lost` / `reordered` /
//! `duplicated` in its report) against a WebSocket server that drops, swaps or repeats an
//! event, passes against one that does not, and passes against the real `matchstream serve`
//! with a replayed match (WebSocket, the TCP line protocol and SSE; over TLS too).
//!
//! The misbehaving server lives in this file: std threads, the crate's own frame encoder and
//! accept-key function, just enough of `/1/ws` to send a status, numbered events and a close.
//! Every wait here has a timeout and every child process is killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use matchstream::proto::frame::{encode_close, encode_frame, OpCode};
use matchstream::proto::handshake::accept_key;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_matchstream");

mod common;

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `matchstream load` with `args`, killed after `limit`.
fn run_load(args: &[&str], limit: Duration) -> (Output, Value) {
    let run = common::load::run_load(args, limit);
    // Every run with a report writes its chart beside it (idle mode has no chart).
    assert!(run.chart || run.report.is_null() || run.report["mode"] == "idle");
    (run.output, run.report)
}

/// A `/1/ws` server that, to every watcher, sends a status with `seq` 0, then events with the
/// numbers `seqs` (the last one is `stop` when `stop` says so), then a close 1000.
fn misbehaving_server(seqs: &'static [u64], stop: bool) -> String {
    server_writing_in(seqs, stop, None)
}

/// [`misbehaving_server`] writing its bytes `chunk` at a time (when given), so the harness's
/// reads end in the middle of frames and headers.
fn server_writing_in(seqs: &'static [u64], stop: bool, chunk: Option<usize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve_one(conn, seqs, stop, chunk));
        }
    });
    format!("http://{addr}")
}

fn serve_one(conn: TcpStream, seqs: &[u64], stop: bool, chunk: Option<usize>) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut key = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("sec-websocket-key:") {
            key = line[line.len() - v.len()..].trim().to_string();
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut w = conn;
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    );
    w.write_all(head.as_bytes()).unwrap();
    // The watch command: one small masked frame; its content does not matter here.
    let mut first = [0u8; 2];
    if reader.read_exact(&mut first).is_err() {
        return;
    }
    let mut rest = vec![0u8; (first[1] & 0x7f) as usize + 4];
    let _ = reader.read_exact(&mut rest);
    let mut out = Vec::new();
    let status = json!({"type": "status", "match": "m1", "seq": 0, "ts": 0, "state": {}});
    encode_frame(&mut out, OpCode::Text, status.to_string().as_bytes());
    for (i, &seq) in seqs.iter().enumerate() {
        let kind = if stop && i + 1 == seqs.len() {
            "stop"
        } else {
            "comment"
        };
        let event =
            json!({"type": "event", "match": "m1", "seq": seq, "ts": 0, "kind": kind, "data": {}});
        encode_frame(&mut out, OpCode::Text, event.to_string().as_bytes());
    }
    encode_close(&mut out, 1000, "");
    match chunk {
        None => {
            let _ = w.write_all(&out);
        }
        Some(n) => {
            let _ = w.set_nodelay(true);
            for piece in out.chunks(n) {
                if w.write_all(piece).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    // Wait for the client's close reply (or EOF), bounded by the read timeout.
    let mut sink = [0u8; 64];
    let _ = reader.read(&mut sink);
}

fn watch_args(server: &str) -> Vec<String> {
    [
        "--server",
        server,
        "--match",
        "m1",
        "--clients",
        "20",
        "--connect-timeout",
        "20",
        "--drain",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run_against(seqs: &'static [u64]) -> (Output, Value) {
    run_against_with(seqs, true)
}

fn run_against_with(seqs: &'static [u64], stop: bool) -> (Output, Value) {
    let server = misbehaving_server(seqs, stop);
    let args = watch_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_load(&args, Duration::from_secs(60))
}

#[test]
fn a_server_that_sends_everything_in_order_passes() {
    let (out, report) = run_against(&[1, 2, 3, 4, 5]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["lost"], 0);
    assert_eq!(report["deliveries"], 100);
    assert_eq!(report["events"], 5);
    assert!(stdout.contains("PASS"), "{stdout}");
}

#[test]
fn frames_split_across_reads_are_put_back_together() {
    static SEQS: [u64; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let server = server_writing_in(&SEQS, true, Some(7));
    let args = watch_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, report) = run_load(&args, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["deliveries"], 20 * 12);
    assert_eq!(report["lost"], 0);
}

#[test]
fn a_dropped_event_fails_the_run() {
    let (out, report) = run_against(&[1, 2, 4, 5]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(report["lost"], 20, "{report:#}");
    assert_eq!(report["reordered"], 0);
    assert_eq!(report["passed"], false);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

#[test]
fn a_swapped_pair_fails_the_run() {
    let (out, report) = run_against(&[1, 3, 2, 4, 5]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["reordered"], 20, "{report:#}");
    assert_eq!(report["lost"], 0);
}

#[test]
fn a_repeated_event_fails_the_run() {
    let (out, report) = run_against(&[1, 2, 2, 3, 4]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["duplicated"], 20, "{report:#}");
}

#[test]
fn a_close_before_stop_fails_the_run() {
    let (out, report) = run_against_with(&[1, 2, 3], false);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["failures"]["unexpected_closes"], 20, "{report:#}");
    assert!(report["errors"].to_string().contains("before stop"));
}

#[test]
fn a_server_that_is_not_there_fails_clearly() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let server = format!("http://{addr}");
    let args = watch_args(&server);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, report) = run_load(&args, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["failures"]["connect"], 20, "{report:#}");
    let errors = report["errors"].to_string();
    assert!(errors.contains("refused"), "{errors}");
}

/// A pub/sub server for `--raw`: `GET /sub` upgrades and subscribes; `POST /pub` sends the
/// body as a text frame to every subscriber, except the payload numbered `drop_n`.
fn raw_pubsub_server(drop_n: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let subscribers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let subscribers = subscribers.clone();
            std::thread::spawn(move || raw_conn(conn, &subscribers, drop_n));
        }
    });
    format!("{addr}")
}

fn raw_conn(conn: TcpStream, subscribers: &Mutex<Vec<TcpStream>>, drop_n: Option<u64>) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let (mut request, mut key, mut length) = (String::new(), String::new(), 0usize);
        if reader.read_line(&mut request).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("sec-websocket-key:") {
                key = line[line.len() - v.len()..].trim().to_string();
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        if request.starts_with("GET") {
            let head = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key.as_bytes())
            );
            subscribers.lock().unwrap().push(w.try_clone().unwrap());
            w.write_all(head.as_bytes()).unwrap();
            return;
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let n = serde_json::from_slice::<Value>(&body).unwrap()["n"].as_u64();
        if n != drop_n {
            let mut frame = Vec::new();
            encode_frame(&mut frame, OpCode::Text, &body);
            for s in subscribers.lock().unwrap().iter_mut() {
                let _ = s.write_all(&frame);
            }
        }
        w.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
    }
}

fn run_raw(drop_n: Option<u64>) -> (Output, Value) {
    let addr = raw_pubsub_server(drop_n);
    let (sub, publish) = (format!("ws://{addr}/sub"), format!("http://{addr}/pub"));
    let args = [
        "--raw",
        "--subscribe",
        &sub,
        "--publish",
        &publish,
        "--clients",
        "20",
        "--events",
        "10",
        "--every-ms",
        "5",
        "--connect-timeout",
        "20",
        "--drain",
        "3",
    ];
    run_load(&args, Duration::from_secs(60))
}

#[test]
fn raw_mode_passes_when_every_payload_arrives() {
    let (out, report) = run_raw(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(report["deliveries"], 200, "{report:#}");
    assert!(report["latency_us"]["max"].as_f64().unwrap() > 0.0);
}

#[test]
fn raw_mode_fails_when_the_server_drops_a_payload() {
    let (out, report) = run_raw(Some(3));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(report["lost"], 20, "{report:#}");
}

/// The real server on free ports, with a fresh data directory.
fn start_server(dir: &Path) -> (Guard, String, u32) {
    start_server_with(dir, &[])
}

/// [`start_server`] with more flags (`--tls-cert …`: the URL is then `https://localhost:…`).
fn start_server_with(dir: &Path, extra: &[String]) -> (Guard, String, u32) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tcp-listen",
            "127.0.0.1:0",
            "--workers",
            "2",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--admin-token", "T"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.strip_prefix("matchstream listening http=") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server printed its listening line");
    let url = match extra.iter().any(|a| a == "--tls-cert") {
        false => format!("http://{addr}"),
        true => format!(
            "https://localhost:{}",
            addr.rsplit(':').next().unwrap_or_default()
        ),
    };
    (guard, url, pid)
}

#[test]
fn the_harness_speaks_tls_for_every_protocol_and_in_idle_mode() {
    let pki = common::TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, pid) = start_server_with(dir.path(), &pki.args());
    assert!(url.starts_with("https://localhost:"), "{url}");
    let (pid, ca) = (pid.to_string(), pki.ca_pem.display().to_string());
    let tls = ["--server", &url, "--tls", "--ca", &ca, "--server-pid", &pid];
    for protocol in ["ws", "tcp", "sse"] {
        let args = [
            "--clients",
            "50",
            "--replay",
            "sample",
            "--speed",
            "1000",
            "--admin-token",
            "T",
            "--protocol",
            protocol,
            "--connect-timeout",
            "30",
            "--drain",
            "10",
        ];
        let args: Vec<&str> = tls.iter().chain(&args).copied().collect();
        let (out, report) = run_load(&args, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "{protocol}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report["tls"], true, "{report:#}");
        assert_eq!(report["lost"], 0, "{report:#}");
        let events = report["events"].as_u64().unwrap();
        assert_eq!(report["deliveries"].as_u64(), Some(events * 50));
    }
    let idle = ["--idle", "--clients", "30", "--hold", "1"];
    let args: Vec<&str> = tls.iter().chain(&idle).copied().collect();
    let (out, report) = run_load(&args, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["tls"], true, "{report:#}");
    assert_eq!(report["still_open_after_hold"], 30, "{report:#}");
    // Without --ca the CA is unknown: --tls alone is refused.
    let (out, _) = run_load(
        &["--server", &url, "--tls", "--idle"],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
}

#[test]
fn the_real_server_delivers_a_replayed_match_to_every_watcher() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, pid) = start_server(dir.path());
    let pid = pid.to_string();
    let started = Instant::now();
    // WebSocket, WebSocket with permessage-deflate (compressed frames inflated and checked),
    // the line protocol and Server-Sent Events.
    for (protocol, extra) in [
        ("ws", None),
        ("ws", Some("--deflate")),
        ("tcp", None),
        ("sse", None),
    ] {
        let args = [
            "--server",
            &url,
            "--clients",
            "300",
            "--replay",
            "sample",
            "--speed",
            "1000",
            "--admin-token",
            "T",
            "--protocol",
            protocol,
            "--server-pid",
            &pid,
            "--connect-timeout",
            "30",
            "--drain",
            "10",
        ];
        let args: Vec<&str> = args.into_iter().chain(extra).collect();
        let (out, report) = run_load(&args, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{protocol}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(report["lost"], 0, "{report:#}");
        assert_eq!(report["connected"], 300);
        let events = report["events"].as_u64().unwrap();
        assert!(events > 20, "{events}");
        assert_eq!(report["deliveries"].as_u64(), Some(events * 300));
        assert!(report["latency_us"]["p99"].as_f64().unwrap() > 0.0);
        assert_eq!(
            report["last_delivery_us"].as_array().unwrap().len() as u64,
            events
        );
        assert!(
            report["server_rss_bytes_per_connection"].is_number(),
            "{report:#}"
        );
        assert!(report["kernel"].as_str().is_some_and(|k| !k.is_empty()));
    }
    assert!(started.elapsed() < Duration::from_secs(360));
}

#[test]
fn idle_mode_holds_every_connection_and_reports_its_cost() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, pid) = start_server(dir.path());
    let pid = pid.to_string();
    let args = [
        "--server",
        &url,
        "--idle",
        "--clients",
        "50",
        "--hold",
        "1",
        "--server-pid",
        &pid,
    ];
    let (out, report) = run_load(&args, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["mode"], "idle", "{report:#}");
    assert_eq!(report["connected"], 50);
    assert_eq!(report["still_open_after_hold"], 50);
    assert!(report["server_rss_bytes_per_connection"].is_number());
}

#[test]
fn ramp_until_failure_reports_every_step_and_the_last_passing_size() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url, _pid) = start_server(dir.path());
    let args = [
        "--server",
        &url,
        "--ramp-until-failure",
        "--clients",
        "5",
        "--ramp-step",
        "5",
        "--max-clients",
        "10",
        "--every-ms",
        "5",
        "--events",
        "3",
        "--slo-p99-ms",
        "60000",
        "--admin-token",
        "T",
        "--connect-timeout",
        "20",
        "--drain",
        "5",
    ];
    let (out, report) = run_load(&args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ramp: no SLO broken up to 10 watchers"),
        "{stdout}"
    );
    assert_eq!(report["mode"], "ramp-until-failure", "{report:#}");
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report:#}");
    assert!(steps.iter().all(|s| s["passed"] == true), "{report:#}");
    assert_eq!(report["last_passing_clients"], 10);
    assert!(report["breaking_point"].is_null());
    assert_eq!(report["last_step"]["clients"], 10);
    assert_eq!(report["last_step"]["lost"], 0);
}
