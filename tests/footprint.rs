//! The per-connection memory figures `tuning/check` estimates with (`server::footprint`) are
//! not below what the real server costs: `matchstream load` connects plain and TLS watchers
//! to a match and reports the server's RSS growth per connected watcher.

mod common;

use std::time::Duration;

use common::*;
use matchstream::server::footprint::{PLAIN_WATCHER_BYTES, TLS_WATCHER_BYTES};

/// Watchers per measurement: enough that a worker's fixed costs spread thin.
const CLIENTS: &str = "10000";

/// The server's RSS growth per watcher while `CLIENTS` watchers wait for the sample match.
fn measured_bytes_per_watcher(server: &Server, extra: &[&str]) -> f64 {
    let (url, pid) = (server.url(), server.pid().to_string());
    let args = [
        "--server",
        &url,
        "--server-pid",
        &pid,
        "--clients",
        CLIENTS,
        "--replay",
        "sample",
        "--speed",
        "1000",
        "--admin-token",
        TOKEN,
        "--connect-timeout",
        "60",
        "--drain",
        "10",
    ];
    let args: Vec<&str> = args.iter().chain(extra).copied().collect();
    let run = load::run_load(&args, Duration::from_secs(240));
    let (out, report) = (run.output, run.report);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["lost"], 0, "{report:#}");
    let per = report["server_rss_bytes_per_connection"]
        .as_f64()
        .unwrap_or_else(|| panic!("no RSS figure: {report:#}"));
    eprintln!("{extra:?}: {per:.0} B per watcher (figure: plain {PLAIN_WATCHER_BYTES}, TLS {TLS_WATCHER_BYTES})");
    per
}

#[test]
fn a_plain_watcher_costs_no_more_than_the_figure_tuning_check_uses() {
    let server = Server::start(&["--workers", "1", "--plane-ring-entries", "1024"]);
    let per = measured_bytes_per_watcher(&server, &[]);
    // A record and a subscription are real memory: a reading near zero is a broken reading.
    assert!(per > 64.0, "{per} B per watcher");
    assert!(
        per <= PLAIN_WATCHER_BYTES as f64,
        "{per} B > {PLAIN_WATCHER_BYTES} B"
    );
}

#[test]
fn a_tls_watcher_costs_no_more_than_the_figure_tuning_check_uses() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--workers", "1"]);
    let ca = pki.ca_pem.display().to_string();
    let per = measured_bytes_per_watcher(&server, &["--tls", "--ca", &ca]);
    // A plane record (128 B) and a TLS session beside it are real memory.
    assert!(per > 128.0, "{per} B per watcher");
    assert!(
        per <= TLS_WATCHER_BYTES as f64,
        "{per} B > {TLS_WATCHER_BYTES} B"
    );
}
