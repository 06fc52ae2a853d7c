//! The allocator's upkeep on a worker thread. mimalloc returns freed pages to the kernel
//! lazily, from inside later allocations of the same thread; a worker that goes quiet after
//! a burst of connections (each TLS handshake allocates and frees several KB) would keep
//! those pages resident. [`return_free_pages`] does that work now.

/// Frees this thread's empty pages and returns their memory to the kernel (mimalloc's
/// `mi_collect(false)`: no forced collection of other threads' heaps). Cheap when there is
/// nothing to do; meant for a worker after churn, not for every event.
pub fn return_free_pages() {
    // SAFETY: `mi_collect` takes a plain flag and only touches the calling thread's heap;
    // mimalloc is the process's global allocator (the `mimalloc` crate links this library).
    unsafe { libmimalloc_sys::mi_collect(false) }
}
