//! Admission at accept: how many connections one source address may hold, and the socket
//! options every accepted connection gets.
//!
//! Connections from one address spread over every worker (`SO_REUSEPORT`), so the per-address
//! counts are process-wide: a table split into [`SHARDS`] small locked maps, touched once when
//! a connection is accepted and once when it ends (never per event or per message). A
//! connection holds an [`IpTicket`]; dropping it gives its slot back.
//!
//! Socket options: `SO_KEEPALIVE` with `TCP_KEEPIDLE` / `TCP_KEEPINTVL` / `TCP_KEEPCNT`, and
//! `TCP_USER_TIMEOUT`, so that a peer that vanished without a FIN is found even on a quiet
//! match, and one that stops acknowledging data (or keeps its window shut) is dropped.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use super::config::TcpKeepalive;

/// Shards of the per-address table (a power of two).
pub const SHARDS: usize = 64;

/// Open connections per source address, shared by every worker.
pub struct PerIpCounts {
    limit: usize,
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
    hasher: std::collections::hash_map::RandomState,
}

/// A connection's claim on its address's count; dropping it releases the claim.
pub struct IpTicket {
    counts: Cell<Option<Arc<PerIpCounts>>>,
    ip: IpAddr,
}

impl IpTicket {
    /// The source address of the connection.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// A ticket that counts nothing (for connections not subject to the limit).
    pub fn uncounted(ip: IpAddr) -> Self {
        IpTicket {
            counts: Cell::new(None),
            ip: canonical(ip),
        }
    }

    /// Hands the claim over to whoever keeps the connection next (a watcher-plane record):
    /// dropping this ticket then releases nothing, and the new owner must call
    /// [`PerIpCounts::release`] with the address returned (`None`: nothing was counted).
    pub fn detach(&self) -> Option<IpAddr> {
        self.counts.take().map(|_| self.ip)
    }
}

impl Drop for IpTicket {
    fn drop(&mut self) {
        if let Some(counts) = self.counts.take() {
            counts.release(self.ip);
        }
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PerIpCounts {
    /// A table allowing `limit` connections per address (0 = no limit).
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(PerIpCounts {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        })
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        let i = (self.hasher.hash_one(ip) as usize) & (SHARDS - 1);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims a slot for a connection from `ip`; `None` when the address already holds
    /// `limit` connections.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<IpTicket> {
        let ip = canonical(ip);
        if self.limit == 0 {
            return Some(IpTicket::uncounted(ip));
        }
        let mut shard = self.shard(&ip);
        let count = shard.entry(ip).or_insert(0);
        if *count as usize >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpTicket {
            counts: Cell::new(Some(Arc::clone(self))),
            ip,
        })
    }

    /// Gives back a slot of `ip` (what dropping a ticket does; for a detached one).
    pub fn release(&self, ip: IpAddr) {
        let mut shard = self.shard(&ip);
        if let Some(count) = shard.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(&ip);
            }
        }
    }

    /// Connections `ip` holds now.
    pub fn count(&self, ip: IpAddr) -> usize {
        let ip = canonical(ip);
        self.shard(&ip).get(&ip).copied().unwrap_or(0) as usize
    }

    /// Addresses holding at least one connection.
    pub fn addresses(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Why a connection is refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--max-connections` reached.
    ServerFull,
    /// `--max-connections-per-ip` reached for the connection's address.
    TooManyFromAddress,
}

impl Refusal {
    /// The text the client is told (`ERROR: …` on the line port, `{"error": …}` on HTTP).
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server full",
            Refusal::TooManyFromAddress => "too many connections",
        }
    }

    /// The bytes to send before closing: a 503 for HTTP, an `ERROR:` line for the line port.
    pub fn message(self, line_protocol: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if line_protocol {
            crate::proto::line::encode_error(&mut out, self.reason());
        } else {
            crate::proto::response::write_json_error(&mut out, 503, self.reason(), false);
        }
        out
    }
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: u64) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    crate::os::sys::set_socket_option(fd, level, name, &value)
}

/// Applies the keepalive settings to an accepted socket: `SO_KEEPALIVE` with idle time,
/// probe interval and probe count (whole seconds, at least 1), and `TCP_USER_TIMEOUT`.
pub fn apply_keepalive(fd: RawFd, keepalive: &TcpKeepalive) -> io::Result<()> {
    if !keepalive.idle.is_zero() {
        let secs = |d: std::time::Duration| d.as_millis().div_ceil(1000).max(1) as u64;
        set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPIDLE,
            secs(keepalive.idle),
        )?;
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            secs(keepalive.interval),
        )?;
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPCNT,
            u64::from(keepalive.probes.max(1)),
        )?;
    }
    if !keepalive.user_timeout.is_zero() {
        set_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            keepalive.user_timeout.as_millis() as u64,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    #[test]
    fn an_address_gets_limit_slots_and_dropping_a_ticket_frees_one() {
        let counts = PerIpCounts::new(2);
        let t1 = counts.admit(A).expect("first");
        let _t2 = counts.admit(A).expect("second");
        assert!(counts.admit(A).is_none(), "third from the same address");
        let _b = counts.admit(B).expect("another address is not affected");
        assert_eq!(counts.count(A), 2);
        drop(t1);
        assert_eq!(counts.count(A), 1);
        assert!(counts.admit(A).is_some());
    }

    #[test]
    fn the_table_forgets_addresses_with_no_connection() {
        let counts = PerIpCounts::new(5);
        let tickets: Vec<_> = (0..100u8)
            .map(|i| {
                counts
                    .admit(IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)))
                    .unwrap()
            })
            .collect();
        assert_eq!(counts.addresses(), 100);
        drop(tickets);
        assert_eq!(counts.addresses(), 0);
    }

    #[test]
    fn a_detached_claim_is_released_by_its_new_owner() {
        let counts = PerIpCounts::new(1);
        let ticket = counts.admit(A).unwrap();
        let ip = ticket.detach().expect("counted");
        drop(ticket);
        assert_eq!(counts.count(A), 1, "still held");
        counts.release(ip);
        assert_eq!(counts.count(A), 0);
        assert_eq!(IpTicket::uncounted(A).detach(), None);
    }

    #[test]
    fn zero_means_no_limit() {
        let counts = PerIpCounts::new(0);
        let tickets: Vec<_> = (0..1000).map(|_| counts.admit(A).unwrap()).collect();
        assert_eq!(tickets.len(), 1000);
        assert_eq!(counts.addresses(), 0, "nothing is counted");
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_ipv4() {
        let counts = PerIpCounts::new(1);
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 2).to_ipv6_mapped());
        let _t = counts.admit(A).unwrap();
        assert!(counts.admit(mapped).is_none());
        assert!(counts.admit(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_some());
    }

    #[test]
    fn refusals_say_why_in_each_protocol() {
        let line = Refusal::TooManyFromAddress.message(true);
        assert_eq!(line, b"ERROR: too many connections\r\n");
        let http = String::from_utf8(Refusal::TooManyFromAddress.message(false)).unwrap();
        assert!(http.starts_with("HTTP/1.1 503 "), "{http}");
        assert!(
            http.ends_with(r#"{"error":"too many connections"}"#),
            "{http}"
        );
    }

    fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: both pointers are to live locals of the sizes passed.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        value
    }

    #[test]
    fn keepalive_options_land_on_the_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let fd = stream.as_raw_fd();
        assert_eq!(get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 0);
        let k = TcpKeepalive {
            idle: Duration::from_secs(7),
            interval: Duration::from_millis(1500),
            probes: 3,
            user_timeout: Duration::from_millis(4500),
        };
        apply_keepalive(fd, &k).unwrap();
        assert_eq!(get_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 7);
        assert_eq!(get_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 2);
        assert_eq!(get_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 3);
        assert_eq!(get_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 4500);
    }
}
