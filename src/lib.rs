//! # matchstream
//!
//! A live football-match event server: an operator (or a data feed) posts what happens in a
//! match; every person watching that match gets it pushed within milliseconds, over WebSocket
//! or the seed system's plain TCP line protocol.
//!
//! ## Architecture
//!
//! * [`proto`] — the sans-I/O protocol core: HTTP/1.1 request heads, the RFC 6455 opening
//!   handshake, WebSocket frames, masking, UTF-8 validation, close codes and a per-connection
//!   state machine. Bytes in; events and bytes-to-send out. No sockets, no clock.
//! * [`server`] — the thin runtime shell: one monoio (io_uring) event loop per worker thread,
//!   each pinned to a CPU, each with a private file-descriptor table (`unshare(CLONE_FILES)`),
//!   its own `SO_REUSEPORT` listeners, connection slab and subscription tables. Workers share no
//!   lock on the hot path; they exchange messages over channels woken by eventfds created
//!   before the workers unshare.
//! * [`domain`] — teams, matches, events and the scoreboard fold (no I/O).
//! * [`store`] — durable storage behind one small interface (SQLite embedded, Redis in a
//!   cluster).
//! * [`sequencer`] — the node's single writer: validates, orders and stores events, then
//!   broadcasts them; [`sequencer::cluster`] holds cluster mode's (`--redis`) Redis stream
//!   reader and node registry for `/1/checkin`.
//! * [`feed`] — the publishing side: the `replay` command, the `--demo` loop and the admin
//!   API's HTTP client.
//! * [`load`] — the load generator and blackbox tester (`matchstream load`).
//! * [`os`] — system calls, open-file limits, the io_uring runtime builder and socket
//!   read/write helpers, shared by `server` and `load`.
//! * [`cli`] — command-line parsing; `main.rs` is a thin shell over it.
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
