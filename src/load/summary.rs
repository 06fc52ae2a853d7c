//! The summary table a run prints on the terminal, read from its [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write;

use super::report::Report;

/// The summary table for the terminal.
pub fn summary(r: &Report) -> String {
    let mut s = Table::default();
    watchers(&mut s, r);
    if r.reconnects > 0 || r.watchers_per_server.len() > 1 {
        failover(&mut s, r);
    }
    latency(&mut s, r);
    costs(&mut s, r);
    for (e, count) in r.errors.iter().take(8) {
        s.line("error", format!("{count} × {e}"));
    }
    if let Some(e) = &r.failures.publish {
        s.line("publisher", e.clone());
    }
    s.line(
        "result",
        if r.passed {
            "PASS: every watcher got every event, in order".into()
        } else {
            "FAIL".into()
        },
    );
    s.0
}

/// Lines of `label  value`.
#[derive(Default)]
struct Table(String);

impl Table {
    fn line(&mut self, label: &str, value: String) {
        let _ = writeln!(self.0, "  {label:<18}{value}");
    }
}

/// Watchers, events and the verification counts.
fn watchers(s: &mut Table, r: &Report) {
    let f = &r.failures;
    s.line(
        "watchers",
        format!(
            "{} / {} connected  ({:.0} connects/s; failures: connect {}, handshake {}, \
             no status {})",
            r.connected, r.clients, r.connect_per_s, f.connect, f.handshake, f.no_status
        ),
    );
    s.line(
        "events",
        format!(
            "{} published, {} of {} deliveries",
            r.events, r.deliveries, r.expected_deliveries
        ),
    );
    s.line(
        "verification",
        format!(
            "lost {}  duplicated {}  reordered {}  unexpected closes {}  unfinished {}",
            r.lost, r.duplicated, r.reordered, f.unexpected_closes, f.unfinished
        ),
    );
}

/// Reconnects and where the watchers were (a cluster run).
fn failover(s: &mut Table, r: &Report) {
    let per = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(a, c)| format!("{a} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (retries, recovered) = r
        .publish
        .as_ref()
        .map_or((0, 0), |p| (p.retries, p.recovered));
    s.line(
        "failover",
        format!(
            "{} reconnects by {} watchers (at most {} each); publisher retries {retries}, \
             recovered {recovered}",
            r.reconnects, r.reconnected_watchers, r.reconnects_max_per_watcher
        ),
    );
    s.line("watchers at start", per(&r.watchers_per_server));
    s.line("watchers at end", per(&r.watchers_per_server_end));
}

/// Fan-out latency (per server too, with several), the last watcher per event, throughput.
fn latency(s: &mut Table, r: &Report) {
    let l = &r.latency_us;
    s.line(
        "fan-out latency",
        format!(
            "p50 {}  p99 {}  p999 {}  max {}",
            fmt_us(l.p50),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max)
        ),
    );
    let per_server = &r.run.latency_per_server_us;
    if per_server.len() > 1 {
        for (addr, p) in per_server {
            s.line(
                "  on server",
                format!(
                    "{addr}: p50 {}  p99 {}  max {}  ({} frames)",
                    fmt_us(p.p50),
                    fmt_us(p.p99),
                    fmt_us(p.max),
                    p.count
                ),
            );
        }
    }
    let last = |v: Option<f64>| v.map_or("-".into(), fmt_us);
    let spread = &r.last_delivery_summary_us;
    s.line(
        "last watcher",
        format!(
            "per event: p50 {}  p99 {}  max {}",
            last(spread.p50),
            last(spread.p99),
            last(spread.max)
        ),
    );
    if let Some(fps) = r.frames_per_s {
        let peak = r.peak_event_frames_per_s.unwrap_or(0.0);
        s.line(
            "throughput",
            format!(
                "{fps:.0} frames/s over the match, {peak:.0} frames/s within one event's fan-out"
            ),
        );
    }
}

/// What the run cost the server and the harness.
fn costs(s: &mut Table, r: &Report) {
    let rss = r.server.rss_ready;
    let cpu = r.server_cpu_us_per_delivery;
    if rss.is_some() || cpu.is_some() {
        s.line(
            "server",
            format!(
                "RSS {}  ({} per connection)  CPU {} per delivered frame",
                rss.map_or("-".into(), |r| format!("{:.1} MiB", r as f64 / 1048576.0)),
                r.server_rss_bytes_per_connection
                    .map_or("-".into(), |b| format!("{b:.0} B")),
                cpu.map_or("-".into(), |c| format!("{c:.2} µs"))
            ),
        );
    }
    if let Some(h) = r.harness_cpu_us_per_delivery {
        let ratio = r.harness_to_server_cpu.map_or(String::new(), |x| {
            format!(" = {x:.2}× the server's per delivery")
        });
        s.line(
            "harness",
            format!("CPU {h:.2} µs per received frame{ratio}"),
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::plan::compute;
    use crate::load::report::{RunData, RunInfo, ServerUse};
    use crate::load::stats::LatencyStats;
    use crate::load::tally::Tally;
    use crate::load::Protocol;

    fn report(tally: &Tally, publish_error: Option<String>) -> Report {
        Report::new(RunData {
            tally,
            latency: &LatencyStats::new(&[]),
            feeds: &[],
            published: None,
            publish_error,
            connect_secs: 1.0,
            server: ServerUse::default(),
            timeline: &[],
            run: RunInfo {
                mode: "watch".into(),
                protocol: Protocol::Ws,
                tls: false,
                raw: false,
                matches: Vec::new(),
                plan: compute(2, None, None, 20_000, 28_000).unwrap(),
                server_url: Vec::new(),
                latency_per_server_us: Default::default(),
                server_pid: Vec::new(),
                ramp_per_s: None,
            },
        })
    }

    #[test]
    fn a_clean_run_passes_and_a_publisher_failure_fails_it() {
        let tally = Tally {
            clients: 2,
            connected: 2,
            ..Tally::default()
        };
        let good = report(&tally, None);
        assert!(good.passed);
        let text = summary(&good);
        assert!(text.contains("2 / 2 connected"), "{text}");
        assert!(text.contains("PASS"), "{text}");
        let bad = report(&tally, Some("post 3: 503".into()));
        assert!(!bad.passed);
        let text = summary(&bad);
        assert!(text.contains("publisher         post 3: 503"), "{text}");
        assert!(text.trim_end().ends_with("FAIL"), "{text}");
    }

    #[test]
    fn the_json_report_keeps_the_documented_keys() {
        let json = serde_json::to_value(report(&Tally::default(), None)).unwrap();
        for key in [
            "passed",
            "clients",
            "connected",
            "events",
            "deliveries",
            "lost",
            "duplicated",
            "reordered",
            "failures",
            "latency_us",
            "last_delivery_us",
            "per_event",
            "server",
            "machine",
            "kernel",
            "command",
            "version",
            "mode",
            "protocol",
            "tls",
            "plan",
        ] {
            assert!(json.get(key).is_some(), "no {key} in {json:#}");
        }
        assert_eq!(json["failures"]["publish"], serde_json::Value::Null);
    }
}
