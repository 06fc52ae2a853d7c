//! The `matchstream` binary: parses the command line and hands over to the library.

/// mimalloc, unless the `system-alloc` feature asks for the system's (for heaptrack).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // No transparent huge pages for this process: mimalloc asks for them on its arenas, and
    // with 100K small, long-lived per-connection allocations spread over per-thread heaps a
    // 2 MiB page is mostly empty but resident. Measured on one worker holding 15,000 idle
    // WebSockets: 1,398 B per connection with THP, 979 B without.
    // SAFETY: PR_SET_THP_DISABLE only changes this process's paging policy.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let code = matchstream::cli::run(std::env::args_os());
    std::process::exit(code);
}
