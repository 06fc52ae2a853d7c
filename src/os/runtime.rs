//! The io_uring event loop each server worker and each load thread builds for itself.

use std::io;

use monoio::time::TimeDriver;
use monoio::{IoUringDriver, Runtime, RuntimeBuilder};

/// Submission-queue entries of each thread's io_uring ring.
pub const RING_ENTRIES: u32 = 4096;

/// A monoio runtime over io_uring, with timers.
pub type UringRuntime = Runtime<TimeDriver<IoUringDriver>>;

/// Builds the calling thread's io_uring runtime: [`RING_ENTRIES`] entries, timers enabled.
pub fn uring_runtime() -> io::Result<UringRuntime> {
    RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()
}
