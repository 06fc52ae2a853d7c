//! Accepting by descriptor room: nothing waits at the fd limit.
//!
//! Every worker has a private fd table (`unshare(CLONE_FILES)`), so each fills up on its own,
//! and the kernel spreads new connections over the workers' `SO_REUSEPORT` listeners by hash,
//! not by room. A worker therefore keeps count of its room — the open-files limit less the
//! descriptors it holds itself (measured once its listeners and rings exist), less
//! [`SPARE_FDS`], less the slots held back for `--admin-listen` — and when its connections
//! fill that room it is **full**: it leaves the accept distribution (the group's steering
//! program, [`crate::os::reuseport`], stops sending it connections; its listener stays open,
//! so nothing queued on it is reset) and comes back once `--fd-resume-slots` of its slots are
//! free again. What still lands on a full worker's listener is refused at once (503, or
//! `ERROR: server full` on the line port) through a descriptor kept in reserve for that. When
//! every worker is full the steering falls back to the kernel's hash, and every worker
//! refuses at once what it gets. One log line per change of state; the counters are in
//! `/metrics` (`matchstream_accept_paused`, `matchstream_accept_pauses_total`,
//! `matchstream_refused_worker_full_total`, `matchstream_connection_slots`).

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Poll;
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use super::admission::Refusal;
use super::config::ServerConfig;
use super::metrics::WorkerStats;
use super::worker::{BoundAddrs, ConnKind, Worker};
use crate::os::{limits, reuseport, sys};

/// Descriptors a worker keeps free beyond its connections: one for a connection accepted on a
/// full worker only to be refused, the rest for files a worker opens for a moment.
pub const SPARE_FDS: u64 = 4;

/// How often a full worker looks whether it has room again.
const RECHECK_EVERY: Duration = Duration::from_millis(50);

/// Which workers take new connections, process-wide; each change reprograms the steering of
/// the listening groups.
pub struct Steering {
    open: Mutex<Vec<bool>>,
    attach_failed: AtomicBool,
}

impl Steering {
    /// Every one of `workers` open.
    pub fn new(workers: usize) -> Self {
        Steering {
            open: Mutex::new(vec![true; workers]),
            attach_failed: AtomicBool::new(false),
        }
    }

    /// Marks worker `index` open (or full) and steers new connections accordingly, through
    /// that worker's own listening sockets `listeners` (one per group).
    fn set(&self, index: usize, open: bool, listeners: &[RawFd]) {
        let mut state = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let was_all_full = !state.iter().any(|&o| o);
        state[index] = open;
        let members: Vec<u32> = (0..state.len() as u32)
            .filter(|&i| state[i as usize])
            .collect();
        let prog = reuseport::program(state.len(), &members);
        for &fd in listeners {
            if let Err(e) = reuseport::attach(fd, &prog) {
                if !self.attach_failed.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "cannot steer new connections away from full workers ({e}): a full \
                         worker refuses what it gets at once instead"
                    );
                }
            }
        }
        match (was_all_full, members.is_empty()) {
            (false, true) => tracing::warn!(
                "every worker is full: new connections are refused at once (503 / ERROR: server full)"
            ),
            (true, false) => tracing::info!("a worker has room again: new connections are served"),
            _ => {}
        }
    }
}

/// Whether a worker holding `used` connections in `slots` changes state: `Some(true)` when an
/// open one fills up, `Some(false)` when a full one has `resume` slots free again, `None`
/// otherwise (the gap between the two is the hysteresis).
pub fn next_state(full: bool, used: u64, slots: u64, resume: u64) -> Option<bool> {
    match full {
        false if used >= slots => Some(true),
        true if used.saturating_add(resume) <= slots => Some(false),
        _ => None,
    }
}

/// One worker's descriptor room, shared by its accept loops.
pub struct Room {
    index: usize,
    limit: u64,
    /// Descriptors the worker holds that are not connections (its reserve included).
    baseline: Cell<u64>,
    held_back: u64,
    resume: u64,
    full: Cell<bool>,
    reserve: RefCell<Option<OwnedFd>>,
    listeners: Vec<RawFd>,
}

/// A descriptor held only to be given up when the table is full (`/dev/null`).
fn open_reserve() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

impl Room {
    /// The room of `worker`, measured now (call it once its listeners and rings exist, before
    /// it accepts); `listeners` are its steered listening sockets, `admin` whether it also
    /// serves `--admin-listen` (then `--admin-slots` are held back for that).
    pub fn new(worker: &Worker, listeners: Vec<RawFd>, admin: bool) -> Self {
        let config = &worker.shared.config;
        let reserve = open_reserve();
        let limit = limits::nofile_limit().map_or(1024, |l| l.soft);
        // Less the directory handle the count holds open while counting.
        let own = limits::open_descriptors()
            .map_or(limits::RESERVED_FDS_PER_WORKER, |n| n.saturating_sub(1));
        let mut room = Room {
            index: worker.index,
            limit,
            baseline: Cell::new(own),
            held_back: if admin { config.admin_slots as u64 } else { 0 },
            resume: 0,
            full: Cell::new(false),
            reserve: RefCell::new(reserve),
            listeners,
        };
        room.resume = (config.fd_resume_slots as u64).min(room.slots() / 2).max(1);
        worker
            .stats()
            .connection_slots
            .store(room.slots(), Ordering::Relaxed);
        tracing::info!(
            worker = worker.index,
            "room for {} connections (open-files limit {limit} less {own} descriptors of its \
             own, {SPARE_FDS} spare, {} held back for --admin-listen)",
            room.slots(),
            room.held_back
        );
        room
    }

    /// Public connections this worker holds at most.
    pub fn slots(&self) -> u64 {
        self.limit
            .saturating_sub(self.baseline.get())
            .saturating_sub(SPARE_FDS)
            .saturating_sub(self.held_back)
    }

    /// Whether the worker is out of the accept distribution.
    pub fn is_full(&self) -> bool {
        self.full.get()
    }

    fn used(&self, worker: &Worker) -> u64 {
        worker.stats().connections.load(Ordering::Relaxed)
    }

    /// Whether one more public connection fits.
    pub fn admits(&self, worker: &Worker) -> bool {
        self.used(worker) < self.slots()
    }

    /// Whether one more connection on `--admin-listen` fits (the held-back slots too).
    pub fn admits_admin(&self, worker: &Worker) -> bool {
        self.used(worker) < self.slots() + self.held_back
    }

    /// Leaves the distribution when the connections fill the room; comes back once
    /// `resume` slots are free.
    pub fn check(&self, worker: &Worker) {
        let used = self.used(worker);
        if let Some(full) = next_state(self.full.get(), used, self.slots(), self.resume) {
            self.set_full(worker, full, used);
        }
    }

    /// `accept` found the fd table full although the count said otherwise (descriptors
    /// opened by something else): measures the worker's own descriptors again and leaves the
    /// distribution.
    pub fn on_table_full(&self, worker: &Worker) {
        // The reserve's slot lets the count open its directory; that handle stands in for
        // the reserve in the count.
        let reserve = self.reserve.borrow_mut().take();
        let count = limits::open_descriptors();
        drop(reserve);
        *self.reserve.borrow_mut() = open_reserve();
        if let Ok(count) = count {
            let used = self.used(worker);
            self.baseline.set(count.saturating_sub(used));
            worker
                .stats()
                .connection_slots
                .store(self.slots(), Ordering::Relaxed);
        }
        if !self.full.get() {
            self.set_full(worker, true, self.used(worker));
        }
    }

    fn set_full(&self, worker: &Worker, full: bool, used: u64) {
        self.full.set(full);
        let stats = worker.stats();
        stats.accept_paused.store(full as u64, Ordering::Relaxed);
        if full {
            WorkerStats::add(&stats.accept_pauses, 1);
            tracing::warn!(
                worker = self.index,
                "full ({used} connections in {} slots): out of the accept distribution until \
                 {} slots are free",
                self.slots(),
                self.resume
            );
        } else {
            tracing::info!(
                worker = self.index,
                "room again ({used} connections in {} slots): back in the accept distribution",
                self.slots()
            );
        }
        worker
            .shared
            .steering
            .set(self.index, !full, &self.listeners);
    }

    /// Refuses every connection queued on `listener` (the reserve descriptor gives the first
    /// one a slot when the table is full); returns how many.
    fn refuse_queued(&self, worker: &Worker, listener: RawFd, kind: ConnKind) -> u64 {
        let reserve = self.reserve.borrow_mut().take();
        drop(reserve);
        let mut refused = 0;
        while let Ok(Some(fd)) = sys::accept_nonblocking(listener) {
            refuse(
                fd.as_raw_fd(),
                kind,
                Refusal::ServerFull,
                worker.shared.tls.is_some(),
            );
            refused += 1;
        }
        *self.reserve.borrow_mut() = open_reserve();
        WorkerStats::add(&worker.stats().refused_worker_full, refused);
        refused
    }
}

/// Tells a connection over a limit why it is refused (best effort; not on a TLS listener,
/// where plaintext before a handshake means nothing), before its descriptor is dropped:
/// reads what it already sent first, so that closing does not reset the answer away.
pub fn refuse(fd: RawFd, kind: ConnKind, why: Refusal, tls: bool) {
    let mut sink = [0u8; 2048];
    let _ = sys::recv_nonblocking(fd, &mut sink);
    if !tls {
        let out = why.message(kind == ConnKind::Line);
        let _ = sys::send_nonblocking(fd, &[&out]);
    }
    let _ = sys::shutdown_write(fd);
}

/// The worker's `SO_REUSEPORT` listeners (HTTP, line) and, on worker 0, `--admin-listen`.
pub fn bind_listeners(
    config: &ServerConfig,
    addrs: BoundAddrs,
    index: usize,
) -> io::Result<(TcpListener, TcpListener, Option<TcpListener>)> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(config.listen_backlog);
    let http = TcpListener::bind_with_config(addrs.http, &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", addrs.http)))?;
    let tcp = TcpListener::bind_with_config(addrs.tcp, &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", addrs.tcp)))?;
    let admin = match addrs.admin.filter(|_| index == 0) {
        Some(addr) => Some(
            TcpListener::bind_with_config(addr, &ListenerOpts::new().reuse_addr(true))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    Ok((http, tcp, admin))
}

fn table_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Waits for `fut`, shutdown (`None`) or `limit`, whichever comes first.
async fn bounded<F: Future>(worker: &Worker, fut: F, limit: Duration) -> Option<()> {
    let mut fut = pin!(fut);
    let mut stop = pin!(worker.shutdown.wait());
    let mut timer = pin!(monoio::time::sleep(limit));
    poll_fn(|cx| {
        if stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if fut.as_mut().poll(cx).is_ready() || timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(()));
        }
        Poll::Pending
    })
    .await
}

/// The next connection `listener` gives that this worker has room for (`None`: shutdown).
/// A full worker refuses at once what still reaches it; `admin` (the `--admin-listen`
/// listener) may use the held-back slots and is never steered.
pub async fn next(
    worker: &Rc<Worker>,
    listener: &TcpListener,
    kind: ConnKind,
    room: &Room,
    admin: bool,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        room.check(worker);
        if room.is_full() && !admin {
            bounded(worker, listener.readable(false), RECHECK_EVERY).await?;
            room.check(worker);
            if room.is_full() && room.refuse_queued(worker, listener.as_raw_fd(), kind) == 0 {
                // Nothing was queued (or not even the reserve could take it): wait for the
                // next connection or the next check.
                bounded(worker, std::future::pending::<()>(), RECHECK_EVERY).await?;
            }
            continue;
        }
        let accepted = {
            let mut accept = pin!(listener.accept());
            let mut stop = pin!(worker.shutdown.wait());
            poll_fn(|cx| {
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                accept.as_mut().poll(cx).map(Some)
            })
            .await?
        };
        match accepted {
            Ok((stream, peer)) => {
                let fits = match admin {
                    true => room.admits_admin(worker),
                    false => room.admits(worker),
                };
                if fits {
                    return Some((stream, peer));
                }
                WorkerStats::add(&worker.stats().refused_worker_full, 1);
                refuse(
                    stream.as_raw_fd(),
                    kind,
                    Refusal::ServerFull,
                    worker.shared.tls.is_some(),
                );
            }
            Err(e) if table_full(&e) => {
                let system_wide = e.raw_os_error() == Some(libc::ENFILE);
                if !system_wide {
                    room.on_table_full(worker);
                }
                if admin || system_wide {
                    // io_uring's accept fails before looking at the queue: refuse what is
                    // there through the reserve, then wait for more rather than spin.
                    room.refuse_queued(worker, listener.as_raw_fd(), kind);
                    bounded(worker, listener.readable(false), RECHECK_EVERY).await?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                // Out of memory or buffers: back off instead of spinning.
                tracing::warn!(worker = worker.index, "accept failed: {e}");
                bounded(
                    worker,
                    std::future::pending::<()>(),
                    Duration::from_millis(20),
                )
                .await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_leaves_when_full_and_returns_only_below_the_low_water_mark() {
        let (slots, resume) = (100, 10);
        assert_eq!(next_state(false, 99, slots, resume), None);
        assert_eq!(next_state(false, 100, slots, resume), Some(true));
        // Full: a few closes are not enough to come back (no flapping at the edge).
        assert_eq!(next_state(true, 99, slots, resume), None);
        assert_eq!(next_state(true, 91, slots, resume), None);
        assert_eq!(next_state(true, 90, slots, resume), Some(false));
        assert_eq!(next_state(false, 90, slots, resume), None);
    }

    #[test]
    fn a_worker_with_no_slots_is_full_at_once() {
        assert_eq!(next_state(false, 0, 0, 1), Some(true));
        assert_eq!(next_state(true, 0, 0, 1), None);
    }
}
