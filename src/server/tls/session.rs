//! One TLS connection's record layer, sans I/O: ciphertext in → plaintext out for the
//! protocol handlers, and their plaintext in → ciphertext out for the socket.
//!
//! The handshake (and any TLS 1.2 connection) runs on rustls's unbuffered API
//! ([`UnbufferedServerConnection`]): this type owns the two byte buffers, and both are empty
//! (no allocation) whenever the connection is idle — a received partial record or an unsent
//! tail of ciphertext is all that is ever kept. Once a TLS 1.3 handshake is over, rustls's
//! connection (~3.5 KB of state: expanded keys, key schedule) is traded for its traffic
//! secrets and [`Records`] carries on with ~130 bytes.

use std::sync::Arc;

use super::records::Records;

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError,
    UnbufferedStatus,
};
use rustls::{Error, ServerConfig};

/// A TLS record's ciphertext overhead, rounded up (TLS 1.3: header 5 + type 1 + tag 16;
/// TLS 1.2 GCM: header 5 + nonce 8 + tag 16).
const RECORD_OVERHEAD: usize = 32;

/// Most plaintext bytes in one TLS record.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// Who runs the record layer now.
enum Layer {
    /// rustls: the handshake, and TLS 1.2 connections for their whole life.
    Rustls(Box<UnbufferedServerConnection>),
    /// A TLS 1.3 connection after its handshake.
    Records(Records),
    /// After an error while switching from one to the other.
    Failed,
}

/// The server side of one TLS connection.
pub struct TlsSession {
    layer: Layer,
    /// Received ciphertext not yet processed: at most one partial record.
    incoming: Vec<u8>,
    /// Ciphertext to send; `outgoing[sent..]` is still unsent.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent `close_notify`: it will send nothing more.
    peer_closed: bool,
    /// The settings allow handing a TLS 1.3 connection over to [`Records`].
    may_hand_over: bool,
    /// Our `close_notify` is queued.
    sent_close: bool,
}

impl TlsSession {
    /// A fresh server-side connection using `config` (the certificate of the moment).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, Error> {
        Ok(TlsSession {
            may_hand_over: config.enable_secret_extraction,
            sent_close: false,
            layer: Layer::Rustls(Box::new(UnbufferedServerConnection::new(config)?)),
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            peer_closed: false,
        })
    }

    /// Takes ciphertext received from the peer: appends what it decrypts to `plain` and
    /// queues what the handshake answers (see [`pending`](Self::pending)). An error is fatal
    /// for the connection (a client that does not speak TLS, a bad record).
    pub fn receive(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<(), Error> {
        self.incoming.extend_from_slice(data);
        let result = self.process(plain);
        if self.incoming.is_empty() {
            // Idle connections hold no buffer.
            self.incoming = Vec::new();
        } else {
            // A partial record keeps its bytes, not the capacity of the read it came in.
            self.incoming.shrink_to_fit();
        }
        result
    }

    fn process(&mut self, plain: &mut Vec<u8>) -> Result<(), Error> {
        let TlsSession {
            layer,
            incoming,
            outgoing,
            peer_closed,
            ..
        } = self;
        let conn = match layer {
            Layer::Rustls(conn) => conn,
            Layer::Records(records) => {
                *peer_closed |= records.open(incoming, plain)?.peer_closed;
                return Ok(());
            }
            Layer::Failed => return Err(closed()),
        };
        loop {
            let UnbufferedStatus { mut discard, state } = conn.process_tls_records(incoming);
            let again = match state? {
                ConnectionState::ReadTraffic(mut read) => {
                    while let Some(record) = read.next_record() {
                        let record = record?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_handshake(&mut encode, outgoing)?;
                    true
                }
                // Queued in order in `outgoing`; sent before anything written later.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    true
                }
                // Early data is never accepted (`max_early_data_size` stays 0); closed,
                // blocked or ready to write: nothing more to read now.
                _ => false,
            };
            incoming.drain(..discard);
            if !again {
                break;
            }
        }
        self.hand_over_to_records()
    }

    /// A TLS 1.3 connection whose handshake is done and whose rustls output is all out
    /// (`WriteTraffic` was reached) continues on [`Records`], and rustls's state is freed.
    fn hand_over_to_records(&mut self) -> Result<(), Error> {
        let ready = match &self.layer {
            Layer::Rustls(conn) => {
                self.may_hand_over
                    && !conn.is_handshaking()
                    && conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
                    && !self.peer_closed
            }
            _ => false,
        };
        if !ready {
            return Ok(());
        }
        let Layer::Rustls(conn) = std::mem::replace(&mut self.layer, Layer::Failed) else {
            return Ok(());
        };
        // The kernel-connection half (rekeying on KeyUpdate) is dropped: see `records`.
        let (secrets, _kernel) = conn.dangerous_into_kernel_connection()?;
        self.layer = Layer::Records(Records::new(secrets)?);
        Ok(())
    }

    /// Encrypts the plaintext of `slices` (at most `max` bytes of it) into the outgoing
    /// buffer and returns how many plaintext bytes it took. Fails before the handshake has
    /// finished and after the connection closed.
    pub fn encrypt(&mut self, slices: &[&[u8]], max: usize) -> Result<usize, Error> {
        let TlsSession {
            layer,
            incoming,
            outgoing,
            peer_closed,
            ..
        } = self;
        let conn = match layer {
            Layer::Rustls(conn) => conn,
            Layer::Records(records) => return records.seal(slices, max, outgoing),
            Layer::Failed => return Err(closed()),
        };
        loop {
            let UnbufferedStatus { discard, state } = conn.process_tls_records(incoming);
            let taken = match state? {
                ConnectionState::WriteTraffic(mut write) => {
                    let mut taken = 0;
                    for slice in slices {
                        let chunk = &slice[..slice.len().min(max - taken)];
                        if chunk.is_empty() {
                            continue;
                        }
                        let guess = chunk.len()
                            + (chunk.len() / MAX_RECORD_PLAINTEXT + 1) * RECORD_OVERHEAD;
                        append(outgoing, guess, |buf| match write.encrypt(chunk, buf) {
                            Ok(n) => Ok(Ok(n)),
                            Err(EncryptError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => Ok(Err(required_size)),
                            Err(e) => Err(Error::General(e.to_string())),
                        })?;
                        taken += chunk.len();
                        if taken == max {
                            break;
                        }
                    }
                    Some(taken)
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    encode_handshake(&mut encode, outgoing)?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    *peer_closed = true;
                    None
                }
                ConnectionState::BlockedHandshake => return Err(Error::HandshakeNotComplete),
                // `receive` takes every decrypted record, so none can be waiting here.
                _ => return Err(closed()),
            };
            incoming.drain(..discard);
            if let Some(taken) = taken {
                return Ok(taken);
            }
        }
    }

    /// Queues a `close_notify` alert, once (best effort: nothing happens before the handshake
    /// finished).
    pub fn close_notify(&mut self) {
        if std::mem::replace(&mut self.sent_close, true) {
            return;
        }
        let TlsSession {
            layer,
            incoming,
            outgoing,
            ..
        } = self;
        let conn = match layer {
            Layer::Rustls(conn) => conn,
            Layer::Records(records) => {
                let _ = records.close_notify(outgoing);
                return;
            }
            Layer::Failed => return,
        };
        let UnbufferedStatus { state, .. } = conn.process_tls_records(incoming);
        if let Ok(ConnectionState::WriteTraffic(mut write)) = state {
            let _ = append(outgoing, 64, |buf| match write.queue_close_notify(buf) {
                Ok(n) => Ok(Ok(n)),
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    Ok(Err(required_size))
                }
                Err(e) => Err(Error::General(e.to_string())),
            });
        }
    }

    /// Seals all of `plain` and returns its ciphertext (with any ciphertext still unsent
    /// before it): what a watcher-plane record queues instead of the shared plaintext frame.
    pub fn seal(&mut self, plain: &[u8]) -> Result<Vec<u8>, Error> {
        let mut taken = 0;
        while taken < plain.len() {
            let before = self.outgoing.len();
            match self.encrypt(&[&plain[taken..]], plain.len() - taken) {
                Ok(0) => return Err(Error::General("nothing sealed".into())),
                Ok(n) => taken += n,
                Err(e) => {
                    // Nothing of a failed seal reaches the wire.
                    self.outgoing.truncate(before);
                    return Err(e);
                }
            }
        }
        Ok(self.take_pending())
    }

    /// Queues our `close_notify` (once) and returns the ciphertext to send, if any.
    pub fn seal_close_notify(&mut self) -> Vec<u8> {
        self.close_notify();
        self.take_pending()
    }

    /// After a failed read: the fatal alert that must end the connection (RFC 8446 §6.2),
    /// sealed, once; empty when there is none to send (rustls queues its own alerts, which
    /// this returns as well).
    pub fn take_fatal_alert(&mut self) -> Vec<u8> {
        if let Layer::Records(records) = &mut self.layer {
            records.fatal_alert(&mut self.outgoing);
        }
        self.sent_close = true;
        self.take_pending()
    }

    /// Takes the ciphertext waiting to be sent (the caller sends it).
    pub fn take_pending(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.outgoing);
        out.drain(..self.sent.min(out.len()));
        self.sent = 0;
        out
    }

    /// Ciphertext waiting to be sent.
    pub fn pending(&self) -> &[u8] {
        &self.outgoing[self.sent..]
    }

    /// `n` bytes of [`pending`](Self::pending) went out; the buffer is freed once empty.
    pub fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent >= self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        match &self.layer {
            Layer::Rustls(conn) => conn.is_handshaking(),
            Layer::Records(_) | Layer::Failed => false,
        }
    }

    /// Whether the connection runs on the small [`Records`] layer now (a TLS 1.3 connection
    /// past its handshake).
    pub fn on_records(&self) -> bool {
        matches!(self.layer, Layer::Records(_))
    }

    /// Whether the peer sent `close_notify`.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Bytes of buffer this connection holds now (both directions).
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity()
    }
}

fn closed() -> Error {
    Error::General("connection closed".into())
}

/// Appends the handshake record rustls has to send to `outgoing`.
fn encode_handshake(
    encode: &mut EncodeTlsData<'_, ServerConnectionData>,
    outgoing: &mut Vec<u8>,
) -> Result<(), Error> {
    append(outgoing, 512, |buf| match encode.encode(buf) {
        Ok(n) => Ok(Ok(n)),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            Ok(Err(required_size))
        }
        Err(e) => Err(Error::General(e.to_string())),
    })
}

/// Appends what `write` produces to `out`, growing the room it gets from `guess` to the size
/// it asks for (`Ok(Err(required))`) and trying again.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<Result<usize, usize>, Error>,
) -> Result<(), Error> {
    let start = out.len();
    let mut room = guess;
    loop {
        out.resize(start + room, 0);
        let result = write(&mut out[start..]);
        match result {
            Ok(Ok(n)) => {
                out.truncate(start + n);
                return Ok(());
            }
            Ok(Err(required)) if required > room => room = required,
            Ok(Err(_)) => {
                out.truncate(start);
                return Err(Error::General("TLS output does not fit".into()));
            }
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, RootCertStore};
    use std::io::{Read, Write};

    thread_local! {
        static TLS12: std::cell::RefCell<Option<Arc<ClientConfig>>> = const { std::cell::RefCell::new(None) };
    }

    /// A TLS 1.2-only client trusting the CA of the last [`configs`] call.
    fn tls12_client() -> Arc<ClientConfig> {
        TLS12.with(|c| c.borrow().clone().expect("configs() first"))
    }

    /// A CA, and a server certificate for `localhost` signed by it.
    fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        server.enable_secret_extraction = true;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let tls12 = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        TLS12.with(|c| *c.borrow_mut() = Some(Arc::new(tls12)));
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Moves bytes both ways until neither side has anything to say; returns the server's
    /// plaintext.
    fn pump(server: &mut TlsSession, client: &mut ClientConnection) -> Vec<u8> {
        let mut plain = Vec::new();
        for _ in 0..20 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
            // In small pieces: records split across reads must join up.
            for piece in wire.chunks(7) {
                server.receive(piece, &mut plain).unwrap();
            }
            let out = server.pending().to_vec();
            server.consume(out.len());
            if wire.is_empty() && out.is_empty() {
                break;
            }
            let mut cursor = &out[..];
            while !cursor.is_empty() {
                client.read_tls(&mut cursor).unwrap();
                client.process_new_packets().unwrap();
            }
        }
        plain
    }

    #[test]
    fn handshake_then_data_both_ways_and_an_idle_session_holds_no_buffer() {
        let (server_config, client_config) = configs();
        let mut server = TlsSession::new(server_config).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        assert!(server.encrypt(&[b"too early"], 100).is_err());
        client
            .writer()
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .unwrap();
        let plain = pump(&mut server, &mut client);
        assert!(!server.is_handshaking());
        assert!(!client.is_handshaking());
        assert!(
            server.on_records(),
            "TLS 1.3 continues on the small record layer"
        );
        assert_eq!(plain, b"GET / HTTP/1.1\r\n\r\n");
        // More from the client, after the switch, in pieces.
        client.writer().write_all(b"second request").unwrap();
        assert_eq!(pump(&mut server, &mut client), b"second request");

        let big = vec![b'x'; 40_000];
        let taken = server
            .encrypt(&[b"hello ", b"world", &big], 30_000)
            .unwrap();
        assert_eq!(taken, 30_000, "at most `max` plaintext bytes");
        let cursor = server.pending().to_vec();
        server.consume(cursor.len());
        let mut wire = &cursor[..];
        let mut got = Vec::new();
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
            let _ = client.reader().read_to_end(&mut got);
        }
        assert_eq!(got.len(), 30_000);
        assert_eq!(&got[..11], b"hello world");
        assert!(got[11..].iter().all(|&b| b == b'x'));
        assert_eq!(server.buffered_capacity(), 0, "idle: no buffer held");
        eprintln!(
            "TlsSession: {} bytes inline",
            std::mem::size_of::<TlsSession>()
        );
    }

    #[test]
    fn tls12_and_settings_without_secret_extraction_stay_on_rustls() {
        let (server_config, client_config) = configs();
        let tls12 = tls12_client();
        let mut no_extraction = (*server_config).clone();
        no_extraction.enable_secret_extraction = false;
        for (server_config, client_config) in [
            (server_config.clone(), tls12),
            (Arc::new(no_extraction), client_config.clone()),
        ] {
            let mut server = TlsSession::new(server_config).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut client = ClientConnection::new(client_config, name).unwrap();
            client.writer().write_all(b"ping").unwrap();
            assert_eq!(pump(&mut server, &mut client), b"ping");
            assert!(!server.is_handshaking() && !server.on_records());
            server.encrypt(&[b"pong"], 100).unwrap();
            let out = server.pending().to_vec();
            server.consume(out.len());
            let mut wire = &out[..];
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
            let mut got = Vec::new();
            let _ = client.reader().read_to_end(&mut got);
            assert_eq!(got, b"pong");
        }
    }

    #[test]
    fn a_client_that_does_not_speak_tls_is_an_error() {
        let (server_config, _) = configs();
        let mut server = TlsSession::new(server_config).unwrap();
        let mut plain = Vec::new();
        assert!(server
            .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain)
            .is_err());
        assert!(plain.is_empty());
    }

    #[test]
    fn close_notify_from_the_client_is_seen_and_answered() {
        let (server_config, client_config) = configs();
        let mut server = TlsSession::new(server_config).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        pump(&mut server, &mut client);
        client.send_close_notify();
        pump(&mut server, &mut client);
        assert!(server.peer_closed());
        server.close_notify();
        assert!(!server.pending().is_empty(), "our close_notify is queued");
    }
}
