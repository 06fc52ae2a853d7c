//! `--ramp-until-failure`: runs of growing size (each on fresh matches) until one fails its
//! SLO: any verification failure, or p99 fan-out latency above `--slo-p99-ms`. Reports
//! every step and where it broke.

use std::io;

use serde_json::{json, Value};

use super::run::{run_once, RunResult};
use super::LoadArgs;

/// Runs the steps; exit status 0 when at least one step passed (the breaking point, if
/// any, is in the report), 1 when even the first failed.
pub(crate) fn run(args: &LoadArgs) -> io::Result<i32> {
    if !args.raw.enabled && args.replay.is_none() && args.every_ms.is_none() {
        return Err(io::Error::other(
            "--ramp-until-failure drives its own matches: add --replay SCRIPT or --every-ms T (or --raw)",
        ));
    }
    let step = args.steps.ramp_step.unwrap_or(args.clients).max(1);
    let mut clients = args.clients.max(1);
    let mut steps: Vec<Value> = Vec::new();
    let mut last_ok: Option<usize> = None;
    let mut broke: Option<(usize, String)> = None;
    let mut index = 0;
    let mut last_result = None;
    while clients <= args.steps.max_clients {
        eprintln!("load: ramp step {}: {clients} watchers", index + 1);
        let result = run_once(args, clients, index)?;
        if !args.quiet {
            eprintln!();
        }
        println!("{}", super::summary::summary(&result.report));
        steps.push(step_row(clients, &result));
        let reason = broken_slo(args, &result);
        last_result = Some(result);
        if let Some(reason) = reason {
            broke = Some((clients, reason));
            break;
        }
        last_ok = Some(clients);
        clients += step;
        index += 1;
    }
    match &broke {
        Some((c, r)) => println!("ramp: broke at {c} watchers: {r}; last passing: {last_ok:?}"),
        None => println!(
            "ramp: no SLO broken up to {} watchers",
            args.steps.max_clients
        ),
    }
    let summary = json!({
        "mode": "ramp-until-failure",
        "slo_p99_ms": args.steps.slo_p99_ms,
        "steps": steps,
        "last_passing_clients": last_ok,
        "breaking_point": broke.as_ref().map(|(c, r)| json!({"clients": c, "reason": r})),
        "last_step": last_result.as_ref().map(|r| &r.report),
        "machine": super::report::machine(),
        "kernel": super::report::kernel(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "version": env!("CARGO_PKG_VERSION"),
    });
    write(args, &summary, last_result.as_ref())?;
    Ok(if last_ok.is_some() { 0 } else { 1 })
}

/// One step's line in the ramp report.
fn step_row(clients: usize, result: &RunResult) -> Value {
    let r = &result.report;
    json!({
        "clients": clients, "passed": r.passed, "latency_us": r.latency_us,
        "connect_per_s": r.connect_per_s, "lost": r.lost,
        "server_rss_bytes_per_connection": r.server_rss_bytes_per_connection,
        "server_cpu_us_per_delivery": r.server_cpu_us_per_delivery,
    })
}

/// Why a step breaks the SLO: a verification failure, or p99 fan-out over `--slo-p99-ms`.
fn broken_slo(args: &LoadArgs, result: &RunResult) -> Option<String> {
    let p99_ms = result.p99_us() / 1000.0;
    if !result.passed() {
        Some("verification failed (see the step's errors)".to_string())
    } else if p99_ms > args.steps.slo_p99_ms {
        Some(format!(
            "p99 fan-out {p99_ms:.2} ms > {} ms",
            args.steps.slo_p99_ms
        ))
    } else {
        None
    }
}

/// Writes the ramp report and the chart of the last step (the one that broke, or the
/// largest).
fn write(args: &LoadArgs, summary: &Value, last: Option<&RunResult>) -> io::Result<()> {
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(summary).unwrap_or_default())?;
    }
    let svg = args
        .svg
        .clone()
        .or_else(|| args.report.as_ref().map(|p| p.with_extension("svg")));
    if let (Some(r), Some(svg)) = (last, svg) {
        let only_svg = LoadArgs {
            report: None,
            svg: Some(svg),
            ..args.clone()
        };
        r.write(&only_svg)?;
    }
    Ok(())
}
