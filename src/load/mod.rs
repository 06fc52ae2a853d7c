//! `matchstream load`: the load generator and blackbox tester.
//!
//! Watchers are spread over load threads, each with a private fd table (like the server's
//! workers) and its own monoio runtime, and over source addresses 127.0.0.2… so neither the
//! per-process open-files limit nor the ~28K ephemeral ports per address pair get in the way
//! ([`plan`] works out how many of each, and says so, before anything starts).
//!
//! A run: create the teams and matches ([`drive::setup`]), connect every watcher at the ramp
//! rate and wait for its status, post the match's events on schedule ([`drive::publish`],
//! each send time recorded), and check that every watcher got every event exactly once, in
//! order, then `stop` and a clean close ([`verify`]). Latency is measured publish → each
//! watcher ([`stats`]); the server's RSS and CPU come from `/proc/PID` ([`procfs`]). The end:
//! the outcomes summed ([`tally`]) into a typed [`report::Report`], written as JSON and
//! printed as a table ([`summary`]), and an SVG chart ([`svg`]). The exit status is 0 only
//! when every watcher got everything.
//!
//! What the harness costs is reported next to what the server costs, over the same delivery
//! phase (`harness_to_server_cpu`): a watcher reads with one io_uring `Recv` into its own small
//! buffer, checks frames where they lie, and verifies a frame whose bytes equal an event payload
//! its thread already parsed in full by comparison ([`watch`]).
//!
//! Modes: driving a match (`--replay SCRIPT` at `--speed`, or `--every-ms T` numbered
//! comments), watching a match someone else drives (`--match ID` alone), `--raw` against any
//! pub/sub WebSocket server, `--idle` (hold connections, measure memory), and
//! `--ramp-until-failure`.

pub mod client;
pub mod drive;
mod idle;
mod monitor;
pub mod plan;
pub mod procfs;
mod ramp;
pub mod report;
mod run;
mod setup;
pub mod stats;
pub mod summary;
pub mod svg;
pub mod tally;
pub mod verify;
pub mod watch;
pub mod wire;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Args;

pub use watch::Protocol;

/// Flags of `matchstream load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The server, `http://HOST:PORT`; repeat it (or give a comma-separated list) for a cluster.
    ///
    /// The harness uses the WebSocket at `--path` there, the admin API and `/1/checkin`. With
    /// several servers (a cluster) watchers are spread over the
    /// servers round-robin (or by `GET /1/checkin` with --checkin), the publisher posts to the
    /// first one and moves on to the next when it fails.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        help_heading = "Servers"
    )]
    pub server: Vec<String>,
    /// Where the publisher creates and drives the match instead of `--server`: the
    /// servers' `--admin-listen` addresses, never refused for capacity (a run that fills a
    /// server to `--max-connections` must still post its events). Same order as `--server`.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "URL",
        help_heading = "Servers"
    )]
    pub admin_server: Vec<String>,
    /// Watchers whose connection drops reconnect and resume (WebSocket only).
    ///
    /// A drop is EOF, a reset, or a close other than the final 1000 after `stop`. The watcher
    /// reconnects to another server, with exponential backoff and jitter, and watches again
    /// with `since` = the last event it verified.
    #[arg(long, help_heading = "Servers")]
    pub reconnect: bool,
    /// Pick each watcher's server by `GET /1/checkin` on one of the --server list (round-robin)
    /// instead of going round-robin over the list itself.
    #[arg(long, help_heading = "Servers")]
    pub checkin: bool,
    /// Watch this match (someone else drives it unless --replay / --every-ms).
    #[arg(long = "match", value_name = "ID", help_heading = "Watchers")]
    pub match_id: Option<String>,
    /// Number of watchers.
    #[arg(
        long,
        default_value_t = 100,
        value_name = "N",
        help_heading = "Watchers"
    )]
    pub clients: usize,
    /// Wire: WebSocket, the TCP line protocol, or Server-Sent Events.
    #[arg(long, value_enum, default_value_t = Protocol::Ws, help_heading = "Watchers")]
    pub protocol: Protocol,
    /// WebSocket path.
    #[arg(
        long,
        default_value = "/1/ws",
        value_name = "PATH",
        help_heading = "Watchers"
    )]
    pub path: String,
    /// Offer permessage-deflate (as browsers do); compressed frames are inflated and checked.
    #[arg(long, help_heading = "Watchers")]
    pub deflate: bool,
    /// Speak TLS to the server (watchers of every protocol, idle clients and the publisher),
    /// trusting only the CA in `--ca`; the certificate must name the host of `--server`.
    #[arg(long, requires = "ca", help_heading = "Servers")]
    pub tls: bool,
    /// The CA certificate(s) (PEM) that `--tls` trusts.
    #[arg(long, value_name = "PEM", requires = "tls", help_heading = "Servers")]
    pub ca: Option<PathBuf>,
    /// Drive the match: replay this script (`sample` for the bundled one).
    #[arg(long, value_name = "SCRIPT", help_heading = "Driving a match")]
    pub replay: Option<String>,
    /// Replay speed (pauses divided by it).
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "X",
        help_heading = "Driving a match"
    )]
    pub speed: f64,
    /// Drive the match: post `start`, `--events` numbered comments and `stop`, one every MS ms.
    #[arg(long, value_name = "MS", help_heading = "Driving a match")]
    pub every_ms: Option<u64>,
    /// Numbered events to post with --every-ms (and in --raw mode).
    #[arg(
        long,
        default_value_t = 60,
        value_name = "N",
        help_heading = "Driving a match"
    )]
    pub events: usize,
    /// Matches to drive at once (watcher i watches match i mod N).
    #[arg(
        long,
        default_value_t = 1,
        value_name = "N",
        help_heading = "Driving a match"
    )]
    pub matches: usize,
    /// Admin token for creating and driving the match.
    #[arg(
        long,
        env = "MATCHSTREAM_ADMIN_TOKEN",
        value_name = "TOKEN",
        help_heading = "Driving a match",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Idle mode: connect, hold `--hold` seconds, measure memory; no match.
    #[arg(long, help_heading = "Idle mode")]
    pub idle: bool,
    /// PID of the server, to read its memory and CPU use.
    ///
    /// Repeat it (or give a comma-separated list) for a server made of several processes, e.g. nginx's workers: their RSS and CPU
    /// are summed.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PID",
        help_heading = "Output"
    )]
    pub server_pid: Vec<u32>,
    /// Where to write the JSON report.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub report: Option<PathBuf>,
    /// Where to write the SVG chart (default: the report's path with `.svg`).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub svg: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, help_heading = "Output")]
    pub quiet: bool,
    /// Raw mode (other servers).
    #[command(flatten, next_help_heading = "Raw mode (any pub/sub WebSocket server)")]
    pub raw: Box<RawArgs>,
    /// How the load is spread and paced.
    #[command(flatten, next_help_heading = "Spread, pace and wait")]
    pub tuning: Box<TuningArgs>,
    /// `--ramp-until-failure`.
    #[command(flatten, next_help_heading = "Ramp until failure")]
    pub steps: Box<StepArgs>,
}

/// Raw mode: drive any pub/sub WebSocket server.
#[derive(Debug, Clone, Args)]
pub struct RawArgs {
    /// Raw mode for other servers: subscribe at --subscribe (ws://…), publish numbered
    /// payloads `{"n":K,"run":R}` by POST to --publish (http://…).
    #[arg(long = "raw", requires_all = ["subscribe", "publish"])]
    pub enabled: bool,
    /// Raw mode: the subscribe URL.
    #[arg(long, value_name = "URL")]
    pub subscribe: Option<String>,
    /// Raw mode: the publish URL.
    #[arg(long, value_name = "URL")]
    pub publish: Option<String>,
    /// Raw mode: a text message to send after the handshake (a subscribe command).
    #[arg(long, value_name = "TEXT")]
    pub subscribe_message: Option<String>,
}

/// How the load is spread and paced, and how long the harness waits.
#[derive(Debug, Clone, Args)]
pub struct TuningArgs {
    /// TCP line-protocol address `HOST:PORT` (default: asked from GET /1/checkin).
    #[arg(long, value_name = "ADDR")]
    pub tcp_server: Option<String>,
    /// Seconds to hold the connections open once all are connected (idle mode).
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    pub hold: u64,
    /// New connections per second, all threads together (default: as fast as they go).
    #[arg(long, value_name = "PER_S")]
    pub ramp: Option<f64>,
    /// Handshakes in flight per load thread.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub concurrency: usize,
    /// Load threads (each with a private fd table); default: enough for the clients.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Source addresses 127.0.0.2…; default: enough for the clients.
    #[arg(long, value_name = "N")]
    pub sources: Option<usize>,
    /// Seconds to wait for every watcher to connect and get its status.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub connect_timeout: u64,
    /// Seconds to wait, after the last post, for every watcher to finish.
    #[arg(long, default_value_t = 15, value_name = "SECONDS")]
    pub drain: u64,
}

/// `--ramp-until-failure`: growing runs until an SLO breaks.
#[derive(Debug, Clone, Args)]
pub struct StepArgs {
    /// Keep adding watchers (runs of --clients, then + --ramp-step each) until an SLO breaks.
    #[arg(long)]
    pub ramp_until_failure: bool,
    /// Watchers added per step of --ramp-until-failure (default: --clients).
    #[arg(long, value_name = "N")]
    pub ramp_step: Option<usize>,
    /// Most watchers --ramp-until-failure tries.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_clients: usize,
    /// SLO of --ramp-until-failure: p99 fan-out latency bound, ms.
    #[arg(long, default_value_t = 100.0, value_name = "MS")]
    pub slo_p99_ms: f64,
}

impl LoadArgs {
    /// The first `--server`: where the matches are created and the publisher starts.
    pub fn primary_server(&self) -> &str {
        self.server
            .first()
            .map_or("http://127.0.0.1:8080", String::as_str)
    }

    /// `--tls`: the client settings (trusting `--ca`, checking the first server's host).
    pub fn tls_client(&self) -> io::Result<Option<wire::TlsClient>> {
        match (&self.ca, self.tls) {
            (Some(ca), true) => wire::TlsClient::new(ca, self.primary_server()).map(Some),
            _ => Ok(None),
        }
    }

    /// Whether this is an idle run (explicit, or nothing to watch).
    pub fn is_idle(&self) -> bool {
        self.idle
            || (self.match_id.is_none()
                && self.replay.is_none()
                && self.every_ms.is_none()
                && !self.raw.enabled)
    }
}

/// Backoff before reconnect (or repost) attempt `attempt` (0, 1, …): 100 ms × 2^attempt,
/// capped at 2 s, times a jitter factor in [0.5, 1.5) drawn from `seed`.
pub fn backoff(attempt: u32, seed: u64) -> std::time::Duration {
    let base = (100u64 << attempt.min(5)).min(2000) as f64;
    let mut z = seed.wrapping_add(u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let jitter = 0.5 + (z >> 11) as f64 / (1u64 << 53) as f64;
    std::time::Duration::from_micros((base * jitter * 1000.0) as u64)
}

/// A seed for [`backoff`] that differs between callers and runs.
pub fn seed(salt: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// `http://HOST:PORT` → its IPv4 address and `HOST:PORT`.
pub(crate) fn server_addr(server: &str) -> io::Result<(SocketAddr, String)> {
    let hostport = ["http://", "ws://", "https://", "wss://"]
        .iter()
        .find_map(|scheme| server.strip_prefix(scheme))
        .unwrap_or(server)
        .trim_end_matches('/');
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| io::Error::other(format!("cannot resolve {hostport}: {e}")))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| io::Error::other(format!("cannot resolve {hostport}")))?;
    Ok((addr, hostport.to_string()))
}

/// Runs the load as the flags say; returns the process exit status (0: every watcher got
/// everything).
pub fn run(args: LoadArgs) -> io::Result<i32> {
    if args.server.is_empty() {
        return Err(io::Error::other("--server: give at least one server"));
    }
    if args.is_idle() {
        return idle::run(&args);
    }
    if args.steps.ramp_until_failure {
        return ramp::run(&args);
    }
    let result = run::run_once(&args, args.clients, 0)?;
    if !args.quiet {
        eprintln!();
    }
    println!("{}", summary::summary(&result.report));
    result.write(&args)?;
    Ok(if result.passed() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_two_seconds_with_jitter() {
        for seed in [1u64, 42, 7_777] {
            for (attempt, base_ms) in [(0, 100.0), (1, 200.0), (3, 800.0), (4, 1600.0), (9, 2000.0)]
            {
                let ms = backoff(attempt, seed).as_secs_f64() * 1000.0;
                assert!(ms >= base_ms * 0.5 && ms < base_ms * 1.5, "{attempt}: {ms}");
            }
        }
        assert_ne!(backoff(2, 1), backoff(2, 2));
    }
}
