//! The plane beside monoio: one task per worker waits for the plane ring's eventfd (or the
//! next deadline), reaps completions and runs timers; every other task that touches the plane
//! (a broadcast, a watch reply, an upgrade handing over its socket) pumps it synchronously, so
//! a broadcast's SENDs go out in the same turn of the event loop.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;

use super::core::{PlaneConfig, PlaneCore, PlaneCounters, PlaneEvent};
use super::record::{Flavour, RecordId};
use super::ring::PlaneRing;
use crate::proto::frame::encode_frame;
use crate::proto::keepalive::KeepalivePolicy;
use crate::server::compress;
use crate::server::config::ServerConfig;
use crate::server::metrics::WorkerStats;
use crate::server::stream::CLOSE_HANDSHAKE_TIMEOUT;
use crate::server::tls::ktls;
use crate::server::tls::session::TlsSession;
use crate::server::tls::socket::Socket;
use crate::server::watch::{self, Subscriptions};
use crate::server::worker::Worker;

/// Most rounds of one pump (submit, reap, dispatch) before it yields to the event loop.
const MAX_PUMP_ROUNDS: usize = 16;
/// Longest the driver sleeps without a deadline or a completion.
const MAX_SLEEP_MS: u64 = 1_000;
/// Least time between two returns of free pages to the kernel.
const COLLECT_EVERY_MS: u64 = 1_000;

/// A worker's watcher plane: the sans-I/O core and its ring.
pub struct Plane {
    /// The state machine (records carry their subscription lists).
    pub core: PlaneCore<Subscriptions>,
    ring: PlaneRing,
    /// The driver task, to wake when a deadline earlier than its sleep appears.
    waker: Option<Waker>,
    sleeping_until: u64,
    kicked: bool,
    /// Records came or went since the allocator last returned free pages (a handshake's
    /// garbage, a closed record's memory).
    churned: bool,
    /// When the allocator last returned free pages (worker ms).
    collected_at: u64,
}

/// The plane's settings, from the server's.
pub fn plane_config(config: &ServerConfig) -> PlaneConfig {
    PlaneConfig {
        ws_limits: config.ws,
        echo_limits: config.echo_ws,
        keepalive: KeepalivePolicy {
            ping_after_ms: config.ws_ping_after.as_millis() as u64,
            dead_after_ms: config.ws_dead_after.as_millis() as u64,
        },
        max_outbound_bytes: config.max_outbound_bytes,
        // An echo answer is as large as the message it echoes: a few may be in flight.
        echo_max_outbound_bytes: 4 * config.echo_ws.max_message_bytes + 4096,
        send_timeout_ms: config.send_timeout.as_millis() as u64,
        close_linger_ms: CLOSE_HANDSHAKE_TIMEOUT.as_millis() as u64,
        message_timeout_ms: config.ws_message_timeout.as_millis() as u64,
        sends_defer_pings: !config.tcp_keepalive.user_timeout.is_zero(),
    }
}

impl Plane {
    /// A plane whose ring has `config.plane_ring_entries` submission slots, at time `now`;
    /// also returns the eventfd the driver awaits.
    pub fn new(config: &ServerConfig, now: u64) -> io::Result<(Self, OwnedFd)> {
        let mut ring = PlaneRing::new(config.plane_ring_entries)?;
        let eventfd = ring
            .take_eventfd()
            .ok_or_else(|| io::Error::other("plane ring without an eventfd"))?;
        // One worker's descriptor table bounds its records.
        let records = crate::os::limits::nofile_limit()
            .map(|l| crate::os::limits::capacity(1, l.soft).per_worker as usize)
            .unwrap_or(0)
            .min(config.max_connections);
        let plane = Plane {
            core: PlaneCore::with_capacity(plane_config(config), now, records),
            ring,
            waker: None,
            sleeping_until: u64::MAX,
            kicked: false,
            churned: false,
            collected_at: now,
        };
        Ok((plane, eventfd))
    }
}

/// Takes over a watcher after its upgrade (`/1/ws`, `/1/echo`), its line-protocol `CONNECT`
/// or its SSE head: the socket — plain, or TLS with its session — leaves monoio and becomes a
/// record. `leftover` holds plaintext that came with the handshake; `peer` is the
/// connection's counted source address (released when the record closes).
pub fn adopt(
    worker: &Rc<Worker>,
    socket: Socket,
    flavour: Flavour,
    leftover: &[u8],
    peer: Option<std::net::IpAddr>,
) -> RecordId {
    let (stream, tls) = socket.into_parts();
    let fd = stream.into_raw_fd();
    let now = worker.now_ms();
    let stats = worker.stats();
    let id = {
        let mut plane = worker.plane.borrow_mut();
        plane.churned = true;
        let id = match tls {
            Some(mut session) => {
                WorkerStats::add(&stats.tls_watchers, 1);
                if kernel_tls(worker, fd, &mut session) {
                    plane.core.adopt_ktls(fd, flavour, now, session)
                } else {
                    plane.core.adopt_tls(fd, flavour, now, session)
                }
            }
            None => plane.core.adopt(fd, flavour, now),
        };
        if let Some(app) = plane.core.app_mut(id) {
            app.peer = peer;
        }
        if !leftover.is_empty() {
            plane.core.on_plain(id.key, leftover, now);
        }
        id
    };
    if flavour.is_websocket() {
        WorkerStats::add(&stats.websockets, 1);
    }
    if flavour.inflates() {
        WorkerStats::add(&stats.deflate_websockets, 1);
    }
    match flavour {
        Flavour::Line => WorkerStats::add(&stats.line_connections, 1),
        Flavour::Sse => WorkerStats::add(&stats.sse_connections, 1),
        _ => {}
    }
    pump(worker);
    id
}

/// Hands `session`'s sending side on socket `fd` to the kernel's TLS when this server uses
/// kTLS and the session can go over (a TLS 1.3 session past its handshake with nothing
/// unsent); true when it went.
fn kernel_tls(worker: &Worker, fd: i32, session: &mut TlsSession) -> bool {
    if !worker.shared.ktls {
        return false;
    }
    let Some(tx) = session.kernel_tx() else {
        return false;
    };
    let stats = worker.stats();
    match ktls::enable_tx(fd, &tx) {
        Ok(()) => {
            session.hand_tx_to_kernel();
            WorkerStats::add(&stats.ktls_watchers, 1);
            true
        }
        Err(e) => {
            tracing::debug!(fd, "kTLS refused, sealing in user space: {e}");
            WorkerStats::add(&stats.ktls_refused, 1);
            false
        }
    }
}

/// Submits what the plane has queued, reaps its completions and hands its events to the
/// application, until nothing is left (bounded).
pub fn pump(worker: &Rc<Worker>) {
    let cell = &worker.plane;
    for _ in 0..MAX_PUMP_ROUNDS {
        let (events, reaped) = {
            let mut plane = cell.borrow_mut();
            turn(worker, &mut plane)
        };
        if events.is_empty() && reaped == 0 {
            break;
        }
        for event in events {
            dispatch(worker, event);
        }
    }
    let mut plane = cell.borrow_mut();
    let next = plane.core.next_timer().unwrap_or(u64::MAX);
    // Reads still owed after the last round: the driver task does them at once.
    if next < plane.sleeping_until || plane.core.has_read_owed() {
        plane.kicked = true;
        if let Some(w) = plane.waker.take() {
            w.wake();
        }
    }
}

/// [`pump`] after a broadcast: the broadcast's SENDs are submitted first, and the
/// `io_uring_enter` calls that batch took are counted (one while the ring holds every local
/// watcher); completions, timers and what they produce follow in the pump.
pub fn pump_broadcast(worker: &Rc<Worker>) {
    let enters = {
        let mut plane = worker.plane.borrow_mut();
        let Plane { core, ring, .. } = &mut *plane;
        let before = ring.enters();
        if let Err(e) = ring.submit(core) {
            tracing::warn!(worker = worker.index, "plane submit: {e}");
        }
        ring.enters() - before
    };
    worker.plane.borrow_mut().churned = true;
    let stats = worker.stats();
    WorkerStats::add(&stats.plane_enters, enters);
    WorkerStats::add(&stats.plane_broadcasts, 1);
    WorkerStats::add(&stats.plane_broadcast_enters, enters);
    pump(worker);
}

/// One round: submit, reap (reading where polls fired), run due timers, submit what that
/// produced. Returns the application's events and how many completions were reaped.
fn turn(worker: &Worker, plane: &mut Plane) -> (Vec<PlaneEvent<Subscriptions>>, usize) {
    let Plane { core, ring, .. } = plane;
    let now = worker.now_ms();
    let enters = ring.enters();
    let overflows = ring.overflow_flushes();
    if let Err(e) = ring.submit(core) {
        tracing::warn!(worker = worker.index, "plane submit: {e}");
    }
    // The scratch buffer is free whenever the plane is pumped (no task holds it across a
    // call into the plane); if it ever is not, the completions wait for the next turn.
    let reaped = match worker.scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let mut reaped = ring.complete(core, &mut scratch, now);
            // Records whose commands were taken (or whose reading resumed) may have more
            // bytes waiting than their polls will report.
            for key in core.take_read_owed() {
                super::ring::read_ready(core, key, &mut scratch, now);
                reaped += 1;
            }
            reaped
        }
        Err(_) => 0,
    };
    core.poll_timers(now);
    if core.has_io() {
        if let Err(e) = ring.submit(core) {
            tracing::warn!(worker = worker.index, "plane submit: {e}");
        }
    }
    let stats = worker.stats();
    WorkerStats::add(&stats.plane_enters, ring.enters() - enters);
    WorkerStats::add(
        &stats.plane_cq_overflows,
        ring.overflow_flushes() - overflows,
    );
    stats
        .plane_cq_dropped
        .store(u64::from(ring.dropped_completions()), Ordering::Relaxed);
    add_counters(stats, core.take_counters());
    (core.take_events(), reaped)
}

fn add_counters(stats: &WorkerStats, c: PlaneCounters) {
    if c == PlaneCounters::default() {
        return;
    }
    WorkerStats::add(&stats.slow_consumer_closes, c.slow_consumer_closes);
    WorkerStats::add(&stats.send_timeouts, c.send_timeouts);
    WorkerStats::add(&stats.dead_peers, c.dead_peers);
    WorkerStats::add(&stats.pings, c.pings);
    WorkerStats::add(&stats.protocol_errors, c.protocol_errors);
    WorkerStats::add(&stats.short_writes, c.short_writes);
    WorkerStats::add(&stats.message_timeouts, c.message_timeouts);
    WorkerStats::add(&stats.tls_record_errors, c.tls_errors);
    WorkerStats::add(&stats.peer_eofs, c.peer_eofs);
    WorkerStats::add(&stats.io_errors, c.io_errors);
    WorkerStats::add(&stats.ktls_update_closes, c.ktls_update_closes);
}

/// Hands one plane event to the application.
fn dispatch(worker: &Rc<Worker>, event: PlaneEvent<Subscriptions>) {
    match event {
        PlaneEvent::Text { id, text } => {
            watch::on_command(worker, id, text);
            watch::settle(worker, id);
        }
        PlaneEvent::Echo {
            id,
            flavour,
            opcode,
            payload,
        } => {
            let compressed = match flavour {
                Flavour::EchoDeflate => compress::frame(opcode, &payload),
                _ => None,
            };
            let frame = compressed.unwrap_or_else(|| {
                let mut frame = Vec::with_capacity(payload.len() + 10);
                encode_frame(&mut frame, opcode, &payload);
                frame
            });
            let stats = worker.stats();
            WorkerStats::add(&stats.frames_sent, 1);
            WorkerStats::add(&stats.bytes_sent, frame.len() as u64);
            let now = worker.now_ms();
            let mut plane = worker.plane.borrow_mut();
            let _ = plane.core.send(id, Bytes::from(frame), now);
            plane.core.release(id, now);
        }
        PlaneEvent::Closed {
            id,
            flavour,
            tls,
            app,
        } => {
            worker.plane.borrow_mut().churned = true;
            watch::forget_subscriptions(worker, id, &app);
            watch::forget_deferred(worker, id);
            if let Some(ip) = app.peer {
                worker.shared.per_ip.release(ip);
            }
            let stats = worker.stats();
            if flavour.is_websocket() {
                WorkerStats::sub(&stats.websockets, 1);
            }
            if flavour.inflates() {
                WorkerStats::sub(&stats.deflate_websockets, 1);
            }
            if tls {
                WorkerStats::sub(&stats.tls_watchers, 1);
            }
            match flavour {
                Flavour::Line => WorkerStats::sub(&stats.line_connections, 1),
                Flavour::Sse => WorkerStats::sub(&stats.sse_connections, 1),
                _ => {}
            }
            worker.release_count();
        }
    }
}

/// Sends what record `id`'s session held behind its commands (see
/// [`PlaneCore::release`](super::core::PlaneCore::release)); the driver submits it at once.
pub fn release(worker: &Worker, id: RecordId) {
    let mut plane = worker.plane.borrow_mut();
    let now = worker.now_ms();
    plane.core.release(id, now);
    if plane.core.has_io() {
        plane.kicked = true;
        if let Some(w) = plane.waker.take() {
            w.wake();
        }
    }
}

/// Pauses or resumes reading from record `id` (a resumed record is read at the next pump).
pub fn set_reading(worker: &Worker, id: RecordId, on: bool) {
    worker.plane.borrow_mut().core.set_read_paused(id, !on);
}

/// The driver task: waits for the ring's eventfd or the next deadline, then pumps.
pub async fn run(worker: Rc<Worker>, eventfd: OwnedFd) {
    // monoio has no eventfd type; its `UnixStream` is a thin owner of a descriptor whose
    // `readable()` is an io_uring POLL_ADD, which is all the driver needs.
    let std_fd = std::os::unix::net::UnixStream::from(eventfd);
    let eventfd = match monoio::net::UnixStream::from_std(std_fd) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(worker = worker.index, "plane eventfd: {e}");
            return;
        }
    };
    let cell = &worker.plane;
    loop {
        let sleep_ms = {
            let mut plane = cell.borrow_mut();
            let now = worker.now_ms();
            let next = plane.core.next_timer().unwrap_or(u64::MAX);
            let sleep_ms = next.saturating_sub(now).min(MAX_SLEEP_MS);
            plane.sleeping_until = now + sleep_ms;
            // Reads owed by the last pump: go round again at once.
            plane.kicked = plane.core.has_read_owed();
            sleep_ms
        };
        {
            let mut readable = pin!(eventfd.readable(false));
            let mut sleep = pin!(monoio::time::sleep(Duration::from_millis(sleep_ms)));
            poll_fn(|cx| {
                if readable.as_mut().poll(cx).is_ready() || sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                let mut plane = cell.borrow_mut();
                if plane.kicked {
                    return Poll::Ready(());
                }
                plane.waker = Some(cx.waker().clone());
                Poll::Pending
            })
            .await;
        }
        PlaneRing::reset_eventfd(eventfd.as_raw_fd());
        pump(&worker);
        return_free_pages_after_churn(&worker);
    }
}

/// At most once a second, after records came or went or a broadcast went out: the plane's
/// working buffers shrink back ([`PlaneCore::trim_buffers`]) and the pages freed go back to
/// the kernel (mimalloc would keep them until this thread allocates again, and an idle
/// worker does not).
fn return_free_pages_after_churn(worker: &Worker) {
    let now = worker.now_ms();
    {
        let mut plane = worker.plane.borrow_mut();
        if !plane.churned || now < plane.collected_at + COLLECT_EVERY_MS {
            return;
        }
        plane.churned = false;
        plane.collected_at = now;
        plane.core.trim_buffers();
    }
    crate::os::alloc::return_free_pages();
}

/// Shutdown: WebSocket records get a 1001 close, line records are closed.
pub fn close_all(worker: &Rc<Worker>) {
    let now = worker.now_ms();
    worker
        .plane
        .borrow_mut()
        .core
        .close_all(1001, "server shutting down", now);
    pump(worker);
}

/// Records alive on this worker's plane.
pub fn records(worker: &Worker) -> usize {
    worker.plane.borrow().core.len()
}

/// The plane cell type a worker holds.
pub type PlaneCell = RefCell<Plane>;
