//! # matchstream
//!
//! A live football-match event server: an operator (or a data feed) posts what happens in a
//! match; every person watching that match gets it pushed within milliseconds, over WebSocket
//! (with permessage-deflate), Server-Sent Events or the seed system's plain TCP line
//! protocol. The protocols, error statuses and close codes are described for client authors
//! in `docs/protocol.md`; the design in `docs/architecture.md`.
//!
//! ## The path of one event
//!
//! An admin `POST /1/match/{id}/events` arrives on some worker ([`server::api`], after
//! [`server::admin_auth`]), which hands it to the node's one [`sequencer`] thread. The
//! sequencer checks it against the match (the fold, [`domain::Match::apply`]), numbers it,
//! makes it durable with the other writes queued at that moment (a group commit, [`store`]),
//! publishes the match's new snapshot ([`sequencer::snapshot`]) and puts the event in every
//! worker's inbox ([`server::inbox`]: an mpsc queue plus one byte on a Unix socket pair to
//! wake the worker) before it answers 201. Each worker encodes the event once per wire
//! (WebSocket, compressed WebSocket [`server::compress`], SSE, line) and hands the same bytes
//! to each of its local watchers ([`server::watch`]), which live as records in the worker's
//! watcher plane ([`server::plane`]: its own io_uring ring, one `io_uring_enter` per
//! broadcast). Reads (`GET`) never reach the sequencer: each worker answers them from its own
//! catalog of snapshots ([`server::reads`]). Workers never talk to each other; only the
//! sequencer and the main thread write to their inboxes.
//!
//! ## Modules, from the bottom up
//!
//! * [`proto`] — the sans-I/O protocol core; bytes in, events and bytes-to-send out, no
//!   sockets, no clock: HTTP/1.1 request heads ([`proto::http`]) and responses
//!   ([`proto::response`]), the RFC 6455 opening handshake ([`proto::handshake`]), frames
//!   ([`proto::frame`]), masking ([`proto::mask`]), UTF-8 validation ([`proto::utf8`]),
//!   close codes ([`proto::close`]) and errors ([`proto::error`]), the per-connection
//!   session state machine ([`proto::session`]), permessage-deflate ([`proto::deflate`]),
//!   keepalive deadlines ([`proto::keepalive`]), the Server-Sent Events format
//!   ([`proto::sse`]) and the TCP line protocol ([`proto::line`]).
//! * [`domain`] — teams, matches, events, the scoreboard fold, match scripts and the wire
//!   views of them. No I/O.
//! * [`store`] — durable storage behind one small trait: SQLite embedded (`--data-dir`),
//!   Redis in a cluster (`--redis`), memory for tests.
//! * [`sequencer`] — the node's single writer: validates, numbers, group-commits, then
//!   broadcasts (with immutable per-match snapshots, [`sequencer::snapshot`]; one wake-up per
//!   worker per batch, [`sequencer::wakeups`]) and acknowledges; [`sequencer::cluster`] holds
//!   cluster mode's Redis stream reader and the node registry behind `/1/checkin`.
//! * [`os`] — below both the server and the harness: the few direct system calls, open-file
//!   limits and connection capacity, `SO_REUSEPORT` steering ([`os::reuseport`]), the
//!   io_uring runtime builder, whole-buffer socket reads and writes.
//! * [`server`] — the runtime shell (`matchstream serve`): one monoio io_uring event loop per
//!   worker thread ([`server::worker`]), each pinned to a CPU, with a private fd table
//!   (`unshare(CLONE_FILES)`), its own `SO_REUSEPORT` listeners, connection slab,
//!   subscription tables and watcher plane. Start-up: [`server::ServeArgs`] →
//!   [`server::config`], [`server::port_wait`]. At accept, [`server::accept`] (each worker's
//!   descriptor room: a full worker is steered around, the last connections refused at once;
//!   `--admin-listen`) and [`server::admission`] (per-address limit, socket options); then the HTTP phase ([`server::http`], [`server::router`],
//!   [`server::api`], [`server::reads`], stored histories through [`server::history`]);
//!   then the watcher it becomes — a WebSocket after an upgrade ([`server::ws`]), a
//!   Server-Sent Events stream ([`server::sse`]) or a line-protocol connection
//!   ([`server::line`]) — lives on the plane, or as a task ([`server::stream`], guarded by
//!   [`server::conn_guard`]). Counters: [`server::metrics`].
//! * [`feed`] — the publishing side: `matchstream replay`, the `--demo` loop and the blocking
//!   HTTP client of the admin API.
//! * [`load`] — `matchstream load`, the load generator and blackbox tester: connects
//!   watchers, drives matches, verifies every delivery and reports. It talks to the server
//!   over sockets only.
//! * [`cli`] — the command line; `main.rs` is a thin shell over [`cli::run`].
//!
//! ## Prerequisites
//!
//! Linux ≥ 5.11 with io_uring enabled, an open-files limit large enough for the connections
//! wanted per worker (each worker has its own fd table, so capacity = workers × limit), and a
//! `memlock` limit large enough for io_uring rings on kernels older than 5.12.

pub mod cli;
pub mod domain;
pub mod feed;
pub mod load;
pub mod os;
pub mod proto;
pub mod sequencer;
pub mod server;
pub mod store;
