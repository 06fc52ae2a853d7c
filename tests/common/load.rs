//! `matchstream load` as a child process with a deadline: its output and its JSON report.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// What one `matchstream load` run left.
pub struct LoadRun {
    /// Its exit status and output.
    pub output: Output,
    /// Its report (`Value::Null` when it wrote none).
    pub report: Value,
    /// Whether it wrote a chart beside the report.
    pub chart: bool,
}

/// Runs `matchstream load ARGS --quiet --report FILE`, killed (and the test failed) after
/// `limit`.
pub fn run_load(args: &[&str], limit: Duration) -> LoadRun {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let child = Command::new(env!("CARGO_BIN_EXE_matchstream"))
        .arg("load")
        .args(args)
        .arg("--quiet")
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let output = match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // The child is hung: kill it by pid (its handle is in the waiting thread).
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("matchstream load did not finish within {limit:?}");
        }
    };
    let report = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let chart = dir.path().join("report.svg").exists();
    LoadRun {
        output,
        report,
        chart,
    }
}
