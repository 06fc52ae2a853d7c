//! `matchstream load`: the load generator and blackbox tester.
//!
//! Clients are spread over load threads, each with a private fd table (like the server's
//! workers) and its own monoio runtime, and over source addresses 127.0.0.2… so neither the
//! per-process open-files limit nor the ~28K ephemeral ports per address pair get in the way.

pub mod client;
pub mod procfs;

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::proto::frame::OpCode;

/// Clients one load thread holds at most (below the 20,000 open-files limit of this box,
/// with room for the thread's own descriptors).
pub const CLIENTS_PER_THREAD: usize = 18_000;
/// Connections per source address (below the ~28K ephemeral ports of one address pair).
pub const CLIENTS_PER_SOURCE: usize = 20_000;

/// Flags of `matchstream load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The server, `http://HOST:PORT` (WebSocket at `/1/ws` there).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Number of clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// WebSocket path to connect to.
    #[arg(long, default_value = "/1/ws")]
    pub path: String,
    /// Load threads (each with a private fd table); default: enough for the clients.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Handshakes in flight per load thread.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Seconds to hold the connections open once all are connected (idle mode).
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// PID of the server, to read its memory and CPU use.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Where to write the JSON report.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// Counters shared by all load threads.
#[derive(Default)]
struct Progress {
    connected: AtomicU64,
    failed: AtomicU64,
    finished_connecting: AtomicU64,
    stop: AtomicBool,
}

fn server_addr(server: &str) -> io::Result<(SocketAddr, String)> {
    let hostport = server
        .trim_start_matches("http://")
        .trim_start_matches("ws://")
        .trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| io::Error::other(format!("cannot resolve {hostport}")))?;
    Ok((addr, hostport.to_string()))
}

fn source_for(index: usize, clients: usize) -> IpAddr {
    let sources = clients.div_ceil(CLIENTS_PER_SOURCE).clamp(1, 253);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % sources) as u8))
}

/// Runs the load as the flags say; returns the process exit status.
pub fn run(args: LoadArgs) -> io::Result<i32> {
    let (addr, host) = server_addr(&args.server)?;
    let threads = args
        .threads
        .unwrap_or_else(|| args.clients.div_ceil(CLIENTS_PER_THREAD).max(1));
    let progress = Arc::new(Progress::default());
    let rss_before = args.server_pid.and_then(procfs::rss_bytes);
    let kernel_before = procfs::tcp_kernel_bytes();
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (progress, path, host) = (progress.clone(), args.path.clone(), host.clone());
        let indices: Vec<usize> = (t..args.clients).step_by(threads).collect();
        let (clients, concurrency) = (args.clients, args.concurrency);
        handles.push(std::thread::spawn(move || {
            idle_thread(indices, clients, addr, host, path, concurrency, progress)
        }));
    }
    let deadline = started + Duration::from_secs(300);
    while progress.finished_connecting.load(Ordering::Acquire) < args.clients as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        eprint!(
            "\rconnected {:>7} / {}  failed {:>5}",
            progress.connected.load(Ordering::Relaxed),
            args.clients,
            progress.failed.load(Ordering::Relaxed)
        );
    }
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!();
    let connected = progress.connected.load(Ordering::Acquire);
    let failed = progress.failed.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_secs(args.hold));
    let rss_after = args.server_pid.and_then(procfs::rss_bytes);
    let kernel_after = procfs::tcp_kernel_bytes();
    let still_open = progress.connected.load(Ordering::Acquire);
    progress.stop.store(true, Ordering::Release);
    for h in handles {
        let _ = h.join();
    }
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if connected > 0 => Some(a.saturating_sub(b) as f64 / connected as f64),
        _ => None,
    };
    let report = json!({
        "mode": "idle",
        "clients": args.clients,
        "connected": connected,
        "connect_failures": failed,
        "still_open_after_hold": still_open,
        "connect_seconds": connect_secs,
        "connect_per_s": connected as f64 / connect_secs,
        "server_rss_before_bytes": rss_before,
        "server_rss_after_bytes": rss_after,
        "server_rss_bytes_per_connection": per_conn(rss_before, rss_after),
        "kernel_tcp_bytes_per_connection_both_ends": per_conn(kernel_before, kernel_after),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "version": env!("CARGO_PKG_VERSION"),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap_or_default())?;
    }
    Ok(if failed == 0 && still_open == args.clients as u64 {
        0
    } else {
        1
    })
}

fn idle_thread(
    indices: Vec<usize>,
    clients: usize,
    addr: SocketAddr,
    host: String,
    path: String,
    concurrency: usize,
    progress: Arc<Progress>,
) {
    if let Err(e) = crate::server::sys::unshare_fd_table() {
        eprintln!("load: unshare: {e}");
    }
    let mut rt = match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(4096)
        .enable_timer()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let next = Rc::new(Cell::new(0usize));
        let indices = Rc::new(indices);
        let ctx = Rc::new((host, path, progress.clone()));
        for _ in 0..concurrency.max(1) {
            let (next, indices, ctx) = (next.clone(), indices.clone(), ctx.clone());
            monoio::spawn(async move {
                let mut scratch = vec![0u8; 4096];
                loop {
                    let i = next.get();
                    if i >= indices.len() {
                        return;
                    }
                    next.set(i + 1);
                    let source = source_for(indices[i], clients);
                    let result = async {
                        let stream = client::connect_from(source, addr).await?;
                        client::handshake(&stream, &ctx.0, &ctx.1, &mut scratch).await?;
                        Ok::<_, io::Error>(stream)
                    }
                    .await;
                    let progress = &ctx.2;
                    match result {
                        Ok(stream) => {
                            progress.connected.fetch_add(1, Ordering::AcqRel);
                            monoio::spawn(hold(stream, ctx.clone()));
                        }
                        Err(e) => {
                            if progress.failed.fetch_add(1, Ordering::AcqRel) < 5 {
                                eprintln!("load: client {} from {source}: {e}", indices[i]);
                            }
                        }
                    }
                    progress.finished_connecting.fetch_add(1, Ordering::AcqRel);
                }
            });
        }
        while !progress.stop.load(Ordering::Acquire) {
            monoio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Keeps an idle client alive: answers pings, notes when the server closes it.
async fn hold(stream: monoio::net::TcpStream, ctx: Rc<(String, String, Arc<Progress>)>) {
    let mut buf = Vec::new();
    let mut scratch = [0u8; 512];
    loop {
        match client::recv_some(&stream, &mut scratch, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Ok(Some(frame)) = client::next_frame(&mut buf) {
            if let client::ServerFrame::Ping(p) = frame {
                let pong = client::client_frame(OpCode::Pong, &p, [1, 2, 3, 4]);
                let _ = client::send_all(&stream, &pong).await;
            }
        }
    }
    ctx.2.connected.fetch_sub(1, Ordering::AcqRel);
}
