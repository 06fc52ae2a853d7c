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

use super::ktls::TxInfo;
use super::records::Records;
use super::secret_capture::{self, Captured};

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
    Rustls(Box<Handshake>),
    /// A TLS 1.3 connection after its handshake.
    Records(Records),
    /// After an error while switching from one to the other.
    Failed,
}

/// rustls's connection, the traffic secrets its handshake logged (for [`Records`]), and
/// what the session knows besides while rustls runs it.
struct Handshake {
    conn: UnbufferedServerConnection,
    secrets: Option<Captured>,
    /// The settings allow handing a TLS 1.3 connection over to [`Records`].
    may_hand_over: bool,
    /// The peer sent `close_notify`: it will send nothing more.
    peer_closed: bool,
    /// Our `close_notify` is queued.
    sent_close: bool,
}

/// The session's two byte buffers, boxed together: an idle session (both empty) holds one
/// null pointer instead of two 24-byte empty `Vec`s and a count.
#[derive(Default)]
struct Buffers(Option<Box<Bufs>>);

#[derive(Default)]
struct Bufs {
    /// Received ciphertext not yet processed: at most one partial record.
    incoming: Vec<u8>,
    /// Ciphertext to send; `outgoing[sent..]` is still unsent.
    outgoing: Vec<u8>,
    sent: usize,
}

impl Buffers {
    /// Both buffers, made on first use.
    fn get(&mut self) -> &mut Bufs {
        self.0.get_or_insert_with(Default::default)
    }

    fn outgoing(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], |b| &b.outgoing[b.sent..])
    }

    fn capacity(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |b| b.incoming.capacity() + b.outgoing.capacity())
    }

    /// Frees both when they are empty, and trims a partial record to its bytes otherwise
    /// (not the capacity of the read it came in).
    fn tidy(&mut self) {
        if let Some(b) = &mut self.0 {
            if b.incoming.is_empty() && b.outgoing.is_empty() {
                self.0 = None;
            } else {
                b.incoming.shrink_to_fit();
            }
        }
    }

    /// Takes the unsent ciphertext.
    fn take_outgoing(&mut self) -> Vec<u8> {
        let Some(b) = &mut self.0 else {
            return Vec::new();
        };
        let mut out = std::mem::take(&mut b.outgoing);
        out.drain(..b.sent.min(out.len()));
        b.sent = 0;
        self.tidy();
        out
    }
}

/// The server side of one TLS connection.
pub struct TlsSession {
    layer: Layer,
    buffers: Buffers,
}

impl TlsSession {
    /// A fresh server-side connection using `config` (the certificate of the moment).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, Error> {
        Ok(TlsSession {
            layer: Layer::Rustls(Box::new(Handshake {
                may_hand_over: config.enable_secret_extraction,
                conn: UnbufferedServerConnection::new(config)?,
                secrets: None,
                peer_closed: false,
                sent_close: false,
            })),
            buffers: Buffers::default(),
        })
    }

    /// Takes ciphertext received from the peer: appends what it decrypts to `plain` and
    /// queues what the handshake answers (see [`pending`](Self::pending)). An error is fatal
    /// for the connection (a client that does not speak TLS, a bad record).
    pub fn receive(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Result<(), Error> {
        self.buffers.get().incoming.extend_from_slice(data);
        let result = self.process(plain);
        // Idle connections hold no buffer.
        self.buffers.tidy();
        result
    }

    fn process(&mut self, plain: &mut Vec<u8>) -> Result<(), Error> {
        let TlsSession { layer, buffers } = self;
        let Bufs {
            incoming, outgoing, ..
        } = buffers.get();
        let handshake = match layer {
            Layer::Rustls(handshake) => handshake,
            Layer::Records(records) => {
                records.open(incoming, plain, outgoing)?;
                return Ok(());
            }
            Layer::Failed => return Err(closed()),
        };
        loop {
            secret_capture::clear();
            let UnbufferedStatus { mut discard, state } =
                handshake.conn.process_tls_records(incoming);
            if let Some(secrets) = secret_capture::take() {
                handshake.secrets = Some(secrets);
            }
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
                    handshake.peer_closed = true;
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
            Layer::Rustls(handshake) => {
                handshake.may_hand_over
                    && !handshake.conn.is_handshaking()
                    && handshake.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3)
                    && !handshake.peer_closed
                    && !handshake.sent_close
            }
            _ => false,
        };
        if !ready {
            return Ok(());
        }
        let Layer::Rustls(handshake) = std::mem::replace(&mut self.layer, Layer::Failed) else {
            return Ok(());
        };
        let Handshake { conn, secrets, .. } = *handshake;
        let captured = secrets.ok_or_else(|| {
            Error::General("the handshake's traffic secrets were not logged".into())
        })?;
        // The kernel-connection half (~0.5 KB of key schedule) is dropped: `Records` keeps
        // the two traffic secrets it needs for KeyUpdates itself.
        let (extracted, _kernel) = conn.dangerous_into_kernel_connection()?;
        self.layer = Layer::Records(Records::from_handshake(extracted, captured)?);
        Ok(())
    }

    /// Encrypts the plaintext of `slices` (at most `max` bytes of it) into the outgoing
    /// buffer and returns how many plaintext bytes it took. Fails before the handshake has
    /// finished and after the connection closed.
    pub fn encrypt(&mut self, slices: &[&[u8]], max: usize) -> Result<usize, Error> {
        let result = self.encrypt_into_outgoing(slices, max);
        self.buffers.tidy();
        result
    }

    fn encrypt_into_outgoing(&mut self, slices: &[&[u8]], max: usize) -> Result<usize, Error> {
        let TlsSession { layer, buffers } = self;
        let Bufs {
            incoming, outgoing, ..
        } = buffers.get();
        let handshake = match layer {
            Layer::Rustls(handshake) => handshake,
            Layer::Records(records) => return records.seal(slices, max, outgoing),
            Layer::Failed => return Err(closed()),
        };
        loop {
            let UnbufferedStatus { discard, state } = handshake.conn.process_tls_records(incoming);
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
                    handshake.peer_closed = true;
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
        self.queue_close_notify();
        self.buffers.tidy();
    }

    fn queue_close_notify(&mut self) {
        let TlsSession { layer, buffers } = self;
        let conn = match layer {
            Layer::Rustls(handshake) if !handshake.sent_close => {
                handshake.sent_close = true;
                &mut handshake.conn
            }
            // Once only (`Records` keeps that itself).
            Layer::Records(records) => {
                let _ = records.close_notify(&mut buffers.get().outgoing);
                return;
            }
            Layer::Rustls(_) | Layer::Failed => return,
        };
        let Bufs {
            incoming, outgoing, ..
        } = buffers.get();
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
        if let (Layer::Records(records), true) = (&mut self.layer, self.buffers.0.is_none()) {
            // The broadcast path: straight into a buffer of the exact size, no session buffer
            // made and freed around it. On error it is dropped: nothing reaches the wire.
            let mut out = Vec::with_capacity(Records::sealed_len(plain.len()));
            records.seal(&[plain], plain.len(), &mut out)?;
            return Ok(out);
        }
        let mut taken = 0;
        while taken < plain.len() {
            let before = self.buffers.get().outgoing.len();
            match self.encrypt(&[&plain[taken..]], plain.len() - taken) {
                Ok(0) => return Err(Error::General("nothing sealed".into())),
                Ok(n) => taken += n,
                Err(e) => {
                    // Nothing of a failed seal reaches the wire.
                    self.buffers.get().outgoing.truncate(before);
                    self.buffers.tidy();
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
        match &mut self.layer {
            Layer::Records(records) => records.fatal_alert(&mut self.buffers.get().outgoing),
            Layer::Rustls(handshake) => handshake.sent_close = true,
            Layer::Failed => {}
        }
        self.take_pending()
    }

    /// Takes the ciphertext waiting to be sent (the caller sends it).
    pub fn take_pending(&mut self) -> Vec<u8> {
        self.buffers.take_outgoing()
    }

    /// Ciphertext waiting to be sent.
    pub fn pending(&self) -> &[u8] {
        self.buffers.outgoing()
    }

    /// `n` bytes of [`pending`](Self::pending) went out; the buffer is freed once empty.
    pub fn consume(&mut self, n: usize) {
        if let Some(b) = &mut self.buffers.0 {
            b.sent += n;
            if b.sent >= b.outgoing.len() {
                b.outgoing = Vec::new();
                b.sent = 0;
            }
        }
        self.buffers.tidy();
    }

    /// Whether the handshake is still under way.
    pub fn is_handshaking(&self) -> bool {
        match &self.layer {
            Layer::Rustls(handshake) => handshake.conn.is_handshaking(),
            Layer::Records(_) | Layer::Failed => false,
        }
    }

    /// Whether the connection runs on the small [`Records`] layer now (a TLS 1.3 connection
    /// past its handshake).
    pub fn on_records(&self) -> bool {
        matches!(self.layer, Layer::Records(_))
    }

    /// The sending state to hand to the kernel's TLS, when this connection can go over to it:
    /// a TLS 1.3 connection past its handshake, with no ciphertext of ours still unsent (it
    /// would otherwise be sealed a second time).
    pub fn kernel_tx(&self) -> Option<TxInfo> {
        match &self.layer {
            Layer::Records(records) if self.buffers.outgoing().is_empty() => records.kernel_tx(),
            _ => None,
        }
    }

    /// The kernel now seals what this connection sends (see [`Records::hand_tx_to_kernel`]).
    pub fn hand_tx_to_kernel(&mut self) {
        if let Layer::Records(records) = &mut self.layer {
            records.hand_tx_to_kernel();
        }
    }

    /// Whether the kernel seals what this connection sends.
    pub fn tx_in_kernel(&self) -> bool {
        matches!(&self.layer, Layer::Records(r) if r.tx_in_kernel())
    }

    /// Whether the peer asked for our `KeyUpdate`, which a kTLS connection does not send: it
    /// ends instead.
    pub fn update_owed(&self) -> bool {
        matches!(&self.layer, Layer::Records(r) if r.update_owed())
    }

    /// The alert body a kTLS connection ends with (its fatal error's, `close_notify`, or none
    /// after the peer's own fatal alert).
    pub fn kernel_alert(&self) -> Option<[u8; 2]> {
        match &self.layer {
            Layer::Records(records) => records.kernel_alert(),
            _ => None,
        }
    }

    /// Whether the peer sent `close_notify`.
    pub fn peer_closed(&self) -> bool {
        match &self.layer {
            Layer::Rustls(handshake) => handshake.peer_closed,
            Layer::Records(records) => records.peer_closed(),
            Layer::Failed => false,
        }
    }

    /// Bytes of buffer this connection holds now (both directions).
    pub fn buffered_capacity(&self) -> usize {
        self.buffers.capacity()
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
#[path = "session_tests.rs"]
pub(crate) mod tests;
