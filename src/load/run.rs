//! One verified run: set up the feeds, start the load threads, wait for every watcher's
//! status, publish, wait for every watcher to finish (bounded), tally and report.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::drive::{self, Feed, Planned, Published, Target};
use super::monitor::Monitor;
use super::plan::Plan;
use super::report::{Report, RunData, RunInfo, ServerUse};
use super::setup::{driving, watch_target, Driving};
use super::stats::{self, LatencyStats, Percentiles};
use super::tally::tally;
use super::watch::{self, Outcome, Progress, Protocol, ThreadResult, WatchConfig};
use super::{plan, procfs, LoadArgs};

/// A finished run.
pub(crate) struct RunResult {
    pub(crate) report: Report,
    hist: Histogram<u64>,
}

impl RunResult {
    /// Whether every watcher got everything.
    pub(crate) fn passed(&self) -> bool {
        self.report.passed
    }

    /// The p99 fan-out latency, µs.
    pub(crate) fn p99_us(&self) -> f64 {
        self.report.latency_us.p99
    }

    /// Writes the JSON report and the SVG chart where the flags say.
    pub(crate) fn write(&self, args: &LoadArgs) -> io::Result<()> {
        if let Some(path) = &args.report {
            std::fs::write(
                path,
                serde_json::to_vec_pretty(&self.report).unwrap_or_default(),
            )
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        }
        let svg_path = args
            .svg
            .clone()
            .or_else(|| args.report.as_ref().map(|p| p.with_extension("svg")));
        if let Some(path) = svg_path {
            let title = format!(
                "matchstream load: {} watchers, {}",
                self.report.clients, self.report.run.mode
            );
            let chart = super::svg::chart(&title, &self.hist, &self.report.timeline);
            std::fs::write(&path, chart)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// Kernel memory that grows with connections: slab (sockets, files) + TCP buffer pages.
fn kernel_bytes() -> Option<u64> {
    Some(procfs::kernel_slab_bytes()? + procfs::tcp_kernel_bytes()?)
}

/// Runs once with `clients` watchers (`run_index` picks fresh matches for ramp steps).
pub(crate) fn run_once(args: &LoadArgs, clients: usize, run_index: usize) -> io::Result<RunResult> {
    let plan =
        plan::make(clients, args.tuning.threads, args.tuning.sources).map_err(io::Error::other)?;
    for note in &plan.notes {
        eprintln!("load: {note}");
    }
    let origin = Instant::now();
    let Driving {
        mode,
        plan: events,
        feeds,
        target,
    } = driving(args, run_index)?;
    let feeds = Arc::new(feeds);
    let cfg = Arc::new(watch_config(args, clients, &plan, feeds.clone(), origin)?);
    if !args.quiet {
        announce(args, &cfg, &plan, &mode);
    }
    let mut server = ServerUse {
        rss_before: procfs::rss_bytes_sum(&args.server_pid),
        kernel_before: kernel_bytes(),
        ..ServerUse::default()
    };
    let progress = Arc::new(Progress::default());
    let threads = start_threads(&cfg, &progress, plan.threads, clients)?;
    let mut mon = Monitor::new(&progress, clients, &args.server_pid, origin, args.quiet);
    let connect_secs = wait_until_ready(&mut mon, &progress, clients, args);
    server.rss_ready = procfs::rss_bytes_sum(&args.server_pid);
    server.kernel_ready = kernel_bytes();
    let cpu = CpuMark::now(&args.server_pid);
    let (published, publish_error) = publish_and_drain(
        &mut mon,
        &progress,
        clients,
        args,
        (target, events, &feeds, origin),
    );
    progress.stop.store(true, Ordering::Release);
    cpu.fill(&mut server, &args.server_pid);
    server.rss_end = procfs::rss_bytes_sum(&args.server_pid);
    let timeline = mon.finish("done");
    let joined = join_threads(threads, &feeds, clients)?;
    let tally = tally(&feeds, &joined.outcomes);
    let run = run_info(args, &cfg, &plan, &feeds, mode, &joined.per_server);
    let report = Report::new(RunData {
        tally: &tally,
        latency: &joined.latency,
        feeds: &feeds,
        published: published.as_ref(),
        publish_error,
        connect_secs,
        server,
        timeline: &timeline,
        run,
    });
    Ok(RunResult {
        report,
        hist: joined.latency.hist,
    })
}

/// What every load thread is told: the wire, the servers, the feeds, the pace.
fn watch_config(
    args: &LoadArgs,
    clients: usize,
    plan: &Plan,
    feeds: Arc<Vec<Feed>>,
    origin: Instant,
) -> io::Result<WatchConfig> {
    let (targets, path) = watch_target(args)?;
    let checkin = (args.checkin && !args.raw.enabled && args.protocol == Protocol::Ws)
        .then(|| targets.clone());
    Ok(WatchConfig {
        protocol: if args.raw.enabled {
            Protocol::Ws
        } else {
            args.protocol
        },
        raw: args.raw.enabled,
        targets,
        checkin,
        reconnect: args.reconnect,
        path,
        deflate: args.deflate,
        tls: args.tls_client()?,
        subscribe_message: args.raw.subscribe_message.clone(),
        feeds,
        clients,
        sources: plan.sources,
        concurrency: args.tuning.concurrency,
        rate_per_thread: args.tuning.ramp.map(|r| r / plan.threads as f64),
        origin,
    })
}

/// The one line that says what is about to run.
fn announce(args: &LoadArgs, cfg: &WatchConfig, plan: &Plan, mode: &str) {
    let shown: Vec<String> = cfg.targets.iter().map(|t| t.addr.to_string()).collect();
    eprintln!(
        "load: {} watchers ({:?}, {mode}) over {} thread(s) and {} source address(es) -> {}{}",
        cfg.clients,
        cfg.protocol,
        plan.threads,
        plan.sources,
        shown.join(","),
        if args.reconnect {
            " (reconnecting)"
        } else {
            ""
        }
    );
}

/// Starts `threads` load threads, each with every `threads`-th client.
fn start_threads(
    cfg: &Arc<WatchConfig>,
    progress: &Arc<Progress>,
    threads: usize,
    clients: usize,
) -> io::Result<Vec<JoinHandle<ThreadResult>>> {
    (0..threads)
        .map(|t| {
            let (cfg, progress) = (cfg.clone(), progress.clone());
            let indices: Vec<usize> = (t..clients).step_by(threads).collect();
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || watch::run_thread(cfg, progress, indices))
        })
        .collect()
}

/// Waits until every watcher is ready or failed, at most `--connect-timeout`; returns the
/// seconds it took.
fn wait_until_ready(
    mon: &mut Monitor,
    progress: &Progress,
    clients: usize,
    args: &LoadArgs,
) -> f64 {
    let connect_start = Instant::now();
    let connect_deadline = connect_start + Duration::from_secs(args.tuning.connect_timeout);
    while progress.ready.load(Ordering::Acquire) + progress.failed_early.load(Ordering::Acquire)
        < clients as u64
        && Instant::now() < connect_deadline
    {
        mon.tick("connecting");
        std::thread::sleep(Duration::from_millis(10));
    }
    connect_start.elapsed().as_secs_f64()
}

/// What the publisher is given: where to post, what, to which feeds, and the time origin.
type Publishing<'a> = (Option<Target>, Vec<Planned>, &'a Arc<Vec<Feed>>, Instant);

/// Publishes (in its own thread, so this one keeps sampling), then waits until every watcher
/// is done or `--drain` seconds passed after the last post (2 s after a publisher failure;
/// when someone else drives the match, `--connect-timeout` but at least 600 s).
fn publish_and_drain(
    mon: &mut Monitor,
    progress: &Progress,
    clients: usize,
    args: &LoadArgs,
    (target, events, feeds, origin): Publishing,
) -> (Option<Published>, Option<String>) {
    let mut publisher = target.map(|target| {
        let feeds = feeds.clone();
        std::thread::spawn(move || drive::publish(&target, &events, &feeds, origin))
    });
    let mut published = None;
    let mut publish_error = None;
    let mut drain_deadline = publisher
        .is_none()
        .then(|| Instant::now() + Duration::from_secs(args.tuning.connect_timeout.max(600)));
    loop {
        mon.tick("watching");
        if publisher.as_ref().is_some_and(|h| h.is_finished()) {
            match publisher.take().map(|h| h.join()) {
                Some(Ok(Ok(p))) => published = Some(p),
                Some(Ok(Err(e))) => publish_error = Some(e.to_string()),
                _ => publish_error = Some("publisher panicked".into()),
            }
            let drain = if publish_error.is_some() {
                2
            } else {
                args.tuning.drain
            };
            drain_deadline = Some(Instant::now() + Duration::from_secs(drain));
        }
        let all_done = progress.done.load(Ordering::Acquire) >= clients as u64;
        if (all_done && publisher.is_none()) || drain_deadline.is_some_and(|d| Instant::now() >= d)
        {
            return (published, publish_error);
        }
        // Every wake-up of this thread is CPU the report counts as the harness's own.
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// CPU times (server, harness) at the start of delivery.
struct CpuMark {
    server: Option<(u64, u64)>,
    harness: Option<(u64, u64)>,
}

impl CpuMark {
    fn now(pids: &[u32]) -> CpuMark {
        CpuMark {
            server: procfs::cpu_us_sum(pids),
            harness: procfs::cpu_us(std::process::id()),
        }
    }

    /// Fills in the CPU used since the mark: server user + system, server user, harness.
    fn fill(&self, server: &mut ServerUse, pids: &[u32]) {
        let after = procfs::cpu_us_sum(pids);
        server.cpu_during_delivery_us = match (self.server, after) {
            (Some(b), Some(a)) => Some((a.0 + a.1).saturating_sub(b.0 + b.1)),
            _ => None,
        };
        server.cpu_user_during_delivery_us = match (self.server, after) {
            (Some(b), Some(a)) => Some(a.0.saturating_sub(b.0)),
            _ => None,
        };
        server.harness_cpu_during_delivery_us =
            match (self.harness, procfs::cpu_us(std::process::id())) {
                (Some(b), Some(a)) => Some((a.0 + a.1).saturating_sub(b.0 + b.1)),
                _ => None,
            };
    }
}

/// What the load threads found, merged.
struct Joined {
    latency: LatencyStats,
    per_server: BTreeMap<String, Histogram<u64>>,
    outcomes: Vec<Outcome>,
}

/// Waits for the load threads and merges their outcomes and latencies.
fn join_threads(
    threads: Vec<JoinHandle<ThreadResult>>,
    feeds: &[Feed],
    clients: usize,
) -> io::Result<Joined> {
    let lens: Vec<usize> = feeds.iter().map(|f| f.sent_ns.len()).collect();
    let mut joined = Joined {
        latency: LatencyStats::new(&lens),
        per_server: BTreeMap::new(),
        outcomes: Vec::with_capacity(clients),
    };
    for h in threads {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))?;
        joined.latency.merge(&r.stats);
        for (addr, h) in r.per_server {
            let entry = joined
                .per_server
                .entry(addr.to_string())
                .or_insert_with(stats::histogram);
            let _ = entry.add(&h);
        }
        joined.outcomes.extend(r.outcomes);
    }
    Ok(joined)
}

/// How the run was made, for the report.
fn run_info(
    args: &LoadArgs,
    cfg: &WatchConfig,
    plan: &Plan,
    feeds: &[Feed],
    mode: String,
    per_server: &BTreeMap<String, Histogram<u64>>,
) -> RunInfo {
    RunInfo {
        mode,
        protocol: cfg.protocol,
        tls: cfg.tls.is_some(),
        raw: args.raw.enabled,
        matches: feeds.iter().map(|f| f.id.clone()).collect(),
        plan: plan.clone(),
        server_url: args.server.clone(),
        latency_per_server_us: per_server
            .iter()
            .map(|(a, h)| (a.clone(), Percentiles::of(h)))
            .collect(),
        server_pid: args.server_pid.clone(),
        ramp_per_s: args.tuning.ramp,
    }
}
