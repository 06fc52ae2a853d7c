//! The flags of `matchstream serve` (each also settable through a `MATCHSTREAM_*` environment
//! variable); [`super::config_from_args`] turns them into a [`super::config::ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Flags of `matchstream serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP + WebSocket listen address.
    #[arg(long, env = "MATCHSTREAM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// TCP line-protocol listen address.
    #[arg(long, env = "MATCHSTREAM_TCP_LISTEN", default_value = "0.0.0.0:9999")]
    pub tcp_listen: SocketAddr,
    /// Worker threads (event loops); default one per CPU. May exceed the CPU count.
    #[arg(long, env = "MATCHSTREAM_WORKERS")]
    pub workers: Option<usize>,
    /// Directory of the embedded store.
    #[arg(long, env = "MATCHSTREAM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Bearer token for the admin API; a random one is generated and printed when unset.
    #[arg(long, env = "MATCHSTREAM_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Replay the bundled sample match in a loop.
    #[arg(long, env = "MATCHSTREAM_DEMO")]
    pub demo: bool,
    /// Serve the WebSocket echo endpoint `/1/echo` (for the Autobahn suite).
    #[arg(long, env = "MATCHSTREAM_ENABLE_ECHO")]
    pub enable_echo: bool,
    /// Most connections the whole server accepts at once (over it: 503 / refused).
    #[arg(long, env = "MATCHSTREAM_MAX_CONNECTIONS", default_value_t = 1_000_000)]
    pub max_connections: usize,
    /// Most bytes queued towards one connection before it is closed as a slow consumer.
    #[arg(long, env = "MATCHSTREAM_MAX_OUTBOUND_BYTES", default_value_t = 256 << 10)]
    pub max_outbound_bytes: usize,
    /// Largest WebSocket message (and frame) accepted from a watcher, bytes.
    #[arg(long, env = "MATCHSTREAM_MAX_MESSAGE_BYTES", default_value_t = 64 << 10)]
    pub max_message_bytes: usize,
    /// Largest HTTP request body, bytes.
    #[arg(long, env = "MATCHSTREAM_MAX_BODY_BYTES", default_value_t = 64 << 10)]
    pub max_body_bytes: usize,
    /// Time allowed for a complete request head (and WebSocket handshake), ms.
    #[arg(
        long,
        env = "MATCHSTREAM_HANDSHAKE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub handshake_timeout_ms: u64,
    /// A WebSocket silent this long is pinged, ms.
    #[arg(long, env = "MATCHSTREAM_WS_PING_AFTER_MS", default_value_t = 30_000)]
    pub ws_ping_after_ms: u64,
    /// A pinged WebSocket silent this much longer is dropped as dead, ms.
    #[arg(long, env = "MATCHSTREAM_WS_DEAD_AFTER_MS", default_value_t = 30_000)]
    pub ws_dead_after_ms: u64,
    /// Cluster mode: keep teams, matches and events in this Redis (`redis://HOST:PORT/DB`)
    /// instead of the embedded store, shared with the other nodes.
    #[arg(long, env = "MATCHSTREAM_REDIS", value_name = "URL")]
    pub redis: Option<String>,
    /// Cluster mode: this node's name in the registry (default: its advertised address).
    #[arg(long, env = "MATCHSTREAM_NODE_ID", requires = "redis")]
    pub node_id: Option<String>,
    /// Cluster mode: `ws://HOST:PORT` where watchers reach this node, for `/1/checkin`
    /// (default: the bound HTTP address).
    #[arg(
        long,
        env = "MATCHSTREAM_ADVERTISE",
        value_name = "URL",
        requires = "redis"
    )]
    pub advertise: Option<String>,
    /// Cluster mode: the TCP line port announced for this node (default: the bound one).
    #[arg(long, env = "MATCHSTREAM_ADVERTISE_TCP_PORT", requires = "redis")]
    pub advertise_tcp_port: Option<u16>,
    /// Cluster mode: a node's registration expires this long after its last refresh, ms
    /// (it refreshes every third of it).
    #[arg(long, env = "MATCHSTREAM_NODE_TTL_MS", default_value_t = 10_000)]
    pub node_ttl_ms: u64,
}
