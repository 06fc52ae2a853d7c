//! The watchers: one load thread (private fd table, own io_uring runtime) connects its share
//! of the clients at the ramp rate, a bounded number of handshakes at a time, and runs one
//! task per connected watcher that checks every message ([`super::verify`]) and records
//! its latency ([`super::stats`]). A watcher's outcome lives in the thread's table, not in
//! its task, so a run that is stopped early still accounts for every watcher.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use serde::Deserialize;

use super::client;
use super::drive::Feed;
use super::stats::LatencyStats;
use super::verify::{align_kind, SeqChecker, Verdict};
use crate::os::stream::{recv_some, write_all};
use crate::proto::frame::OpCode;

/// The wire the watchers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// WebSocket `/1/ws` with the `watch` command.
    Ws,
    /// The TCP line protocol.
    Tcp,
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

/// A server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub addr: SocketAddr,
    /// `Host` header.
    pub host: String,
}

/// How long a dropped watcher keeps trying to reconnect before it counts as failed.
pub const RECONNECT_GIVE_UP: Duration = Duration::from_secs(60);
/// Bound on one reconnect attempt's connect + handshake (+ checkin).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

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

struct Ctx {
    cfg: Arc<WatchConfig>,
    progress: Arc<Progress>,
    indices: Vec<usize>,
    outcomes: RefCell<Vec<Outcome>>,
    stats: RefCell<LatencyStats>,
    per_server: RefCell<Vec<(SocketAddr, hdrhistogram::Histogram<u64>)>>,
    scratch: RefCell<Vec<u8>>,
    done: Cell<usize>,
}

impl Ctx {
    fn now_ns(&self) -> u64 {
        self.cfg.origin.elapsed().as_nanos() as u64
    }

    fn finish(&self, slot: usize, phase: Phase) {
        let mut o = self.outcomes.borrow_mut();
        o[slot].phase = phase;
        if !o[slot].checker.has_status() {
            self.progress.failed_early.fetch_add(1, Ordering::AcqRel);
        }
        drop(o);
        self.done.set(self.done.get() + 1);
        self.progress.done.fetch_add(1, Ordering::AcqRel);
    }

    fn fail(&self, slot: usize, error: String) {
        let mut o = self.outcomes.borrow_mut();
        if o[slot].error.is_none() {
            o[slot].error = Some(error);
        }
    }
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
    });
    if let Err(e) = crate::os::sys::unshare_fd_table() {
        eprintln!("load: unshare(CLONE_FILES): {e} (this thread shares the process fd table)");
    }
    match crate::os::runtime::uring_runtime() {
        Ok(mut rt) => rt.block_on(thread_main(ctx.clone())),
        Err(e) => {
            eprintln!("load: io_uring runtime: {e}");
            for o in ctx.outcomes.borrow_mut().iter_mut() {
                o.error = Some(format!("runtime: {e}"));
            }
        }
    }
    let ctx =
        Rc::try_unwrap(ctx).unwrap_or_else(|_| unreachable!("tasks dropped with the runtime"));
    ThreadResult {
        outcomes: ctx.outcomes.into_inner(),
        stats: ctx.stats.into_inner(),
        per_server: ctx.per_server.into_inner(),
    }
}

async fn thread_main(ctx: Rc<Ctx>) {
    let next = Rc::new(Cell::new(0usize));
    let started = Instant::now();
    for _ in 0..ctx.cfg.concurrency.clamp(1, ctx.indices.len().max(1)) {
        monoio::spawn(connector(ctx.clone(), next.clone(), started));
    }
    while ctx.done.get() < ctx.indices.len() && !ctx.progress.stop.load(Ordering::Acquire) {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    // Returning drops the runtime and with it every task and connection still open.
}

/// Takes the next client of the thread, connects it, and hands it to a watcher task.
async fn connector(ctx: Rc<Ctx>, next: Rc<Cell<usize>>, started: Instant) {
    loop {
        let slot = next.get();
        if slot >= ctx.indices.len() || ctx.progress.stop.load(Ordering::Acquire) {
            return;
        }
        next.set(slot + 1);
        if let Some(rate) = ctx.cfg.rate_per_thread {
            let due = started + Duration::from_secs_f64(slot as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                monoio::time::sleep(wait).await;
            }
        }
        let index = ctx.indices[slot];
        let source = source_for(index, ctx.cfg.sources);
        let target = match pick_target(&ctx, index, None, 0).await {
            Ok(t) => t,
            Err(e) => {
                ctx.progress.connect_failed.fetch_add(1, Ordering::AcqRel);
                ctx.fail(slot, format!("checkin: {e}"));
                ctx.finish(slot, Phase::ConnectFailed);
                continue;
            }
        };
        let stream = match client::connect_from(source, target.addr).await {
            Ok(s) => s,
            Err(e) => {
                ctx.progress.connect_failed.fetch_add(1, Ordering::AcqRel);
                ctx.fail(
                    slot,
                    format!("connect: {}", explain_connect_error(&e, source)),
                );
                ctx.finish(slot, Phase::ConnectFailed);
                continue;
            }
        };
        let leftover = if ctx.cfg.protocol == Protocol::Ws {
            let scratch = RefCell::new(vec![0u8; 2048]);
            match client::handshake(&stream, &target.host, &ctx.cfg.path, &scratch).await {
                Ok(rest) => rest,
                Err(e) => {
                    ctx.progress.handshake_failed.fetch_add(1, Ordering::AcqRel);
                    ctx.fail(slot, format!("handshake: {e}"));
                    ctx.finish(slot, Phase::HandshakeFailed);
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        ctx.progress.connected.fetch_add(1, Ordering::AcqRel);
        ctx.progress.open.fetch_add(1, Ordering::AcqRel);
        {
            let mut o = ctx.outcomes.borrow_mut();
            o[slot].phase = Phase::Watching;
            o[slot].first_server = Some(target.addr);
            o[slot].server = Some(target.addr);
        }
        monoio::spawn(watcher(ctx.clone(), slot, index, stream, leftover));
    }
}

/// Says which harness limit a connect error points at.
fn explain_connect_error(e: &io::Error, source: IpAddr) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            format!("{e} (harness out of file descriptors: raise ulimit -n or --threads)")
        }
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => {
            format!("{e} (harness out of ports from {source}: more --sources)")
        }
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => format!("{e} (kernel out of memory)"),
        _ => e.to_string(),
    }
}

/// How a watch ended badly.
struct Failure {
    /// The connection dropped (EOF, reset, a close before the end): a reconnect may resume.
    dropped: bool,
    /// What happened.
    why: String,
}

fn dropped(why: impl Into<String>) -> Failure {
    Failure {
        dropped: true,
        why: why.into(),
    }
}

fn failed(why: impl Into<String>) -> Failure {
    Failure {
        dropped: false,
        why: why.into(),
    }
}

async fn watcher(
    ctx: Rc<Ctx>,
    slot: usize,
    index: usize,
    mut stream: TcpStream,
    mut leftover: Vec<u8>,
) {
    let feed = ctx.outcomes.borrow()[slot].feed as usize;
    let mut since = None;
    loop {
        let result = match ctx.cfg.protocol {
            Protocol::Ws => watch_ws(&ctx, slot, feed, index, &stream, leftover, since).await,
            Protocol::Tcp => watch_tcp(&ctx, slot, feed, index, &stream)
                .await
                .map_err(failed),
        };
        ctx.progress.open.fetch_sub(1, Ordering::AcqRel);
        let why = match result {
            Ok(()) => return ctx.finish(slot, Phase::Finished),
            Err(f)
                if f.dropped
                    && ctx.cfg.reconnect
                    && !ctx.cfg.raw
                    && ctx.cfg.protocol == Protocol::Ws =>
            {
                f.why
            }
            Err(f) => {
                ctx.outcomes.borrow_mut()[slot].unexpected_close = true;
                ctx.fail(slot, f.why);
                return ctx.finish(slot, Phase::Watching);
            }
        };
        drop(stream);
        let dead = ctx.outcomes.borrow()[slot].server;
        match reconnect(&ctx, index, dead).await {
            Ok((target, s, rest)) => {
                let mut o = ctx.outcomes.borrow_mut();
                o[slot].reconnects += 1;
                o[slot].server = Some(target.addr);
                since = Some(o[slot].checker.last());
                drop(o);
                ctx.progress.reconnects.fetch_add(1, Ordering::AcqRel);
                ctx.progress.open.fetch_add(1, Ordering::AcqRel);
                stream = s;
                leftover = rest;
            }
            Err(e) => {
                ctx.outcomes.borrow_mut()[slot].unexpected_close = true;
                ctx.fail(slot, format!("{why}; reconnect failed: {e}"));
                return ctx.finish(slot, Phase::Watching);
            }
        }
    }
}

/// The server for watcher `index`: round-robin over the targets (skipping `dead`, spread by
/// `index` and `attempt`), or what `GET /1/checkin` on one of them names.
async fn pick_target(
    ctx: &Ctx,
    index: usize,
    dead: Option<SocketAddr>,
    attempt: u32,
) -> io::Result<Endpoint> {
    let targets = &ctx.cfg.targets;
    let alive: Vec<&Endpoint> = targets.iter().filter(|t| Some(t.addr) != dead).collect();
    let pool = if alive.is_empty() {
        targets.iter().collect()
    } else {
        alive
    };
    let k = (index + attempt as usize) % pool.len();
    if let Some(http) = &ctx.cfg.checkin {
        let ask = &http[(index + attempt as usize) % http.len()];
        let source = source_for(index, ctx.cfg.sources);
        let named = checkin(source, ask).await?;
        // A node that just died is named until its registration expires: go round-robin.
        if Some(named.addr) != dead {
            return Ok(named);
        }
    }
    Ok(pool[k].clone())
}

/// `GET /1/checkin` on `server`: the `ws` URL it names.
async fn checkin(source: IpAddr, server: &Endpoint) -> io::Result<Endpoint> {
    let stream = client::connect_from(source, server.addr).await?;
    let request = format!(
        "GET /1/checkin HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.host
    );
    write_all(&stream, request.as_bytes()).await?;
    let mut buf = Vec::new();
    let scratch = RefCell::new(vec![0u8; 4096]);
    while recv_some(&stream, &scratch, &mut buf).await? > 0 && buf.len() < 16384 {}
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let ws = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("ws")?.as_str().map(str::to_string))
        .ok_or_else(|| io::Error::other(format!("no ws URL from {}", server.host)))?;
    let host = ws
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let (addr, host) = super::server_addr(&host)?;
    Ok(Endpoint { addr, host })
}

/// Connects a dropped watcher again (another server first), with backoff and jitter, for at
/// most [`RECONNECT_GIVE_UP`].
async fn reconnect(
    ctx: &Ctx,
    index: usize,
    dead: Option<SocketAddr>,
) -> Result<(Endpoint, TcpStream, Vec<u8>), String> {
    let deadline = Instant::now() + RECONNECT_GIVE_UP;
    let seed = super::seed(index as u64);
    let source = source_for(index, ctx.cfg.sources);
    let mut last = String::from("stopped");
    for attempt in 0u32.. {
        if ctx.progress.stop.load(Ordering::Acquire) || Instant::now() >= deadline {
            break;
        }
        monoio::time::sleep(super::backoff(attempt, seed)).await;
        let attempt_fut = async {
            let target = pick_target(ctx, index, dead, attempt)
                .await
                .map_err(|e| format!("checkin: {e}"))?;
            let stream = client::connect_from(source, target.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", target.addr))?;
            let scratch = RefCell::new(vec![0u8; 2048]);
            let rest = client::handshake(&stream, &target.host, &ctx.cfg.path, &scratch)
                .await
                .map_err(|e| format!("handshake {}: {e}", target.addr))?;
            Ok::<_, String>((target, stream, rest))
        };
        match monoio::time::timeout(ATTEMPT_TIMEOUT, attempt_fut).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("attempt timed out after {ATTEMPT_TIMEOUT:?}"),
        }
    }
    Err(last)
}

/// Reads what is there (waiting for readiness) into `buf`; `Ok(false)` at EOF.
async fn read_more(ctx: &Ctx, stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    Ok(recv_some(stream, &ctx.scratch, buf).await? > 0)
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    ty: Option<&'a str>,
    seq: Option<u64>,
    kind: Option<&'a str>,
    error: Option<String>,
    n: Option<u64>,
}

/// Records one event number: the order check, the latency, the progress count.
fn on_event(ctx: &Ctx, slot: usize, feed: usize, seq: u64, now_ns: u64) -> Verdict {
    let verdict = ctx.outcomes.borrow_mut()[slot].checker.event(seq);
    if matches!(
        verdict,
        Verdict::InOrder | Verdict::AfterGap(_) | Verdict::Reordered
    ) {
        ctx.progress.deliveries.fetch_add(1, Ordering::Relaxed);
        let f = &ctx.cfg.feeds[feed];
        if let Some(sent) = f.sent_at(seq) {
            let index = (seq - f.base.load(Ordering::Acquire) - 1) as usize;
            let latency = now_ns.saturating_sub(sent);
            ctx.stats.borrow_mut().record(feed, index, latency);
            let server = ctx.outcomes.borrow()[slot].server;
            if let (Some(server), true) = (server, ctx.cfg.targets.len() > 1) {
                let mut per = ctx.per_server.borrow_mut();
                let at = match per.iter().position(|(a, _)| *a == server) {
                    Some(i) => i,
                    None => {
                        per.push((server, super::stats::histogram()));
                        per.len() - 1
                    }
                };
                per[at]
                    .1
                    .saturating_record(latency.clamp(1, super::stats::MAX_TRACKED_NS));
            }
        }
    }
    verdict
}

fn on_status(ctx: &Ctx, slot: usize, seq: u64) {
    let mut o = ctx.outcomes.borrow_mut();
    if !o[slot].checker.has_status() {
        o[slot].checker.status(seq);
        ctx.progress.ready.fetch_add(1, Ordering::AcqRel);
    }
}

async fn watch_ws(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    index: usize,
    stream: &TcpStream,
    mut buf: Vec<u8>,
    since: Option<u64>,
) -> Result<(), Failure> {
    let mask = (index as u32).wrapping_mul(2_654_435_761).to_be_bytes();
    let command = if ctx.cfg.raw {
        on_status(ctx, slot, 0);
        ctx.cfg.subscribe_message.clone()
    } else {
        let mid = &ctx.cfg.feeds[feed].id;
        let mut watch =
            serde_json::json!({"command": "watch", "mid": mid, "uid": format!("u{index}")});
        if let Some(since) = since {
            watch["since"] = since.into();
        }
        Some(watch.to_string())
    };
    if let Some(text) = command {
        write_all(
            stream,
            &client::client_frame(OpCode::Text, text.as_bytes(), mask),
        )
        .await
        .map_err(|e| dropped(format!("send watch: {e}")))?;
    }
    let final_n = ctx.cfg.feeds[feed].sent_ns.len() as u64;
    loop {
        let mut now = ctx.now_ns();
        while let Some((opcode, payload)) =
            client::next_raw_frame(&mut buf).map_err(|e| failed(e.to_string()))?
        {
            match opcode {
                OpCode::Text => {
                    let Ok(m) = serde_json::from_slice::<Message>(&payload) else {
                        return Err(failed("unparsable message"));
                    };
                    if ctx.cfg.raw {
                        if let Some(n) = m.n {
                            on_event(ctx, slot, feed, n, now);
                            if n == final_n {
                                ctx.outcomes.borrow_mut()[slot].stop_seq = Some(n);
                            }
                        }
                        continue;
                    }
                    match (m.ty, m.seq) {
                        (Some("status"), Some(seq)) => on_status(ctx, slot, seq),
                        (Some("event"), Some(seq)) => {
                            on_event(ctx, slot, feed, seq, now);
                            if m.kind == Some("stop") {
                                ctx.outcomes.borrow_mut()[slot].stop_seq = Some(seq);
                            }
                        }
                        (Some("error"), _) => {
                            return Err(failed(format!(
                                "server error: {}",
                                m.error.unwrap_or_default()
                            )))
                        }
                        _ => return Err(failed("unexpected message")),
                    }
                }
                OpCode::Ping => {
                    let pong = client::client_frame(OpCode::Pong, &payload, mask);
                    write_all(stream, &pong)
                        .await
                        .map_err(|e| dropped(format!("send pong: {e}")))?;
                    now = ctx.now_ns();
                }
                OpCode::Close => {
                    let (code, reason) = client::close_code_and_reason(&payload);
                    let reply = client::client_frame(OpCode::Close, &code.to_be_bytes(), mask);
                    let _ = write_all(stream, &reply).await;
                    let stopped = ctx.outcomes.borrow()[slot].stop_seq.is_some();
                    return if stopped && code == 1000 {
                        Ok(())
                    } else if stopped {
                        Err(dropped(format!("close {code} {reason:?} after stop")))
                    } else {
                        Err(dropped(format!("close {code} {reason:?} before stop")))
                    };
                }
                _ => {}
            }
        }
        if ctx.cfg.raw && ctx.outcomes.borrow()[slot].stop_seq.is_some() {
            let close = client::client_frame(OpCode::Close, &1000u16.to_be_bytes(), mask);
            let _ = write_all(stream, &close).await;
            return Ok(());
        }
        if buf.is_empty() && buf.capacity() > 4096 {
            buf = Vec::new();
        }
        match read_more(ctx, stream, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(dropped(if ctx.outcomes.borrow()[slot].stop_seq.is_some() {
                    "closed after stop without a close frame"
                } else {
                    "closed before stop"
                }))
            }
            Err(e) => return Err(dropped(format!("read: {e}"))),
        }
    }
}

/// One block of the TCP line protocol: its kind and, for a numbered comment, its number.
fn parse_block(block: &[u8]) -> Result<(String, Option<u64>), String> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if let Some(reason) = header.strip_prefix("ERROR: ") {
        return Err(format!("server error: {reason}"));
    }
    // `YYYY-MM-DD HH:MM:SS: <kind>:`
    let kind = header
        .get(21..)
        .and_then(|k| k.strip_suffix(':'))
        .ok_or_else(|| format!("bad block header {header:?}"))?;
    let number = lines
        .find_map(|l| l.strip_prefix("\ttext: #"))
        .and_then(|n| n.trim().parse().ok());
    Ok((kind.to_string(), number))
}

async fn watch_tcp(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    index: usize,
    stream: &TcpStream,
) -> Result<(), String> {
    let f = &ctx.cfg.feeds[feed];
    let line = format!("VERSION:1:CONNECT:u{index}:MATCH:{}\r\n", f.id);
    write_all(stream, line.as_bytes())
        .await
        .map_err(|e| format!("send connect: {e}"))?;
    let numbered = f.kinds.iter().filter(|k| k.as_str() == "comment").count() + 2 == f.kinds.len();
    let mut buf = Vec::new();
    loop {
        let now = ctx.now_ns();
        if buf.starts_with(b"ERROR: ") && buf.ends_with(b"\r\n") {
            return Err(parse_block(&buf).err().unwrap_or_default());
        }
        while let Some(end) = buf.windows(3).position(|w| w == b"\n\r\n") {
            let block: Vec<u8> = buf.drain(..end + 3).collect();
            let (kind, number) = parse_block(&block)?;
            let base = f.base.load(Ordering::Acquire);
            if kind == "status" {
                on_status(
                    ctx,
                    slot,
                    if base == super::drive::UNKNOWN {
                        0
                    } else {
                        base
                    },
                );
                continue;
            }
            let seq = {
                let o = ctx.outcomes.borrow();
                match number {
                    Some(k) if numbered && base != super::drive::UNKNOWN => base + 1 + k,
                    _ => {
                        let start = o[slot].checker.start().unwrap_or(0);
                        align_kind(&o[slot].checker, &f.kinds, start, &kind)
                    }
                }
            };
            on_event(ctx, slot, feed, seq, now);
            if kind == "stop" {
                ctx.outcomes.borrow_mut()[slot].stop_seq = Some(seq);
            }
        }
        match read_more(ctx, stream, &mut buf).await {
            Ok(true) => {}
            Ok(false) if ctx.outcomes.borrow()[slot].stop_seq.is_some() => return Ok(()),
            Ok(false) => return Err("closed before stop".into()),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_give_their_kind_and_number() {
        let b = b"2011-09-10 19:00:03: comment:\n\ttext: #12\n\r\n";
        assert_eq!(parse_block(b).unwrap(), ("comment".into(), Some(12)));
        let b = b"2011-09-10 19:00:03: goal:\n\tteam: tig\n\r\n";
        assert_eq!(parse_block(b).unwrap(), ("goal".into(), None));
        assert!(parse_block(b"ERROR: no such match\r\n")
            .unwrap_err()
            .contains("no such match"));
    }

    #[test]
    fn sources_cycle_over_the_addresses() {
        assert_eq!(source_for(0, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(source_for(4, 3), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)));
    }
}
