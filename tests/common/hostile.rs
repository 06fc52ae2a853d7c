//! Helpers of the hostile-client tests: the server's memory, sockets from another source
//! address, and a well-behaved admin + health prober that runs during an attack and says
//! how long its requests took.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

/// The resident set size of process `pid`, in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// A TCP connection to `dst` from source address `src` (e.g. 127.0.0.2).
pub fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(src, 0).into())?;
    socket.connect_timeout(&dst.into(), WAIT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// What the prober saw.
#[derive(Debug, Clone, Copy)]
pub struct ProbeReport {
    /// Admin posts made (each answered 201).
    pub posts: u64,
    /// The slowest admin post.
    pub worst_post: Duration,
    /// `/healthz` requests made (each answered 200).
    pub healthz: u64,
    /// The slowest `/healthz`.
    pub worst_healthz: Duration,
}

/// A well-behaved client running beside an attack: posts a comment to the sample match and
/// asks `/healthz`, every `every`, each on a fresh connection, and asserts each is served.
pub struct Probe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProbeReport>>,
}

impl Probe {
    /// Starts probing `server` (the sample match must exist and be started).
    pub fn start(server: &Server, every: Duration) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let url = server.url();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut report = ProbeReport {
                posts: 0,
                worst_post: Duration::ZERO,
                healthz: 0,
                worst_healthz: Duration::ZERO,
            };
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let mut admin =
                    matchstream::feed::http_client::HttpClient::new(&url, Some(TOKEN.to_string()))
                        .expect("admin client");
                let body = json!({"kind": "comment", "data": {"text": format!("probe {n}")}});
                let r = admin
                    .request(
                        "POST",
                        &format!("/1/match/{SAMPLE_MID}/events"),
                        Some(&body.to_string()),
                    )
                    .expect("admin post during the attack");
                assert_eq!(r.status, 201, "admin post during the attack: {r:?}");
                report.worst_post = report.worst_post.max(started.elapsed());
                report.posts += 1;
                let started = Instant::now();
                let mut public =
                    matchstream::feed::http_client::HttpClient::new(&url, None).expect("client");
                let r = public
                    .request("GET", "/healthz", None)
                    .expect("/healthz during the attack");
                assert_eq!(r.status, 200, "/healthz during the attack: {r:?}");
                report.worst_healthz = report.worst_healthz.max(started.elapsed());
                report.healthz += 1;
                std::thread::sleep(every);
            }
            report
        });
        Probe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops probing; returns what was seen (panics if a probe failed).
    pub fn finish(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("every probe was served")
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Prints (and appends to `$MATCHSTREAM_HOSTILE_REPORT`, if set) one line of figures for an
/// attack: the server's memory before and after, and what the prober saw.
pub fn report_attack(name: &str, rss_before_kb: u64, rss_after_kb: u64, probe: &ProbeReport) {
    let line = format!(
        "{name}: server RSS {rss_before_kb} -> {rss_after_kb} KiB ({:+} KiB); admin POST worst {:.1} ms over {} posts; /healthz worst {:.1} ms over {}",
        rss_after_kb as i64 - rss_before_kb as i64,
        probe.worst_post.as_secs_f64() * 1e3,
        probe.posts,
        probe.worst_healthz.as_secs_f64() * 1e3,
        probe.healthz,
    );
    eprintln!("HOSTILE {line}");
    if let Ok(path) = std::env::var("MATCHSTREAM_HOSTILE_REPORT") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
