//! `matchstream load --reconnect` against a 3-node cluster that loses a node mid-match: the
//! watchers of the killed node reconnect to the others, resume with `since`, and the harness
//! verifies that every watcher still got every event exactly once (exit 0, nothing lost).
//! Every wait has a timeout; every child process is killed on drop.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use serde_json::Value;

/// A child process killed when dropped.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn seq_on(server: &Server) -> u64 {
    server
        .public()
        .request("GET", &format!("/1/match/{SAMPLE_MID}"), None)
        .ok()
        .filter(|r| r.status == 200)
        .and_then(|r| body_json(&r)["seq"].as_u64())
        .unwrap_or(0)
}

#[test]
fn the_harness_rides_out_a_node_kill_with_nothing_lost() {
    let redis = Redis::start();
    let a = Server::start_node(&redis, "a");
    let mut b = Server::start_node(&redis, "b");
    let c = Server::start_node(&redis, "c");
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let servers = [&a, &b, &c]
        .iter()
        .map(|s| s.url())
        .collect::<Vec<_>>()
        .join(",");
    let child = Command::new(env!("CARGO_BIN_EXE_matchstream"))
        .args([
            "load",
            "--server",
            &servers,
            "--reconnect",
            "--clients",
            "60",
        ])
        .args([
            "--replay",
            "sample",
            "--speed",
            "150",
            "--admin-token",
            TOKEN,
        ])
        .args(["--quiet", "--drain", "20", "--report"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn matchstream load");
    let pid = child.id();
    let mut guard = Guard(Some(child));

    // Kill node b once a third of the match (10 of 31 events) is out.
    let deadline = Instant::now() + Duration::from_secs(60);
    while seq_on(&a) < 10 {
        assert!(Instant::now() < deadline, "the match never reached seq 10");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.kill9();

    let (tx, rx) = mpsc::channel();
    let child = guard.0.take().unwrap();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("matchstream load did not finish within 120 s");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(
        output.status.success(),
        "load failed: {stdout}\n{stderr}\nreport errors: {} {}",
        r["errors"],
        r["failed_samples"]
    );
    assert_eq!(r["passed"], true);
    assert_eq!(r["connected"], 60);
    assert_eq!(r["events"], 31);
    assert_eq!(r["lost"], 0, "{}", r["failed_samples"]);
    assert_eq!((&r["duplicated"], &r["reordered"]), (&0.into(), &0.into()));
    assert_eq!(r["deliveries"], r["expected_deliveries"]);
    // b's 20 watchers moved to a and c.
    let reconnects = r["reconnects"].as_u64().unwrap();
    assert!(reconnects >= 20, "reconnects {reconnects}: {stdout}");
    assert_eq!(r["watchers_per_server"].as_object().unwrap().len(), 3);
    let end = r["watchers_per_server_end"].as_object().unwrap();
    assert!(!end.contains_key(&b.http.to_string()), "{end:?}");
    assert_eq!(seq_on(&c), 31);
}
