//! The runtime shell: monoio worker threads around the sans-I/O protocol core.
//!
//! Start-up order matters: every worker's inbox (and its wake-up socket) is created first,
//! then the workers start; each pins itself, unshares its fd table, builds its io_uring
//! runtime and binds its `SO_REUSEPORT` listeners. Worker 0 binds first so that port 0
//! resolves to one port that the others then share. The main thread then waits for
//! SIGINT/SIGTERM and asks every worker to shut down; SIGHUP reloads the TLS certificate.

pub mod accept;
pub mod admin_auth;
pub mod admission;
pub mod api;
mod args;
pub mod compress;
pub mod config;
pub mod conn_guard;
pub mod footprint;
pub mod history;
pub mod http;
pub mod inbox;
pub mod line;
pub mod metrics;
pub mod page;
pub mod plane;
pub mod port_wait;
pub mod reads;
pub mod replies;
pub mod router;
pub mod signal;
pub mod sse;
pub mod stream;
pub mod task_signal;
pub mod tls;
pub mod watch;
pub mod worker;
pub mod ws;

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use args::ServeArgs;

use crate::os::{limits, sys};
use crate::sequencer::cluster::{
    spawn_reader, spawn_registry, ClusterConfig, NodeInfo, Peers, StopFlag,
};
use crate::sequencer::{system_clock_ms, Broadcast, Sequencer, SequencerHandle};
use crate::store::redis::{ReadCursor, RedisTarget, Replication, SwitchWatch};
use crate::store::sentinel_watch::spawn_switch_watch;
use crate::store::{RedisStore, SqliteStore, Store};
use config::ServerConfig;
use inbox::{inbox, InboxSender};
use metrics::WorkerStats;
use worker::{run_worker, BoundAddrs, Shared, WorkerMsg};

/// Builds the settings from the command line.
pub fn config_from_args(args: &ServeArgs) -> ServerConfig {
    let mut config = ServerConfig::new(args.listen, args.tcp_listen);
    if let Some(n) = args.workers {
        config.workers = n.max(1);
    }
    config.data_dir = args.data_dir.clone();
    config.enable_echo = args.enable_echo;
    config.demo = args.demo;
    config.demo_speed = args.demo_speed;
    if let Some(n) = args.max_connections {
        config.max_connections = n;
    }
    config.admin_token = args.admin_token.clone().unwrap_or_default();
    config.max_outbound_bytes = args.max_outbound_bytes;
    config.ws.max_message_bytes = args.max_message_bytes;
    config.ws.max_frame_bytes = args.max_message_bytes;
    config.http.max_body_bytes = args.max_body_bytes;
    config.handshake_timeout = Duration::from_millis(args.handshake_timeout_ms);
    config.ws_ping_after = Duration::from_millis(args.ws_ping_after_ms);
    config.ws_dead_after = Duration::from_millis(args.ws_dead_after_ms);
    config.sequencer.max_queued_writes = args.max_queued_writes.max(1);
    config.sequencer.ended_history_matches = args.ended_history_matches;
    config.wal_restart_commits = args.wal_restart_commits;
    config.wal_sync_thread = args.wal_sync_thread;
    config.plane_ring_entries = args.plane_ring_entries;
    config.send_timeout = Duration::from_millis(args.send_timeout_ms);
    config.max_connections_per_ip = args.max_connections_per_ip;
    config.max_watches_per_connection = args.max_watches_per_connection.clamp(1, 4096);
    config.watch_refusals_before_close = args.max_refused_watches.max(1);
    config.ws_message_timeout = Duration::from_millis(args.ws_message_timeout_ms);
    config.tcp_keepalive = config::TcpKeepalive {
        idle: Duration::from_secs(args.tcp_keepalive_idle_secs),
        interval: Duration::from_secs(args.tcp_keepalive_interval_secs.max(1)),
        probes: args.tcp_keepalive_probes.max(1),
        user_timeout: Duration::from_millis(args.tcp_user_timeout_ms),
    };
    config.max_failed_logins_per_minute = args.max_failed_logins_per_minute;
    config.port_wait = Duration::from_millis(args.port_wait_ms);
    config.admin_listen = args.admin_listen;
    config.admin_slots = if args.admin_listen.is_some() {
        args.admin_slots.max(1)
    } else {
        0
    };
    config.fd_resume_slots = args.fd_resume_slots.max(1);
    config.tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    config.ktls = args.ktls;
    let target = match (&args.redis, &args.redis_sentinel, &args.redis_master_name) {
        (Some(url), _, _) => Some(RedisTarget::Url(url.clone())),
        (None, Some(list), Some(master)) => {
            Some(RedisTarget::sentinel(list, master).expect("checked by the flag parser"))
        }
        _ => None,
    };
    config.cluster = target.map(|redis| ClusterConfig {
        redis,
        replication: Replication {
            min_replicas: args.redis_min_replicas,
            wait: Duration::from_millis(args.redis_wait_ms.max(1)),
        },
        node_id: args.node_id.clone().unwrap_or_default(),
        advertise: args.advertise.clone(),
        advertise_tcp_port: args.advertise_tcp_port,
        node_ttl: Duration::from_millis(args.node_ttl_ms.max(300)),
    });
    config
}

/// The admin token: `--admin-token`, else the content of `--admin-token-file`, else a
/// random one written to `DATA_DIR/admin-token` (mode 0600; only its path is logged).
fn admin_token(args: &ServeArgs) -> io::Result<String> {
    if let Some(token) = args.admin_token.as_ref().filter(|t| !t.is_empty()) {
        return Ok(token.clone());
    }
    if let Some(path) = &args.admin_token_file {
        return admin_auth::read_token_file(path);
    }
    let token = generate_token();
    let path = admin_auth::write_generated_token(&args.data_dir, &token).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot write the generated admin token to {}: {e} (or give --admin-token-file)",
                args.data_dir.join(admin_auth::TOKEN_FILE_NAME).display()
            ),
        )
    })?;
    tracing::info!(
        "no admin token configured: generated one, written to {} (readable by this user only)",
        path.display()
    );
    Ok(token)
}

/// A random admin token.
fn generate_token() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::thread_rng().gen();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Runs the server until SIGTERM/SIGINT (SIGHUP reloads the TLS certificate).
pub fn serve(args: ServeArgs) -> io::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MATCHSTREAM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
    let mut config = config_from_args(&args);
    config.admin_token = admin_token(&args)?;
    check_capacity(&config, args.max_connections.is_some());
    sys::block_shutdown_signals()?;
    let running = start(config)?;
    if running.shared.config.demo {
        let speed = running.shared.config.demo_speed;
        crate::feed::demo::spawn(running.shared.sequencer.clone(), speed);
    }
    loop {
        let signal = sys::wait_for_signal();
        if signal == libc::SIGHUP {
            running.reload_tls();
            continue;
        }
        tracing::info!(signal, "shutting down");
        break;
    }
    running.shutdown();
    Ok(())
}

/// Raises the soft open-files limit and says the capacity once: as a warning naming the fix
/// when the operator asked (`asked`) for a `--max-connections` it cannot reach, else at info.
fn check_capacity(config: &ServerConfig, asked: bool) {
    match limits::raise_nofile_soft_limit() {
        Ok(limit) => {
            let capacity = limits::capacity(config.workers, limit.soft);
            match limits::capacity_warning(capacity, config.max_connections) {
                Some(warning) if asked => tracing::warn!("{warning}"),
                _ => tracing::info!("capacity: {capacity}"),
            }
        }
        Err(e) => tracing::warn!("cannot read or raise the open-files limit: {e}"),
    }
}

/// A started server: its workers, its sequencer and the addresses they listen on.
pub struct Running {
    /// Where HTTP/WebSocket and the TCP line protocol listen.
    pub addrs: BoundAddrs,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    stop_cluster: StopFlag,
}

impl Running {
    /// `SIGHUP`: reads the TLS certificate and key again; new handshakes use them, open
    /// connections keep theirs. A bad file keeps the old certificate (and is logged).
    pub fn reload_tls(&self) {
        let Some(certs) = &self.shared.tls else {
            tracing::info!("SIGHUP: no TLS certificate to reload (no --tls-cert)");
            return;
        };
        match certs.reload() {
            Ok(()) => tracing::info!(
                cert = %certs.files().cert.display(),
                "SIGHUP: TLS certificate reloaded; new connections use it"
            ),
            Err(e) => {
                tracing::error!("SIGHUP: TLS certificate not reloaded, keeping the old one: {e}")
            }
        }
    }

    /// Asks every worker to close its connections, waits for them, then stops the sequencer.
    pub fn shutdown(self) {
        self.stop_cluster
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for inbox in &self.shared.inboxes {
            inbox.send(WorkerMsg::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.sequencer.shutdown();
    }
}

/// The sequencer's sink: every worker gets every broadcast, stamped with the send time;
/// `published` counts them (before they are sent: a read waits until its worker has applied
/// that many).
fn broadcast_sink(
    inboxes: Vec<InboxSender<WorkerMsg>>,
    published: reads::Published,
) -> crate::sequencer::Sink {
    Arc::new(move |broadcast: Broadcast| {
        published.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let now = Instant::now();
        for inbox in &inboxes {
            inbox.send(WorkerMsg::Broadcast(broadcast.clone(), now));
        }
    })
}

/// What [`start_sequencer`] starts.
struct Started {
    sequencer: SequencerHandle,
    /// Cluster mode: where the stream reader must start.
    cursor: Option<ReadCursor>,
    /// Reads histories let go from memory back from the store.
    history: Option<history::HistoryReader>,
}

/// Starts the sequencer on the configured store (and the history reader next to it).
fn start_sequencer(
    config: &ServerConfig,
    inboxes: Vec<InboxSender<WorkerMsg>>,
    published: reads::Published,
    switches: &SwitchWatch,
) -> io::Result<Started> {
    let (store, cursor): (Box<dyn Store>, _) = match &config.cluster {
        Some(cluster) => {
            let store =
                RedisStore::on(cluster.redis.clone(), cluster.replication, switches.clone());
            let cursor = store.cursor();
            (Box::new(store), Some(cursor))
        }
        None => {
            let mut store = SqliteStore::open(&config.data_dir).map_err(|e| {
                io::Error::other(format!(
                    "cannot open the store in {}: {e}",
                    config.data_dir.display()
                ))
            })?;
            // Checkpoints, and with --wal-sync-thread the WAL's fsync, leave the sequencer's
            // thread (then a batch is written while the one before it syncs; acknowledged
            // only once synced).
            if config.wal_sync_thread {
                store.sync_wal_separately()
            } else {
                store.checkpoint_in_background()
            }
            .map_err(|e| io::Error::other(format!("cannot start the WAL threads: {e}")))?;
            store.restart_wal_every(config.wal_restart_commits);
            (Box::new(store), None)
        }
    };
    let history = match store.history_source() {
        Some(source) => Some(history::spawn(source)?),
        None => None,
    };
    let sequencer = Sequencer::start_with(
        store,
        broadcast_sink(inboxes, published),
        system_clock_ms,
        config.sequencer,
    )
    .map_err(|e| io::Error::other(format!("cannot load the store: {e}")))?;
    let cursor = cursor.map(|c| c.lock().expect("cursor lock").take().unwrap_or_default());
    Ok(Started {
        sequencer,
        cursor,
        history,
    })
}

/// Cluster mode, once the listeners are bound: announces the node in the registry.
fn start_registry(
    cluster: &ClusterConfig,
    shared: &Arc<Shared>,
    stop: &StopFlag,
    switches: &SwitchWatch,
) -> io::Result<()> {
    let (Some(peers), addrs) = (shared.peers.clone(), shared.addrs()) else {
        return Ok(());
    };
    let base = cluster.advertise.clone().unwrap_or_else(|| {
        let scheme = if shared.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", addrs.http)
    });
    let ws = format!("{}/1/ws", base.trim_end_matches('/'));
    let id = if cluster.node_id.is_empty() {
        base.trim_start_matches("ws://")
            .trim_start_matches("wss://")
            .to_owned()
    } else {
        cluster.node_id.clone()
    };
    let me = NodeInfo {
        id: id.clone(),
        ws,
        port: cluster.advertise_tcp_port.unwrap_or(addrs.tcp.port()),
        connections: 0,
    };
    let counter = Arc::clone(shared);
    spawn_registry(
        &cluster.redis,
        switches.clone(),
        me,
        cluster.node_ttl,
        Box::new(move || {
            counter
                .connections
                .load(std::sync::atomic::Ordering::Relaxed)
        }),
        peers,
        Arc::clone(stop),
    )?;
    tracing::info!(
        node = id,
        redis = %cluster.redis,
        "cluster node registered"
    );
    Ok(())
}

/// Starts the sequencer and the workers and returns once all of them listen.
pub fn start(config: ServerConfig) -> io::Result<Running> {
    port_wait::wait_for_port(config.listen, config.port_wait)?;
    port_wait::wait_for_port(config.tcp_listen, config.port_wait)?;
    if let Some(admin) = config.admin_listen {
        port_wait::wait_for_port(admin, config.port_wait)?;
    }
    let workers = config.workers;
    let mut senders = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = inbox()?;
        senders.push(tx);
        receivers.push(rx);
    }
    let tls = match &config.tls {
        Some(files) => Some(
            tls::Certs::load(files.clone(), &config.data_dir)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let ktls = tls.is_some() && tls::ktls::decide(config.ktls);
    metrics::set_ktls_enabled(ktls);
    let published = reads::Published::default();
    let switches = SwitchWatch::default();
    let stop_cluster = StopFlag::default();
    let Started {
        sequencer,
        cursor,
        history,
    } = start_sequencer(&config, senders.clone(), Arc::clone(&published), &switches)?;
    if let (Some(cluster), Some(cursor)) = (&config.cluster, cursor) {
        spawn_switch_watch(&cluster.redis, switches.clone(), Arc::clone(&stop_cluster))?;
        spawn_reader(
            &cluster.redis,
            cluster.replication,
            switches.clone(),
            cursor,
            sequencer.clone(),
            Arc::clone(&stop_cluster),
        )?;
    }
    let shared = Arc::new(Shared {
        peers: config.cluster.as_ref().map(|_| Arc::new(Peers::default())),
        stats: (0..workers).map(|_| WorkerStats::default()).collect(),
        inboxes: senders,
        connections: AtomicUsize::new(0),
        per_ip: admission::PerIpCounts::new(config.max_connections_per_ip),
        logins: admin_auth::LoginLimiter::new(config.max_failed_logins_per_minute),
        sequencer,
        published,
        history,
        bound: OnceLock::new(),
        steering: accept::Steering::new(workers),
        tls,
        ktls,
        config,
    });
    let mut addrs = BoundAddrs {
        http: shared.config.listen,
        tcp: shared.config.tcp_listen,
        admin: shared.config.admin_listen,
    };
    let mut threads = Vec::with_capacity(workers);
    for (index, rx) in receivers.into_iter().enumerate() {
        let (bound_tx, bound_rx) = mpsc::channel();
        let shared_w = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || run_worker(index, shared_w, rx, addrs, bound_tx))?;
        threads.push(thread);
        let bound = bound_rx
            .recv()
            .map_err(|_| io::Error::other(format!("worker {index} died during start-up")))??;
        addrs = bound;
    }
    let _ = shared.bound.set(addrs);
    if let Some(cluster) = &shared.config.cluster {
        start_registry(cluster, &shared, &stop_cluster, &switches)?;
    }
    println!(
        "matchstream listening http={} tcp={} workers={}{}{}",
        addrs.http,
        addrs.tcp,
        workers,
        if shared.tls.is_some() { " tls=on" } else { "" },
        addrs
            .admin
            .map(|a| format!(" admin={a}"))
            .unwrap_or_default()
    );
    let _ = io::stdout().flush();
    Ok(Running {
        addrs,
        shared,
        threads,
        stop_cluster,
    })
}
