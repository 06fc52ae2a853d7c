//! A connection's claim on its address's count (`--max-connections-per-ip`), held while the
//! connection is in its monoio task (TLS handshake, HTTP phase, line `CONNECT`) and handed to
//! its plane record after that. The deadlines of a watcher (send timeout, message timeout,
//! keepalive) live in the plane's deadline wheel; the HTTP phase bounds its own reads and
//! writes.

use std::net::IpAddr;

use super::admission::IpTicket;

/// The admission state of one connection in its task.
pub struct ConnGuard {
    ticket: IpTicket,
}

impl ConnGuard {
    /// The guard of a connection admitted with `ticket`.
    pub fn new(ticket: IpTicket) -> Self {
        ConnGuard { ticket }
    }

    /// The peer's address.
    pub fn peer(&self) -> IpAddr {
        self.ticket.ip()
    }

    /// Hands the connection's per-address claim to its next owner (see [`IpTicket::detach`]).
    pub fn detach_ticket(&self) -> Option<IpAddr> {
        self.ticket.detach()
    }
}
