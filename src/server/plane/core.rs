//! The plane's sans-I/O state machine: records, shared frames and timers, no sockets and no
//! clock.
//!
//! Inputs are calls: a record adopted, a frame pushed, bytes read, a completion, the time.
//! Outputs are polled: [`IoOp`]s for the I/O shell to turn into SQEs (or a `shutdown(2)` /
//! `close(2)`), and [`PlaneEvent`]s for the application (a watcher's text message, a record
//! gone). Every close and ping goes through the record's WebSocket session; every deadline
//! (keepalive, send timeout, close handshake) goes through one [`DeadlineWheel`].

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use bytes::Bytes;
use slab::Slab;

use super::frames::{FrameId, FrameTable};
use super::record::*;
use super::wheel::DeadlineWheel;
use crate::proto::frame::OpCode;
use crate::proto::keepalive::{KeepaliveAction, KeepalivePolicy, KeepaliveState};
use crate::proto::line::encode_error;
use crate::proto::session::{Parked, WsEvent, WsLimits, WsSession};
use crate::server::tls::session::TlsSession;

/// The plane's settings (from the server's).
#[derive(Debug, Clone, Copy)]
pub struct PlaneConfig {
    /// WebSocket limits of watchers (`/1/ws`).
    pub ws_limits: WsLimits,
    /// WebSocket limits of `/1/echo` records (larger messages).
    pub echo_limits: WsLimits,
    /// Ping after silence, drop after an unanswered ping.
    pub keepalive: KeepalivePolicy,
    /// Most bytes queued towards one record; past it the record is closed (slow consumer).
    pub max_outbound_bytes: usize,
    /// The same bound for an `/1/echo` record (its answers are as large as its messages).
    pub echo_max_outbound_bytes: usize,
    /// Queued bytes making no progress this long close the record; 0 = off.
    pub send_timeout_ms: u64,
    /// How long a record that sent its close frame waits for the peer's.
    pub close_linger_ms: u64,
    /// A WebSocket message (fragmented, or one frame) begun and not finished this long
    /// closes the record with 1008; 0 = off.
    pub message_timeout_ms: u64,
    /// Frames written count as activity for the keepalive: a watcher being sent events is
    /// not pinged (nor an SSE stream sent comments). Set when `TCP_USER_TIMEOUT` is on, so
    /// the kernel drops a peer that stops acknowledging what we send.
    pub sends_defer_pings: bool,
}

/// What the I/O shell must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    /// Arm a multishot read-readiness poll on the record's socket.
    Poll {
        /// The record.
        key: u32,
        /// Its socket.
        fd: i32,
    },
    /// Send the bytes of `frame` from `offset` on (one SQE; the frame stays alive until
    /// [`PlaneCore::on_send_done`]).
    Send {
        /// The record.
        key: u32,
        /// Its socket.
        fd: i32,
        /// The frame.
        frame: FrameId,
        /// Bytes of it already written.
        offset: u32,
    },
    /// Cancel the record's poll (its completion follows).
    CancelPoll {
        /// The record.
        key: u32,
    },
    /// `shutdown(2)` both directions at once: a send still in flight then fails.
    Shutdown {
        /// The socket.
        fd: i32,
    },
    /// `shutdown(2)` of our sending side only: the peer reads a FIN after what was written,
    /// and its late bytes are still read (and dropped) during a lingering close.
    ShutdownWrite {
        /// The socket.
        fd: i32,
    },
    /// Send a kTLS record's closing alert (`close_notify` or a fatal one) as a record of its
    /// own type, at once and without waiting: everything queued before it is written.
    SendAlert {
        /// The socket.
        fd: i32,
        /// The alert: level, description.
        alert: [u8; 2],
    },
    /// `close(2)`: nothing is in flight on the socket any more.
    Close {
        /// The socket.
        fd: i32,
    },
}

/// What the application must handle.
#[derive(Debug)]
pub enum PlaneEvent<T> {
    /// A complete text message from a WebSocket watcher (a command).
    Text {
        /// The record.
        id: RecordId,
        /// The message.
        text: String,
    },
    /// A complete message from an `/1/echo` record, to be sent back.
    Echo {
        /// The record.
        id: RecordId,
        /// Its flavour (whether the answer may be compressed).
        flavour: Flavour,
        /// Text or binary.
        opcode: OpCode,
        /// The message.
        payload: Vec<u8>,
    },
    /// A record is gone (its socket closed); its application data comes back.
    Closed {
        /// The record that was.
        id: RecordId,
        /// Its flavour.
        flavour: Flavour,
        /// Whether it spoke TLS.
        tls: bool,
        /// Its application data.
        app: T,
    },
}

/// Counters since the last [`PlaneCore::take_counters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PlaneCounters {
    /// Frames queued to records.
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Records closed because their queue overflowed.
    pub slow_consumer_closes: u64,
    /// Records closed because queued bytes made no progress for the send timeout.
    pub send_timeouts: u64,
    /// Pings sent by keepalive.
    pub pings: u64,
    /// Records dropped by keepalive (unanswered ping).
    pub dead_peers: u64,
    /// Sessions that failed on a protocol error.
    pub protocol_errors: u64,
    /// Sends that wrote part of their bytes (the rest was requeued).
    pub short_writes: u64,
    /// Records closed because a WebSocket message was not finished in time.
    pub message_timeouts: u64,
    /// TLS records that failed (a bad record, an unexpected message, a seal error).
    pub tls_errors: u64,
    /// Open records whose peer closed its side without a close handshake (a WebSocket or
    /// SSE client that went away).
    pub peer_eofs: u64,
    /// Records whose read or send failed (a reset, a broken pipe).
    pub io_errors: u64,
    /// kTLS records ended because their peer asked for our `KeyUpdate` (the kernel's key is
    /// not renewed).
    pub ktls_update_closes: u64,
}

/// A push that would exceed the queue bound: the record is being closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// The watcher plane of one worker, without I/O.
pub struct PlaneCore<T> {
    config: PlaneConfig,
    records: Slab<Record<T>>,
    frames: FrameTable,
    wheel: DeadlineWheel,
    io: VecDeque<IoOp>,
    events: Vec<PlaneEvent<T>>,
    counters: PlaneCounters,
    next_serial: u32,
    fired: Vec<(u64, (u32, u32))>,
    /// Records to read from again (their commands were taken, or reading was resumed).
    read_owed: Vec<u32>,
    /// What a record's session produced after a command in the same read (a pong, the
    /// echo of the client's close, the close itself), held until the application has
    /// answered the command ([`PlaneCore::release`]): a client that sends `watch` and a
    /// close in one burst gets its status before the close. Rare, so kept beside the
    /// records rather than in each.
    held: HashMap<u32, Vec<Held>>,
    /// The TLS sessions of TLS records, by record key: beside the records, so that a plain
    /// record stays 128 bytes and a TLS one adds only its keys and sequence numbers.
    tls: HashMap<u32, Box<TlsSession>>,
}

/// A session output held behind a command's answer.
#[derive(Debug)]
enum Held {
    /// Bytes to queue (a pong, a close frame).
    Send(Vec<u8>),
    /// The session closed.
    Closed,
}

/// Slots of the deadline wheel (its horizon is this many ticks).
const WHEEL_SLOTS: usize = 1024;

impl<T: Default> PlaneCore<T> {
    /// An empty plane at time `now` (ms).
    pub fn new(config: PlaneConfig, now: u64) -> Self {
        Self::with_capacity(config, now, 0)
    }

    /// An empty plane with room for `records` records reserved up front (address space
    /// only: pages are touched as records arrive), so that the slab never reallocates and
    /// leaves its old copies behind in the allocator while it grows.
    pub fn with_capacity(config: PlaneConfig, now: u64, records: usize) -> Self {
        let shortest = config
            .keepalive
            .ping_after_ms
            .min(config.keepalive.dead_after_ms)
            .min(config.close_linger_ms);
        let tick = (shortest / 16).clamp(5, 250);
        Self {
            config,
            records: Slab::with_capacity(records),
            frames: FrameTable::default(),
            wheel: DeadlineWheel::new(tick, WHEEL_SLOTS, now),
            io: VecDeque::new(),
            events: Vec::new(),
            counters: PlaneCounters::default(),
            next_serial: 0,
            fired: Vec::new(),
            read_owed: Vec::new(),
            held: HashMap::default(),
            tls: HashMap::default(),
        }
    }

    /// Takes over socket `fd` (a watcher after its upgrade or CONNECT) at `now`.
    pub fn adopt(&mut self, fd: i32, flavour: Flavour, now: u64) -> RecordId {
        let serial = self.next_serial;
        self.next_serial = serial.wrapping_add(1);
        let key = self.records.insert(Record {
            fd,
            serial,
            head: FrameId::NONE,
            head_sent: 0,
            queued: 0,
            timer: NO_TIMER,
            keepalive: KeepaliveState::new(now),
            progress_at: now,
            close_at: u64::MAX,
            flavour,
            phase: Phase::Open,
            parked: Parked::Open,
            flags: POLL_ARMED | READ_OPEN,
            backlog: None,
            session: None,
            app: T::default(),
        }) as u32;
        self.io.push_back(IoOp::Poll { key, fd });
        self.schedule(key);
        RecordId { key, serial }
    }

    fn live(&self, id: RecordId) -> Option<&Record<T>> {
        self.records
            .get(id.key as usize)
            .filter(|r| r.serial == id.serial)
    }

    fn live_mut(&mut self, id: RecordId) -> Option<&mut Record<T>> {
        self.records
            .get_mut(id.key as usize)
            .filter(|r| r.serial == id.serial)
    }

    /// The id of the record at `key`, unless it is gone or dying.
    pub(super) fn id_unless_dying(&self, key: u32) -> Option<RecordId> {
        let rec = self.records.get(key as usize)?;
        (rec.phase != Phase::Dying).then_some(RecordId {
            key,
            serial: rec.serial,
        })
    }

    /// The record `id`, unless it is gone.
    pub fn record(&self, id: RecordId) -> Option<&Record<T>> {
        self.live(id)
    }

    /// The application data of record `id`, unless it is gone.
    pub fn app_mut(&mut self, id: RecordId) -> Option<&mut T> {
        self.live_mut(id).map(|r| &mut r.app)
    }

    /// Records alive (open, closing or waiting for their last completions).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is alive.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Frames alive (a leak check for tests).
    pub fn frames_alive(&self) -> usize {
        self.frames.len()
    }

    /// Adds `bytes` as a frame that many records may queue; the caller holds one reference
    /// until [`unshare`](Self::unshare).
    pub fn share(&mut self, bytes: Bytes) -> FrameId {
        self.frames.insert(bytes)
    }

    /// Drops the caller's reference taken by [`share`](Self::share).
    pub fn unshare(&mut self, frame: FrameId) {
        self.frames.release(frame);
    }

    /// The bytes of a frame (the shell points a Send SQE into them).
    pub fn frame_bytes(&self, frame: FrameId) -> &[u8] {
        self.frames.bytes(frame)
    }

    /// Queues a shared frame on record `id`. Ignored when the record is gone or closing;
    /// [`Overflow`] (and a close) when its queue would pass `max_outbound_bytes`.
    pub fn push(&mut self, id: RecordId, frame: FrameId, now: u64) -> Result<(), Overflow> {
        let len = self.frames.bytes(frame).len();
        let Some(rec) = self.live(id) else {
            return Ok(());
        };
        let limit = match rec.flavour.is_echo() {
            true => self.config.echo_max_outbound_bytes,
            false => self.config.max_outbound_bytes,
        };
        if rec.phase != Phase::Open {
            return Ok(());
        }
        if rec.queued > 0 && rec.queued as usize + len > limit {
            self.counters.slow_consumer_closes += 1;
            self.teardown(id.key);
            return Err(Overflow);
        }
        self.counters.frames += 1;
        self.counters.bytes += len as u64;
        self.enqueue(id.key, frame, now);
        Ok(())
    }

    /// Queues bytes for record `id` alone (a status, an error message).
    pub fn send(&mut self, id: RecordId, bytes: Bytes, now: u64) -> Result<(), Overflow> {
        let frame = self.share(bytes);
        let pushed = self.push(id, frame, now);
        self.unshare(frame);
        pushed
    }

    /// Starts the close of record `id`: a WebSocket close frame `code`/`reason` through its
    /// session (then the close handshake), or for a line watcher the end after its queue.
    pub fn close(&mut self, id: RecordId, code: u16, reason: &str, now: u64) {
        let config = self.config;
        let Some(rec) = self.live_mut(id) else {
            return;
        };
        if rec.phase != Phase::Open {
            return;
        }
        if !rec.flavour.is_websocket() || rec.has(SESSION_CLOSED) {
            return self.finish(id, now);
        }
        let mut session = take_session(rec, &config);
        let frame = session.close(code, reason);
        repark(rec, session);
        if let Some(frame) = frame {
            let frame = self.share(Bytes::from(frame));
            self.enqueue(id.key, frame, now);
            self.unshare(frame);
        }
        self.finish(id, now);
    }

    /// Ends record `id` once its queue is written (no close frame of its own).
    pub fn finish(&mut self, id: RecordId, now: u64) {
        let Some(rec) = self.live_mut(id) else {
            return;
        };
        if rec.phase == Phase::Open {
            rec.phase = Phase::Flushing;
            self.after_write(id.key, now);
        }
    }

    /// Closes record `id` now, dropping its queue (a slow consumer, a dead peer).
    pub fn abort(&mut self, id: RecordId) {
        if self.live(id).is_some() {
            self.teardown(id.key);
        }
    }

    /// Shutdown: every WebSocket record gets a close frame (`code`, `reason`), every line
    /// record is closed at once.
    pub fn close_all(&mut self, code: u16, reason: &str, now: u64) {
        let ids: Vec<RecordId> = self
            .records
            .iter()
            .map(|(k, r)| RecordId {
                key: k as u32,
                serial: r.serial,
            })
            .collect();
        for id in ids {
            match self.records[id.key as usize].flavour.is_websocket() {
                true => self.close(id, code, reason, now),
                false => self.abort(id),
            }
        }
    }

    /// The socket to read from when record `key`'s poll fired, if it still reads.
    pub fn wants_read(&self, key: u32) -> Option<i32> {
        let rec = self.records.get(key as usize)?;
        let paused = rec.has(TEXT_QUEUED) || rec.has(READ_PAUSED);
        (rec.phase != Phase::Dying && rec.has(READ_OPEN) && !paused).then_some(rec.fd)
    }

    /// Pauses (or resumes) reading from record `id`; a resumed record is read again at once
    /// (see [`take_read_owed`](Self::take_read_owed)).
    pub fn set_read_paused(&mut self, id: RecordId, paused: bool) {
        let Some(rec) = self.live_mut(id) else {
            return;
        };
        let was = rec.has(READ_PAUSED);
        rec.set(READ_PAUSED, paused);
        if was && !paused {
            self.read_owed.push(id.key);
        }
    }

    /// Records to read from now, whatever their polls say: their queued commands were taken
    /// or their reading resumed, and bytes may wait in their sockets.
    pub fn take_read_owed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.read_owed)
    }

    /// Owes record `key` a read: it stopped reading with bytes possibly left in its socket
    /// (its most reads per wake-up), which no new readiness event may announce.
    pub fn owe_read(&mut self, key: u32) {
        self.read_owed.push(key);
    }

    /// Whether some record is owed a read (see [`take_read_owed`](Self::take_read_owed)).
    pub fn has_read_owed(&self) -> bool {
        !self.read_owed.is_empty()
    }

    /// After a write or a state change: a flushed, closing record lingers or goes.
    ///
    /// A record whose peer may still send lingers for one grace period: a WebSocket whose
    /// close handshake we began waits for the peer's close frame; any other record (a failed
    /// session, a line or SSE stream that ended) sends a FIN after what it wrote and drops the
    /// peer's bytes until it closes too. Closing a socket that still receives makes the kernel
    /// answer with an RST, and an RST can destroy the last reply before the peer reads it.
    fn after_write(&mut self, key: u32, now: u64) {
        let linger = self.config.close_linger_ms;
        let rec = &self.records[key as usize];
        if rec.phase != Phase::Flushing || !rec.head.is_none() || rec.has(SENDING) {
            return;
        }
        let awaiting_close_frame = rec.flavour.is_websocket() && !rec.has(SESSION_CLOSED);
        if !(awaiting_close_frame && rec.has(READ_OPEN)) && self.queue_close_notify(key, now) {
            return; // after_write runs again once it is written
        }
        let rec = &mut self.records[key as usize];
        if !rec.has(READ_OPEN) {
            return self.teardown(key);
        }
        rec.phase = Phase::Lingering;
        rec.close_at = now.saturating_add(linger);
        if !awaiting_close_frame {
            let fd = rec.fd;
            self.io.push_back(IoOp::ShutdownWrite { fd });
        }
        self.schedule(key);
    }

    /// Shuts record `key` down: its queue is dropped, its socket shut, its poll cancelled;
    /// it is removed once nothing is in flight.
    fn teardown(&mut self, key: u32) {
        let rec = &mut self.records[key as usize];
        if rec.phase == Phase::Dying {
            return;
        }
        rec.phase = Phase::Dying;
        let fd = rec.fd;
        self.held.remove(&key);
        self.io.push_back(IoOp::Shutdown { fd });
        if rec.has(POLL_ARMED) {
            self.io.push_back(IoOp::CancelPoll { key });
        }
        self.drop_queue(key);
        self.reap(key);
    }

    /// Releases the frames of record `key`'s queue, except one still in flight.
    fn drop_queue(&mut self, key: u32) {
        let rec = &mut self.records[key as usize];
        let backlog = rec.backlog.take();
        if !rec.has(SENDING) && !rec.head.is_none() {
            let head = std::mem::replace(&mut rec.head, FrameId::NONE);
            self.frames.release(head);
        }
        let rec = &mut self.records[key as usize];
        if rec.head.is_none() {
            rec.queued = 0;
        }
        for frame in backlog.into_iter().flat_map(|b| *b) {
            self.frames.release(frame);
        }
    }

    /// Removes a dying record once nothing of it is in flight.
    fn reap(&mut self, key: u32) {
        let rec = &self.records[key as usize];
        if rec.phase != Phase::Dying || rec.has(SENDING) || rec.has(POLL_ARMED) {
            return;
        }
        let rec = self.records.remove(key as usize);
        let tls = self.tls.remove(&key).is_some();
        self.io.push_back(IoOp::Close { fd: rec.fd });
        self.events.push(PlaneEvent::Closed {
            id: RecordId {
                key,
                serial: rec.serial,
            },
            flavour: rec.flavour,
            tls,
            app: rec.app,
        });
    }

    /// The next operation for the I/O shell.
    pub fn poll_io(&mut self) -> Option<IoOp> {
        self.io.pop_front()
    }

    /// Puts back an operation the shell could not queue (it comes first next time).
    pub fn requeue_io(&mut self, op: IoOp) {
        self.io.push_front(op);
    }

    /// Whether operations wait for the shell.
    pub fn has_io(&self) -> bool {
        !self.io.is_empty()
    }

    /// Takes the events for the application.
    pub fn take_events(&mut self) -> Vec<PlaneEvent<T>> {
        for event in &self.events {
            let id = match event {
                PlaneEvent::Text { id, .. } | PlaneEvent::Echo { id, .. } => id,
                PlaneEvent::Closed { .. } => continue,
            };
            if let Some(rec) = self.records.get_mut(id.key as usize) {
                if rec.serial == id.serial && rec.has(TEXT_QUEUED) {
                    rec.set(TEXT_QUEUED, false);
                    self.read_owed.push(id.key);
                }
            }
        }
        std::mem::take(&mut self.events)
    }

    /// Gives back the working memory a burst left behind: a broadcast's queue of operations
    /// (one per record) and the frames of a wave of statuses. Capacities shrink to a small
    /// floor once empty, so between events the plane holds what its records need; the next
    /// burst grows them again.
    pub fn trim_buffers(&mut self) {
        const FLOOR: usize = 1024;
        if self.io.is_empty() && self.io.capacity() > FLOOR {
            self.io.shrink_to(FLOOR);
        }
        if self.fired.is_empty() && self.fired.capacity() > FLOOR {
            self.fired.shrink_to(FLOOR);
        }
        self.frames.shrink();
    }

    /// Takes the counters (the shell adds them to the worker's metrics).
    pub fn take_counters(&mut self) -> PlaneCounters {
        std::mem::take(&mut self.counters)
    }
}

/// The record's session, rebuilt from its parked byte when it has no boxed one.
fn take_session<T>(rec: &mut Record<T>, config: &PlaneConfig) -> WsSession {
    match rec.session.take() {
        Some(boxed) => *boxed,
        None => {
            let limits = match rec.flavour.is_echo() {
                true => config.echo_limits,
                false => config.ws_limits,
            };
            let mut session = WsSession::unpark(limits, rec.parked);
            if rec.flavour.inflates() {
                session.enable_deflate();
            }
            session
        }
    }
}

/// Puts a session back: parked in one byte when idle, boxed while a frame is unfinished,
/// dropped once closed.
fn repark<T>(rec: &mut Record<T>, session: WsSession) {
    if let Some(parked) = session.park() {
        rec.parked = parked;
    } else if session.is_closed() {
        rec.set(SESSION_CLOSED, true);
    } else {
        rec.session = Some(Box::new(session));
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;

#[path = "core_timers.rs"]
mod timers;

#[path = "core_inbound.rs"]
mod inbound;

#[path = "core_tls.rs"]
mod tls;

#[path = "core_outbound.rs"]
mod outbound;
