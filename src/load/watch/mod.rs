//! The watchers: one load thread (private fd table, own io_uring runtime) connects its share
//! of the clients at the ramp rate, a bounded number of handshakes at a time, and runs one
//! task per connected watcher that checks every message ([`super::verify`]) and records
//! its latency ([`super::stats`]). A watcher's outcome lives in the thread's table, not in
//! its task, so a run that is stopped early still accounts for every watcher.
//!
//! * `connect` — the connectors, the choice of server (round-robin or `/1/checkin`) and the
//!   reconnect of a dropped watcher;
//! * `session` — one watcher's life: watch, and on a drop reconnect and resume;
//! * `ws`, `line`, `sse` — watching over WebSocket, the TCP line protocol and Server-Sent
//!   Events;
//! * `ctx` — what the tasks of one thread share, and how events are recorded into it;
//! * `known` — the event payloads a thread has checked, so a repeat of the same bytes is
//!   verified by comparison instead of a second parse.

mod connect;
mod ctx;
mod known;
mod line;
mod session;
mod sse;
mod ws;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::drive::Feed;
use super::stats::LatencyStats;
use super::verify::SeqChecker;
use connect::connector;
pub use connect::RECONNECT_GIVE_UP;
use ctx::Ctx;
use known::KnownEvents;

/// The wire the watchers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// WebSocket `/1/ws` with the `watch` command.
    Ws,
    /// The TCP line protocol.
    Tcp,
    /// Server-Sent Events, `GET /1/match/{id}/events`.
    Sse,
}

/// What every load thread shares.
#[derive(Debug)]
pub struct WatchConfig {
    /// Which wire.
    pub protocol: Protocol,
    /// `--raw`: subscribe by connecting (plus `subscribe_message`); payloads `{"n":K}`.
    pub raw: bool,
    /// Where to connect: watcher `i` starts on `targets[i % len]` (unless `checkin`).
    pub targets: Vec<Endpoint>,
    /// Ask `GET /1/checkin` on these (round-robin) for each watcher's server.
    pub checkin: Option<Vec<Endpoint>>,
    /// Reconnect a dropped watcher elsewhere and resume with `since`.
    pub reconnect: bool,
    /// WebSocket path.
    pub path: String,
    /// `--deflate`: offer permessage-deflate in the WebSocket handshake.
    pub deflate: bool,
    /// `--tls`: every connection speaks TLS with these settings.
    pub tls: Option<crate::load::wire::TlsClient>,
    /// A text message sent after a raw handshake, if any.
    pub subscribe_message: Option<String>,
    /// The watched matches.
    pub feeds: Arc<Vec<Feed>>,
    /// Total clients (all threads).
    pub clients: usize,
    /// Source addresses to spread over.
    pub sources: usize,
    /// Handshakes in flight per thread.
    pub concurrency: usize,
    /// New connections per second per thread (`None`: as fast as they go).
    pub rate_per_thread: Option<f64>,
    /// The run's time origin.
    pub origin: Instant,
}

impl WatchConfig {
    /// The `Sec-WebSocket-Extensions` offer of each watcher, if any.
    pub fn offer(&self) -> Option<&'static str> {
        self.deflate.then_some(crate::load::client::DEFLATE_OFFER)
    }
}

/// A server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// `Host` header.
    pub host: String,
}

/// Counters the main thread shows and waits on.
#[derive(Debug, Default)]
pub struct Progress {
    /// TCP connected and handshake done.
    pub connected: AtomicU64,
    /// Watchers that got their status (raw: handshake done): ready for events.
    pub ready: AtomicU64,
    /// Watchers done for good (finished, failed or closed).
    pub done: AtomicU64,
    /// Watchers done without ever getting ready (failed to connect, or no status).
    pub failed_early: AtomicU64,
    /// Connect attempts that failed.
    pub connect_failed: AtomicU64,
    /// Handshakes that failed.
    pub handshake_failed: AtomicU64,
    /// Events received (all watchers).
    pub deliveries: AtomicU64,
    /// Watchers currently open.
    pub open: AtomicU64,
    /// Reconnects after a dropped connection (all watchers).
    pub reconnects: AtomicU64,
    /// Set by the main thread: stop now, report what you have.
    pub stop: AtomicBool,
}

/// Where a watcher ended up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not connected yet (the run stopped first).
    #[default]
    Pending,
    /// The TCP connect failed.
    ConnectFailed,
    /// The opening handshake failed.
    HandshakeFailed,
    /// Connected and watching (the run stopped first, or the connection broke).
    Watching,
    /// Saw the end of the match and the server's close.
    Finished,
}

/// Everything the report needs about one watcher.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Index into the feeds.
    pub feed: u32,
    /// Where it ended.
    pub phase: Phase,
    /// The order check.
    pub checker: SeqChecker,
    /// The number of the `stop` event, once seen.
    pub stop_seq: Option<u64>,
    /// The connection ended before the match did (or with a close code other than 1000).
    pub unexpected_close: bool,
    /// What went wrong, short (counted by kind in the report).
    pub error: Option<String>,
    /// The server it first watched on.
    pub first_server: Option<SocketAddr>,
    /// The server it watched on last.
    pub server: Option<SocketAddr>,
    /// Times it reconnected after its connection dropped.
    pub reconnects: u32,
}

/// What a load thread hands back.
#[derive(Debug)]
pub struct ThreadResult {
    /// One per watcher of this thread.
    pub outcomes: Vec<Outcome>,
    /// Latency aggregates.
    pub stats: LatencyStats,
    /// Latency histograms per server the watchers were on when the event arrived.
    pub per_server: Vec<(SocketAddr, hdrhistogram::Histogram<u64>)>,
}

/// The source address of client `index` of `clients` spread over `sources` addresses.
pub fn source_for(index: usize, sources: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (index % sources.max(1)) as u8))
}

/// Runs one load thread for the clients `indices` (global numbers).
pub fn run_thread(
    cfg: Arc<WatchConfig>,
    progress: Arc<Progress>,
    indices: Vec<usize>,
) -> ThreadResult {
    let lens: Vec<usize> = cfg.feeds.iter().map(|f| f.sent_ns.len()).collect();
    let feeds = cfg.feeds.len();
    let outcomes = indices
        .iter()
        .map(|&i| Outcome {
            feed: (i % cfg.feeds.len().max(1)) as u32,
            ..Outcome::default()
        })
        .collect();
    let ctx = Rc::new(Ctx {
        cfg,
        progress,
        indices,
        outcomes: RefCell::new(outcomes),
        stats: RefCell::new(LatencyStats::new(&lens)),
        per_server: RefCell::new(Vec::new()),
        scratch: RefCell::new(vec![0; 64 * 1024]),
        done: Cell::new(0),
        known: RefCell::new(KnownEvents::new(feeds)),
        unreported: Cell::new(0),
    });
    if let Err(e) = crate::os::sys::unshare_fd_table() {
        eprintln!("load: unshare(CLONE_FILES): {e} (this thread shares the process fd table)");
    }
    match load_runtime() {
        Ok(mut rt) => rt.block_on(thread_main(ctx.clone())),
        Err(e) => {
            eprintln!("load: io_uring runtime: {e}");
            for o in ctx.outcomes.borrow_mut().iter_mut() {
                o.error = Some(format!("runtime: {e}"));
            }
        }
    }
    // Watchers that never finished (the run ended first) can leave their tasks, and so
    // references to `ctx`, behind: the results are taken out, not unwrapped, so that the
    // report still says what they missed.
    ThreadResult {
        outcomes: ctx.outcomes.take(),
        stats: ctx.stats.replace(LatencyStats::new(&[])),
        per_server: ctx.per_server.take(),
    }
}

/// How often a load thread looks whether its watchers are all done or the run was stopped.
const DONE_CHECK: Duration = Duration::from_millis(50);

/// The load thread's io_uring runtime: the shared settings plus `IORING_SETUP_COOP_TASKRUN`,
/// so a completion does not interrupt the thread with an IPI while it runs (the kernel runs the
/// completion work when the thread next enters it, which it does to wait for more); on a
/// kernel without it, the plain runtime.
fn load_runtime() -> std::io::Result<crate::os::runtime::UringRuntime> {
    let mut ring = io_uring::IoUring::builder();
    ring.setup_coop_taskrun();
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .with_entries(crate::os::runtime::RING_ENTRIES)
        .uring_builder(ring)
        .enable_timer()
        .build()
        .or_else(|_| crate::os::runtime::uring_runtime())
}

async fn thread_main(ctx: Rc<Ctx>) {
    let next = Rc::new(Cell::new(0usize));
    let started = Instant::now();
    for _ in 0..ctx.cfg.concurrency.clamp(1, ctx.indices.len().max(1)) {
        monoio::spawn(connector(ctx.clone(), next.clone(), started));
    }
    while ctx.done.get() < ctx.indices.len() && !ctx.progress.stop.load(Ordering::Acquire) {
        monoio::time::sleep(DONE_CHECK).await;
    }
    // Returning drops the runtime and with it every task and connection still open.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_the_addresses() {
        assert_eq!(source_for(0, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_for(4, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
