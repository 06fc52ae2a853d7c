//! Reading a server's resource use from `/proc/PID` (RSS, CPU time).

use std::fs;

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User and system CPU time of `pid` (all threads) in microseconds.
///
/// Their sum is exact (the scheduler's runtime). The split is not a measurement of any one
/// phase: on a tick-accounting kernel it is a 250 Hz sample of the mode, scaled to the runtime
/// of the process's whole life and kept monotonic (the kernel's `cputime_adjust`), so the
/// difference of two readings can show no user time for a phase that had some.
pub fn cpu_us(pid: u32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some((utime * 1_000_000 / ticks, stime * 1_000_000 / ticks))
}

/// Summed RSS of `pids` (a server made of several processes); `None` when `pids` is empty
/// or one of them cannot be read.
pub fn rss_bytes_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// Summed user and system CPU time of `pids`, µs; `None` as for [`rss_bytes_sum`].
pub fn cpu_us_sum(pids: &[u32]) -> Option<(u64, u64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold((0, 0), |(u, s), &p| {
        let (pu, ps) = cpu_us(p)?;
        Some((u + pu, s + ps))
    })
}

/// Kernel slab memory (`Slab:` of `/proc/meminfo`), bytes: where socket, file and inode
/// objects of idle connections live.
pub fn kernel_slab_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("Slab:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Kernel memory held by TCP sockets, bytes (from `/proc/net/sockstat`, in pages).
pub fn tcp_kernel_bytes() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(word) = it.next() {
        if word == "mem" {
            let pages: u64 = it.next()?.parse().ok()?;
            return Some(pages * 4096);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_us(pid).is_some());
        let two = rss_bytes_sum(&[pid, pid]).unwrap();
        assert!(two >= rss_bytes(pid).unwrap());
        assert!(cpu_us_sum(&[pid]).is_some());
        assert!(rss_bytes_sum(&[]).is_none());
        assert!(kernel_slab_bytes().unwrap() > 0);
    }
}
