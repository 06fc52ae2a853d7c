//! One watcher in the plane: a fixed-size record instead of a task (no future, no waker, no
//! `Rc`). The protocol session is parked in one byte while idle; the outbound queue is a
//! head frame plus a backlog that exists only while the socket is behind.

use std::collections::VecDeque;

use super::frames::FrameId;
use crate::proto::keepalive::KeepaliveState;
use crate::proto::session::{Parked, WsSession};

/// Which bytes a broadcast sends to a record: each flavour's frame is encoded once per event
/// per worker and shared by every record of that flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// A WebSocket text frame (`/1/ws`).
    Ws,
    /// A WebSocket that negotiated permessage-deflate: the compressed (RSV1) frame, and its
    /// session inflates compressed messages.
    WsDeflate,
    /// A TCP line-protocol block (`--tcp-listen`).
    Line,
    /// A Server-Sent Events message (`GET /1/match/{id}/events`).
    Sse,
    /// `/1/echo`: every message comes back (the Autobahn suite's peer); no broadcasts.
    Echo,
    /// `/1/echo` with permessage-deflate: inflates, and compresses its answers.
    EchoDeflate,
    /// `/1/echo` with permessage-deflate at a window smaller than ours: inflates, answers
    /// uncompressed.
    EchoInflate,
}

impl Flavour {
    /// How many flavours there are (a table indexed by `flavour as usize`).
    pub const COUNT: usize = 7;

    /// Whether the record speaks WebSocket (a session, close frames, pings).
    pub fn is_websocket(self) -> bool {
        !matches!(self, Flavour::Line | Flavour::Sse)
    }

    /// Whether the record is an `/1/echo` WebSocket.
    pub fn is_echo(self) -> bool {
        matches!(
            self,
            Flavour::Echo | Flavour::EchoDeflate | Flavour::EchoInflate
        )
    }

    /// Whether the record's session inflates compressed messages (permessage-deflate).
    pub fn inflates(self) -> bool {
        matches!(
            self,
            Flavour::WsDeflate | Flavour::EchoDeflate | Flavour::EchoInflate
        )
    }
}

/// A record's place in its slab and its serial (a reused key gets a new serial).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordId {
    /// Key in the plane's slab.
    pub key: u32,
    /// Serial of the record that held the key when the id was handed out.
    pub serial: u32,
}

/// Where a record's life stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Messages flow.
    Open,
    /// Write what is queued (a close frame last), then linger or tear down.
    Flushing,
    /// Our close frame is written; waiting (bounded) for the peer's.
    Lingering,
    /// Shut down; waiting for the operations in flight to complete before `close(2)`.
    Dying,
}

/// A multishot read-readiness poll is armed.
pub(super) const POLL_ARMED: u8 = 1;
/// A send is in flight (at most one: sends on one socket must not reorder).
pub(super) const SENDING: u8 = 2;
/// The peer has not closed its sending side.
pub(super) const READ_OPEN: u8 = 4;
/// The WebSocket session is closed (both close frames seen, or it failed).
pub(super) const SESSION_CLOSED: u8 = 8;
/// A command read from the record waits for the application: read no more until it is
/// taken (so a client's commands never pile up unread by the application).
pub(super) const TEXT_QUEUED: u8 = 16;
/// The application paused reading (the watcher has its most watch requests in flight).
pub(super) const READ_PAUSED: u8 = 32;
/// The record's bytes go through a TLS session (kept beside the records, not in them).
pub(super) const TLS: u8 = 64;
/// Our TLS `close_notify` is queued: it goes once, after everything else.
pub(super) const TLS_NOTIFIED: u8 = 128;

/// "No timer entry".
pub(super) const NO_TIMER: u64 = u64::MAX;

/// One watcher: its socket, its protocol state, its outbound queue, its timers and the
/// application's data `T` (its subscriptions).
pub struct Record<T> {
    pub(super) fd: i32,
    pub(super) serial: u32,
    /// The frame being written (or next to write); [`FrameId::NONE`] when the queue is empty.
    pub(super) head: FrameId,
    /// Bytes of `head` already written.
    pub(super) head_sent: u32,
    /// Bytes queued and not yet written (the rest of `head` and the backlog).
    pub(super) queued: u32,
    /// The tick of this record's live wheel entry, or [`NO_TIMER`].
    pub(super) timer: u64,
    pub(super) keepalive: KeepaliveState,
    /// Last time queued bytes made progress (or the queue became non-empty).
    pub(super) progress_at: u64,
    /// End of the close handshake's grace period while lingering; while open, the deadline
    /// of an unfinished WebSocket message (`u64::MAX`: none).
    pub(super) close_at: u64,
    pub(super) flavour: Flavour,
    pub(super) phase: Phase,
    /// The session while idle (when `session` is `None`).
    pub(super) parked: Parked,
    pub(super) flags: u8,
    /// Frames after `head`; allocated only while the socket is behind. Boxed: 8 bytes in
    /// every record instead of a 32-byte `VecDeque` that is almost always empty.
    #[allow(clippy::box_collection)]
    pub(super) backlog: Option<Box<VecDeque<FrameId>>>,
    /// The session while a frame or message is unfinished.
    pub(super) session: Option<Box<WsSession>>,
    /// The application's data (the subscriptions).
    pub app: T,
}

impl<T> Record<T> {
    pub(super) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(super) fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// The record's flavour.
    pub fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued as usize
    }

    /// Whether the record still takes messages (no close is under way).
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }
}
