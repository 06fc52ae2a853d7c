//! Idle mode (`--idle`, or no match to watch): open the connections, hold them for `--hold`
//! seconds and measure what they cost the server (RSS per connection) and the kernel.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::client;
use super::procfs;
use super::watch::source_for;
use super::wire::{TlsClient, Wire};
use super::{server_addr, LoadArgs};
use crate::proto::frame::OpCode;

/// Counters shared by all load threads.
#[derive(Default)]
struct Progress {
    connected: AtomicU64,
    failed: AtomicU64,
    finished_connecting: AtomicU64,
    stop: AtomicBool,
}

/// What the server and the kernel used, read before and after the connections.
#[derive(Clone, Copy)]
struct Usage {
    rss: Option<u64>,
    tcp: Option<u64>,
    slab: Option<u64>,
}

impl Usage {
    fn now(pids: &[u32]) -> Usage {
        Usage {
            rss: procfs::rss_bytes_sum(pids),
            tcp: procfs::tcp_kernel_bytes(),
            slab: procfs::kernel_slab_bytes(),
        }
    }
}

/// How long idle mode waits for every client to connect or fail.
const CONNECT_GIVE_UP: Duration = Duration::from_secs(300);

/// Runs the idle mode; returns the process exit status.
pub(super) fn run(args: &LoadArgs) -> io::Result<i32> {
    let (addr, host) = server_addr(args.primary_server())?;
    let plan = super::plan::make(args.clients, args.tuning.threads, args.tuning.sources)
        .map_err(io::Error::other)?;
    for note in &plan.notes {
        eprintln!("load: {note}");
    }
    let progress = Arc::new(Progress::default());
    let before = Usage::now(&args.server_pid);
    let started = Instant::now();
    let target = IdleTarget {
        addr,
        host,
        path: args.path.clone(),
        tls: args.tls_client()?,
    };
    let handles = start_threads(args, &plan, &target, &progress);
    wait_connected(&progress, args.clients, started + CONNECT_GIVE_UP);
    let connect_secs = started.elapsed().as_secs_f64();
    eprintln!();
    let connected = progress.connected.load(Ordering::Acquire);
    let failed = progress.failed.load(Ordering::Acquire);
    std::thread::sleep(Duration::from_secs(args.tuning.hold));
    let after = Usage::now(&args.server_pid);
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
        "plan": plan,
        "machine": super::report::machine(),
        "kernel": super::report::kernel(),
        "clients": args.clients,
        "tls": args.tls,
        "connected": connected,
        "connect_failures": failed,
        "still_open_after_hold": still_open,
        "connect_seconds": connect_secs,
        "connect_per_s": connected as f64 / connect_secs,
        "server_rss_before_bytes": before.rss,
        "server_rss_after_bytes": after.rss,
        "server_rss_bytes_per_connection": per_conn(before.rss, after.rss),
        "kernel_tcp_bytes_per_connection_both_ends": per_conn(before.tcp, after.tcp),
        "kernel_slab_bytes_per_connection_both_ends": per_conn(before.slab, after.slab),
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

/// Where the idle clients connect, and how.
#[derive(Clone)]
struct IdleTarget {
    addr: SocketAddr,
    host: String,
    path: String,
    tls: Option<TlsClient>,
}

/// Starts the load threads, each with every `threads`-th client.
fn start_threads(
    args: &LoadArgs,
    plan: &super::plan::Plan,
    target: &IdleTarget,
    progress: &Arc<Progress>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (threads, sources) = (plan.threads, plan.sources);
    (0..threads)
        .map(|t| {
            let (progress, target) = (progress.clone(), target.clone());
            let indices: Vec<usize> = (t..args.clients).step_by(threads).collect();
            let concurrency = args.tuning.concurrency;
            std::thread::spawn(move || idle_thread(indices, sources, target, concurrency, progress))
        })
        .collect()
}

/// Shows the connect progress until every client connected or failed, or `deadline`.
fn wait_connected(progress: &Progress, clients: usize, deadline: Instant) {
    while progress.finished_connecting.load(Ordering::Acquire) < clients as u64
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
        eprint!(
            "\rconnected {:>7} / {}  failed {:>5}",
            progress.connected.load(Ordering::Relaxed),
            clients,
            progress.failed.load(Ordering::Relaxed)
        );
    }
}

fn idle_thread(
    indices: Vec<usize>,
    sources: usize,
    target: IdleTarget,
    concurrency: usize,
    progress: Arc<Progress>,
) {
    if let Err(e) = crate::os::sys::unshare_fd_table() {
        eprintln!("load: unshare: {e}");
    }
    let mut rt = match crate::os::runtime::uring_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let next = Rc::new(Cell::new(0usize));
        let indices = Rc::new(indices);
        let ctx = Rc::new((target, progress.clone()));
        for _ in 0..concurrency.max(1) {
            let (next, indices, ctx) = (next.clone(), indices.clone(), ctx.clone());
            monoio::spawn(async move {
                let scratch = RefCell::new(vec![0u8; 4096]);
                loop {
                    let i = next.get();
                    if i >= indices.len() {
                        return;
                    }
                    next.set(i + 1);
                    let source = source_for(indices[i], sources);
                    let result = async {
                        let t = &ctx.0;
                        let stream = client::connect_from(source, t.addr).await?;
                        let stream = Wire::open(stream, t.tls.as_ref()).await?;
                        client::handshake(&stream, &t.host, &t.path, &scratch).await?;
                        Ok::<_, io::Error>(stream)
                    }
                    .await;
                    let progress = &ctx.1;
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
async fn hold(stream: Wire, ctx: Rc<(IdleTarget, Arc<Progress>)>) {
    let mut buf = Vec::new();
    let scratch = RefCell::new(vec![0u8; 512]);
    loop {
        match stream.recv_some(&scratch, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Ok(Some(frame)) = client::next_frame(&mut buf) {
            if let client::ServerFrame::Ping(p) = frame {
                let pong = client::client_frame(OpCode::Pong, &p, [1, 2, 3, 4]);
                let _ = stream.write_all(&pong).await;
            }
        }
    }
    ctx.1.connected.fetch_sub(1, Ordering::AcqRel);
}
