//! The harness's own limits, worked out before a run starts: file descriptors (each load
//! thread has a private fd table, so capacity = threads × (RLIMIT_NOFILE − reserve)),
//! ephemeral ports (one source address reaches one server address from at most the size of
//! `ip_local_port_range` ports) and memory. Too few threads or sources are raised with a note;
//! what cannot be reached on this box is refused with one clear line.

use std::fs;

use serde::Serialize;

use crate::os::limits;

/// Descriptors a load thread keeps for itself (its io_uring ring, eventfds, slack).
pub const RESERVED_FDS_PER_THREAD: u64 = 64;
/// Source addresses available without setup: 127.0.0.2 … 127.0.0.254.
pub const MAX_SOURCES: usize = 253;
/// Load threads at most (each is an OS thread with its own io_uring).
pub const MAX_THREADS: usize = 512;
/// Rough memory one loopback connection costs the box, both ends together (kernel socket
/// buffers of an idle pair ~7.8 KB plus both programs' per-connection state).
pub const BYTES_PER_CONNECTION_ESTIMATE: u64 = 12 * 1024;

/// How the clients are spread, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Load threads (private fd tables).
    pub threads: usize,
    /// Source addresses 127.0.0.2…
    pub sources: usize,
    /// The open-files limit of each thread's table (soft, after raising it to the hard one).
    pub nofile_limit: u64,
    /// Clients one thread can hold.
    pub clients_per_thread: u64,
    /// Ephemeral ports per source address toward one server address.
    pub ports_per_source: u64,
    /// Memory available on the box at start, bytes (`MemAvailable`).
    pub mem_available_bytes: Option<u64>,
    /// What was adjusted or is at risk, one line each.
    pub notes: Vec<String>,
}

/// The size of `net.ipv4.ip_local_port_range` (28,232 by default).
pub fn ephemeral_ports() -> u64 {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(28_232)
}

/// `MemAvailable` from `/proc/meminfo`, bytes.
pub fn mem_available() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Works out threads and sources for `clients` (raising the soft open-files limit first).
/// `threads` and `sources` are what the user asked for, if anything.
pub fn make(
    clients: usize,
    threads: Option<usize>,
    sources: Option<usize>,
) -> Result<Plan, String> {
    let limit = limits::raise_nofile_soft_limit()
        .or_else(|_| limits::nofile_limit())
        .map_err(|e| format!("cannot read the open-files limit: {e}"))?;
    let ports = ephemeral_ports();
    let mem = mem_available();
    let mut plan = compute(clients, threads, sources, limit.soft, ports)?;
    plan.mem_available_bytes = mem;
    if let Some(mem) = mem {
        let need = clients as u64 * BYTES_PER_CONNECTION_ESTIMATE;
        if need > mem / 10 * 8 {
            plan.notes.push(format!(
                "memory: {clients} loopback connections need about {} MiB (both ends), {} MiB \
                 available: the run may be killed or swap",
                need >> 20,
                mem >> 20
            ));
        }
    }
    Ok(plan)
}

/// The arithmetic of [`make`], without reading the system.
pub fn compute(
    clients: usize,
    threads: Option<usize>,
    sources: Option<usize>,
    nofile: u64,
    ports: u64,
) -> Result<Plan, String> {
    let mut notes = Vec::new();
    let per_thread = nofile.saturating_sub(RESERVED_FDS_PER_THREAD).max(1);
    let need_threads = (clients as u64).div_ceil(per_thread).max(1) as usize;
    if need_threads > MAX_THREADS {
        return Err(format!(
            "{clients} clients need {need_threads} load threads of {per_thread} descriptors \
             (open-files limit {nofile}); at most {MAX_THREADS}: raise the limit (ulimit -n)"
        ));
    }
    let threads = match threads {
        Some(t) if t >= need_threads => t,
        Some(t) => {
            notes.push(format!(
                "threads: raised --threads {t} to {need_threads}: {clients} clients need \
                 {need_threads} fd tables of {per_thread} (open-files limit {nofile} − \
                 {RESERVED_FDS_PER_THREAD} reserved)"
            ));
            need_threads
        }
        None => need_threads,
    };
    // Use at most half of each source's port range: TIME_WAIT from an earlier run holds some
    // ports, and connect()'s search for a free port (random start, linear probe) gets slower
    // as the range fills: 100K watchers at 90 % of 4 sources' ranges connected at ~600/s
    // toward the end, against thousands per second at lower density.
    let per_source = (ports / 2).max(1);
    let need_sources = (clients as u64).div_ceil(per_source).max(1) as usize;
    if need_sources > MAX_SOURCES {
        return Err(format!(
            "{clients} clients need {need_sources} source addresses of {per_source} ports \
             toward one server address; 127.0.0.2-254 gives {MAX_SOURCES}: widen \
             net.ipv4.ip_local_port_range or use fewer clients"
        ));
    }
    let sources = match sources {
        Some(s) if s >= need_sources => s.min(MAX_SOURCES),
        Some(s) => {
            notes.push(format!(
                "sources: raised --sources {s} to {need_sources}: {clients} clients need \
                 {need_sources} source addresses of {per_source} usable ports each"
            ));
            need_sources
        }
        None => need_sources,
    };
    Ok(Plan {
        threads,
        sources,
        nofile_limit: nofile,
        clients_per_thread: per_thread,
        ports_per_source: ports,
        mem_available_bytes: None,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_sources_grow_with_clients() {
        let p = compute(100, None, None, 20_000, 28_232).unwrap();
        assert_eq!((p.threads, p.sources), (1, 1));
        let p = compute(100_000, None, None, 20_000, 28_232).unwrap();
        assert_eq!((p.threads, p.sources), (6, 8));
        assert!(p.notes.is_empty());
    }

    #[test]
    fn too_few_threads_are_raised_with_a_note() {
        let p = compute(50_000, Some(1), Some(1), 20_000, 28_232).unwrap();
        assert_eq!((p.threads, p.sources), (3, 4));
        assert_eq!(p.notes.len(), 2);
        assert!(
            p.notes[0].contains("open-files limit 20000"),
            "{}",
            p.notes[0]
        );
    }

    #[test]
    fn what_the_box_cannot_reach_is_refused_clearly() {
        let e = compute(10_000_000, None, None, 1024, 28_232).unwrap_err();
        assert!(e.contains("ulimit"), "{e}");
        let e = compute(10_000_000, None, None, 1 << 20, 28_232).unwrap_err();
        assert!(e.contains("source addresses"), "{e}");
    }
}
