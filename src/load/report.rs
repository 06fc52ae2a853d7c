//! The end of a run: every watcher's outcome tallied against what was published, the JSON
//! report (keys fixed by DESIGN.md) and the summary table.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::{json, Value};

use super::drive::{Feed, Published, UNKNOWN};
use super::stats::{LatencyStats, Percentiles};
use super::watch::{Outcome, Phase};

/// Failed watchers described one by one in the report.
const MAX_SAMPLES: usize = 5;

/// What every watcher got, summed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Watchers asked for.
    pub clients: u64,
    /// Watchers that connected and finished the handshake.
    pub connected: u64,
    /// TCP connects that failed.
    pub connect_failures: u64,
    /// Opening handshakes that failed.
    pub handshake_failures: u64,
    /// Connected watchers that never got a status.
    pub no_status: u64,
    /// Connections that ended before the match did, or with a close code other than 1000.
    pub unexpected_closes: u64,
    /// Watchers still connecting or watching when the run ended.
    pub unfinished: u64,
    /// Events in the watched matches during the run (all matches).
    pub events: u64,
    /// Events received (first copies).
    pub deliveries: u64,
    /// Events the watchers should have received.
    pub expected_deliveries: u64,
    /// Events some watcher never got.
    pub lost: u64,
    /// Events some watcher got twice.
    pub duplicated: u64,
    /// Events some watcher got after a later one.
    pub reordered: u64,
    /// Events that came before the status.
    pub before_status: u64,
    /// Failures by kind (first reason of each watcher).
    pub errors: BTreeMap<String, u64>,
    /// A few failed watchers in detail, for diagnosis.
    pub failed_samples: Vec<String>,
    /// Reconnects after dropped connections (all watchers).
    pub reconnects: u64,
    /// The most reconnects of one watcher.
    pub max_reconnects: u64,
    /// Watchers that reconnected at least once.
    pub reconnected_watchers: u64,
    /// Watchers per server they first watched on.
    pub watchers_per_server: BTreeMap<String, u64>,
    /// Watchers per server they watched on last.
    pub watchers_per_server_end: BTreeMap<String, u64>,
}

impl Tally {
    /// Whether every watcher got everything.
    pub fn passed(&self) -> bool {
        self.connected == self.clients
            && self.connect_failures + self.handshake_failures + self.no_status == 0
            && self.unexpected_closes + self.unfinished == 0
            && self.lost + self.duplicated + self.reordered + self.before_status == 0
    }
}

/// The last event number of each feed: what the publisher posted, or in a passive run the
/// `stop` (or the highest number) some watcher saw.
pub fn final_seqs(feeds: &[Feed], outcomes: &[Outcome]) -> Vec<u64> {
    feeds
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let posted = f.final_seq.load(Ordering::Acquire);
            if posted != 0 {
                return posted;
            }
            let mine = outcomes.iter().filter(|o| o.feed as usize == i);
            let stop = mine.clone().filter_map(|o| o.stop_seq).max();
            stop.unwrap_or_else(|| mine.map(|o| o.checker.last()).max().unwrap_or(0))
        })
        .collect()
}

/// Sums the outcomes against the feeds' last numbers.
pub fn tally(feeds: &[Feed], outcomes: &[Outcome]) -> Tally {
    let finals = final_seqs(feeds, outcomes);
    let mut t = Tally {
        clients: outcomes.len() as u64,
        ..Tally::default()
    };
    for (i, f) in feeds.iter().enumerate() {
        let base = f.base.load(Ordering::Acquire);
        let start = if base != UNKNOWN {
            base
        } else {
            let starts = outcomes.iter().filter(|o| o.feed as usize == i);
            starts
                .filter_map(|o| o.checker.start())
                .min()
                .unwrap_or(finals[i])
        };
        t.events += finals[i].saturating_sub(start);
    }
    for o in outcomes {
        t.reconnects += u64::from(o.reconnects);
        t.max_reconnects = t.max_reconnects.max(u64::from(o.reconnects));
        t.reconnected_watchers += u64::from(o.reconnects > 0);
        if let Some(a) = o.first_server {
            *t.watchers_per_server.entry(a.to_string()).or_default() += 1;
        }
        if let Some(a) = o.server {
            *t.watchers_per_server_end.entry(a.to_string()).or_default() += 1;
        }
        if let Some(e) = &o.error {
            let key: String = e.chars().take(100).collect();
            *t.errors.entry(key).or_default() += 1;
        }
        match o.phase {
            Phase::Pending => {
                t.unfinished += 1;
                continue;
            }
            Phase::ConnectFailed => {
                t.connect_failures += 1;
                continue;
            }
            Phase::HandshakeFailed => {
                t.handshake_failures += 1;
                continue;
            }
            Phase::Watching if !o.unexpected_close => t.unfinished += 1,
            Phase::Watching | Phase::Finished => {}
        }
        t.connected += 1;
        if o.unexpected_close {
            t.unexpected_closes += 1;
        }
        let c = &o.checker;
        t.before_status += c.before_status;
        if !c.has_status() {
            t.no_status += 1;
            continue;
        }
        let last = finals[o.feed as usize];
        t.deliveries += c.delivered;
        t.expected_deliveries += c.expected(last);
        t.lost += c.lost(last);
        t.duplicated += c.duplicated;
        t.reordered += c.reordered;
        let failed = o.unexpected_close || c.lost(last) + c.duplicated + c.reordered > 0;
        if failed && t.failed_samples.len() < MAX_SAMPLES {
            t.failed_samples.push(format!(
                "match {}: status seq {:?}, last seq {}, of {last}; missing {:?}; duplicated {}, \
                 reordered {}; {}",
                feeds[o.feed as usize].id,
                c.start(),
                c.last(),
                &c.missing()[..c.missing().len().min(8)],
                c.duplicated,
                c.reordered,
                o.error.as_deref().unwrap_or("")
            ));
        }
    }
    t
}

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
    /// The user part of `cpu_during_delivery_us`, µs.
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
    /// Extra top-level keys (mode, protocol, plan…).
    pub extra: Value,
}

/// Per event: deliveries and the time until the last watcher had it, µs.
fn per_event(data: &RunData) -> (Vec<Value>, Vec<f64>) {
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
            .map(|k| k.as_str());
        rows.push(json!({ "index": i + 1, "kind": kind, "deliveries": deliveries, "last_delivery_us": last_us }));
        last.push(last_us);
    }
    (rows, last)
}

/// The JSON report.
pub fn to_json(data: &RunData) -> Value {
    let t = data.tally;
    let lat = Percentiles::of(&data.latency.hist);
    let (rows, last) = per_event(data);
    let mut last_sorted: Vec<f64> = last.iter().copied().filter(|&v| v > 0.0).collect();
    last_sorted.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        last_sorted
            .get(((last_sorted.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let window_s = data.published.map(|p| {
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
        (end.max(p.ended_ns) - p.started_ns) as f64 / 1e9
    });
    let connected = t.connected.max(1) as f64;
    let rss_per_conn = match (data.server.rss_before, data.server.rss_ready) {
        (Some(b), Some(r)) if t.connected > 0 => Some(r.saturating_sub(b) as f64 / connected),
        _ => None,
    };
    let kernel_per_conn = match (data.server.kernel_before, data.server.kernel_ready) {
        (Some(b), Some(r)) if t.connected > 0 => Some(r.saturating_sub(b) as f64 / connected),
        _ => None,
    };
    let cpu_per_delivery = data
        .server
        .cpu_during_delivery_us
        .filter(|_| t.deliveries > 0)
        .map(|c| c as f64 / t.deliveries as f64);
    let harness_cpu_per_delivery = data
        .server
        .harness_cpu_during_delivery_us
        .filter(|_| t.deliveries > 0)
        .map(|c| c as f64 / t.deliveries as f64);
    // The best single event: its watchers over the time until the last one had it.
    let peak_fps = data
        .latency
        .per_event
        .iter()
        .flatten()
        .filter(|a| a.last_ns > 0)
        .map(|a| a.deliveries as f64 / (a.last_ns as f64 / 1e9))
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    let ack = data.published.map(|p| {
        let mut v = p.ack_us.clone();
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                .copied()
        };
        json!({
            "posts": p.posts, "p50_us": at(0.5), "max_us": v.last(),
            "retries": p.retries, "recovered": p.recovered, "failovers": p.failovers,
        })
    });
    let mut report = json!({
        "passed": t.passed() && data.publish_error.is_none(),
        "clients": t.clients,
        "connected": t.connected,
        "events": t.events,
        "deliveries": t.deliveries,
        "expected_deliveries": t.expected_deliveries,
        "lost": t.lost,
        "duplicated": t.duplicated,
        "reordered": t.reordered,
        "failures": {
            "connect": t.connect_failures, "handshake": t.handshake_failures,
            "no_status": t.no_status, "unexpected_closes": t.unexpected_closes,
            "unfinished": t.unfinished, "before_status": t.before_status,
            "publish": data.publish_error,
        },
        "reconnects": t.reconnects,
        "reconnects_max_per_watcher": t.max_reconnects,
        "reconnected_watchers": t.reconnected_watchers,
        "watchers_per_server": t.watchers_per_server,
        "watchers_per_server_end": t.watchers_per_server_end,
        "errors": t.errors,
        "failed_samples": t.failed_samples,
        "latency_us": lat,
        "last_delivery_us": last,
        "last_delivery_summary_us": { "p50": pick(0.5), "p99": pick(0.99), "max": last_sorted.last() },
        "per_event": rows,
        "connect_seconds": data.connect_secs,
        "connect_per_s": t.connected as f64 / data.connect_secs.max(1e-9),
        "delivery_seconds": window_s,
        "frames_per_s": window_s.filter(|&w| w > 0.0).map(|w| t.deliveries as f64 / w),
        "server_rss_bytes_per_connection": rss_per_conn,
        "server_cpu_us_per_delivery": cpu_per_delivery,
        "kernel_bytes_per_connection_both_ends": kernel_per_conn,
        "harness_cpu_us_per_delivery": harness_cpu_per_delivery,
        "peak_event_frames_per_s": peak_fps,
        "server": data.server,
        "publish": ack,
        "timeline": data.timeline,
        "machine": machine(),
        "kernel": kernel(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "version": env!("CARGO_PKG_VERSION"),
    });
    if let (Value::Object(r), Value::Object(extra)) = (&mut report, &data.extra) {
        r.extend(extra.clone());
    }
    report
}

/// The kernel release.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Host name, CPU model and count, memory.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')))
        .map(|(_, m)| m.trim().to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
    json!({
        "hostname": std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).ok(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": model,
        "mem_total_bytes": mem_kb.map(|k| k * 1024),
    })
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

/// The summary table for the terminal.
pub fn summary(report: &Value) -> String {
    let n = |k: &str| report.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let f = |k: &str| report.pointer(k).and_then(Value::as_f64);
    let lat = |k: &str| fmt_us(f(&format!("/latency_us/{k}")).unwrap_or(0.0));
    let last = |k: &str| f(&format!("/last_delivery_summary_us/{k}")).map_or("-".into(), fmt_us);
    let mut s = String::new();
    let line =
        |s: &mut String, label: &str, value: String| s.push_str(&format!("  {label:<18}{value}\n"));
    line(
        &mut s,
        "watchers",
        format!(
        "{} / {} connected  ({:.0} connects/s; failures: connect {}, handshake {}, no status {})",
        n("connected"), n("clients"), n("connect_per_s"),
        f("/failures/connect").unwrap_or(0.0), f("/failures/handshake").unwrap_or(0.0),
        f("/failures/no_status").unwrap_or(0.0)
    ),
    );
    line(
        &mut s,
        "events",
        format!(
            "{} published, {} of {} deliveries",
            n("events"),
            n("deliveries"),
            n("expected_deliveries")
        ),
    );
    line(
        &mut s,
        "verification",
        format!(
            "lost {}  duplicated {}  reordered {}  unexpected closes {}  unfinished {}",
            n("lost"),
            n("duplicated"),
            n("reordered"),
            f("/failures/unexpected_closes").unwrap_or(0.0),
            f("/failures/unfinished").unwrap_or(0.0)
        ),
    );
    if n("reconnects") > 0.0
        || report
            .get("watchers_per_server")
            .is_some_and(|m| m.as_object().is_some_and(|m| m.len() > 1))
    {
        let per = |k: &str| {
            report
                .get(k)
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(a, c)| format!("{a} {c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default()
        };
        line(
            &mut s,
            "failover",
            format!(
                "{} reconnects by {} watchers (at most {} each); publisher retries {}, recovered {}",
                n("reconnects"),
                n("reconnected_watchers"),
                n("reconnects_max_per_watcher"),
                f("/publish/retries").unwrap_or(0.0),
                f("/publish/recovered").unwrap_or(0.0)
            ),
        );
        line(&mut s, "watchers at start", per("watchers_per_server"));
        line(&mut s, "watchers at end", per("watchers_per_server_end"));
    }
    line(
        &mut s,
        "fan-out latency",
        format!(
            "p50 {}  p99 {}  p999 {}  max {}",
            lat("p50"),
            lat("p99"),
            lat("p999"),
            lat("max")
        ),
    );
    if let Some(per) = report
        .get("latency_per_server_us")
        .and_then(Value::as_object)
        .filter(|m| m.len() > 1)
    {
        for (addr, p) in per {
            let q = |k: &str| fmt_us(p.get(k).and_then(Value::as_f64).unwrap_or(0.0));
            line(
                &mut s,
                "  on server",
                format!(
                    "{addr}: p50 {}  p99 {}  max {}  ({} frames)",
                    q("p50"),
                    q("p99"),
                    q("max"),
                    p.get("count").and_then(Value::as_u64).unwrap_or(0)
                ),
            );
        }
    }
    line(
        &mut s,
        "last watcher",
        format!(
            "per event: p50 {}  p99 {}  max {}",
            last("p50"),
            last("p99"),
            last("max")
        ),
    );
    if let Some(fps) = f("/frames_per_s") {
        let peak = f("/peak_event_frames_per_s").unwrap_or(0.0);
        line(
            &mut s,
            "throughput",
            format!(
                "{fps:.0} frames/s over the match, {peak:.0} frames/s within one event's fan-out"
            ),
        );
    }
    let rss = f("/server/rss_ready");
    let per = f("/server_rss_bytes_per_connection");
    let cpu = f("/server_cpu_us_per_delivery");
    if rss.is_some() || cpu.is_some() {
        line(
            &mut s,
            "server",
            format!(
                "RSS {}  ({} per connection)  CPU {} per delivered frame",
                rss.map_or("-".into(), |r| format!("{:.1} MiB", r / 1048576.0)),
                per.map_or("-".into(), |b| format!("{b:.0} B")),
                cpu.map_or("-".into(), |c| format!("{c:.2} µs"))
            ),
        );
    }
    if let Some(h) = f("/harness_cpu_us_per_delivery") {
        line(
            &mut s,
            "harness",
            format!("CPU {h:.2} µs per received frame"),
        );
    }
    if let Some(Value::Object(errors)) = report.get("errors") {
        for (e, count) in errors.iter().take(8) {
            line(&mut s, "error", format!("{count} × {e}"));
        }
    }
    if let Some(Value::String(e)) = report.pointer("/failures/publish") {
        line(&mut s, "publisher", e.clone());
    }
    let passed = report
        .get("passed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    line(
        &mut s,
        "result",
        if passed {
            "PASS: every watcher got every event, in order".into()
        } else {
            "FAIL".into()
        },
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MatchScript;
    use crate::load::drive::numbered_plan;
    use std::time::Duration;

    fn watcher(events: &[u64], stop: bool) -> Outcome {
        let mut o = Outcome {
            phase: Phase::Finished,
            ..Outcome::default()
        };
        o.checker.status(0);
        for &e in events {
            o.checker.event(e);
        }
        o.stop_seq = stop.then_some(*events.last().unwrap());
        o
    }

    #[test]
    fn a_lost_event_fails_the_run() {
        let feeds = vec![Feed::new(
            "m".into(),
            &numbered_plan(&MatchScript::sample(), Duration::ZERO, 2),
        )];
        feeds[0].base.store(0, Ordering::Release);
        feeds[0].final_seq.store(4, Ordering::Release);
        let good = tally(
            &feeds,
            &[watcher(&[1, 2, 3, 4], true), watcher(&[1, 2, 3, 4], true)],
        );
        assert!(good.passed(), "{good:?}");
        assert_eq!(
            (good.events, good.deliveries, good.expected_deliveries),
            (4, 8, 8)
        );
        let bad = tally(
            &feeds,
            &[watcher(&[1, 2, 4], true), watcher(&[1, 3, 2, 4], true)],
        );
        assert!(!bad.passed());
        assert_eq!((bad.lost, bad.reordered), (1, 1));
    }

    #[test]
    fn a_passive_run_takes_the_end_from_the_stop_seen() {
        let feeds = vec![Feed::new("m".into(), &[])];
        let t = tally(
            &feeds,
            &[watcher(&[1, 2, 3], true), watcher(&[1, 2], false)],
        );
        assert_eq!((t.events, t.lost), (3, 1));
    }
}
