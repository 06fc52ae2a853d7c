//! The end of a run as one typed [`Report`]: the verdict ([`super::tally`]), latencies,
//! throughput, what the run cost the server, and how the run was made. It is written as JSON
//! (`--report`, keys fixed by DESIGN.md) and printed as a table ([`super::summary`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::drive::{Feed, Published};
use super::plan::Plan;
use super::stats::{LatencyStats, Percentiles};
use super::tally::Tally;
use super::watch::Protocol;

/// The server's resource use around the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerUse {
    /// RSS before the watchers connected, bytes.
    pub rss_before: Option<u64>,
    /// RSS once every watcher was ready, bytes.
    pub rss_ready: Option<u64>,
    /// RSS at the end, bytes.
    pub rss_end: Option<u64>,
    /// User + system CPU while events were published and delivered, µs.
    pub cpu_during_delivery_us: Option<u64>,
    /// The user part of `cpu_during_delivery_us`, µs, as the kernel's split gives it: not a
    /// reliable per-phase figure (see [`super::procfs::cpu_us`]); kept for older readers.
    pub cpu_user_during_delivery_us: Option<u64>,
    /// The harness's own CPU over the same time, µs (is the harness the bottleneck?).
    pub harness_cpu_during_delivery_us: Option<u64>,
    /// Kernel slab + TCP buffer memory of the whole box before the watchers connected, bytes.
    pub kernel_before: Option<u64>,
    /// The same once every watcher was ready, bytes.
    pub kernel_ready: Option<u64>,
}

/// One sample of the run over time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t_s: f64,
    /// Watchers connected so far.
    pub connected: u64,
    /// Watchers open now.
    pub open: u64,
    /// Events delivered so far.
    pub deliveries: u64,
    /// Server RSS, bytes.
    pub rss: Option<u64>,
}

/// How the run was made: mode, wire, matches, servers, the harness's plan.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// What drove the match (`replay …`, `every N ms…`, `watch`, `raw`).
    pub mode: String,
    /// The watchers' wire.
    pub protocol: Protocol,
    /// `--tls`: every connection spoke TLS.
    pub tls: bool,
    /// `--raw`: another server, numbered payloads.
    pub raw: bool,
    /// The watched matches.
    pub matches: Vec<String>,
    /// How the watchers were spread over threads and source addresses.
    pub plan: Plan,
    /// The `--server` list.
    pub server_url: Vec<String>,
    /// Fan-out latency per server (only with several servers), µs.
    pub latency_per_server_us: BTreeMap<String, Percentiles>,
    /// The `--server-pid` list.
    pub server_pid: Vec<u32>,
    /// `--ramp`, connections per second.
    pub ramp_per_s: Option<f64>,
}

/// Everything a report is made of.
pub struct RunData<'a> {
    /// Tallied outcomes.
    pub tally: &'a Tally,
    /// Merged latencies.
    pub latency: &'a LatencyStats,
    /// The watched matches.
    pub feeds: &'a [Feed],
    /// The publisher's record, when the harness drove the match.
    pub published: Option<&'a Published>,
    /// A publisher failure.
    pub publish_error: Option<String>,
    /// Seconds from the first connect to the last watcher ready.
    pub connect_secs: f64,
    /// Server resource use.
    pub server: ServerUse,
    /// Samples over time.
    pub timeline: &'a [Sample],
    /// How the run was made.
    pub run: RunInfo,
}

/// Watchers that failed before or outside the event checks, by kind.
#[derive(Debug, Clone, Serialize)]
pub struct Failures {
    /// TCP connects that failed.
    pub connect: u64,
    /// Opening handshakes that failed.
    pub handshake: u64,
    /// Connected watchers that never got a status.
    pub no_status: u64,
    /// Connections that ended before the match did, or with a close other than 1000.
    pub unexpected_closes: u64,
    /// Watchers still connecting or watching when the run ended.
    pub unfinished: u64,
    /// Events that came before the status.
    pub before_status: u64,
    /// Why the publisher gave up, if it did.
    pub publish: Option<String>,
}

/// The median, 99th percentile and largest of a list, µs (`None` when it is empty).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// One published event: who got it and when the last watcher did.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    /// 1 for the first event of the run.
    pub index: usize,
    /// Its kind, in the first match.
    pub kind: Option<String>,
    /// Watchers that got it, all matches.
    pub deliveries: u64,
    /// Time from its publication until the last watcher had it, µs.
    pub last_delivery_us: f64,
}

/// The publisher's side of the run.
#[derive(Debug, Clone, Serialize)]
pub struct PublishSummary {
    /// Posts acknowledged.
    pub posts: u64,
    /// Median time from a post to its acknowledgement, µs.
    pub p50_us: Option<u64>,
    /// Longest time from a post to its acknowledgement, µs.
    pub max_us: Option<u64>,
    /// Posts sent again after a failure.
    pub retries: u64,
    /// Posts whose answer was lost but which the server had applied.
    pub recovered: u64,
    /// Times the publisher moved to the next server.
    pub failovers: u64,
}

/// The box the harness ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Host name.
    pub hostname: Option<String>,
    /// CPUs available to the harness.
    pub cpus: Option<usize>,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Memory, bytes.
    pub mem_total_bytes: Option<u64>,
}

/// The report of one verified run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every watcher got every event exactly once, in order, then a clean close, and the
    /// publisher posted everything.
    pub passed: bool,
    /// Watchers asked for.
    pub clients: u64,
    /// Watchers that connected and finished the handshake.
    pub connected: u64,
    /// Events in the watched matches during the run.
    pub events: u64,
    /// Events received (first copies), all watchers.
    pub deliveries: u64,
    /// Events the watchers should have received.
    pub expected_deliveries: u64,
    /// Events some watcher never got.
    pub lost: u64,
    /// Events some watcher got twice.
    pub duplicated: u64,
    /// Events some watcher got after a later one.
    pub reordered: u64,
    /// Failures other than lost, duplicated or reordered events.
    pub failures: Failures,
    /// Reconnects after dropped connections.
    pub reconnects: u64,
    /// The most reconnects of one watcher.
    pub reconnects_max_per_watcher: u64,
    /// Watchers that reconnected at least once.
    pub reconnected_watchers: u64,
    /// Watchers per server they first watched on.
    pub watchers_per_server: BTreeMap<String, u64>,
    /// Watchers per server they watched on last.
    pub watchers_per_server_end: BTreeMap<String, u64>,
    /// Failures by kind (the first reason of each watcher).
    pub errors: BTreeMap<String, u64>,
    /// A few failed watchers in detail.
    pub failed_samples: Vec<String>,
    /// Publish → watcher latency of every delivery.
    pub latency_us: Percentiles,
    /// Per event, the time until the last watcher had it, µs.
    pub last_delivery_us: Vec<f64>,
    /// The spread of `last_delivery_us` (events nobody got left out).
    pub last_delivery_summary_us: Spread,
    /// Per event: deliveries and the last one.
    pub per_event: Vec<EventRow>,
    /// Seconds from the first connect to the last watcher ready.
    pub connect_seconds: f64,
    /// Connections per second while connecting.
    pub connect_per_s: f64,
    /// Seconds from the first post until the last delivery.
    pub delivery_seconds: Option<f64>,
    /// Deliveries per second over `delivery_seconds`.
    pub frames_per_s: Option<f64>,
    /// Server RSS growth per connected watcher, bytes.
    pub server_rss_bytes_per_connection: Option<f64>,
    /// Server CPU per delivered frame, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Kernel memory growth per connection, both ends of loopback together, bytes.
    pub kernel_bytes_per_connection_both_ends: Option<f64>,
    /// The harness's CPU per received frame, µs.
    pub harness_cpu_us_per_delivery: Option<f64>,
    /// `harness_cpu_us_per_delivery` ÷ `server_cpu_us_per_delivery`, both over the same
    /// delivery phase of the same run: how much the harness measures itself (goal ≤ 0.5).
    pub harness_to_server_cpu: Option<f64>,
    /// The best single event: its watchers over the time until the last one had it.
    pub peak_event_frames_per_s: Option<f64>,
    /// The server's resource use.
    pub server: ServerUse,
    /// The publisher's side, when the harness drove the match.
    pub publish: Option<PublishSummary>,
    /// Samples over time.
    pub timeline: Vec<Sample>,
    /// The box.
    pub machine: Machine,
    /// The kernel release.
    pub kernel: String,
    /// The command line of the run.
    pub command: String,
    /// The harness's version.
    pub version: String,
    /// How the run was made.
    #[serde(flatten)]
    pub run: RunInfo,
}

impl Report {
    /// Builds the report of a finished run.
    pub fn new(data: RunData) -> Report {
        let t = data.tally;
        let (per_event, last_delivery_us) = per_event(&data);
        let mut last_sorted: Vec<f64> = last_delivery_us
            .iter()
            .copied()
            .filter(|&v| v > 0.0)
            .collect();
        last_sorted.sort_by(f64::total_cmp);
        let delivery_seconds = delivery_seconds(&data);
        let per_connection = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(b), Some(a)) if t.connected > 0 => {
                Some(a.saturating_sub(b) as f64 / t.connected as f64)
            }
            _ => None,
        };
        let per_delivery = |cpu_us: Option<u64>| {
            cpu_us
                .filter(|_| t.deliveries > 0)
                .map(|c| c as f64 / t.deliveries as f64)
        };
        let server = &data.server;
        Report {
            passed: t.passed() && data.publish_error.is_none(),
            clients: t.clients,
            connected: t.connected,
            events: t.events,
            deliveries: t.deliveries,
            expected_deliveries: t.expected_deliveries,
            lost: t.lost,
            duplicated: t.duplicated,
            reordered: t.reordered,
            failures: failures(t, data.publish_error.clone()),
            reconnects: t.reconnects,
            reconnects_max_per_watcher: t.max_reconnects,
            reconnected_watchers: t.reconnected_watchers,
            watchers_per_server: t.watchers_per_server.clone(),
            watchers_per_server_end: t.watchers_per_server_end.clone(),
            errors: t.errors.clone(),
            failed_samples: t.failed_samples.clone(),
            latency_us: Percentiles::of(&data.latency.hist),
            last_delivery_summary_us: Spread {
                p50: quantile(&last_sorted, 0.5),
                p99: quantile(&last_sorted, 0.99),
                max: last_sorted.last().copied(),
            },
            last_delivery_us,
            per_event,
            connect_seconds: data.connect_secs,
            connect_per_s: t.connected as f64 / data.connect_secs.max(1e-9),
            delivery_seconds,
            frames_per_s: delivery_seconds
                .filter(|&w| w > 0.0)
                .map(|w| t.deliveries as f64 / w),
            server_rss_bytes_per_connection: per_connection(server.rss_before, server.rss_ready),
            server_cpu_us_per_delivery: per_delivery(server.cpu_during_delivery_us),
            kernel_bytes_per_connection_both_ends: per_connection(
                server.kernel_before,
                server.kernel_ready,
            ),
            harness_cpu_us_per_delivery: per_delivery(server.harness_cpu_during_delivery_us),
            harness_to_server_cpu: cpu_ratio(
                server.harness_cpu_during_delivery_us,
                server.cpu_during_delivery_us,
            ),
            peak_event_frames_per_s: peak_event_frames_per_s(data.latency),
            publish: data.published.map(publish_summary),
            server: data.server.clone(),
            timeline: data.timeline.to_vec(),
            machine: machine(),
            kernel: kernel(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            version: env!("CARGO_PKG_VERSION").to_string(),
            run: data.run,
        }
    }
}

fn failures(t: &Tally, publish: Option<String>) -> Failures {
    Failures {
        connect: t.connect_failures,
        handshake: t.handshake_failures,
        no_status: t.no_status,
        unexpected_closes: t.unexpected_closes,
        unfinished: t.unfinished,
        before_status: t.before_status,
        publish,
    }
}

/// `harness_us` ÷ `server_us` (the same deliveries divide both), when both were read and the
/// server's is not zero.
fn cpu_ratio(harness_us: Option<u64>, server_us: Option<u64>) -> Option<f64> {
    match (harness_us, server_us) {
        (Some(h), Some(s)) if s > 0 => Some(h as f64 / s as f64),
        _ => None,
    }
}

/// The value at quantile `q` of an ascending list (nearest rank).
fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
}

/// Per event: deliveries and the time until the last watcher had it, µs.
fn per_event(data: &RunData) -> (Vec<EventRow>, Vec<f64>) {
    let (mut rows, mut last) = (Vec::new(), Vec::new());
    let events = data
        .latency
        .per_event
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(0);
    for i in 0..events {
        let aggs = data.latency.per_event.iter().filter_map(|f| f.get(i));
        let deliveries: u64 = aggs.clone().map(|a| a.deliveries).sum();
        let last_us = aggs.map(|a| a.last_ns).max().unwrap_or(0) as f64 / 1000.0;
        let kind = data
            .feeds
            .first()
            .and_then(|f| f.kinds.get(i))
            .map(|k| k.as_str().to_string());
        rows.push(EventRow {
            index: i + 1,
            kind,
            deliveries,
            last_delivery_us: last_us,
        });
        last.push(last_us);
    }
    (rows, last)
}

/// Seconds from the first post until the last delivery (or the last post), when the
/// harness published.
fn delivery_seconds(data: &RunData) -> Option<f64> {
    let p = data.published?;
    let end = data
        .feeds
        .iter()
        .zip(&data.latency.per_event)
        .flat_map(|(f, aggs)| {
            f.sent_ns
                .iter()
                .zip(aggs)
                .map(|(s, a)| s.load(Ordering::Acquire) + a.last_ns)
        })
        .max()
        .unwrap_or(p.ended_ns);
    Some((end.max(p.ended_ns) - p.started_ns) as f64 / 1e9)
}

/// The best single event: its watchers over the time until the last one had it.
fn peak_event_frames_per_s(latency: &LatencyStats) -> Option<f64> {
    latency
        .per_event
        .iter()
        .flatten()
        .filter(|a| a.last_ns > 0)
        .map(|a| a.deliveries as f64 / (a.last_ns as f64 / 1e9))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

fn publish_summary(p: &Published) -> PublishSummary {
    let mut ack = p.ack_us.clone();
    ack.sort_unstable();
    PublishSummary {
        posts: p.posts,
        p50_us: quantile(&ack, 0.5),
        max_us: ack.last().copied(),
        retries: p.retries,
        recovered: p.recovered,
        failovers: p.failovers,
    }
}

/// The kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Host name, CPU model and count, memory.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    Machine {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).ok(),
        cpu_model,
        mem_total_bytes: mem_kb.map(|k| k * 1024),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_ratio_needs_both_figures_and_a_server_that_worked() {
        assert_eq!(cpu_ratio(Some(450), Some(900)), Some(0.5));
        assert_eq!(cpu_ratio(None, Some(900)), None);
        assert_eq!(cpu_ratio(Some(450), None), None);
        assert_eq!(cpu_ratio(Some(450), Some(0)), None);
    }
}
