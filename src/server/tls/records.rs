//! The TLS 1.3 record layer after the handshake, from what rustls hands over (the keys,
//! IVs and sequence numbers of `dangerous_extract_secrets`, the step a kTLS set-up takes)
//! and the traffic secrets they were made from ([`super::secret_capture`]): an idle TLS 1.3
//! connection keeps two traffic secrets, the sending key and IV, and two sequence numbers
//! (~170 bytes) instead of rustls's whole connection state (~3.5 KB with its expanded keys
//! and key schedule).
//!
//! Each call that seals or opens records builds the AEAD key for that call only (an AES key
//! expansion and a GHASH table, or nothing for ChaCha20), so nothing large is held between
//! calls; the receiving key and IV are derived per call too (HKDF), since a watcher sends
//! little. RFC 8446 §5.2: a record is `23, 0x0303, length` then AEAD(content ‖ content type
//! ‖ zero padding) with the 5-byte header as additional data and `iv XOR seq` as nonce.
//!
//! A client's `KeyUpdate` (§4.6.3) moves to its next key, and one that asks for ours gets
//! our `KeyUpdate` before anything sealed after it. Our own key is updated before it would
//! seal more than [`MAX_RECORDS`] records (§5.5); the peer's records past that limit under
//! one key close the connection.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, Error, ExtractedSecrets};

use super::key_schedule::{wipe, Suite, TrafficSecret, MAX_KEY};
use super::ktls::TxInfo;
use super::secret_capture::Captured;

/// Most plaintext bytes in one record.
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Record header length.
const HEADER: usize = 5;
/// AEAD tag length (all three suites).
const TAG: usize = 16;
/// Records per direction before the connection is closed instead of rekeyed (AES-GCM's
/// safety margin per key, RFC 8446 §5.5).
pub const MAX_RECORDS: u32 = 1 << 24;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
/// The handshake message type of `KeyUpdate` (§4.6.3).
const KEY_UPDATE: u8 = 24;
/// `KeyUpdateRequest` values.
const UPDATE_NOT_REQUESTED: u8 = 0;
const UPDATE_REQUESTED: u8 = 1;
/// Most empty application-data records in a row before the peer is refused (an empty record
/// costs us an AEAD open and gives nothing: RFC 8446 §5.4 lets us bound them).
const MAX_EMPTY_RECORDS: u8 = 32;

/// The fatal alerts this layer sends (RFC 8446 §6.2), by description code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// A record that does not authenticate (20).
    BadRecordMac = 20,
    /// A record or message of a type not allowed now (10).
    UnexpectedMessage = 10,
    /// A record longer than the protocol allows (22).
    RecordOverflow = 22,
    /// A message that does not decode (50).
    DecodeError = 50,
    /// A field out of its range, such as a `KeyUpdate` request that is neither 0 nor 1 (47).
    IllegalParameter = 47,
    /// Anything else that must end the connection (80).
    InternalError = 80,
}

/// What sends: the traffic secret, and the key and IV made from it, kept so that a
/// broadcast seals without deriving anything.
struct Sender {
    secret: TrafficSecret,
    key: [u8; MAX_KEY],
    iv: [u8; aead::NONCE_LEN],
    seq: u32,
}

impl Sender {
    fn new(suite: Suite, seq: u32, secret: TrafficSecret) -> Sender {
        let (key, iv) = secret.key_and_iv(suite);
        Sender {
            secret,
            key,
            iv,
            seq,
        }
    }

    fn aead(&self, suite: Suite) -> LessSafeKey {
        let alg = suite.aead();
        let key = UnboundKey::new(alg, &self.key[..alg.key_len()]).expect("key length checked");
        LessSafeKey::new(key)
    }

    /// Moves to the next traffic secret (after our `KeyUpdate` went out).
    fn update(&mut self, suite: Suite) {
        let next = self.secret.next(suite);
        *self = Sender::new(suite, 0, next);
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.iv);
    }
}

/// What receives: the traffic secret only. A watcher sends little (pongs, a command), so
/// each call that opens records makes the key and IV for that call.
struct Receiver {
    secret: TrafficSecret,
    seq: u32,
}

impl Receiver {
    fn keys(&self, suite: Suite) -> (LessSafeKey, [u8; aead::NONCE_LEN]) {
        let (mut key, iv) = self.secret.key_and_iv(suite);
        let alg = suite.aead();
        let unbound = UnboundKey::new(alg, &key[..alg.key_len()]).expect("key length checked");
        wipe(&mut key);
        (LessSafeKey::new(unbound), iv)
    }
}

/// The nonce of record `seq` under `iv` (§5.3); the count moved on. Fails once `seq` has
/// reached [`MAX_RECORDS`].
fn next_nonce(iv: &[u8; aead::NONCE_LEN], seq: &mut u32) -> Result<Nonce, Error> {
    if *seq >= MAX_RECORDS {
        return Err(Error::General("record limit of one key reached".into()));
    }
    let mut nonce = *iv;
    for (n, s) in nonce[4..].iter_mut().zip(u64::from(*seq).to_be_bytes()) {
        *n ^= s;
    }
    *seq += 1;
    Ok(Nonce::assume_unique_for_key(nonce))
}

/// The suite, key and IV of one direction of what rustls hands over.
fn suite_of(secrets: &ConnectionTrafficSecrets) -> Result<(Suite, &[u8], &[u8]), Error> {
    let (suite, key, iv) = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            (Suite::Chacha20Poly1305, key, iv)
        }
        _ => return Err(Error::General("unsupported cipher suite".into())),
    };
    Ok((suite, key.as_ref(), iv.as_ref()))
}

/// The record layer of one TLS 1.3 connection after its handshake.
pub struct Records {
    suite: Suite,
    tx: Sender,
    rx: Receiver,
    /// The first fatal error: nothing is opened or sealed after it but its alert.
    failed: Option<Fatal>,
    /// [`PEER_CLOSED`], [`SENT_CLOSE`].
    flags: u8,
    /// Records in a row that carried no application data (empty ones, `KeyUpdate`s).
    empty_in_a_row: u8,
}

/// The peer sent `close_notify`: whatever follows is ignored (§6.1).
const PEER_CLOSED: u8 = 1;
/// Our `close_notify` (or a fatal alert) is sealed: nothing more is (§6.1).
const SENT_CLOSE: u8 = 2;
/// The kernel seals what this connection sends (kTLS): nothing is sealed here any more.
const TX_IN_KERNEL: u8 = 4;
/// The peer asked for our `KeyUpdate` while the kernel seals for us: the connection should
/// end (see [`super::ktls`]).
const UPDATE_OWED: u8 = 8;

/// What [`Records::open`] found besides application data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The peer sent `close_notify`.
    pub peer_closed: bool,
}

impl Records {
    /// A record layer sending under `tx` and receiving under `rx` (each a traffic secret
    /// and the sequence number of its next record).
    pub fn new(suite: Suite, tx: (u32, TrafficSecret), rx: (u32, TrafficSecret)) -> Records {
        Records {
            suite,
            tx: Sender::new(suite, tx.0, tx.1),
            rx: Receiver {
                secret: rx.1,
                seq: rx.0,
            },
            failed: None,
            flags: 0,
            empty_in_a_row: 0,
        }
    }

    /// Whether the peer sent `close_notify`.
    pub fn peer_closed(&self) -> bool {
        self.flags & PEER_CLOSED != 0
    }

    /// The server's record layer continuing where rustls's handshake left off: `secrets`
    /// (keys, IVs, sequence numbers) as rustls hands them over, `captured` the traffic
    /// secrets they were made from. Fails unless the two agree.
    pub fn from_handshake(secrets: ExtractedSecrets, captured: Captured) -> Result<Records, Error> {
        let (suite, tx_key, tx_iv) = suite_of(&secrets.tx.1)?;
        let (rx_suite, rx_key, rx_iv) = suite_of(&secrets.rx.1)?;
        if suite != rx_suite {
            return Err(Error::General("different suites per direction".into()));
        }
        let secret = |bytes: &[u8]| {
            TrafficSecret::new(suite, bytes)
                .ok_or_else(|| Error::General("a traffic secret of the wrong length".into()))
        };
        let (tx, rx) = (secret(&captured.server)?, secret(&captured.client)?);
        let agrees = |s: &TrafficSecret, key: &[u8], iv: &[u8]| {
            let (k, i) = s.key_and_iv(suite);
            k[..suite.aead().key_len()] == *key && i[..] == *iv
        };
        if !agrees(&tx, tx_key, tx_iv) || !agrees(&rx, rx_key, rx_iv) {
            return Err(Error::General(
                "captured traffic secrets do not match the handshake's keys".into(),
            ));
        }
        let seq = |n: u64| {
            u32::try_from(n)
                .ok()
                .filter(|&n| n < MAX_RECORDS)
                .ok_or_else(|| Error::General(format!("record sequence {n} at the hand-over")))
        };
        Ok(Records::new(
            suite,
            (seq(secrets.tx.0)?, tx),
            (seq(secrets.rx.0)?, rx),
        ))
    }

    /// The sending state for the kernel's TLS (`TLS_TX`): the key and IV in use and the
    /// sequence number of the next record; `None` once this layer may not seal any more.
    pub fn kernel_tx(&self) -> Option<TxInfo> {
        self.may_seal().ok()?;
        let len = self.suite.aead().key_len();
        Some(TxInfo::new(
            self.suite,
            &self.tx.key[..len],
            &self.tx.iv,
            u64::from(self.tx.seq),
        ))
    }

    /// The kernel seals for this connection from now on (after [`kernel_tx`](Self::kernel_tx)
    /// was handed over): the sending key and IV are wiped, nothing is sealed here again, and a
    /// peer's request for our `KeyUpdate` is only noted ([`update_owed`](Self::update_owed)).
    pub fn hand_tx_to_kernel(&mut self) {
        self.flags |= TX_IN_KERNEL;
        wipe(&mut self.tx.key);
        wipe(&mut self.tx.iv);
    }

    /// Whether the kernel seals for this connection.
    pub fn tx_in_kernel(&self) -> bool {
        self.flags & TX_IN_KERNEL != 0
    }

    /// Whether the peer asked for our `KeyUpdate` while the kernel seals for us.
    pub fn update_owed(&self) -> bool {
        self.flags & UPDATE_OWED != 0
    }

    /// The body of the alert a kTLS connection ends with: its fatal error's (level 2), a
    /// `close_notify`, or none after the peer's own fatal alert (§6: it is not answered).
    pub fn kernel_alert(&self) -> Option<[u8; 2]> {
        match self.failed {
            Some(fatal) => Some([2, fatal as u8]),
            // In the kernel's hands only a peer's alert marks our side closed.
            None if self.flags & SENT_CLOSE != 0 => None,
            None => Some([1, 0]),
        }
    }

    /// The fatal error that ended this layer, if one did.
    pub fn failure(&self) -> Option<Fatal> {
        self.failed
    }

    /// Latches a fatal error and returns it as a rustls error for the caller.
    fn fail(&mut self, fatal: Fatal, message: String) -> Error {
        self.failed.get_or_insert(fatal);
        Error::General(message)
    }

    /// Seals the alert of the fatal error that ended this layer onto `out` (once; nothing
    /// when the layer has not failed or cannot seal any more).
    pub fn fatal_alert(&mut self, out: &mut Vec<u8>) {
        let Some(fatal) = self.failed else {
            return;
        };
        if self.flags & TX_IN_KERNEL != 0 {
            return; // the kernel sends it: see `kernel_alert`
        }
        let key = self.tx.aead(self.suite);
        let _ = self.seal_one(&key, &[2, fatal as u8], ALERT, out);
        // Never again, whatever the caller does.
        self.tx.seq = MAX_RECORDS;
        self.flags |= SENT_CLOSE;
    }

    /// The ciphertext bytes [`seal`](Self::seal) makes of `plain` bytes (one record per
    /// [`MAX_FRAGMENT`]; a `KeyUpdate` at a key's last record adds one more).
    pub fn sealed_len(plain: usize) -> usize {
        plain + plain.div_ceil(MAX_FRAGMENT) * (HEADER + 1 + TAG)
    }

    /// Seals `slices` (as many records as they need, at most [`MAX_FRAGMENT`] bytes each, and
    /// no more than `max` plaintext bytes in all) onto `out`; returns the plaintext bytes
    /// taken.
    pub fn seal(
        &mut self,
        slices: &[&[u8]],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, Error> {
        self.may_seal()?;
        let mut key = self.tx.aead(self.suite);
        let mut taken = 0;
        for slice in slices {
            let slice = &slice[..slice.len().min(max - taken)];
            for chunk in slice.chunks(MAX_FRAGMENT) {
                self.seal_data(&mut key, chunk, APPLICATION_DATA, out)?;
            }
            taken += slice.len();
            if taken == max {
                break;
            }
        }
        Ok(taken)
    }

    /// Seals a `close_notify` alert onto `out`, once: after it nothing more is sealed.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.may_seal()?;
        self.flags |= SENT_CLOSE;
        let mut key = self.tx.aead(self.suite);
        self.seal_data(&mut key, &[1, 0], ALERT, out)
    }

    fn may_seal(&self) -> Result<(), Error> {
        if self.flags & TX_IN_KERNEL != 0 {
            return Err(Error::General(
                "the kernel seals for this connection".into(),
            ));
        }
        if self.failed.is_some() {
            return Err(Error::General("the TLS connection failed".into()));
        }
        if self.flags & SENT_CLOSE != 0 {
            return Err(Error::General("our close_notify is sent".into()));
        }
        Ok(())
    }

    /// Seals one record of ours under `key`; when the key has one record left, that record
    /// is a `KeyUpdate` and this one goes under the next key (§5.5: rekey, not close).
    fn seal_data(
        &mut self,
        key: &mut LessSafeKey,
        content: &[u8],
        content_type: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        if self.tx.seq == MAX_RECORDS - 1 {
            self.update_tx(key, out)?;
        }
        self.seal_one(key, content, content_type, out)
    }

    /// Sends our `KeyUpdate` (under the key in use) and moves to the next key.
    fn update_tx(&mut self, key: &mut LessSafeKey, out: &mut Vec<u8>) -> Result<(), Error> {
        let message = [KEY_UPDATE, 0, 0, 1, UPDATE_NOT_REQUESTED];
        self.seal_one(key, &message, HANDSHAKE, out)?;
        self.tx.update(self.suite);
        *key = self.tx.aead(self.suite);
        Ok(())
    }

    fn seal_one(
        &mut self,
        key: &LessSafeKey,
        content: &[u8],
        content_type: u8,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        // The nonce first: a seal that cannot happen leaves `out` as it was, so no
        // plaintext ever reaches the wire.
        let nonce = next_nonce(&self.tx.iv, &mut self.tx.seq)?;
        let len = content.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        let at = out.len();
        out.reserve(HEADER + len);
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(content);
        out.push(content_type);
        match key.seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start..]) {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                out.truncate(at);
                Err(Error::EncryptError)
            }
        }
    }

    /// Opens every complete record at the front of `incoming` (in place), appends their
    /// application data to `plain` and removes them; a partial record stays. A `KeyUpdate`
    /// moves to the peer's next key, and one that asks for ours seals our `KeyUpdate` onto
    /// `out` (to go out before anything sealed later). Any other record that is not
    /// application data or a `close_notify` is a fatal error (its alert is then
    /// [`fatal_alert`](Self::fatal_alert)); records after the peer's `close_notify` are
    /// dropped unread.
    pub fn open(
        &mut self,
        incoming: &mut Vec<u8>,
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Opened, Error> {
        if self.failed.is_some() {
            return Err(Error::General("the TLS connection failed".into()));
        }
        let mut at = 0;
        let mut keys = None;
        while incoming.len() - at >= HEADER && !self.peer_closed() {
            let header: [u8; HEADER] = incoming[at..at + HEADER].try_into().expect("5 bytes");
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if header[0] != APPLICATION_DATA {
                let message = format!("unexpected record (type {}) after the handshake", header[0]);
                return Err(self.fail(Fatal::UnexpectedMessage, message));
            }
            if len > MAX_FRAGMENT + 256 {
                let message = format!("record of {len} bytes");
                return Err(self.fail(Fatal::RecordOverflow, message));
            }
            if len < 1 + TAG {
                let message = format!("record of {len} bytes");
                return Err(self.fail(Fatal::DecodeError, message));
            }
            if incoming.len() - at - HEADER < len {
                break;
            }
            let (key, iv) = keys.get_or_insert_with(|| self.rx.keys(self.suite));
            let nonce = next_nonce(iv, &mut self.rx.seq)?;
            let body = &mut incoming[at + HEADER..at + HEADER + len];
            let Ok(inner) = key.open_in_place(nonce, Aad::from(header), body) else {
                return Err(self.fail(Fatal::BadRecordMac, "a record failed to open".into()));
            };
            if inner.len() > MAX_FRAGMENT + 1 {
                let message = format!("inner plaintext of {} bytes", inner.len());
                return Err(self.fail(Fatal::RecordOverflow, message));
            }
            let Some(end) = inner.iter().rposition(|&b| b != 0) else {
                let message = "record without a content type".into();
                return Err(self.fail(Fatal::UnexpectedMessage, message));
            };
            let (content, content_type) = (&inner[..end], inner[end]);
            match content_type {
                APPLICATION_DATA if !content.is_empty() => {
                    self.empty_in_a_row = 0;
                    plain.extend_from_slice(content);
                }
                APPLICATION_DATA | HANDSHAKE => {
                    self.empty_in_a_row += 1;
                    if self.empty_in_a_row > MAX_EMPTY_RECORDS {
                        let message = "too many records without data in a row".into();
                        return Err(self.fail(Fatal::UnexpectedMessage, message));
                    }
                    if content_type == HANDSHAKE {
                        self.key_update(content, out)?;
                        // The records after it are under the peer's next key.
                        keys = None;
                    }
                }
                ALERT if content == [1, 0] => self.flags |= PEER_CLOSED,
                ALERT if content.len() == 2 => {
                    // The peer's own error ends the connection; no alert answers it (§6).
                    self.flags |= PEER_CLOSED | SENT_CLOSE;
                    self.tx.seq = MAX_RECORDS;
                    return Err(Error::General(format!("alert {content:?} from the peer")));
                }
                ALERT => {
                    let message = format!("an alert of {} bytes", content.len());
                    return Err(self.fail(Fatal::DecodeError, message));
                }
                other => {
                    let message = format!("unexpected content type {other}");
                    return Err(self.fail(Fatal::UnexpectedMessage, message));
                }
            }
            at += HEADER + len;
        }
        if self.peer_closed() {
            // §6.1: nothing after close_notify counts.
            incoming.clear();
        } else {
            incoming.drain(..at);
        }
        Ok(Opened {
            peer_closed: self.peer_closed(),
        })
    }

    /// A post-handshake handshake record's content: a `KeyUpdate` — alone in its record, as
    /// a key change must end one (§5.1) — moves to the peer's next key, and answers with ours
    /// when asked (§4.6.3). Anything else is refused.
    fn key_update(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let request = match content {
            [KEY_UPDATE, 0, 0, 1, request] => *request,
            [KEY_UPDATE, 0, 0, 1, _, ..] => {
                let message = "a KeyUpdate that does not end its record".into();
                return Err(self.fail(Fatal::UnexpectedMessage, message));
            }
            [KEY_UPDATE, ..] => {
                let message = format!("a KeyUpdate of {} bytes", content.len());
                return Err(self.fail(Fatal::DecodeError, message));
            }
            _ => {
                let kind = content.first().copied().unwrap_or_default();
                let message = format!("post-handshake message of type {kind}");
                return Err(self.fail(Fatal::UnexpectedMessage, message));
            }
        };
        if request != UPDATE_NOT_REQUESTED && request != UPDATE_REQUESTED {
            let message = format!("a KeyUpdate request of {request}");
            return Err(self.fail(Fatal::IllegalParameter, message));
        }
        self.rx = Receiver {
            secret: self.rx.secret.next(self.suite),
            seq: 0,
        };
        if request == UPDATE_REQUESTED && self.flags & TX_IN_KERNEL != 0 {
            self.flags |= UPDATE_OWED;
        } else if request == UPDATE_REQUESTED {
            let mut key = self.tx.aead(self.suite);
            self.update_tx(&mut key, out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;
