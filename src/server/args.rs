//! The flags of `matchstream serve` (each also settable through a `MATCHSTREAM_*` environment
//! variable); [`super::config_from_args`] turns them into a [`super::config::ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags of `matchstream serve`, grouped in `--help` by what they set.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("cluster").args(["redis", "redis_sentinel"])))]
pub struct ServeArgs {
    /// HTTP + WebSocket listen address.
    #[arg(
        long,
        env = "MATCHSTREAM_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        help_heading = "Listening"
    )]
    pub listen: SocketAddr,
    /// TCP line-protocol listen address.
    #[arg(
        long,
        env = "MATCHSTREAM_TCP_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9999",
        help_heading = "Listening"
    )]
    pub tcp_listen: SocketAddr,
    /// A separate HTTP address for the operator (admin writes, `/healthz`, `/metrics`; the
    /// whole API is served there): bound by worker 0, never refused for capacity
    /// (`--max-connections`, `--max-connections-per-ip`, full fd tables) [default: none].
    #[arg(
        long,
        env = "MATCHSTREAM_ADMIN_LISTEN",
        value_name = "ADDR",
        help_heading = "Listening"
    )]
    pub admin_listen: Option<SocketAddr>,
    /// Descriptors worker 0 holds back for connections on `--admin-listen` (public
    /// connections never take them).
    #[arg(
        long,
        env = "MATCHSTREAM_ADMIN_SLOTS",
        value_name = "N",
        default_value_t = 16,
        help_heading = "Limits"
    )]
    pub admin_slots: usize,
    /// A worker whose fd table is full leaves the accept distribution (new connections go to
    /// the others) and comes back once this many of its connection slots are free (at most
    /// half of them).
    #[arg(
        long,
        env = "MATCHSTREAM_FD_RESUME_SLOTS",
        value_name = "N",
        default_value_t = 64,
        help_heading = "Limits"
    )]
    pub fd_resume_slots: usize,
    /// Worker threads, each an io_uring event loop with its own fd table [default: one per
    /// CPU; more is fine].
    #[arg(
        long,
        env = "MATCHSTREAM_WORKERS",
        value_name = "N",
        help_heading = "Listening"
    )]
    pub workers: Option<usize>,
    /// TLS certificate chain (PEM, leaf first): `--listen` speaks HTTPS/WSS and
    /// `--tcp-listen` the line protocol over TLS. Needs `--tls-key`; `SIGHUP` reloads both.
    #[arg(
        long,
        env = "MATCHSTREAM_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key",
        help_heading = "Listening"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "MATCHSTREAM_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Listening"
    )]
    pub tls_key: Option<PathBuf>,
    /// Kernel TLS for TLS 1.3 watchers: `auto` hands a watcher's sending key to the kernel
    /// (`TCP_ULP` "tls") where the kernel offers it, so broadcasts share one plaintext frame and
    /// the kernel seals it; `off` seals every record in user space. The choice is logged at
    /// start and counted in /metrics.
    #[arg(
        long,
        env = "MATCHSTREAM_KTLS",
        value_enum,
        default_value = "auto",
        help_heading = "Listening"
    )]
    pub ktls: super::tls::ktls::KtlsMode,
    /// Directory of the embedded store (SQLite).
    #[arg(
        long,
        env = "MATCHSTREAM_DATA_DIR",
        value_name = "DIR",
        default_value = "./data",
        help_heading = "Store and admin API"
    )]
    pub data_dir: PathBuf,
    /// Bearer token for the admin API [default: the content of --admin-token-file, else a
    /// random one written to DATA_DIR/admin-token (mode 0600; only its path is logged)].
    #[arg(
        long,
        env = "MATCHSTREAM_ADMIN_TOKEN",
        value_name = "TOKEN",
        help_heading = "Store and admin API",
        hide_env_values = true,
        conflicts_with = "admin_token_file"
    )]
    pub admin_token: Option<String>,
    /// Read the admin bearer token from this file (once, at start; surrounding whitespace is
    /// ignored).
    #[arg(
        long,
        env = "MATCHSTREAM_ADMIN_TOKEN_FILE",
        value_name = "PATH",
        help_heading = "Store and admin API"
    )]
    pub admin_token_file: Option<PathBuf>,
    /// Failed admin logins allowed per source address per minute (refilling evenly); past it
    /// admin requests from that address get 429 with `Retry-After` (0 = no limit).
    #[arg(
        long,
        env = "MATCHSTREAM_MAX_FAILED_LOGINS_PER_MINUTE",
        value_name = "N",
        default_value_t = 10,
        help_heading = "Store and admin API"
    )]
    pub max_failed_logins_per_minute: u32,
    /// Replay the bundled sample match in a loop.
    #[arg(long, env = "MATCHSTREAM_DEMO", help_heading = "Extras")]
    pub demo: bool,
    /// How many times faster than its script `--demo` plays the sample match: at the default
    /// the first goal is on the scoreboard ~5 s after start and the match lasts ~1 m 50 s.
    #[arg(
        long,
        env = "MATCHSTREAM_DEMO_SPEED",
        value_name = "X",
        default_value_t = crate::feed::demo::DEFAULT_DEMO_SPEED,
        value_parser = crate::feed::demo::parse_speed,
        help_heading = "Extras"
    )]
    pub demo_speed: f64,
    /// Serve the WebSocket echo endpoint `/1/echo` (for the Autobahn suite).
    #[arg(long, env = "MATCHSTREAM_ENABLE_ECHO", help_heading = "Extras")]
    pub enable_echo: bool,
    /// Most connections held at once, all workers together; past it: 503, or the line
    /// connection is refused [default: 1000000; the open-files limit usually binds first,
    /// start-up logs the capacity and warns when a number given here is out of reach].
    #[arg(
        long,
        env = "MATCHSTREAM_MAX_CONNECTIONS",
        value_name = "N",
        help_heading = "Limits"
    )]
    pub max_connections: Option<usize>,
    /// Most bytes queued towards one connection; past it the connection is dropped as a slow
    /// consumer.
    #[arg(long, env = "MATCHSTREAM_MAX_OUTBOUND_BYTES", value_name = "BYTES",
          default_value_t = 256 << 10, help_heading = "Limits"
)]
    pub max_outbound_bytes: usize,
    /// Largest WebSocket message (and frame) accepted from a watcher.
    #[arg(long, env = "MATCHSTREAM_MAX_MESSAGE_BYTES", value_name = "BYTES",
          default_value_t = 64 << 10, help_heading = "Limits"
)]
    pub max_message_bytes: usize,
    /// Largest HTTP request body.
    #[arg(long, env = "MATCHSTREAM_MAX_BODY_BYTES", value_name = "BYTES",
          default_value_t = 64 << 10, help_heading = "Limits"
)]
    pub max_body_bytes: usize,
    /// Time allowed for a complete request head (and WebSocket handshake).
    #[arg(
        long,
        env = "MATCHSTREAM_HANDSHAKE_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000,
        help_heading = "Timeouts"
    )]
    pub handshake_timeout_ms: u64,
    /// A WebSocket silent this long is pinged.
    #[arg(
        long,
        env = "MATCHSTREAM_WS_PING_AFTER_MS",
        value_name = "MS",
        default_value_t = 30_000,
        help_heading = "Timeouts"
    )]
    pub ws_ping_after_ms: u64,
    /// A pinged WebSocket silent this much longer is dropped as dead.
    #[arg(
        long,
        env = "MATCHSTREAM_WS_DEAD_AFTER_MS",
        value_name = "MS",
        default_value_t = 30_000,
        help_heading = "Timeouts"
    )]
    pub ws_dead_after_ms: u64,
    /// Most connections open at once from one source address; past it: 503, or `ERROR: too
    /// many connections` on the line port (0 = no limit).
    #[arg(
        long,
        env = "MATCHSTREAM_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value_t = 10_000,
        help_heading = "Limits"
    )]
    pub max_connections_per_ip: usize,
    /// Most matches one connection watches at once, and most watch requests it has in flight
    /// (reading from it pauses at that many); refused watches past it close it with 1008.
    #[arg(
        long,
        env = "MATCHSTREAM_MAX_WATCHES_PER_CONNECTION",
        value_name = "N",
        default_value_t = 32,
        help_heading = "Limits"
    )]
    pub max_watches_per_connection: usize,
    /// Refused watch requests (over the limit, or ids that cannot be match ids) after which a
    /// WebSocket is closed with 1008.
    #[arg(
        long,
        env = "MATCHSTREAM_MAX_REFUSED_WATCHES",
        value_name = "N",
        default_value_t = 8,
        help_heading = "Limits"
    )]
    pub max_refused_watches: u32,
    /// A connection of any kind whose queued bytes make no progress this long is closed.
    #[arg(
        long,
        env = "MATCHSTREAM_SEND_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 60_000,
        help_heading = "Timeouts"
    )]
    pub send_timeout_ms: u64,
    /// Time allowed to complete a WebSocket message (fragmented, or one frame) once begun;
    /// past it the connection is closed with 1008.
    #[arg(
        long,
        env = "MATCHSTREAM_WS_MESSAGE_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 10_000,
        help_heading = "Timeouts"
    )]
    pub ws_message_timeout_ms: u64,
    /// TCP keepalive on accepted sockets: idle seconds before the first probe (0 = off).
    #[arg(
        long,
        env = "MATCHSTREAM_TCP_KEEPALIVE_IDLE_SECS",
        value_name = "SECS",
        default_value_t = 60,
        help_heading = "Timeouts"
    )]
    pub tcp_keepalive_idle_secs: u64,
    /// TCP keepalive: seconds between unanswered probes.
    #[arg(
        long,
        env = "MATCHSTREAM_TCP_KEEPALIVE_INTERVAL_SECS",
        value_name = "SECS",
        default_value_t = 10,
        help_heading = "Timeouts"
    )]
    pub tcp_keepalive_interval_secs: u64,
    /// TCP keepalive: unanswered probes before the peer is declared dead.
    #[arg(
        long,
        env = "MATCHSTREAM_TCP_KEEPALIVE_PROBES",
        value_name = "N",
        default_value_t = 6,
        help_heading = "Timeouts"
    )]
    pub tcp_keepalive_probes: u32,
    /// `TCP_USER_TIMEOUT` on accepted sockets: sent data unacknowledged this long drops the
    /// connection (0 = the kernel's default).
    #[arg(
        long,
        env = "MATCHSTREAM_TCP_USER_TIMEOUT_MS",
        value_name = "MS",
        default_value_t = 120_000,
        help_heading = "Timeouts"
    )]
    pub tcp_user_timeout_ms: u64,
    /// How long start-up waits for a port held only by an exiting process (a killed server's
    /// listener the kernel is still tearing down); a live one is refused at once.
    #[arg(
        long,
        env = "MATCHSTREAM_PORT_WAIT_MS",
        value_name = "MS",
        default_value_t = 5_000,
        help_heading = "Timeouts"
    )]
    pub port_wait_ms: u64,
    /// Submission slots of each worker's watcher-plane ring: a broadcast to up to this many
    /// local watchers is one `io_uring_enter` (64..=32768; each slot costs ~96 B of ring
    /// memory per worker).
    #[arg(
        long,
        env = "MATCHSTREAM_PLANE_RING_ENTRIES",
        value_name = "N",
        default_value_t = 32_768,
        help_heading = "Limits"
    )]
    pub plane_ring_entries: u32,
    /// Keep teams, matches and events in this Redis (`redis://HOST:PORT/DB`), shared with the
    /// other nodes, instead of the embedded store.
    #[arg(
        long,
        env = "MATCHSTREAM_REDIS",
        value_name = "URL",
        help_heading = "Cluster mode"
    )]
    pub redis: Option<String>,
    /// Find the Redis primary through these Sentinels (`HOST:PORT,HOST:PORT…`) instead of a
    /// fixed `--redis` URL, and follow a failover: on errors, timeouts, `READONLY` or
    /// `+switch-master` the node asks them again and reconnects.
    #[arg(
        long,
        env = "MATCHSTREAM_REDIS_SENTINEL",
        value_name = "HOST:PORT,…",
        value_parser = sentinel_list,
        conflicts_with = "redis",
        requires = "redis_master_name",
        help_heading = "Cluster mode"
    )]
    pub redis_sentinel: Option<String>,
    /// The master name the Sentinels monitor (with `--redis-sentinel`).
    #[arg(
        long,
        env = "MATCHSTREAM_REDIS_MASTER_NAME",
        value_name = "NAME",
        value_parser = clap::builder::NonEmptyStringValueParser::new(),
        requires = "redis_sentinel",
        help_heading = "Cluster mode"
    )]
    pub redis_master_name: Option<String>,
    /// Acknowledge an event (201) only once this many Redis replicas confirm it (`WAIT`);
    /// watchers get only confirmed events. 0: acknowledged once the primary has it.
    #[arg(
        long,
        env = "MATCHSTREAM_REDIS_MIN_REPLICAS",
        value_name = "N",
        default_value_t = 0,
        help_heading = "Cluster mode"
    )]
    pub redis_min_replicas: usize,
    /// How long a write waits for `--redis-min-replicas` confirmations before it is answered
    /// 503 (the write may or may not survive a failover).
    #[arg(
        long,
        env = "MATCHSTREAM_REDIS_WAIT_MS",
        value_name = "MS",
        default_value_t = 1_000,
        help_heading = "Cluster mode"
    )]
    pub redis_wait_ms: u64,
    /// This node's name in the registry [default: its advertised address].
    #[arg(
        long,
        env = "MATCHSTREAM_NODE_ID",
        value_name = "ID",
        requires = "cluster",
        help_heading = "Cluster mode"
    )]
    pub node_id: Option<String>,
    /// `ws://HOST:PORT` where watchers reach this node, for `/1/checkin` [default: the bound
    /// HTTP address].
    #[arg(
        long,
        env = "MATCHSTREAM_ADVERTISE",
        value_name = "URL",
        requires = "cluster",
        help_heading = "Cluster mode"
    )]
    pub advertise: Option<String>,
    /// The TCP line port announced for this node [default: the bound one].
    #[arg(
        long,
        env = "MATCHSTREAM_ADVERTISE_TCP_PORT",
        value_name = "PORT",
        requires = "cluster",
        help_heading = "Cluster mode"
    )]
    pub advertise_tcp_port: Option<u16>,
    /// A node's registration expires this long after its last refresh (refreshed every third
    /// of it).
    #[arg(
        long,
        env = "MATCHSTREAM_NODE_TTL_MS",
        value_name = "MS",
        default_value_t = 10_000,
        help_heading = "Cluster mode"
    )]
    pub node_ttl_ms: u64,
    /// Writes waiting for the sequencer past which a new write is refused with 503 and
    /// `Retry-After` (nothing already acknowledged is lost).
    #[arg(
        long,
        env = "MATCHSTREAM_MAX_QUEUED_WRITES",
        value_name = "N",
        default_value_t = crate::sequencer::DEFAULT_MAX_QUEUED_WRITES,
        help_heading = "Limits"
    )]
    pub max_queued_writes: usize,
    /// Ended matches whose history stays in memory; the history of older ones is read from
    /// the store when asked.
    #[arg(
        long,
        env = "MATCHSTREAM_ENDED_HISTORY_MATCHES",
        value_name = "N",
        default_value_t = crate::sequencer::DEFAULT_ENDED_HISTORY_MATCHES,
        help_heading = "Limits"
    )]
    pub ended_history_matches: usize,
    /// Commits of events after which the SQLite writer finishes a WAL checkpoint itself, so
    /// that the WAL starts over instead of growing through a storm of writes (0: never).
    #[arg(
        long,
        env = "MATCHSTREAM_WAL_RESTART_COMMITS",
        value_name = "N",
        default_value_t = crate::store::DEFAULT_WAL_RESTART_COMMITS,
        help_heading = "Limits"
    )]
    pub wal_restart_commits: u64,
    /// Sync the SQLite WAL on a thread of its own, writing the next batch meanwhile (`true`:
    /// lower ack latency, a little more CPU per event), or inside each commit with
    /// `synchronous=FULL` (`false`). Either way an event is acknowledged only once on disk.
    #[arg(
        long,
        env = "MATCHSTREAM_WAL_SYNC_THREAD",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        help_heading = "Limits"
    )]
    pub wal_sync_thread: bool,
}

/// Checks `--redis-sentinel HOST:PORT[,HOST:PORT…]`.
fn sentinel_list(list: &str) -> Result<String, String> {
    crate::store::redis_link::RedisTarget::sentinel(list, "-").map(|_| list.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redis::{RedisTarget, Replication};
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(flags: &[&str]) -> Result<ServeArgs, clap::Error> {
        Serve::try_parse_from(std::iter::once("serve").chain(flags.iter().copied())).map(|s| s.args)
    }

    #[test]
    fn sentinel_flags_make_a_sentinel_cluster_with_replication() {
        let args = parse(&[
            "--redis-sentinel",
            "127.0.0.1:26379,h2:26380",
            "--redis-master-name",
            "ms",
            "--redis-min-replicas",
            "1",
            "--redis-wait-ms",
            "250",
            "--node-id",
            "a",
        ])
        .unwrap();
        let cluster = crate::server::config_from_args(&args).cluster.unwrap();
        assert_eq!(
            cluster.redis,
            RedisTarget::Sentinel {
                sentinels: vec!["127.0.0.1:26379".into(), "h2:26380".into()],
                master: "ms".into()
            }
        );
        assert_eq!(
            cluster.replication,
            Replication {
                min_replicas: 1,
                wait: Duration::from_millis(250)
            }
        );
        let url = parse(&["--redis", "redis://r:6379/0"]).unwrap();
        let cluster = crate::server::config_from_args(&url).cluster.unwrap();
        assert_eq!(cluster.redis, RedisTarget::Url("redis://r:6379/0".into()));
        assert_eq!(
            cluster.replication.min_replicas, 0,
            "default: today's behaviour"
        );
    }

    #[test]
    fn sentinel_flags_are_checked() {
        for bad in [
            &["--redis-sentinel", "h:1"][..],
            &["--redis-master-name", "ms"],
            &["--redis-sentinel", "h", "--redis-master-name", "ms"],
            &["--redis-sentinel", "h:1", "--redis-master-name", ""],
            &[
                "--redis",
                "redis://r",
                "--redis-sentinel",
                "h:1",
                "--redis-master-name",
                "ms",
            ],
            &["--node-id", "a"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
