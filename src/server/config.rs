//! Server settings: every limit the runtime enforces, each a named, documented value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::proto::http::HttpLimits;
use crate::proto::session::WsLimits;

/// `--max-connections` when not given: more than any one box holds, so in practice the bound
/// is the open-files limit (see [`crate::os::limits::capacity`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_000_000;

/// Everything a worker needs to know, built once from the command line.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// HTTP + WebSocket listen address (port 0 picks a free port once, shared by all workers).
    pub listen: SocketAddr,
    /// TCP line-protocol listen address.
    pub tcp_listen: SocketAddr,
    /// Number of worker threads (event loops).
    pub workers: usize,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// Commits of events between the writer's own WAL checkpoints (`--wal-restart-commits`,
    /// 0: off; see [`crate::store::SqliteStore::restart_wal_every`]).
    pub wal_restart_commits: u64,
    /// Whether the WAL's fsync runs on its own thread, pipelined with the next batch's
    /// write (`--wal-sync-thread`; else inside each commit, `synchronous=FULL`).
    pub wal_sync_thread: bool,
    /// Bearer token for admin writes.
    pub admin_token: String,
    /// Whether `/1/echo` is served.
    pub enable_echo: bool,
    /// Replay the bundled sample match in a loop.
    pub demo: bool,
    /// How many times faster than its script the demo plays.
    pub demo_speed: f64,
    /// Most connections the whole server holds at once.
    pub max_connections: usize,
    /// HTTP request limits (request line, head, header count, body).
    pub http: HttpLimits,
    /// WebSocket limits on `/1/ws` (frame and message size; text only).
    pub ws: WsLimits,
    /// WebSocket limits on `/1/echo` (the Autobahn suite sends 16 MiB messages and binary).
    pub echo_ws: WsLimits,
    /// Time allowed from accept until a complete first request head has arrived.
    pub handshake_timeout: Duration,
    /// An idle keep-alive HTTP connection is closed after this long without a request.
    pub http_idle_timeout: Duration,
    /// A WebSocket connection silent for this long is sent a ping.
    pub ws_ping_after: Duration,
    /// A WebSocket connection silent this long after a ping is considered dead and dropped.
    pub ws_dead_after: Duration,
    /// Most bytes queued towards one connection; past it the connection is dropped (no close
    /// frame: a reader that slow would not read one) so it never holds up anyone else.
    pub max_outbound_bytes: usize,
    /// Queued outbound bytes making no progress this long close the connection (0 = off).
    pub send_timeout: Duration,
    /// Submission slots of each worker's watcher-plane ring (one `io_uring_enter` per
    /// broadcast up to this many local watchers).
    pub plane_ring_entries: u32,
    /// How long shutdown waits for connections to finish their close handshakes.
    pub shutdown_drain: Duration,
    /// Size of each worker's read scratch buffer.
    pub read_buffer_bytes: usize,
    /// Listen backlog of each worker's `SO_REUSEPORT` listener.
    pub listen_backlog: i32,
    /// Cluster mode (`--redis`): Redis instead of the embedded store. `None`: single node.
    pub cluster: Option<crate::sequencer::cluster::ClusterConfig>,
    /// The sequencer's bounds: queued writes (503 past it), group-commit batch, ended
    /// matches' histories kept in memory.
    pub sequencer: crate::sequencer::Limits,
    /// Most connections open at once from one source address; 0 = no limit
    /// (`--max-connections-per-ip`).
    pub max_connections_per_ip: usize,
    /// Most matches one connection watches at once, and most watch requests it has in flight
    /// (`--max-watches-per-connection`).
    pub max_watches_per_connection: usize,
    /// Refused watch requests (over the limit, or ids that cannot be match ids) after which
    /// the connection is closed with 1008 (`--max-refused-watches`).
    pub watch_refusals_before_close: u32,
    /// Time allowed to complete a WebSocket message once it has begun
    /// (`--ws-message-timeout-ms`).
    pub ws_message_timeout: Duration,
    /// TCP keepalive and `TCP_USER_TIMEOUT` for accepted sockets.
    pub tcp_keepalive: TcpKeepalive,
    /// Failed admin logins allowed per source address per minute; 0 = no limit.
    pub max_failed_logins_per_minute: u32,
    /// How long start-up waits for a port held only by an exiting process (`--port-wait-ms`).
    pub port_wait: Duration,
    /// `--tls-cert` / `--tls-key`: both listeners speak TLS (`None`: plain).
    pub tls: Option<super::tls::TlsFiles>,
    /// `--ktls`: whether TLS watchers' sends go through the kernel's TLS where it has one.
    pub ktls: super::tls::ktls::KtlsMode,
    /// `--admin-listen`: a separate address for the operator, served by worker 0 and never
    /// refused for capacity (`None`: none).
    pub admin_listen: Option<SocketAddr>,
    /// `--admin-slots`: descriptors worker 0 holds back for connections on `admin_listen`.
    pub admin_slots: usize,
    /// `--fd-resume-slots`: a worker full of connections takes new ones again once this many
    /// of its slots are free (at most half of them).
    pub fd_resume_slots: usize,
}

/// TCP-level liveness settings applied to every accepted socket (`SO_KEEPALIVE`,
/// `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`): a peer that vanished
/// without a FIN (a pulled cable, a crashed NAT) is found even on a quiet match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Idle time before the first probe (`--tcp-keepalive-idle-secs`); zero turns keepalive
    /// off.
    pub idle: Duration,
    /// Time between unanswered probes (`--tcp-keepalive-interval-secs`).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (`--tcp-keepalive-probes`).
    pub probes: u32,
    /// Sent data unacknowledged this long drops the connection (`--tcp-user-timeout-ms`);
    /// zero leaves the kernel's default.
    pub user_timeout: Duration,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            probes: 6,
            user_timeout: Duration::from_secs(120),
        }
    }
}

impl ServerConfig {
    /// Default limits around the given addresses; tests and the CLI override fields.
    pub fn new(listen: SocketAddr, tcp_listen: SocketAddr) -> Self {
        let echo_ws = WsLimits {
            max_frame_bytes: 16 << 20,
            max_message_bytes: 16 << 20,
            accept_binary: true,
        };
        ServerConfig {
            listen,
            tcp_listen,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            data_dir: PathBuf::from("./data"),
            wal_restart_commits: crate::store::DEFAULT_WAL_RESTART_COMMITS,
            wal_sync_thread: true,
            admin_token: String::new(),
            enable_echo: false,
            demo: false,
            demo_speed: crate::feed::demo::DEFAULT_DEMO_SPEED,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http: HttpLimits::default(),
            ws: WsLimits::default(),
            echo_ws,
            handshake_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            ws_ping_after: Duration::from_secs(30),
            ws_dead_after: Duration::from_secs(30),
            max_outbound_bytes: 256 << 10,
            send_timeout: Duration::from_secs(60),
            plane_ring_entries: 32_768,
            shutdown_drain: Duration::from_secs(3),
            read_buffer_bytes: 64 << 10,
            listen_backlog: 4096,
            cluster: None,
            sequencer: crate::sequencer::Limits::default(),
            max_connections_per_ip: 10_000,
            max_watches_per_connection: 32,
            watch_refusals_before_close: 8,
            ws_message_timeout: Duration::from_secs(10),
            tcp_keepalive: TcpKeepalive::default(),
            max_failed_logins_per_minute: 10,
            port_wait: Duration::from_secs(5),
            tls: None,
            ktls: super::tls::ktls::KtlsMode::Auto,
            admin_listen: None,
            admin_slots: 16,
            fd_resume_slots: 64,
        }
    }
}
