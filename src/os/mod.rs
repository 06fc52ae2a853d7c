//! Operating-system helpers shared by the server and the load harness, below both: neither
//! imports the other for them.
//!
//! * [`sys`] — the few system calls made directly (non-blocking `recv`/`send`/`sendmsg`,
//!   `unshare(CLONE_FILES)`, shutdown signals), each `unsafe` block audited.
//! * [`limits`] — the open-files limit (`RLIMIT_NOFILE`) and the connection capacity it
//!   allows threads with private fd tables.

pub mod limits;
pub mod sys;
