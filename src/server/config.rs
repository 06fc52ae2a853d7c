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
    /// Bearer token for admin writes.
    pub admin_token: String,
    /// Whether `/1/echo` is served.
    pub enable_echo: bool,
    /// Replay the bundled sample match in a loop.
    pub demo: bool,
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
    /// Whether watchers become records of the watcher plane (else: one task each).
    pub watcher_plane: bool,
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
            admin_token: String::new(),
            enable_echo: false,
            demo: false,
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
            watcher_plane: true,
            shutdown_drain: Duration::from_secs(3),
            read_buffer_bytes: 64 << 10,
            listen_backlog: 4096,
            cluster: None,
            sequencer: crate::sequencer::Limits::default(),
        }
    }
}
