//! Operating-system helpers shared by the server and the load harness, below both: neither
//! imports the other for them.
//!
//! * [`alloc`] — the allocator's upkeep on a worker (returning freed pages after churn).
//! * [`sys`] — the few system calls made directly (non-blocking `recv`/`send`/`sendmsg`,
//!   `unshare(CLONE_FILES)`, shutdown signals), each `unsafe` block audited.
//! * [`limits`] — the open-files limit (`RLIMIT_NOFILE`) and the connection capacity it
//!   allows threads with private fd tables.
//! * [`reuseport`] — steering new connections among a `SO_REUSEPORT` group (classic BPF).
//! * [`runtime`] — the io_uring event loop each worker and load thread builds.
//! * [`stream`] — whole-buffer writes and reads on a socket, waiting for readiness.

pub mod alloc;
pub mod limits;
pub mod reuseport;
pub mod runtime;
pub mod stream;
pub mod sys;
