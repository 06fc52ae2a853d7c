//! A load-generator connection: plain TCP, or TLS over it (`--tls --ca PEM`). Readiness from
//! io_uring, bytes moved by non-blocking calls ([`crate::os::stream`]); with TLS, rustls's
//! client (buffered API: the harness's own memory is not what is measured) sits between.

use std::cell::RefCell;
use std::io::{self, Read};

use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::os::stream::{recv_some, write_all};

/// What a harness connection speaks: `None` plain, else TLS with these settings and name.
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// Client settings (trusting `--ca`).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry (the host of `--server`).
    pub name: ServerName<'static>,
}

impl TlsClient {
    /// Settings trusting the CA file `ca`, checking the host of `server` (`[scheme://]HOST:PORT`).
    pub fn new(ca: &std::path::Path, server: &str) -> io::Result<TlsClient> {
        let host = server
            .split("://")
            .last()
            .unwrap_or(server)
            .split('/')
            .next()
            .unwrap_or("");
        Ok(TlsClient {
            config: crate::feed::tls::client_config(ca)?,
            name: crate::feed::tls::server_name(host)?,
        })
    }
}

/// One harness connection.
pub struct Wire {
    stream: TcpStream,
    tls: Option<Box<RefCell<ClientConnection>>>,
}

impl Wire {
    /// Wraps a connected socket; with `tls`, completes the TLS handshake first.
    pub async fn open(stream: TcpStream, tls: Option<&TlsClient>) -> io::Result<Wire> {
        let Some(tls) = tls else {
            return Ok(Wire { stream, tls: None });
        };
        let conn = ClientConnection::new(tls.config.clone(), tls.name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let wire = Wire {
            stream,
            tls: Some(Box::new(RefCell::new(conn))),
        };
        let scratch = RefCell::new(vec![0u8; 16 * 1024]);
        let mut early = Vec::new();
        loop {
            wire.flush_tls().await?;
            let handshaking = wire
                .tls
                .as_ref()
                .is_some_and(|c| c.borrow().is_handshaking());
            if !handshaking {
                return Ok(wire);
            }
            if wire.read_tls(&scratch, &mut early).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the TLS handshake",
                ));
            }
        }
    }

    /// Writes all of `bytes` (encrypted with TLS).
    pub async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.tls {
            None => write_all(&self.stream, bytes).await,
            Some(conn) => {
                io::Write::write_all(&mut conn.borrow_mut().writer(), bytes)?;
                self.flush_tls().await
            }
        }
    }

    /// Appends what arrives to `buf` (decrypted with TLS), waiting until something does;
    /// `Ok(0)`: the server closed.
    pub async fn recv_some(
        &self,
        scratch: &RefCell<Vec<u8>>,
        buf: &mut Vec<u8>,
    ) -> io::Result<usize> {
        if self.tls.is_none() {
            return recv_some(&self.stream, scratch, buf).await;
        }
        let start = buf.len();
        loop {
            if self.read_tls(scratch, buf).await? == 0 {
                return Ok(buf.len() - start);
            }
            self.flush_tls().await?;
            if buf.len() > start {
                return Ok(buf.len() - start);
            }
        }
    }

    /// Appends what arrives to `buf` (decrypted with TLS), waiting until something does;
    /// `Ok(0)`: the server closed. On plain TCP it is one io_uring `Recv` straight into
    /// `buf`'s spare room (at least `room` bytes): no readiness poll and no `recv` syscall of
    /// its own, and no copy. With TLS it is [`Wire::recv_some`] through `scratch`.
    pub async fn recv_into(
        &mut self,
        scratch: &RefCell<Vec<u8>>,
        buf: &mut Vec<u8>,
        room: usize,
    ) -> io::Result<usize> {
        if self.tls.is_some() {
            return self.recv_some(scratch, buf).await;
        }
        let mut owned = std::mem::take(buf);
        owned.reserve(room);
        let kept = owned.len();
        // The read lands after the bytes kept (a partial frame), not over them.
        let (result, spare) = self.stream.read(owned.slice_mut(kept..)).await;
        *buf = spare.into_inner();
        result
    }

    /// Reads ciphertext into the TLS connection and appends the plaintext it yields to
    /// `plain`; `Ok(0)` at EOF (TCP, or the server's `close_notify`).
    async fn read_tls(&self, scratch: &RefCell<Vec<u8>>, plain: &mut Vec<u8>) -> io::Result<usize> {
        let conn = self.tls.as_ref().expect("a TLS wire");
        let mut cipher = Vec::new();
        let n = recv_some(&self.stream, scratch, &mut cipher).await?;
        if n == 0 {
            return Ok(0);
        }
        let mut conn = conn.borrow_mut();
        let mut slice = &cipher[..];
        let mut closed = false;
        while !slice.is_empty() {
            conn.read_tls(&mut slice)?;
            conn.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Taken at once: rustls holds only so much received plaintext.
            let mut chunk = [0u8; 4096];
            loop {
                match conn.reader().read(&mut chunk) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(got) => plain.extend_from_slice(&chunk[..got]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(if closed { 0 } else { n })
    }

    /// Sends whatever TLS has to say (handshake, encrypted data).
    async fn flush_tls(&self) -> io::Result<()> {
        let Some(conn) = &self.tls else {
            return Ok(());
        };
        let mut out = Vec::new();
        {
            let mut conn = conn.borrow_mut();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        write_all(&self.stream, &out).await
    }
}
