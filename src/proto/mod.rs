//! The sans-I/O protocol core: bytes in; events and bytes-to-send out.
//!
//! Nothing in this module touches a socket, a runtime or a clock, so every rule is tested
//! with plain byte slices and fuzzed (`fuzz/`). The runtime in [`crate::server`] reads into
//! its scratch buffer, hands the bytes to these parsers and state machines, and writes what
//! they return.
//!
//! * [`http`] — HTTP/1.x request heads and bodies under [`HttpLimits`];
//!   [`response`] writes responses and JSON errors.
//! * [`handshake`] — the RFC 6455 opening handshake: a pure function from a [`Request`] to
//!   the `101` bytes or a [`HandshakeError`] that writes its own error response.
//! * [`frame`], [`mask`], [`close`], [`utf8`] — the frame codec, payload masking, close
//!   codes and fail-fast incremental UTF-8 validation; [`ProtocolError`] names every RFC
//!   rule a peer can break, with its close code.
//! * [`session`] — [`WsSession`], the per-connection state machine (server role):
//!   reassembly, control frames, the close handshake; it turns input into [`WsEvent`]s and
//!   holds no heap buffer while idle.
//! * [`deflate`] — permessage-deflate (RFC 7692): offer negotiation, compress-once frames,
//!   bounded inflate of incoming messages.
//! * [`sse`] — Server-Sent Events: message encoding, resume points, a stream parser.
//! * [`keepalive`] — ping/dead timers and deadlines on a caller-supplied clock.
//! * [`line`](mod@line) — the seed's TCP line protocol.
//!
//! Parsers share one shape: `parse(buf) -> Result<Option<(T, consumed)>, Error>`, where
//! `Ok(None)` means "need more bytes, nothing consumed", and every size limit is checked
//! before anything is allocated.

pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod keepalive;
pub mod line;
pub mod mask;
pub mod response;
pub mod session;
pub mod sse;
pub mod utf8;

pub use error::ProtocolError;
pub use frame::{encode_close, encode_frame, FrameHeader, OpCode};
pub use handshake::{
    accept_handshake, accept_handshake_with, accept_key, is_upgrade_request, Accepted,
    HandshakeError, HandshakePolicy,
};
pub use http::{parse_request, HttpError, HttpLimits, Request, RequestReader};
pub use keepalive::{KeepaliveAction, KeepalivePolicy, KeepaliveState};
pub use line::{encode_block, encode_error, parse_connect, ConnectRequest, LineError};
pub use mask::apply_mask;
pub use response::{reason_phrase, write_json_error, write_response};
pub use session::{WsEvent, WsLimits, WsSession};
pub use utf8::Utf8Validator;
