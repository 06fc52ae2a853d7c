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
use super::outbox::Outbox;
use super::plane::driver::{self, Plane, PlaneCell};
use super::plane::record::Flavour;
use super::replies::ReplyTable;
use super::signal::LocalSignal;
use super::tls::session::TlsSession;
use super::tls::socket::Socket;
use super::watch::{ConnRef, Subscriptions, WatchTables};
use crate::os::sys;
use crate::proto::close;
use crate::proto::keepalive::{Keepalive, KeepaliveAction};
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

/// What a connection is doing now (for shutdown and keepalive sweeps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// Reading HTTP requests.
    Http,
    /// A WebSocket (echo or watcher).
    WebSocket,
    /// A TCP line-protocol watcher.
    Line,
    /// A Server-Sent Events watcher.
    Sse,
}

/// The part of a connection that its worker (not only its task) touches.
pub struct ConnState {
    /// Outbound queue and wake-up.
    pub outbox: Outbox,
    /// What the connection is.
    pub kind: Cell<ConnKind>,
    /// WebSocket keepalive (idle ping, dead-peer detection).
    pub keepalive: RefCell<Keepalive>,
    /// Unique per worker, never reused (slab keys are).
    pub serial: u64,
    /// The matches this connection watches (or asked to).
    pub watching: RefCell<Subscriptions>,
    /// Its address's connection slot, send and message deadlines.
    pub guard: ConnGuard,
    /// The WebSocket peer negotiated permessage-deflate and takes compressed frames: fan-out
    /// sends it the worker's shared RSV1 frame instead of the plain one.
    pub deflate: Cell<bool>,
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
    /// The watcher plane (`None` when off or when its ring could not be set up: watchers
    /// are then connection tasks).
    pub plane: Option<PlaneCell>,
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

    /// A fresh keepalive tracker using the configured intervals.
    pub fn new_keepalive(&self) -> Keepalive {
        let c = &self.shared.config;
        Keepalive::new(
            c.ws_ping_after.as_millis() as u64,
            c.ws_dead_after.as_millis() as u64,
            self.now_ms(),
        )
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
    let mut runtime = match crate::os::runtime::uring_runtime() {
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
        let (plane, eventfd) = match start_plane(index, &shared.config) {
            Some((plane, eventfd)) => (Some(RefCell::new(plane)), Some(eventfd)),
            None => (None, None),
        };
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
        if let Some(eventfd) = eventfd {
            monoio::spawn(driver::run(worker.clone(), eventfd));
        }
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
        monoio::spawn(keepalive_sweep(worker.clone()));
        serve_inbox(&worker, &mut inbox).await;
        drain(&worker).await;
    });
}

/// The worker's watcher plane, unless it is off or its ring cannot be set up here (then
/// watchers are served by connection tasks, as before the plane).
fn start_plane(index: usize, config: &ServerConfig) -> Option<(Plane, std::os::fd::OwnedFd)> {
    if !config.watcher_plane {
        return None;
    }
    match Plane::new(config, 0) {
        Ok(started) => Some(started),
        Err(e) => {
            tracing::warn!(
                worker = index,
                "watcher plane off (its io_uring ring failed: {e})"
            );
            None
        }
    }
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
            outbox: Outbox::new(shared.config.max_outbound_bytes),
            kind: Cell::new(kind),
            keepalive: RefCell::new(worker.new_keepalive()),
            serial,
            watching: RefCell::new(Subscriptions::default()),
            guard: ConnGuard::new(ticket),
            deflate: Cell::new(false),
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
            Some(Handoff::WebSocket(mut up)) => {
                if up.mode == super::ws::WsMode::Watch && worker.plane.is_some() {
                    match up.stream.into_plain() {
                        Ok(stream) => {
                            let peer = hand_over(&worker, id);
                            let flavour = match up.deflate {
                                Some(_) => Flavour::WsDeflate,
                                None => Flavour::Ws,
                            };
                            driver::adopt(&worker, stream, flavour, &up.leftover, peer);
                            return;
                        }
                        // TLS: encrypted per connection, so a connection task.
                        Err(socket) => up.stream = socket,
                    }
                }
                let task = websocket_task(worker, up, id, state);
                if id == 0 {
                    tracing::debug!(
                        bytes = std::mem::size_of_val(&task),
                        "WebSocket task future"
                    );
                }
                monoio::spawn(task);
                return;
            }
            Some(Handoff::EventStream(start)) => {
                // False: it ran on this task (no plane) and ended here.
                if !super::sse::serve(&worker, start, id, &state).await {
                    release_connection(&worker, id, &state);
                }
                return;
            }
            None => {}
        },
    }
    release_connection(&worker, id, &state);
}

/// A WebSocket connection's task, from the upgrade to the close. The set-up runs before the
/// future exists, so the future holds only what the connection's life needs.
fn websocket_task(
    worker: Rc<Worker>,
    up: super::http::Upgraded,
    id: usize,
    state: Rc<ConnState>,
) -> impl std::future::Future<Output = ()> {
    let ws = super::ws::start(&worker, up, id, &state);
    super::ws::run(ws, state)
}

/// Forgets a finished connection: its subscriptions, its slab entry, its counts.
pub fn release_connection(worker: &Worker, id: usize, state: &ConnState) {
    let watching = std::mem::take(&mut *state.watching.borrow_mut());
    super::watch::forget_subscriptions(worker, &watching);
    super::watch::forget_deferred(worker, ConnRef::task(id, state.serial));
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

/// Periodically (a quarter of the shortest of the ping interval, the send timeout and the
/// message timeout; at most every second): pings idle WebSocket tasks, drops dead ones, and
/// closes connection tasks past their send or message deadline.
async fn keepalive_sweep(worker: Rc<Worker>) {
    let c = &worker.shared.config;
    let shortest = [c.send_timeout, c.ws_message_timeout]
        .into_iter()
        .filter(|d| !d.is_zero())
        .fold(c.ws_ping_after, Duration::min);
    let period = (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = monoio::time::interval(period);
    while !worker.shutdown.is_fired() {
        ticker.tick().await;
        let now = worker.now_ms();
        for (_, conn) in worker.conns.borrow().iter() {
            super::conn_guard::sweep(&worker, conn, now);
            let sse = match conn.kind.get() {
                ConnKind::WebSocket => false,
                ConnKind::Sse => true,
                ConnKind::Http | ConnKind::Line => continue,
            };
            let action = conn.keepalive.borrow_mut().poll(now);
            match action {
                // An SSE client never talks: a comment every ping interval keeps the stream
                // (and any proxy on the way) alive; a dead peer shows as a stuck send.
                KeepaliveAction::SendPing if sse => {
                    let _ = conn.outbox.push(super::sse::keepalive());
                    conn.keepalive.borrow_mut().on_activity(now);
                }
                KeepaliveAction::SendPing => conn.outbox.push_ping(),
                KeepaliveAction::Dead => {
                    WorkerStats::add(&worker.stats().dead_peers, 1);
                    conn.outbox.close_now();
                }
                KeepaliveAction::Wait { .. } => {}
            }
        }
    }
}

/// After shutdown began: asks every connection to close, then waits (bounded) for them.
async fn drain(worker: &Rc<Worker>) {
    for (_, conn) in worker.conns.borrow().iter() {
        match conn.kind.get() {
            ConnKind::WebSocket => conn
                .outbox
                .close_after_flush(close::GOING_AWAY, "server shutting down"),
            ConnKind::Http | ConnKind::Line | ConnKind::Sse => conn.outbox.close_now(),
        }
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
            (
                "WsSession",
                std::mem::size_of::<crate::proto::session::WsSession>(),
            ),
            ("Keepalive", std::mem::size_of::<Keepalive>()),
            ("Outbox", std::mem::size_of::<Outbox>()),
            ("TcpStream", std::mem::size_of::<TcpStream>()),
        ];
        eprintln!("{sizes:?}");
        assert!(std::mem::size_of::<ConnState>() <= 256, "{sizes:?}");
    }
}
