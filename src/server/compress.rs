//! Compressed WebSocket frames on a worker: one [`MessageDeflater`] per worker thread (workers
//! are threads), used for each broadcast once (the frame every permessage-deflate watcher of
//! the worker shares) and for the few per-connection messages (a status, history, an echo).
//!
//! The protocol work (negotiation, DEFLATE, RSV1 framing) is in [`crate::proto::deflate`];
//! this module only owns the compressor.

use std::cell::RefCell;

use bytes::Bytes;

use crate::proto::deflate::MessageDeflater;
use crate::proto::frame::OpCode;

thread_local! {
    /// The worker's compressor: its tables are reused for every message.
    static DEFLATER: RefCell<MessageDeflater> = RefCell::new(MessageDeflater::new());
}

/// A compressed (RSV1) frame carrying `payload`, or `None` when compression does not make it
/// smaller (send the plain frame then, RSV1 clear).
pub fn frame(opcode: OpCode, payload: &[u8]) -> Option<Vec<u8>> {
    DEFLATER.with(|d| d.borrow_mut().compressed_frame(opcode, payload))
}

/// The text frame carrying `json` for a permessage-deflate watcher: compressed, or plain when
/// compression does not help.
pub fn text_frame(json: &str) -> Bytes {
    match frame(OpCode::Text, json.as_bytes()) {
        Some(compressed) => Bytes::from(compressed),
        None => super::watch::text_frame(json),
    }
}
