//! Start-up's port check: refuse a port another live server listens on, but wait (bounded)
//! for one held only by an exiting process.
//!
//! The workers bind with `SO_REUSEPORT`, which would quietly share a port with another
//! server of the same user and split the connections between the two, so start-up first
//! binds a plain socket to each address. When that fails with "address in use", the
//! listening sockets on the port are looked up in `/proc/net/tcp{,6}` and their owners in
//! `/proc/*/task/*/fd`: a live owner means another server runs there (refused at once, naming
//! its pid). No owner means the listener belongs to a process that has exited but whose
//! io_uring instance the kernel is still tearing down — after `kill -9` of a server holding
//! thousands of connections that takes a moment — so start-up logs why and retries until
//! `--port-wait-ms` has passed. A supervisor's first restart then succeeds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

/// How often a port held by an exiting process is tried again.
const RETRY_EVERY: Duration = Duration::from_millis(25);

/// Who holds a listening socket that conflicts with ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// A live process: its pid and command name.
    Process(u32, String),
    /// No live process has the socket open: its owner is exiting.
    Exiting,
}

/// Binds a throwaway socket to `addr` (with `SO_REUSEADDR`, as the listeners will) and
/// drops it: `Ok` when nothing listens there.
fn try_bind(addr: SocketAddr) -> io::Result<()> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// Waits until `addr` is free, for at most `max_wait` while only an exiting process holds it;
/// fails at once when a live process listens there (or on any other error).
pub fn wait_for_port(addr: SocketAddr, max_wait: Duration) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let started = Instant::now();
    let mut logged = false;
    loop {
        let err = match try_bind(addr) {
            Ok(()) => {
                if logged {
                    tracing::info!("{addr} is free after {} ms", started.elapsed().as_millis());
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => e,
            Err(e) => return Err(cannot_listen(addr, &e.to_string())),
        };
        match conflicting_holder(addr) {
            Some(Holder::Process(pid, name)) => {
                return Err(cannot_listen(
                    addr,
                    &format!(
                        "{err}: process {pid} ({name}) listens there (is another server running?)"
                    ),
                ));
            }
            Some(Holder::Exiting) | None => {}
        }
        if started.elapsed() >= max_wait {
            return Err(cannot_listen(
                addr,
                &format!(
                    "{err}, still after waiting {} ms for its listener to go away \
                     (--port-wait-ms; is another user's server running there?)",
                    max_wait.as_millis()
                ),
            ));
        }
        if !logged {
            tracing::warn!(
                "{addr} is still held by a listener no live process owns (an exiting server, \
                 e.g. just killed, whose sockets the kernel is still closing); waiting up to \
                 {} ms for it",
                max_wait.as_millis()
            );
            logged = true;
        }
        std::thread::sleep(RETRY_EVERY);
    }
}

fn cannot_listen(addr: SocketAddr, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("cannot listen on {addr}: {why}"),
    )
}

/// The holder of a listening socket whose address conflicts with `addr`: a live process if
/// any has one open, else `Exiting` if such sockets exist, else `None` (gone meanwhile, or
/// `/proc` cannot tell).
pub fn conflicting_holder(addr: SocketAddr) -> Option<Holder> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(
                listeners(&text)
                    .into_iter()
                    .filter(|(local, _)| conflicts(*local, addr))
                    .map(|(_, inode)| inode),
            );
        }
    }
    if inodes.is_empty() {
        return None;
    }
    Some(owner(Path::new("/proc"), &inodes).unwrap_or(Holder::Exiting))
}

/// Whether a listener on `local` keeps us from binding `ours` (same port; same address, or
/// either is a wildcard).
fn conflicts(local: SocketAddr, ours: SocketAddr) -> bool {
    local.port() == ours.port()
        && (local.ip() == ours.ip() || local.ip().is_unspecified() || ours.ip().is_unspecified())
}

/// The `(local address, inode)` of every LISTEN socket in a `/proc/net/tcp{,6}` table.
pub fn listeners(table: &str) -> Vec<(SocketAddr, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
            if fields.len() < 10 || fields[3] != "0A" {
                return None;
            }
            let local = parse_proc_addr(fields[1])?;
            let inode = fields[9].parse().ok()?;
            Some((local, inode))
        })
        .collect()
}

/// Parses `0100007F:1F90` (IPv4) or a 32-hex-digit IPv6 address and a port, as the kernel
/// prints them (each 32-bit word in host byte order).
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each 32-bit word of the address is printed as a host-order integer.
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The first live process (any of its threads: workers have private fd tables) with one of
/// `inodes` open, searching the proc filesystem at `proc`. Threads that share a table (most
/// of a process's) are looked at once: a busy host has far more threads than tables.
fn owner(proc: &Path, inodes: &[u64]) -> Option<Holder> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let me = std::process::id();
    for entry in std::fs::read_dir(proc).ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(entry.path().join("task")) else {
            continue;
        };
        let mut tables: Vec<i32> = Vec::new();
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if tables.iter().any(|&seen| same_fd_table(seen, tid)) {
                continue;
            }
            tables.push(tid);
            if holds_any(&task.path().join("fd"), &wanted) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                return Some(Holder::Process(pid, name));
            }
        }
    }
    None
}

/// Whether the fd directory `dir` (of one task) links to one of `wanted`.
fn holds_any(dir: &Path, wanted: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(dir) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
    })
}

/// `kcmp(2)`'s `KCMP_FILES`: the two tasks share one file-descriptor table.
const KCMP_FILES: libc::c_int = 2;

/// Whether tasks `a` and `b` share their file-descriptor table (false when it cannot be
/// told: then both are searched, which is only slower).
fn same_fd_table(a: i32, b: i32) -> bool {
    // SAFETY: kcmp compares two tasks' kernel objects; it takes plain integers and touches
    // no memory of this process.
    let rc = unsafe { libc::syscall(libc::SYS_kcmp, a, b, KCMP_FILES, 0, 0) };
    rc == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000:270F"),
            Some("0.0.0.0:9999".parse().unwrap())
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:1F90"),
            Some("[::1]:8080".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn listeners_are_found_with_their_inodes() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 20 4 30 10 -1\n";
        assert_eq!(
            listeners(table),
            vec![("127.0.0.1:8080".parse().unwrap(), 12345)]
        );
    }

    #[test]
    fn wildcards_conflict_with_everything_on_the_port() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(conflicts(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(conflicts(a("127.0.0.1:80"), a("0.0.0.0:80")));
        assert!(!conflicts(a("127.0.0.2:80"), a("127.0.0.1:80")));
        assert!(!conflicts(a("127.0.0.1:81"), a("127.0.0.1:80")));
    }

    #[test]
    fn threads_share_a_table_until_one_unshares_it() {
        let me = std::process::id() as i32;
        // SAFETY: gettid has no arguments and cannot fail.
        let main = unsafe { libc::gettid() };
        assert!(same_fd_table(me, main));
        let (shared, private) = std::thread::spawn(move || {
            // SAFETY: as above.
            let tid = unsafe { libc::gettid() };
            let shared = same_fd_table(main, tid);
            crate::os::sys::unshare_fd_table().unwrap();
            (shared, same_fd_table(main, tid))
        })
        .join()
        .unwrap();
        assert!(shared, "a new thread shares the process's table");
        assert!(!private, "until it unshares it");
    }

    #[test]
    fn a_port_this_process_listens_on_is_held_but_not_by_another_process() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // This process is skipped as an owner (a server never conflicts with itself), so its
        // own listener looks like an exiting one: the wait is bounded and then fails.
        assert_eq!(conflicting_holder(addr), Some(Holder::Exiting));
        let started = Instant::now();
        let err = wait_for_port(addr, Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(err.to_string().contains("--port-wait-ms"), "{err}");
        drop(listener);
        wait_for_port(addr, Duration::from_millis(200)).unwrap();
        assert_eq!(conflicting_holder(addr), None);
    }
}
