//! The watcher plane: after its WebSocket upgrade (or its line-protocol `CONNECT`) a watcher
//! stops being a task and becomes a fixed-size [`record::Record`] in its worker's slab, driven
//! by a second io_uring ring that the worker owns.
//!
//! - [`core`] is the sans-I/O state machine (records, shared frames, one deadline wheel):
//!   bytes, completions and the time in; operations and application events out.
//! - [`ring`] is the I/O shell: it turns the core's operations into SQEs — a multishot poll
//!   per record for inbound bytes, one SEND per record per frame, all of a broadcast's SENDs
//!   submitted with one `io_uring_enter` — and completions back into core inputs.
//! - [`driver`] lives beside monoio: one task per worker waits on the ring's eventfd
//!   (`IORING_REGISTER_EVENTFD`, awaited with monoio's `readable()`) and on the next
//!   deadline, and connects the plane to the worker's subscription tables.
//!
//! monoio keeps accepting, HTTP, handshakes, the admin API and `/1/echo`.

pub mod core;
pub mod driver;
pub mod frames;
pub mod record;
pub mod ring;
pub mod wheel;
