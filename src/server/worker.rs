//! One worker: a pinned thread with a private fd table running a monoio io_uring loop that
//! owns its listeners, its connection slab and its subscription tables.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};
use slab::Slab;

use super::accept::Room;
use super::admission::{apply_keepalive, PerIpCounts, Refusal};
use super::config::ServerConfig;
use super::conn_guard::ConnGuard;
use super::http::Handoff;
use super::inbox::{InboxReceiver, InboxSender};
use super::metrics::WorkerStats;
use super::plane::driver::{self, Plane, PlaneCell};
use super::plane::record::Flavour;
use super::replies::ReplyTable;
use super::signal::LocalSignal;
use super::task_signal::TaskSignal;
use super::tls::session::TlsSession;
use super::tls::socket::Socket;
use super::watch::{ConnRef, WatchTables};
use super::ws::WsMode;
use crate::os::sys;
use crate::sequencer::{Broadcast, Reply, SequencerHandle};

/// State shared by every worker of the process (read-mostly; no lock on the hot path).
pub struct Shared {
    /// The settings.
    pub config: ServerConfig,
    /// Each worker's counters, indexed by worker.
    pub stats: Vec<WorkerStats>,
    /// Each worker's inbox, indexed by worker.
    pub inboxes: Vec<InboxSender<WorkerMsg>>,
    /// Open connections across all workers (checked against `max_connections`).
    pub connections: AtomicUsize,
    /// The node's sequencer.
    pub sequencer: SequencerHandle,
    /// Where the listeners ended up (port 0 resolved), set once all workers listen.
    pub bound: std::sync::OnceLock<BoundAddrs>,
    /// Cluster mode: the live nodes, for `/1/checkin` (`None` on a single node).
    pub peers: Option<Arc<crate::sequencer::cluster::Peers>>,
    /// How many broadcasts the sequencer has handed out (reads wait for the worker to have
    /// applied them all).
    pub published: super::reads::Published,
    /// Reads ended matches' histories back from the store (`None`: every history stays in
    /// memory).
    pub history: Option<super::history::HistoryReader>,
    /// Open connections per source address (`--max-connections-per-ip`).
    pub per_ip: Arc<PerIpCounts>,
    /// Failed admin logins per source address (`--max-failed-logins-per-minute`).
    pub logins: super::admin_auth::LoginLimiter,
    /// The TLS certificate of the moment (`None`: both listeners are plain).
    pub tls: Option<super::tls::Certs>,
    /// TLS 1.3 watchers' sending keys go to the kernel (`--ktls`, and the kernel has the ULP).
    pub ktls: bool,
    /// Which workers take new connections (a full fd table takes a worker out).
    pub steering: super::accept::Steering,
}

impl Shared {
    /// The addresses the server listens on.
    pub fn addrs(&self) -> BoundAddrs {
        self.bound.get().copied().unwrap_or(BoundAddrs {
            http: self.config.listen,
            tcp: self.config.tcp_listen,
            admin: self.config.admin_listen,
        })
    }
}

/// A message to a worker from another thread.
pub enum WorkerMsg {
    /// Stop accepting, close every connection (1001) and exit after a bounded drain.
    Shutdown,
    /// A sequenced event or a cancellation to fan out, with the time it left the sequencer.
    Broadcast(Broadcast, Instant),
    /// The sequencer's answer to an API request of one of this worker's connections.
    Reply {
        /// The ticket the connection task waits on.
        ticket: u64,
        /// The answer.
        reply: Reply,
    },
    /// Run this on the worker (answers from helper threads, e.g. the history reader).
    Run(Box<dyn FnOnce(&Worker) + Send>),
    /// The sequencer's answer to a watch.
    WatchReply {
        /// The watching connection.
        conn: ConnRef,
        /// The match.
        mid: Arc<str>,
        /// The answer.
        reply: Reply,
    },
}

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// `--listen`: HTTP requests, then perhaps a WebSocket or an SSE stream.
    Http,
    /// `--tcp-listen`: a line-protocol `CONNECT`.
    Line,
}

/// What the worker keeps of a connection still in its monoio task (the TLS handshake, the
/// HTTP phase, the line protocol's `CONNECT`): after that it is a plane record, or closed.
pub struct ConnState {
    /// The task's wake-up and close request (the worker's shutdown uses it).
    pub signal: TaskSignal,
    /// Which listener it came from.
    pub kind: Cell<ConnKind>,
    /// Unique per worker, never reused (slab keys are).
    pub serial: u64,
    /// Its address's connection slot.
    pub guard: ConnGuard,
}

/// The per-thread worker.
pub struct Worker {
    /// Index of this worker.
    pub index: usize,
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// Live connections of this worker.
    pub conns: RefCell<Slab<Rc<ConnState>>>,
    /// The read scratch buffer every connection of this worker reads into.
    pub scratch: RefCell<Vec<u8>>,
    /// Fired when shutdown begins.
    pub shutdown: LocalSignal,
    /// Answers from the sequencer awaited by connection tasks.
    pub replies: ReplyTable<Reply>,
    /// Subscription tables.
    pub watch: WatchTables,
    /// The published snapshots the public reads are answered from.
    pub reads: super::reads::Reads,
    /// The watcher plane: every watcher of this worker, after its handshake.
    pub plane: PlaneCell,
    next_serial: Cell<u64>,
    origin: Instant,
}

impl Worker {
    /// This worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.shared.stats[self.index]
    }

    /// Milliseconds since the worker started (the keepalive clock).
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Forgets a closed connection in the counts (process-wide and this worker's).
    pub fn release_count(&self) {
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        WorkerStats::sub(&self.stats().connections, 1);
    }
}

/// Addresses a worker actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// HTTP + WebSocket.
    pub http: SocketAddr,
    /// TCP line protocol.
    pub tcp: SocketAddr,
    /// `--admin-listen` (worker 0 only).
    pub admin: Option<SocketAddr>,
}

/// Runs worker `index` on the current thread until shutdown: pins it, unshares its fd
/// table, builds its io_uring runtime and binds its `SO_REUSEPORT` listeners. `bound` is
/// told the resolved addresses once the listeners exist.
pub fn run_worker(
    index: usize,
    shared: Arc<Shared>,
    mut inbox: InboxReceiver<WorkerMsg>,
    addrs: BoundAddrs,
    bound: std::sync::mpsc::Sender<io::Result<BoundAddrs>>,
) {
    if let Some(cores) = core_affinity::get_core_ids() {
        if !cores.is_empty() {
            core_affinity::set_for_current(cores[index % cores.len()]);
        }
    }
    if let Err(e) = sys::unshare_fd_table() {
        let _ = bound.send(Err(e));
        return;
    }
    let mut runtime = match crate::os::runtime::worker_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let listeners = match super::accept::bind_listeners(&shared.config, addrs, index) {
            Ok(l) => l,
            Err(e) => {
                let _ = bound.send(Err(e));
                return;
            }
        };
        let _ = bound.send(Ok(BoundAddrs {
            http: listeners.0.local_addr().unwrap_or(addrs.http),
            tcp: listeners.1.local_addr().unwrap_or(addrs.tcp),
            admin: match &listeners.2 {
                Some(admin) => admin.local_addr().ok(),
                None => addrs.admin,
            },
        }));
        let (plane, eventfd) = match Plane::new(&shared.config, 0) {
            Ok(started) => started,
            Err(e) => {
                let _ = bound.send(Err(plane_error(e)));
                return;
            }
        };
        let plane = RefCell::new(plane);
        let worker = Rc::new(Worker {
            index,
            scratch: RefCell::new(vec![0; shared.config.read_buffer_bytes]),
            shared,
            conns: RefCell::new(Slab::new()),
            shutdown: LocalSignal::default(),
            replies: ReplyTable::default(),
            watch: WatchTables::default(),
            reads: super::reads::Reads::default(),
            plane,
            next_serial: Cell::new(0),
            origin: Instant::now(),
        });
        monoio::spawn(driver::run(worker.clone(), eventfd));
        let steered = vec![listeners.0.as_raw_fd(), listeners.1.as_raw_fd()];
        let room = Rc::new(Room::new(&worker, steered, listeners.2.is_some()));
        let (http, tcp, admin) = listeners;
        let mut loops = vec![(http, ConnKind::Http, false), (tcp, ConnKind::Line, false)];
        loops.extend(admin.map(|admin| (admin, ConnKind::Http, true)));
        for (listener, kind, admin) in loops {
            monoio::spawn(accept_loop(
                worker.clone(),
                listener,
                kind,
                room.clone(),
                admin,
            ));
        }
        serve_inbox(&worker, &mut inbox).await;
        drain(&worker).await;
    });
}

/// Why the watcher plane's ring could not start, said so that an operator can act on it.
fn plane_error(e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cannot set up the watcher plane's io_uring ring ({e}): matchstream needs Linux ≥ 5.13 \
             with io_uring enabled (sysctl kernel.io_uring_disabled=0) and enough locked memory \
             (ulimit -l) for --plane-ring-entries"
        ),
    )
}

/// Handles inbox messages until a shutdown message arrives.
async fn serve_inbox(worker: &Rc<Worker>, inbox: &mut InboxReceiver<WorkerMsg>) {
    let Some(reader) = inbox.take_reader() else {
        return;
    };
    let reader = match monoio::net::UnixStream::from_std(reader) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(worker = worker.index, "inbox: {e}");
            return;
        }
    };
    let mut sink = [0u8; 256];
    loop {
        if reader.readable(false).await.is_err() {
            return;
        }
        while let Ok(sys::Transfer::Done(n)) = sys::recv_nonblocking(reader.as_raw_fd(), &mut sink)
        {
            if n < sink.len() {
                break;
            }
        }
        inbox.rearm();
        while let Some(msg) = inbox.try_recv() {
            if handle_message(worker, msg) {
                return;
            }
        }
        driver::pump(worker);
    }
}

/// Handles one inbox message; true when the worker must begin shutting down.
fn handle_message(worker: &Rc<Worker>, msg: WorkerMsg) -> bool {
    match msg {
        WorkerMsg::Shutdown => {
            worker.shutdown.fire();
            return true;
        }
        WorkerMsg::Broadcast(broadcast, sent_at) => {
            worker.reads.apply(&broadcast);
            super::watch::on_broadcast(worker, broadcast, sent_at)
        }
        WorkerMsg::Run(f) => f(worker),
        WorkerMsg::Reply { ticket, reply } => worker.replies.fulfil(ticket, reply),
        WorkerMsg::WatchReply { conn, mid, reply } => {
            super::watch::on_watch_reply(worker, conn, &mid, reply)
        }
    }
    false
}

/// Accepts connections until shutdown, enforcing the worker's fd room (see
/// [`super::accept`]), `max_connections` and the per-address limit; on the `--admin-listen`
/// listener (`admin`) only the fd room, held-back slots included.
async fn accept_loop(
    worker: Rc<Worker>,
    listener: TcpListener,
    kind: ConnKind,
    room: Rc<Room>,
    admin: bool,
) {
    loop {
        let Some((stream, peer)) =
            super::accept::next(&worker, &listener, kind, &room, admin).await
        else {
            return;
        };
        let shared = &worker.shared;
        let tls = shared.tls.is_some();
        let ticket = match admin {
            true => Some(super::admission::IpTicket::uncounted(peer.ip())),
            false => shared.per_ip.admit(peer.ip()),
        };
        let Some(ticket) = ticket else {
            WorkerStats::add(&worker.stats().refused_per_ip, 1);
            super::accept::refuse(stream.as_raw_fd(), kind, Refusal::TooManyFromAddress, tls);
            continue;
        };
        if shared.connections.fetch_add(1, Ordering::AcqRel) >= shared.config.max_connections
            && !admin
        {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            WorkerStats::add(&worker.stats().refused, 1);
            super::accept::refuse(stream.as_raw_fd(), kind, Refusal::ServerFull, tls);
            continue;
        }
        let _ = stream.set_nodelay(true);
        if let Err(e) = apply_keepalive(stream.as_raw_fd(), &shared.config.tcp_keepalive) {
            tracing::debug!("cannot set keepalive options: {e}");
        }
        let serial = worker.next_serial.get();
        worker.next_serial.set(serial + 1);
        let state = Rc::new(ConnState {
            signal: TaskSignal::default(),
            kind: Cell::new(kind),
            serial,
            guard: ConnGuard::new(ticket),
        });
        let id = worker.conns.borrow_mut().insert(state.clone());
        WorkerStats::add(&worker.stats().accepted, 1);
        WorkerStats::add(&worker.stats().connections, 1);
        monoio::spawn(connection_task(worker.clone(), stream, id, state, kind));
    }
}

/// A connection's first task: the HTTP phase (or the line protocol). An upgrade hands the
/// socket to a fresh WebSocket task, so none of this phase's state stays allocated for the
/// long, mostly idle life of a watcher.
async fn connection_task(
    worker: Rc<Worker>,
    stream: TcpStream,
    id: usize,
    state: Rc<ConnState>,
    kind: ConnKind,
) {
    let stream = match &worker.shared.tls {
        None => Socket::plain(stream),
        Some(certs) => match TlsSession::new(certs.current()) {
            Ok(session) => Socket::tls(stream, session),
            Err(e) => {
                tracing::warn!("cannot start a TLS session: {e}");
                release_connection(&worker, id, &state);
                return;
            }
        },
    };
    match kind {
        ConnKind::Line => {
            if super::line::serve(&worker, stream, id, &state).await {
                return;
            }
        }
        _ => match super::http::serve(&worker, stream, &state).await {
            Some(Handoff::WebSocket(up)) => {
                let flavour = match (up.mode, up.deflate) {
                    (WsMode::Watch, None) => Flavour::Ws,
                    (WsMode::Watch, Some(_)) => Flavour::WsDeflate,
                    (WsMode::Echo, None) => Flavour::Echo,
                    (WsMode::Echo, Some(agreed)) if agreed.may_compress() => Flavour::EchoDeflate,
                    (WsMode::Echo, Some(_)) => Flavour::EchoInflate,
                };
                let peer = hand_over(&worker, id);
                driver::adopt(&worker, up.stream, flavour, &up.leftover, peer);
                return;
            }
            Some(Handoff::EventStream(start)) => {
                super::sse::serve(&worker, start, id);
                return;
            }
            None => {}
        },
    }
    release_connection(&worker, id, &state);
}

/// Forgets a finished connection: its subscriptions, its slab entry, its counts.
pub fn release_connection(worker: &Worker, id: usize, _state: &ConnState) {
    worker.conns.borrow_mut().remove(id);
    worker.release_count();
}

/// A connection task hands its socket to the watcher plane: its slab entry goes, its counts
/// stay (the record carries them until it closes, its address's claim included: returned
/// here when counted).
pub fn hand_over(worker: &Worker, id: usize) -> Option<std::net::IpAddr> {
    let state = worker.conns.borrow_mut().remove(id);
    state.guard.detach_ticket()
}

/// After shutdown began: asks every connection to close, then waits (bounded) for them.
async fn drain(worker: &Rc<Worker>) {
    for (_, conn) in worker.conns.borrow().iter() {
        conn.signal.close_now();
    }
    driver::close_all(worker);
    let deadline = Instant::now() + worker.shared.config.shutdown_drain;
    while (!worker.conns.borrow().is_empty() || driver::records(worker) > 0)
        && Instant::now() < deadline
    {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_state_stays_small() {
        let sizes = [
            ("ConnState", std::mem::size_of::<ConnState>()),
            ("TaskSignal", std::mem::size_of::<TaskSignal>()),
            ("TcpStream", std::mem::size_of::<TcpStream>()),
        ];
        eprintln!("{sizes:?}");
        assert!(std::mem::size_of::<ConnState>() <= 256, "{sizes:?}");
    }
}
