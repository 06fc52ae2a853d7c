//! Open-file limits and the connection capacity they allow.
//!
//! Every worker thread unshares its file-descriptor table (`unshare(CLONE_FILES)`), so the
//! per-process `RLIMIT_NOFILE` applies to each worker's table separately: capacity =
//! workers × (limit − the descriptors a worker keeps for itself). At start `serve` raises its
//! soft limit to the hard one ([`raise_nofile_soft_limit`]) and computes its [`Capacity`]: it
//! logs it at info, or warns ([`capacity_warning`]) when the operator gave a
//! `--max-connections` it cannot reach. `tuning/check`
//! does the same arithmetic (its `RESERVED_FDS` must equal [`RESERVED_FDS_PER_WORKER`]).

use std::fmt;
use std::io;

/// Descriptors each worker keeps for itself and never hands to a connection: its io_uring ring,
/// its listeners, eventfds / pipes, store handles, log files and some slack.
pub const RESERVED_FDS_PER_WORKER: u64 = 64;

/// An `RLIMIT_NOFILE` pair. `u64::MAX` stands for `RLIM_INFINITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit: what `open`/`accept` are held to now.
    pub soft: u64,
    /// The hard limit: the most the soft limit can be raised to without `CAP_SYS_RESOURCE`.
    pub hard: u64,
}

/// Reads `RLIMIT_NOFILE` of this process.
pub fn nofile_limit() -> io::Result<Limit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable `rlimit` that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limit {
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    })
}

/// Descriptors open in the calling thread's fd table (private to it after
/// `unshare(CLONE_FILES)`), counted in `/proc/thread-self/fd` (the count includes the
/// directory handle the count itself holds open).
pub fn open_descriptors() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/thread-self/fd")?.count() as u64)
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit and returns the limits now in
/// force. Call it before the workers start (and unshare their fd tables): every thread shares
/// the process's rlimits, so each worker's table gets the raised limit.
///
/// A hard limit of `RLIM_INFINITY` (never true for `NOFILE` on Linux, which caps it at
/// `fs.nr_open`) is left alone rather than failing.
pub fn raise_nofile_soft_limit() -> io::Result<Limit> {
    let limit = nofile_limit()?;
    if limit.soft >= limit.hard || limit.hard == libc::RLIM_INFINITY {
        return Ok(limit);
    }
    let rl = libc::rlimit {
        rlim_cur: limit.hard,
        rlim_max: limit.hard,
    };
    // SAFETY: `rl` is a valid `rlimit` that outlives the call; setrlimit only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    nofile_limit()
}

/// How many connections this server can hold at once, given its workers and fd limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Connections one worker can hold: the fd limit less [`RESERVED_FDS_PER_WORKER`].
    pub per_worker: u64,
    /// Worker threads, each with a private fd table.
    pub workers: usize,
    /// `per_worker × workers`: connections the whole server can hold.
    pub total: u64,
    /// The per-process open-files limit this was computed from.
    pub limit: u64,
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections = {} workers x ({} open files - {} reserved per worker)",
            self.total, self.workers, self.limit, RESERVED_FDS_PER_WORKER
        )
    }
}

/// Capacity of `workers` workers, each with a private fd table bounded by `limit` (normally the
/// soft `RLIMIT_NOFILE` after [`raise_nofile_soft_limit`]). Saturates instead of overflowing.
pub fn capacity(workers: usize, limit: u64) -> Capacity {
    let per_worker = limit.saturating_sub(RESERVED_FDS_PER_WORKER);
    Capacity {
        per_worker,
        workers,
        total: per_worker.saturating_mul(workers as u64),
        limit,
    }
}

/// Workers needed to hold `connections` at `per_worker` connections each (`None` when a worker
/// can hold none).
pub fn workers_needed(connections: u64, per_worker: u64) -> Option<u64> {
    if per_worker == 0 {
        return None;
    }
    Some(connections.div_ceil(per_worker))
}

/// A one-paragraph warning when `max_connections` cannot be reached with `capacity`, naming the
/// settings that fix it (`--workers`, `LimitNOFILE` / `ulimit -n`, `--max-connections`);
/// `None` when it can.
pub fn capacity_warning(capacity: Capacity, max_connections: usize) -> Option<String> {
    let max_connections = max_connections as u64;
    if capacity.total >= max_connections {
        return None;
    }
    let workers = capacity.workers.max(1) as u64;
    let limit_needed = max_connections
        .div_ceil(workers)
        .saturating_add(RESERVED_FDS_PER_WORKER);
    let mut msg =
        format!("--max-connections {max_connections} cannot be reached: capacity is {capacity}. ",);
    match workers_needed(max_connections, capacity.per_worker) {
        Some(n) => msg.push_str(&format!(
            "Run with --workers {n} (each worker has a private fd table; more workers than CPUs \
             is fine), or raise the open-files limit to {limit_needed} \
             (systemd LimitNOFILE, ulimit -n; fs.nr_open bounds it), \
             or lower --max-connections to {}.",
            capacity.total
        )),
        None => msg.push_str(&format!(
            "The open-files limit {} leaves no descriptor for connections: raise it to at \
             least {limit_needed} (systemd LimitNOFILE, ulimit -n).",
            capacity.limit
        )),
    }
    Some(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_multiplies_workers_by_the_limit_less_the_reserve() {
        let c = capacity(6, 20_000);
        assert_eq!(c.per_worker, 20_000 - RESERVED_FDS_PER_WORKER);
        assert_eq!(c.workers, 6);
        assert_eq!(c.total, 6 * (20_000 - RESERVED_FDS_PER_WORKER));
        assert!(c.total >= 100_000);
    }

    #[test]
    fn capacity_saturates() {
        assert_eq!(capacity(4, 10).total, 0);
        assert_eq!(capacity(usize::MAX, u64::MAX).total, u64::MAX);
    }

    #[test]
    fn no_warning_when_capacity_suffices() {
        assert_eq!(capacity_warning(capacity(6, 20_000), 100_000), None);
        assert_eq!(capacity_warning(capacity(1, 1_048_576), 1_000_000), None);
    }

    #[test]
    fn warning_names_the_settings_and_the_workers_needed() {
        // This box: 20,000 hard limit, 2 CPUs, 100K target -> 6 workers.
        let w = capacity_warning(capacity(2, 20_000), 100_000).expect("a warning");
        assert!(w.contains("--workers 6"), "{w}");
        assert!(w.contains("LimitNOFILE"), "{w}");
        assert!(w.contains("ulimit -n"), "{w}");
        assert!(w.contains("--max-connections"), "{w}");
        assert!(w.contains("50064"), "{w}");
        assert!(w.contains("39872"), "{w}");
    }

    #[test]
    fn warning_when_the_limit_is_below_the_reserve() {
        let w = capacity_warning(capacity(2, 32), 10).expect("a warning");
        assert!(w.contains("no descriptor"), "{w}");
        assert!(w.contains("LimitNOFILE"), "{w}");
    }

    #[test]
    fn workers_needed_rounds_up() {
        assert_eq!(workers_needed(100_000, 19_936), Some(6));
        assert_eq!(workers_needed(19_936, 19_936), Some(1));
        assert_eq!(workers_needed(1, 0), None);
    }

    #[test]
    fn an_opened_file_is_counted() {
        // A thread with its own fd table: other tests opening files cannot change the count.
        std::thread::spawn(|| {
            crate::os::sys::unshare_fd_table().expect("unshare");
            let before = open_descriptors().expect("count");
            let file = std::fs::File::open("/dev/null").expect("open");
            assert_eq!(open_descriptors().expect("count"), before + 1);
            drop(file);
        })
        .join()
        .expect("the counting thread");
    }

    #[test]
    fn raising_the_soft_limit_reaches_the_hard_limit() {
        let limit = raise_nofile_soft_limit().expect("getrlimit/setrlimit");
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(nofile_limit().expect("getrlimit"), limit);
    }
}
