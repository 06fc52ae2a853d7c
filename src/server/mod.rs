//! The runtime shell: monoio worker threads around the sans-I/O protocol core.
//!
//! Start-up order matters: every worker's inbox (and its wake-up socket) is created first,
//! then the workers start; each pins itself, unshares its fd table, builds its io_uring
//! runtime and binds its `SO_REUSEPORT` listeners. Worker 0 binds first so that port 0
//! resolves to one port that the others then share. The main thread then waits for
//! SIGINT/SIGTERM and asks every worker to shut down.

pub mod config;
pub mod http;
pub mod inbox;
pub mod line;
pub mod metrics;
pub mod outbox;
pub mod replies;
pub mod router;
pub mod signal;
pub mod stream;
pub mod sys;
pub mod worker;
pub mod ws;

use std::io::{self, Write};
use std::sync::atomic::AtomicUsize;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

pub mod limits;

use crate::cli::ServeArgs;
use config::ServerConfig;
use inbox::inbox;
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
    config
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
    let config = config_from_args(&args);
    sys::block_shutdown_signals()?;
    let running = start(config)?;
    let signal = sys::wait_for_shutdown_signal();
    tracing::info!(signal, "shutting down");
    running.shutdown();
    Ok(())
}

/// A started server: its workers and the addresses they listen on.
pub struct Running {
    /// Where HTTP/WebSocket and the TCP line protocol listen.
    pub addrs: BoundAddrs,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// Asks every worker to close its connections and waits for them.
    pub fn shutdown(self) {
        for inbox in &self.shared.inboxes {
            inbox.send(WorkerMsg::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Starts the workers and returns once all of them listen.
pub fn start(config: ServerConfig) -> io::Result<Running> {
    let workers = config.workers;
    let mut senders = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (tx, rx) = inbox()?;
        senders.push(tx);
        receivers.push(rx);
    }
    let shared = Arc::new(Shared {
        stats: (0..workers).map(|_| WorkerStats::default()).collect(),
        inboxes: senders,
        connections: AtomicUsize::new(0),
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
