//! The socket a connection task reads and writes through: plain, or TLS over a
//! [`TlsSession`]. Readiness still comes from io_uring (`stream().readable()` /
//! `writable()`); the bytes move with non-blocking calls, as for every connection. With TLS
//! the reads are decrypted before the handler sees them and the writes encrypted before the
//! socket does, so the protocol handlers are the same for both. A plain client on a TLS port
//! is told so in plaintext before it is closed ([`sniff`]).

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;

use super::session::TlsSession;
use super::sniff;
use crate::os::sys::{self, Transfer};

/// Most plaintext bytes encrypted by one [`Socket::send`] (four full TLS records): what a
/// TLS connection may hold as unsent ciphertext beyond its outbox.
pub const MAX_TLS_SEND: usize = 64 * 1024;

/// A connection's socket.
pub struct Socket {
    stream: TcpStream,
    tls: Option<Box<RefCell<TlsSession>>>,
}

/// What a non-blocking [`Socket::recv`] got.
pub enum Received<'a> {
    /// Plaintext (never empty).
    Data(&'a [u8]),
    /// The peer closed (a TCP FIN, or a TLS `close_notify`).
    Eof,
    /// Nothing to hand over yet (no bytes, or only handshake or a partial record).
    WouldBlock,
}

impl Socket {
    /// A plain socket.
    pub fn plain(stream: TcpStream) -> Self {
        Socket { stream, tls: None }
    }

    /// A socket whose bytes go through `session` (its handshake not yet begun).
    pub fn tls(stream: TcpStream, session: TlsSession) -> Self {
        Socket {
            stream,
            tls: Some(Box::new(RefCell::new(session))),
        }
    }

    /// The TCP stream (for readiness).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether this is a TLS connection whose handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| tls.borrow().is_handshaking())
    }

    /// The descriptor shared frames may be written to directly: only a plain socket's (a TLS
    /// connection's frames must go through its task to be encrypted).
    pub fn direct_fd(&self) -> Option<RawFd> {
        self.tls.is_none().then(|| self.stream.as_raw_fd())
    }

    /// The TCP stream and, for TLS, its session: what the watcher plane adopts.
    pub fn into_parts(self) -> (TcpStream, Option<TlsSession>) {
        (self.stream, self.tls.map(|tls| tls.into_inner()))
    }

    /// Reads what the socket holds into `scratch` and returns the plaintext: `scratch`
    /// itself for a plain socket, the decrypted bytes (in `plain`) for TLS. A TLS error (a
    /// client that does not speak TLS) is an `InvalidData` error.
    pub fn recv<'a>(
        &self,
        scratch: &'a mut [u8],
        plain: &'a mut Vec<u8>,
    ) -> io::Result<Received<'a>> {
        let n = match sys::recv_nonblocking(self.stream.as_raw_fd(), scratch)? {
            Transfer::WouldBlock => return Ok(Received::WouldBlock),
            Transfer::Done(0) => return Ok(Received::Eof),
            Transfer::Done(n) => n,
        };
        let Some(tls) = &self.tls else {
            return Ok(Received::Data(&scratch[..n]));
        };
        let peer_closed = {
            let mut session = tls.borrow_mut();
            let handshaking = session.is_handshaking();
            if let Err(e) = session.receive(&scratch[..n], plain) {
                drop(session);
                if handshaking {
                    self.answer_plain_client(&scratch[..n]);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            session.peer_closed()
        };
        // The handshake's answers go out now (what the socket does not take waits for the
        // next flush).
        self.flush_pending()?;
        Ok(match (plain.is_empty(), peer_closed) {
            (false, _) => Received::Data(plain),
            (true, true) => Received::Eof,
            (true, false) => Received::WouldBlock,
        })
    }

    /// Tells a client that failed the handshake with plaintext what it did wrong, in
    /// plaintext, once and best effort ([`sniff::plaintext_answer`]), and ends our side; the
    /// caller closes the connection.
    fn answer_plain_client(&self, first: &[u8]) {
        let Some((who, answer)) = sniff::plaintext_answer(first) else {
            return;
        };
        crate::server::metrics::count_plain_on_tls(who);
        let fd = self.stream.as_raw_fd();
        // A few hundred bytes into an empty send buffer: taken whole.
        let _ = sys::send_one_nonblocking(fd, &answer);
        let _ = sys::shutdown_write(fd);
    }

    /// Writes as much of `slices` as the socket takes, without blocking. With TLS,
    /// ciphertext left over from the last call goes first (nothing new is taken until it is
    /// out), then up to [`MAX_TLS_SEND`] plaintext bytes are encrypted and counted as
    /// written: what the socket does not take of their ciphertext waits for
    /// [`flush_pending`](Self::flush_pending).
    pub fn send(&self, slices: &[&[u8]]) -> io::Result<Transfer> {
        let Some(tls) = &self.tls else {
            return sys::send_nonblocking(self.stream.as_raw_fd(), slices);
        };
        if !self.flush_pending()? {
            return Ok(Transfer::WouldBlock);
        }
        let taken = tls
            .borrow_mut()
            .encrypt(slices, MAX_TLS_SEND)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.flush_pending()?;
        Ok(Transfer::Done(taken))
    }

    /// Sends ciphertext left over (TLS only); `Ok(true)` once nothing is left.
    pub fn flush_pending(&self) -> io::Result<bool> {
        let Some(tls) = &self.tls else {
            return Ok(true);
        };
        let mut session = tls.borrow_mut();
        while !session.pending().is_empty() {
            match sys::send_one_nonblocking(self.stream.as_raw_fd(), session.pending())? {
                Transfer::Done(n) => session.consume(n),
                Transfer::WouldBlock => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Whether ciphertext is waiting for the socket (TLS only).
    pub fn has_pending(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|tls| !tls.borrow().pending().is_empty())
    }

    /// Writes all of `bytes` (and any ciphertext left over), waiting for write readiness as
    /// needed.
    pub async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut done = 0;
        loop {
            let progress = if done < bytes.len() {
                self.send(&[&bytes[done..]])?
            } else if self.flush_pending()? {
                return Ok(());
            } else {
                Transfer::WouldBlock
            };
            match progress {
                Transfer::Done(n) => done += n,
                Transfer::WouldBlock => self.stream.writable(false).await?,
            }
        }
    }

    /// Ends our sending side: a TLS `close_notify` first (best effort), then a TCP FIN after
    /// everything queued (`shutdown(SHUT_WR)`).
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.close_notify();
        sys::shutdown_write(self.stream.as_raw_fd())
    }

    /// Ends a TLS connection cleanly (a `close_notify` once, best effort, never waiting).
    pub fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().close_notify();
            let _ = self.flush_pending();
        }
    }
}
