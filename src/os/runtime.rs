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

/// A server worker's runtime: [`uring_runtime`] with `IORING_SETUP_COOP_TASKRUN` where the
/// kernel has it (Linux ≥ 5.19), else without.
///
/// Without the flag, each completion of a connection's poll (its next request arrived)
/// interrupts the worker with an inter-processor interrupt when it runs user code at that
/// moment, so that the kernel can post the completion; under keep-alive `GET` load that is
/// about one interrupt per request (13 % of the worker's samples in the profile of
/// `benches/results/2026-12-02-get-dev.md`). With it, completions are posted when the worker
/// next enters the kernel, which it does at once for each request (its `send` and `recv`)
/// and whenever it parks, so no completion waits longer than the worker's current step.
pub fn worker_runtime() -> io::Result<UringRuntime> {
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun();
    let built = RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(coop)
        .enable_timer()
        .build();
    match built {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => uring_runtime(),
        other => other,
    }
}
