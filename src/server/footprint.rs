//! What one watching connection costs the server in user memory (heap and the pages its
//! worker touches for it), as measured: the figures `tuning/check` estimates memory with.
//! `tuning/lib.sh` repeats them (`tests/tuning.sh` checks that they agree) and
//! `tests/footprint.rs` checks them against the real server, measured as `matchstream load`
//! measures it (RSS growth per connected watcher). The kernel's share (~4.6 KB a socket) is
//! not counted here.

/// A plain watcher (WebSocket, SSE or line, a watcher-plane record): its 128-byte record,
/// its subscription and its share of the worker's rings and allocator pages. Measured 252–389
/// B per watching connection with 100K–1M watchers, release build
/// (`benches/results/2026-11-30-plane`, `2026-11-30-plane-rerun`), and 310–358 B with 10,000
/// by `tests/footprint.rs` (debug build); rounded up above both.
pub const PLAIN_WATCHER_BYTES: u64 = 450;

/// A TLS watcher (a watcher-plane record like a plain one, with its TLS 1.3 session on the
/// small records layer beside it). Measured 524–591 B per watching TLS watcher with 10,000 by
/// `tests/footprint.rs` (debug build) since TLS watchers became plane records (1,391 B per
/// idle one before, as connection tasks: `benches/results/2026-11-30-tls.md`); rounded up.
pub const TLS_WATCHER_BYTES: u64 = 700;
