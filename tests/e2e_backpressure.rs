//! The bounded write queue through the real binary: past `--max-queued-writes` a write is
//! refused at once with 503 ("too many writes queued", `Retry-After`), nothing acknowledged is
//! lost, and the load harness's publisher rides it out (backs off and posts each event once)
//! while other publishers keep the queue full. (The harness's set-up requests are not retried:
//! the storm starts once its match exists.)

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const STORMERS: usize = 8;
/// How long the stormers keep the queue full (a burst the harness must ride out).
const STORM: Duration = Duration::from_secs(3);
const STORM_MID: &str = "tig-elp-2011-12-24";

/// Clears the flag when dropped.
struct Stop<'a>(&'a AtomicBool);

impl Drop for Stop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[test]
fn a_full_write_queue_refuses_with_503_and_the_harness_publisher_backs_off() {
    let server = Server::start(&["--max-queued-writes", "1"]);
    // The storm goes to a match of its own (the harness re-creates the sample match).
    let mut admin = server.admin();
    create_sample(&mut admin);
    let body = json!({"home": "tig", "visit": "elp", "start_date": "2011-12-24"}).to_string();
    let r = admin.request("POST", "/1/matches", Some(&body)).unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let storming = AtomicBool::new(true);
    let acked = AtomicU64::new(0);
    let busy = AtomicU64::new(0);
    let report = std::thread::scope(|scope| {
        // Whatever happens below, the stormers stop (the scope waits for them).
        let _stop = Stop(&storming);
        // The harness drives a match of its own and verifies every delivery.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_matchstream"))
            .arg("load")
            .args(["--server", &server.url(), "--admin-token", TOKEN])
            .args(["--clients", "20", "--every-ms", "10", "--events", "20"])
            .args(["--connect-timeout", "30", "--drain", "10", "--quiet"])
            .arg("--report")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Once the harness has set its match up (its set-up requests are not retried), the
        // stormers keep the queue full while its publisher posts.
        wait_until(Duration::from_secs(60), "the harness's watchers", || {
            server.metric_sum("matchstream_watchers") >= 20
        });
        let burst_ends = Instant::now() + STORM;
        for _ in 0..STORMERS {
            let (server, storming, acked, busy) = (&server, &storming, &acked, &busy);
            scope.spawn(move || {
                let mut admin = server.admin();
                while storming.load(Ordering::Relaxed) && Instant::now() < burst_ends {
                    let r = post_event(&mut admin, STORM_MID, "comment", &json!({"t": "x"}));
                    match r.status {
                        201 => acked.fetch_add(1, Ordering::Relaxed),
                        503 => {
                            assert!(r.text().contains("too many writes queued"), "{r:?}");
                            // A brief pause, as Retry-After asks (shortened: a test).
                            std::thread::sleep(Duration::from_millis(5));
                            busy.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => panic!("{r:?}"),
                    };
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("matchstream load did not finish in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        storming.store(false, Ordering::Relaxed);
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "the harness run failed: {status}: {err}");
        let report: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        report
    });
    eprintln!(
        "storm: {} acknowledged, {} refused busy; harness publisher retries: {}",
        acked.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        report["publish"]["retries"]
    );
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["duplicated"], 0, "{report:#}");
    assert!(
        busy.load(Ordering::Relaxed) > 0,
        "the queue bound of 1 was reached"
    );
    // Every acknowledged storm event is stored, and nothing else.
    let m = get_json(&server, &format!("/1/match/{STORM_MID}"));
    assert_eq!(m["seq"].as_u64().unwrap(), acked.load(Ordering::Relaxed));
}
