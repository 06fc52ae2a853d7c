//! One verified run: set up the feeds, start the load threads, wait for every watcher's
//! status, publish, wait for every watcher to finish (bounded), tally and report.

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::drive::{self, Feed, Planned, Published, Target};
use super::report::{self, RunData, Sample, ServerUse};
use super::stats::LatencyStats;
use super::watch::{self, Endpoint, Outcome, Progress, Protocol, WatchConfig};
use super::{plan, procfs, LoadArgs};
use crate::domain::{EventKind, MatchScript};
use crate::feed::http_client::{HttpClient as Client, Url};

/// A finished run.
pub(crate) struct RunResult {
    pub(crate) report: Value,
    pub(crate) passed: bool,
    pub(crate) p99_us: f64,
    hist: Histogram<u64>,
    timeline: Vec<Sample>,
}

impl RunResult {
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
                self.report["clients"],
                self.report["mode"].as_str().unwrap_or("")
            );
            std::fs::write(&path, super::svg::chart(&title, &self.hist, &self.timeline))
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// What to publish, where, and to which feeds.
struct Driving {
    mode: String,
    plan: Vec<Planned>,
    feeds: Vec<Feed>,
    target: Option<Target>,
}

fn load_script(spec: &str) -> io::Result<MatchScript> {
    if spec == "sample" {
        return Ok(MatchScript::sample());
    }
    let text = std::fs::read_to_string(PathBuf::from(spec))
        .map_err(|e| io::Error::other(format!("{spec}: {e}")))?;
    MatchScript::parse(&text).map_err(|e| io::Error::other(format!("{spec}: {e}")))
}

/// Works out the feeds and the publisher from the flags; creates the matches.
fn driving(args: &LoadArgs, run_index: usize) -> io::Result<Driving> {
    if args.raw.enabled {
        let every = Duration::from_millis(args.every_ms.unwrap_or(100));
        let plan: Vec<Planned> = (1..=args.events)
            .map(|k| Planned {
                at: every * (k as u32 - 1),
                kind: EventKind::Comment,
                data: json!({}),
            })
            .collect();
        let url = Url::parse(args.raw.publish.as_deref().unwrap_or_default())?;
        let feed = Feed::new(args.raw.subscribe.clone().unwrap_or_default(), &plan);
        return Ok(Driving {
            mode: "raw".into(),
            plan,
            feeds: vec![feed],
            target: Some(Target::Raw { url }),
        });
    }
    if args.replay.is_none() && args.every_ms.is_none() {
        let id = args.match_id.clone().unwrap_or_default();
        if args.protocol == Protocol::Tcp {
            return Err(io::Error::other(
                "--protocol tcp needs --replay or --every-ms: line-protocol blocks carry no event \
                 numbers, so the harness must know what was published",
            ));
        }
        return Ok(Driving {
            mode: "watch".into(),
            plan: Vec::new(),
            feeds: vec![Feed::new(id, &[])],
            target: None,
        });
    }
    let token = args.admin_token.clone().ok_or_else(|| {
        io::Error::other("--replay / --every-ms need --admin-token to create and drive the match")
    })?;
    let script = load_script(args.replay.as_deref().unwrap_or("sample"))?;
    let (mode, plan) = match args.every_ms {
        Some(ms) => (
            format!("every {ms} ms, {} events", args.events),
            drive::numbered_plan(&script, Duration::from_millis(ms), args.events),
        ),
        None => (
            format!(
                "replay {} at speed {}",
                args.replay.as_deref().unwrap_or("sample"),
                args.speed
            ),
            drive::script_plan(&script, args.speed),
        ),
    };
    let matches = args.matches.max(1);
    let ids = drive::match_ids(&script, matches * (run_index + 1));
    let ids = &ids[matches * run_index..];
    if let Some(want) = &args.match_id {
        if matches == 1 && run_index == 0 && want != &ids[0].0 {
            return Err(io::Error::other(format!(
                "the script plays match {}, not --match {want}",
                ids[0].0
            )));
        }
    }
    let feeds: Vec<Feed> = ids
        .iter()
        .map(|(id, _)| Feed::new(id.clone(), &plan))
        .collect();
    let dates: Vec<String> = ids.iter().map(|(_, d)| d.clone()).collect();
    let servers = args
        .server
        .iter()
        .map(|s| Url::parse(s))
        .collect::<io::Result<Vec<_>>>()?;
    drive::setup(&servers[0], &token, &script, &feeds, &dates)
        .map_err(|e| io::Error::other(format!("setting up the match: {e}")))?;
    // In a cluster the other nodes learn of the matches through Redis: wait for them.
    for server in &servers[1..] {
        let mut c = Client::with_addr(server.addr, &server.host, None);
        let deadline = Instant::now() + Duration::from_secs(10);
        for feed in &feeds {
            let path = format!("/1/match/{}", feed.id);
            while !c.request("GET", &path, None).is_ok_and(|r| r.status == 200) {
                if Instant::now() >= deadline {
                    return Err(io::Error::other(format!(
                        "{}: match {} not known there 10 s after creating it on {}",
                        server.host, feed.id, servers[0].host
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(Driving {
        mode,
        plan,
        feeds,
        target: Some(Target::Admin { servers, token }),
    })
}

/// Where the watchers connect: the servers and the path.
fn watch_target(args: &LoadArgs) -> io::Result<(Vec<Endpoint>, String)> {
    let endpoint = |u: Url| Endpoint {
        addr: u.addr,
        host: u.host,
    };
    if args.raw.enabled {
        let u = Url::parse(args.raw.subscribe.as_deref().unwrap_or_default())?;
        let path = u.path.clone();
        return Ok((vec![endpoint(u)], path));
    }
    match args.protocol {
        Protocol::Ws => {
            let servers = args
                .server
                .iter()
                .map(|s| Url::parse(s).map(endpoint))
                .collect::<io::Result<Vec<_>>>()?;
            Ok((servers, args.path.clone()))
        }
        Protocol::Tcp => {
            let server = Url::parse(args.primary_server())?;
            if let Some(t) = &args.tuning.tcp_server {
                let (addr, host) = super::server_addr(t)?;
                return Ok((vec![Endpoint { addr, host }], String::new()));
            }
            let mut c = Client::with_addr(server.addr, &server.host, None);
            let r = c.request("GET", "/1/checkin", None)?;
            let port = serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| v.get("port")?.as_u64())
                .ok_or_else(|| {
                    io::Error::other("GET /1/checkin gave no port: pass --tcp-server")
                })?;
            let addr = std::net::SocketAddr::new(server.addr.ip(), port as u16);
            Ok((
                vec![Endpoint {
                    addr,
                    host: addr.to_string(),
                }],
                String::new(),
            ))
        }
    }
}

struct Monitor<'a> {
    progress: &'a Progress,
    clients: usize,
    pids: &'a [u32],
    origin: Instant,
    timeline: Vec<Sample>,
    last_sample: Option<Instant>,
    tty: bool,
    quiet: bool,
    last_line: Instant,
}

impl Monitor<'_> {
    fn tick(&mut self, phase: &str) {
        let now = Instant::now();
        if self
            .last_sample
            .is_some_and(|t| now - t < Duration::from_millis(250))
        {
            return;
        }
        self.last_sample = Some(now);
        let p = self.progress;
        let s = Sample {
            t_s: self.origin.elapsed().as_secs_f64(),
            connected: p.connected.load(Ordering::Relaxed),
            open: p.open.load(Ordering::Relaxed),
            deliveries: p.deliveries.load(Ordering::Relaxed),
            rss: procfs::rss_bytes_sum(self.pids),
        };
        self.timeline.push(s);
        if self.quiet || (!self.tty && now - self.last_line < Duration::from_secs(5)) {
            return;
        }
        self.last_line = now;
        let rss = s
            .rss
            .map_or(String::new(), |r| format!("  server RSS {} MiB", r >> 20));
        let line = format!(
            "[{:6.1}s] {phase:<10} connected {}/{}  ready {}  failed {}  open {}  delivered {}  reconnects {}{rss}",
            s.t_s,
            s.connected,
            self.clients,
            p.ready.load(Ordering::Relaxed),
            p.connect_failed.load(Ordering::Relaxed) + p.handshake_failed.load(Ordering::Relaxed),
            s.open,
            s.deliveries,
            p.reconnects.load(Ordering::Relaxed),
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        let _ = io::stderr().flush();
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
    let (targets, path) = watch_target(args)?;
    let checkin = (args.checkin && !args.raw.enabled && args.protocol == Protocol::Ws)
        .then(|| targets.clone());
    let shown: Vec<String> = targets.iter().map(|t| t.addr.to_string()).collect();
    let shown = shown.join(",");
    let cfg = Arc::new(WatchConfig {
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
        subscribe_message: args.raw.subscribe_message.clone(),
        feeds: feeds.clone(),
        clients,
        sources: plan.sources,
        concurrency: args.tuning.concurrency,
        rate_per_thread: args.tuning.ramp.map(|r| r / plan.threads as f64),
        origin,
    });
    let progress = Arc::new(Progress::default());
    if !args.quiet {
        eprintln!(
            "load: {clients} watchers ({:?}, {mode}) over {} thread(s) and {} source address(es) -> {shown}{}",
            cfg.protocol,
            plan.threads,
            plan.sources,
            if args.reconnect { " (reconnecting)" } else { "" }
        );
    }
    let mut server = ServerUse {
        rss_before: procfs::rss_bytes_sum(&args.server_pid),
        kernel_before: kernel_bytes(),
        ..ServerUse::default()
    };
    let threads: Vec<_> = (0..plan.threads)
        .map(|t| {
            let (cfg, progress) = (cfg.clone(), progress.clone());
            let indices: Vec<usize> = (t..clients).step_by(plan.threads).collect();
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || watch::run_thread(cfg, progress, indices))
        })
        .collect::<io::Result<_>>()?;
    let mut mon = Monitor {
        progress: &progress,
        clients,
        pids: &args.server_pid,
        origin,
        timeline: Vec::new(),
        last_sample: None,
        tty: io::stderr().is_terminal(),
        quiet: args.quiet,
        last_line: Instant::now(),
    };
    // Phase 1: every watcher connected and ready (or failed).
    let connect_start = Instant::now();
    let connect_deadline = connect_start + Duration::from_secs(args.tuning.connect_timeout);
    while progress.ready.load(Ordering::Acquire) + progress.failed_early.load(Ordering::Acquire)
        < clients as u64
        && Instant::now() < connect_deadline
    {
        mon.tick("connecting");
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_secs = connect_start.elapsed().as_secs_f64();
    server.rss_ready = procfs::rss_bytes_sum(&args.server_pid);
    server.kernel_ready = kernel_bytes();
    let cpu_before = procfs::cpu_us_sum(&args.server_pid);
    let own_cpu_before = procfs::cpu_us(std::process::id());
    // Phase 2: publish (in its own thread, so this one keeps sampling), then drain.
    let publisher = target.map(|target| {
        let (feeds, events) = (feeds.clone(), events.clone());
        std::thread::spawn(move || drive::publish(&target, &events, &feeds, origin))
    });
    let mut published: Option<Published> = None;
    let mut publish_error = None;
    let mut publisher = publisher;
    let mut drain_deadline = if publisher.is_none() {
        Some(Instant::now() + Duration::from_secs(args.tuning.connect_timeout.max(600)))
    } else {
        None
    };
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
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    progress.stop.store(true, Ordering::Release);
    let cpu_after = procfs::cpu_us_sum(&args.server_pid);
    server.cpu_during_delivery_us = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some((a.0 + a.1).saturating_sub(b.0 + b.1)),
        _ => None,
    };
    server.cpu_user_during_delivery_us = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a.0.saturating_sub(b.0)),
        _ => None,
    };
    server.harness_cpu_during_delivery_us =
        match (own_cpu_before, procfs::cpu_us(std::process::id())) {
            (Some(b), Some(a)) => Some((a.0 + a.1).saturating_sub(b.0 + b.1)),
            _ => None,
        };
    server.rss_end = procfs::rss_bytes_sum(&args.server_pid);
    mon.last_sample = None;
    mon.tick("done");
    let timeline = std::mem::take(&mut mon.timeline);
    let lens: Vec<usize> = feeds.iter().map(|f| f.sent_ns.len()).collect();
    let mut latency = LatencyStats::new(&lens);
    let mut per_server = std::collections::BTreeMap::new();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(clients);
    for h in threads {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))?;
        latency.merge(&r.stats);
        for (addr, h) in r.per_server {
            let entry = per_server
                .entry(addr.to_string())
                .or_insert_with(super::stats::histogram);
            let _ = entry.add(&h);
        }
        outcomes.extend(r.outcomes);
    }
    let tally = report::tally(&feeds, &outcomes);
    let extra = json!({
        "mode": mode,
        "protocol": cfg.protocol,
        "raw": args.raw.enabled,
        "matches": feeds.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        "plan": plan,
        "server_url": args.server,
        "latency_per_server_us": per_server
            .iter()
            .map(|(a, h)| (a.clone(), json!(super::stats::Percentiles::of(h))))
            .collect::<serde_json::Map<_, _>>(),
        "server_pid": args.server_pid,
        "ramp_per_s": args.tuning.ramp,
    });
    let data = RunData {
        tally: &tally,
        latency: &latency,
        feeds: &feeds,
        published: published.as_ref(),
        publish_error,
        connect_secs,
        server,
        timeline: &timeline,
        extra,
    };
    let report = report::to_json(&data);
    let passed = report["passed"].as_bool().unwrap_or(false);
    let p99_us = report["latency_us"]["p99"].as_f64().unwrap_or(0.0);
    Ok(RunResult {
        report,
        passed,
        p99_us,
        hist: latency.hist,
        timeline,
    })
}
