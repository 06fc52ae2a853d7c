//! The WebSocket phase: the sans-I/O session driven by the connection loop.

use std::rc::Rc;

use bytes::Bytes;

use serde::Deserialize;

use super::compress;
use super::http::Upgraded;
use super::metrics::WorkerStats;
use super::stream::{drive, Handler};
use super::tls::socket::Socket;
use super::watch;
use super::worker::{release_connection, ConnKind, ConnState, Worker};
use crate::proto::frame::{encode_frame, OpCode};
use crate::proto::session::{WsEvent, WsSession};

/// What a WebSocket connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    /// `/1/echo`: every message comes back (the Autobahn suite's peer).
    Echo,
    /// `/1/ws`: match watchers.
    Watch,
}

struct WsHandler {
    worker: Rc<Worker>,
    conn: usize,
    session: WsSession,
    mode: WsMode,
}

/// A watcher's command, as sent over `/1/ws`.
#[derive(Debug, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    /// Watch a match (resume after `since`).
    Watch {
        /// The match.
        mid: String,
        /// The user (counted, as in the seed).
        #[serde(default)]
        #[allow(dead_code)]
        uid: Option<String>,
        /// Resume after this seq.
        #[serde(default)]
        since: Option<u64>,
    },
    /// Stop watching a match.
    Unwatch {
        /// The match.
        mid: String,
    },
}

/// Parses a watcher's command; the error says what is wrong.
pub fn parse_command(text: &str) -> Result<Command, String> {
    serde_json::from_str::<Command>(text).map_err(|e| e.to_string())
}

impl Handler for WsHandler {
    fn on_data(&mut self, data: &[u8], state: &ConnState) {
        let mut events = Vec::new();
        self.session.receive(data, &mut events);
        state
            .guard
            .set_message_pending(self.session.is_mid_message(), self.worker.now_ms());
        for event in events {
            match event {
                WsEvent::Text(text) => match self.mode {
                    WsMode::Echo => self.echo(OpCode::Text, text.as_bytes(), state),
                    WsMode::Watch => self.command(text, state),
                },
                WsEvent::Binary(data) => self.echo(OpCode::Binary, &data, state),
                WsEvent::Send(bytes) => {
                    let _ = state.outbox.push(Bytes::from(bytes));
                }
                WsEvent::Closed => {
                    if self.session.failed() {
                        WorkerStats::add(&self.worker.stats().protocol_errors, 1);
                    }
                    state.outbox.finish_after_flush()
                }
            }
        }
    }

    fn finished(&self) -> bool {
        self.session.is_closed()
    }

    fn wants_input(&self, state: &ConnState) -> bool {
        !watch::is_deferring(&self.worker, self.conn_ref(state))
    }
}

impl WsHandler {
    fn conn_ref(&self, state: &ConnState) -> watch::ConnRef {
        watch::ConnRef::task(self.conn, state.serial)
    }

    fn command(&self, text: String, state: &ConnState) {
        watch::on_command(&self.worker, self.conn_ref(state), text);
    }

    fn echo(&self, opcode: OpCode, payload: &[u8], state: &ConnState) {
        let compressed = match state.deflate.get() {
            true => compress::frame(opcode, payload),
            false => None,
        };
        let frame = compressed.unwrap_or_else(|| {
            let mut frame = Vec::with_capacity(payload.len() + 10);
            encode_frame(&mut frame, opcode, payload);
            frame
        });
        let stats = self.worker.stats();
        WorkerStats::add(&stats.frames_sent, 1);
        WorkerStats::add(&stats.bytes_sent, frame.len() as u64);
        let _ = state.outbox.push(Bytes::from(frame));
    }
}

/// The WebSocket side of a connection, ready to be driven.
pub struct WsConnection {
    stream: Socket,
    handler: WsHandler,
}

/// Sets up a WebSocket connection after its upgrade (and handles bytes that came with the
/// handshake). Synchronous, so that the long-lived task holds only what [`run`] needs.
pub fn start(worker: &Rc<Worker>, up: Upgraded, conn: usize, state: &ConnState) -> WsConnection {
    let config = &worker.shared.config;
    let limits = match up.mode {
        WsMode::Echo => config.echo_ws,
        WsMode::Watch => config.ws,
    };
    if up.mode == WsMode::Echo {
        // An echo answer is as large as the message it echoes; allow a few in flight.
        state.outbox.set_limit(4 * limits.max_message_bytes + 4096);
    }
    state.kind.set(ConnKind::WebSocket);
    if let Some(fd) = up.stream.direct_fd() {
        state.outbox.enable_direct_writes(fd);
    }
    state.keepalive.borrow_mut().on_activity(worker.now_ms());
    WorkerStats::add(&worker.stats().websockets, 1);
    let mut session = WsSession::new(limits);
    if let Some(agreed) = up.deflate {
        session.enable_deflate();
        state.deflate.set(agreed.may_compress());
        WorkerStats::add(&worker.stats().deflate_websockets, 1);
    }
    let mut handler = WsHandler {
        worker: worker.clone(),
        conn,
        session,
        mode: up.mode,
    };
    if !up.leftover.is_empty() {
        handler.on_data(&up.leftover, state);
    }
    WsConnection {
        stream: up.stream,
        handler,
    }
}

/// Runs a WebSocket connection until it closes. A plain function returning an `async move`
/// block: the long-lived future holds `ws` once (an `async fn` would keep a second copy of
/// its by-value arguments), which matters for 100K mostly idle connections.
#[allow(clippy::manual_async_fn)] // see the doc comment: an async fn would double `ws`
pub fn run(mut ws: WsConnection, state: Rc<ConnState>) -> impl std::future::Future<Output = ()> {
    async move {
        let worker = ws.handler.worker.clone();
        let id = ws.handler.conn;
        drive(&worker, &ws.stream, &state, &mut ws.handler).await;
        ws.stream.close_notify();
        WorkerStats::sub(&worker.stats().websockets, 1);
        if ws.handler.session.deflate_enabled() {
            WorkerStats::sub(&worker.stats().deflate_websockets, 1);
        }
        drop(ws);
        release_connection(&worker, id, &state);
    }
}
