//! The runtime shell: monoio worker threads around the sans-I/O protocol core.
//!
//! Start-up order matters: every worker's inbox (and its wake-up socket) is created first,
//! then the workers start; each pins itself, unshares its fd table, builds its io_uring
//! runtime and binds its `SO_REUSEPORT` listeners. Worker 0 binds first so that port 0
//! resolves to one port that the others then share. The main thread then waits for
//! SIGINT/SIGTERM and asks every worker to shut down.

pub mod api;
pub mod config;
pub mod http;
pub mod inbox;
pub mod line;
pub mod metrics;
pub mod outbox;
pub mod page;
pub mod replies;
pub mod router;
pub mod signal;
pub mod stream;
pub mod sys;
pub mod watch;
pub mod worker;
pub mod ws;

use std::io::{self, Write};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod limits;

use crate::cli::ServeArgs;
use crate::sequencer::{system_clock_ms, Broadcast, Sequencer, SequencerHandle};
use crate::store::SqliteStore;
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
    config.max_connections = args.max_connections;
    config.admin_token = args.admin_token.clone().unwrap_or_default();
    config.max_outbound_bytes = args.max_outbound_bytes;
    config.ws.max_message_bytes = args.max_message_bytes;
    config.ws.max_frame_bytes = args.max_message_bytes;
    config.http.max_body_bytes = args.max_body_bytes;
    config.handshake_timeout = Duration::from_millis(args.handshake_timeout_ms);
    config.ws_ping_after = Duration::from_millis(args.ws_ping_after_ms);
    config.ws_dead_after = Duration::from_millis(args.ws_dead_after_ms);
    config
}

/// A random admin token (printed once at start when none is configured).
fn generate_token() -> String {
    use rand::Rng;
    let bytes: [u8; 18] = rand::thread_rng().gen();
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// Runs the server until SIGTERM/SIGINT.
pub fn serve(args: ServeArgs) -> io::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MATCHSTREAM_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(io::stderr)
        .try_init();
    let mut config = config_from_args(&args);
    if config.admin_token.is_empty() {
        config.admin_token = generate_token();
        println!("matchstream admin token: {}", config.admin_token);
    }
    check_capacity(&config);
    sys::block_shutdown_signals()?;
    let running = start(config)?;
    if running.shared.config.demo {
        crate::demo::spawn(running.shared.sequencer.clone());
    }
    let signal = sys::wait_for_shutdown_signal();
    tracing::info!(signal, "shutting down");
    running.shutdown();
    Ok(())
}

/// Raises the soft open-files limit, logs the capacity and warns when `max_connections`
/// cannot be reached.
fn check_capacity(config: &ServerConfig) {
    match limits::raise_nofile_soft_limit() {
        Ok(limit) => {
            let capacity = limits::capacity(config.workers, limit.soft);
            tracing::info!("capacity: {capacity}");
            if let Some(warning) = limits::capacity_warning(capacity, config.max_connections) {
                tracing::warn!("{warning}");
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
}

impl Running {
    /// Asks every worker to close its connections, waits for them, then stops the sequencer.
    pub fn shutdown(self) {
        for inbox in &self.shared.inboxes {
            inbox.send(WorkerMsg::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
        self.shared.sequencer.shutdown();
    }
}

/// The sequencer's sink: every worker gets every broadcast, stamped with the send time.
fn broadcast_sink(inboxes: Vec<InboxSender<WorkerMsg>>) -> crate::sequencer::Sink {
    Arc::new(move |broadcast: Broadcast| {
        let now = Instant::now();
        for inbox in &inboxes {
            inbox.send(WorkerMsg::Broadcast(broadcast.clone(), now));
        }
    })
}

fn start_sequencer(
    config: &ServerConfig,
    inboxes: Vec<InboxSender<WorkerMsg>>,
) -> io::Result<SequencerHandle> {
    let store = SqliteStore::open(&config.data_dir).map_err(|e| {
        io::Error::other(format!(
            "cannot open the store in {}: {e}",
            config.data_dir.display()
        ))
    })?;
    Sequencer::start(Box::new(store), broadcast_sink(inboxes), system_clock_ms)
        .map_err(|e| io::Error::other(format!("cannot load the store: {e}")))
}

/// Starts the sequencer and the workers and returns once all of them listen.
pub fn start(config: ServerConfig) -> io::Result<Running> {
    let workers = config.workers;
    let mut senders = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = inbox()?;
        senders.push(tx);
        receivers.push(rx);
    }
    let sequencer = start_sequencer(&config, senders.clone())?;
    let shared = Arc::new(Shared {
        stats: (0..workers).map(|_| WorkerStats::default()).collect(),
        inboxes: senders,
        connections: AtomicUsize::new(0),
        sequencer,
        bound: OnceLock::new(),
        config,
    });
    let mut addrs = BoundAddrs {
        http: shared.config.listen,
        tcp: shared.config.tcp_listen,
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
    println!(
        "matchstream listening http={} tcp={} workers={}",
        addrs.http, addrs.tcp, workers
    );
    let _ = io::stdout().flush();
    Ok(Running {
        addrs,
        shared,
        threads,
    })
}
