//! The TLS 1.3 record layer after the handshake, from the traffic secrets rustls hands over
//! (`dangerous_extract_secrets`, the step a kTLS set-up takes): what an idle TLS 1.3
//! connection keeps is two keys, two IVs and two sequence numbers (~130 bytes) instead of
//! rustls's whole connection state (~3.5 KB with its expanded keys and key schedule).
//!
//! Each call that seals or opens records builds the AEAD key for that call only (an AES key
//! expansion and a GHASH table, or nothing for ChaCha20), so nothing large is held between
//! calls. RFC 8446 §5.2: a record is `23, 0x0303, length` then AEAD(content ‖ content type ‖
//! zero padding) with the 5-byte header as additional data and `iv XOR seq` as nonce.
//!
//! Post-handshake handshake messages from the client (`KeyUpdate`) are not supported: the
//! traffic secret they would need is not kept, so such a connection is closed (browsers do not
//! send them; a client that does reconnects). Neither side may send more than
//! [`MAX_RECORDS`] records: past it the connection is closed rather than rekeyed.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::{ConnectionTrafficSecrets, Error, ExtractedSecrets};

/// Most plaintext bytes in one record.
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Record header length.
const HEADER: usize = 5;
/// AEAD tag length (all three suites).
const TAG: usize = 16;
/// Records per direction before the connection is closed instead of rekeyed (AES-GCM's
/// safety margin per key, RFC 8446 §5.5).
pub const MAX_RECORDS: u64 = 1 << 24;

const APPLICATION_DATA: u8 = 23;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
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
    /// Anything else that must end the connection (80).
    InternalError = 80,
}

/// The AEAD of the negotiated suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Suite {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One direction's key, IV and record sequence number.
struct Direction {
    key: [u8; 32],
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
}

impl Direction {
    fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<(Suite, Direction), Error> {
        let (suite, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Suite::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Suite::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Suite::Chacha20Poly1305, key, iv)
            }
            _ => return Err(Error::General("unsupported cipher suite".into())),
        };
        let mut d = Direction {
            key: [0; 32],
            iv: [0; aead::NONCE_LEN],
            seq,
        };
        let key = key.as_ref();
        if key.len() != suite.algorithm().key_len() || iv.as_ref().len() != aead::NONCE_LEN {
            return Err(Error::General("unexpected traffic secret sizes".into()));
        }
        d.key[..key.len()].copy_from_slice(key);
        d.iv.copy_from_slice(iv.as_ref());
        Ok((suite, d))
    }

    fn aead(&self, suite: Suite) -> LessSafeKey {
        let alg = suite.algorithm();
        let key = UnboundKey::new(alg, &self.key[..alg.key_len()]).expect("key length checked");
        LessSafeKey::new(key)
    }

    /// The nonce of the next record, and the count moved on.
    fn next_nonce(&mut self) -> Result<Nonce, Error> {
        if self.seq >= MAX_RECORDS {
            return Err(Error::General("record limit of one key reached".into()));
        }
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq += 1;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        for b in self.key.iter_mut().chain(self.iv.iter_mut()) {
            // SAFETY: a volatile write to a byte this value owns, so that the wipe is kept.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The record layer of one TLS 1.3 connection after its handshake.
pub struct Records {
    suite: Suite,
    tx: Direction,
    rx: Direction,
    /// The first fatal error: nothing is opened or sealed after it but its alert.
    failed: Option<Fatal>,
    /// The peer sent `close_notify`: whatever follows is ignored (§6.1).
    peer_closed: bool,
    /// Empty application-data records received in a row.
    empty_in_a_row: u8,
}

/// What [`Records::open`] found besides application data.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The peer sent `close_notify`.
    pub peer_closed: bool,
}

impl Records {
    /// The record layer continuing where rustls's handshake left off.
    pub fn new(secrets: ExtractedSecrets) -> Result<Records, Error> {
        let (suite, tx) = Direction::new(secrets.tx.0, &secrets.tx.1)?;
        let (rx_suite, rx) = Direction::new(secrets.rx.0, &secrets.rx.1)?;
        if suite != rx_suite {
            return Err(Error::General("different suites per direction".into()));
        }
        Ok(Records {
            suite,
            tx,
            rx,
            failed: None,
            peer_closed: false,
            empty_in_a_row: 0,
        })
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
        let key = self.tx.aead(self.suite);
        let _ = self.seal_one(&key, &[2, fatal as u8], ALERT, out);
        // Never again, whatever the caller does.
        self.tx.seq = MAX_RECORDS;
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
        if self.failed.is_some() {
            return Err(Error::General("the TLS connection failed".into()));
        }
        let key = self.tx.aead(self.suite);
        let mut taken = 0;
        for slice in slices {
            let slice = &slice[..slice.len().min(max - taken)];
            for chunk in slice.chunks(MAX_FRAGMENT) {
                self.seal_one(&key, chunk, APPLICATION_DATA, out)?;
            }
            taken += slice.len();
            if taken == max {
                break;
            }
        }
        Ok(taken)
    }

    /// Seals a `close_notify` alert onto `out`.
    pub fn close_notify(&mut self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self.failed.is_some() {
            return Err(Error::General("the TLS connection failed".into()));
        }
        let key = self.tx.aead(self.suite);
        self.seal_one(&key, &[1, 0], ALERT, out)
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
        let nonce = self.tx.next_nonce()?;
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
    /// application data to `plain` and removes them; a partial record stays. A record that
    /// is not application data or a `close_notify` is a fatal error (its alert is then
    /// [`fatal_alert`](Self::fatal_alert)); records after the peer's `close_notify` are
    /// dropped unread.
    pub fn open(&mut self, incoming: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<Opened, Error> {
        if self.failed.is_some() {
            return Err(Error::General("the TLS connection failed".into()));
        }
        let mut at = 0;
        let mut key = None;
        while incoming.len() - at >= HEADER && !self.peer_closed {
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
            let key = key.get_or_insert_with(|| self.rx.aead(self.suite));
            let nonce = self.rx.next_nonce()?;
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
                APPLICATION_DATA if content.is_empty() => {
                    self.empty_in_a_row += 1;
                    if self.empty_in_a_row > MAX_EMPTY_RECORDS {
                        let message = "too many empty records".into();
                        return Err(self.fail(Fatal::UnexpectedMessage, message));
                    }
                }
                APPLICATION_DATA => {
                    self.empty_in_a_row = 0;
                    plain.extend_from_slice(content);
                }
                ALERT if content == [1, 0] => self.peer_closed = true,
                ALERT if content.len() == 2 => {
                    // The peer's own error ends the connection; no alert answers it (§6).
                    self.peer_closed = true;
                    self.tx.seq = MAX_RECORDS;
                    return Err(Error::General(format!("alert {content:?} from the peer")));
                }
                ALERT => {
                    let message = format!("an alert of {} bytes", content.len());
                    return Err(self.fail(Fatal::DecodeError, message));
                }
                HANDSHAKE => {
                    let message = "post-handshake message (KeyUpdate) not supported".into();
                    return Err(self.fail(Fatal::UnexpectedMessage, message));
                }
                other => {
                    let message = format!("unexpected content type {other}");
                    return Err(self.fail(Fatal::UnexpectedMessage, message));
                }
            }
            at += HEADER + len;
        }
        if self.peer_closed {
            // §6.1: nothing after close_notify counts.
            incoming.clear();
        } else {
            incoming.drain(..at);
        }
        Ok(Opened {
            peer_closed: self.peer_closed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    fn secrets(
        suite: fn(AeadKey, Iv) -> ConnectionTrafficSecrets,
        a: u8,
        b: u8,
    ) -> ExtractedSecrets {
        ExtractedSecrets {
            tx: (0, suite(AeadKey::from([a; 32]), Iv::new([a; 12]))),
            rx: (0, suite(AeadKey::from([b; 32]), Iv::new([b; 12]))),
        }
    }

    /// Two ends of one connection: `a`'s tx is `b`'s rx.
    fn pair(suite: fn(AeadKey, Iv) -> ConnectionTrafficSecrets) -> (Records, Records) {
        (
            Records::new(secrets(suite, 1, 2)).unwrap(),
            Records::new(secrets(suite, 2, 1)).unwrap(),
        )
    }

    fn aes256(key: AeadKey, iv: Iv) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Aes256Gcm { key, iv }
    }

    fn chacha(key: AeadKey, iv: Iv) -> ConnectionTrafficSecrets {
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }
    }

    #[test]
    fn sealed_records_open_on_the_other_end_in_any_split() {
        for suite in [aes256 as fn(_, _) -> _, chacha] {
            let (mut a, mut b) = pair(suite);
            let big = vec![7u8; 40_000];
            let mut wire = Vec::new();
            assert_eq!(
                a.seal(&[b"hello ", &big], 1 << 20, &mut wire).unwrap(),
                40_006
            );
            a.close_notify(&mut wire).unwrap();
            // Fed in odd pieces: partial records wait for the rest.
            let (mut incoming, mut plain) = (Vec::new(), Vec::new());
            let mut closed = false;
            for piece in wire.chunks(1000) {
                incoming.extend_from_slice(piece);
                closed |= b.open(&mut incoming, &mut plain).unwrap().peer_closed;
            }
            assert!(closed && incoming.is_empty());
            assert_eq!(&plain[..6], b"hello ");
            assert_eq!(&plain[6..], &big[..]);
        }
    }

    #[test]
    fn a_changed_byte_a_handshake_message_or_a_plain_record_is_an_error() {
        let (mut a, mut b) = pair(aes256);
        let mut wire = Vec::new();
        a.seal(&[b"x"], 100, &mut wire).unwrap();
        let mut tampered = wire.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(b.open(&mut tampered, &mut Vec::new()).is_err());

        let (mut a, mut b) = pair(aes256);
        let mut wire = Vec::new();
        let key = a.tx.aead(a.suite);
        a.seal_one(&key, &[24, 0, 0, 1, 0], HANDSHAKE, &mut wire)
            .unwrap();
        let err = b.open(&mut wire, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("KeyUpdate"), "{err}");

        let (_, mut b) = pair(aes256);
        let mut plain_record = vec![22, 3, 3, 0, 2, 1, 2];
        assert!(b.open(&mut plain_record, &mut Vec::new()).is_err());
    }

    #[test]
    fn no_more_records_than_one_key_may_seal() {
        let (mut a, _) = pair(chacha);
        a.tx.seq = MAX_RECORDS - 1;
        let mut wire = Vec::new();
        a.seal(&[b"last"], 100, &mut wire).unwrap();
        let before = wire.clone();
        assert!(a.seal(&[b"one too many"], 100, &mut wire).is_err());
        assert_eq!(wire, before, "a failed seal leaves the wire as it was");
        assert!(a.close_notify(&mut wire).is_err());
        assert_eq!(wire, before, "no plaintext alert either");
    }

    /// Two ends of one AES-128-GCM connection (the suite Chrome prefers). Built directly:
    /// rustls makes 16-byte keys only inside its own handshake.
    fn aes128_pair() -> (Records, Records) {
        let end = |a: u8, b: u8| Records {
            suite: Suite::Aes128Gcm,
            tx: Direction {
                key: [a; 32],
                iv: [a; aead::NONCE_LEN],
                seq: 0,
            },
            rx: Direction {
                key: [b; 32],
                iv: [b; aead::NONCE_LEN],
                seq: 0,
            },
            failed: None,
            peer_closed: false,
            empty_in_a_row: 0,
        };
        (end(1, 2), end(2, 1))
    }

    /// A record `a` seals with `content` and `content_type` as its inner plaintext.
    fn raw_record(a: &mut Records, content: &[u8], content_type: u8) -> Vec<u8> {
        let mut wire = Vec::new();
        let key = a.tx.aead(a.suite);
        a.seal_one(&key, content, content_type, &mut wire).unwrap();
        wire
    }

    #[test]
    fn aes_128_gcm_round_trips() {
        let (mut a, mut b) = aes128_pair();
        let mut wire = Vec::new();
        a.seal(&[b"chrome"], 100, &mut wire).unwrap();
        let mut plain = Vec::new();
        b.open(&mut wire, &mut plain).unwrap();
        assert_eq!(plain, b"chrome");
    }

    #[test]
    fn each_refused_record_latches_its_fatal_alert() {
        type Case = (&'static str, fn(&mut Records) -> Vec<u8>, Fatal);
        let cases: [Case; 6] = [
            (
                "tampered",
                |a| {
                    let mut w = raw_record(a, b"x", APPLICATION_DATA);
                    w[6] ^= 1;
                    w
                },
                Fatal::BadRecordMac,
            ),
            (
                "change_cipher_spec after the handshake",
                |_| vec![20, 3, 3, 0, 1, 1],
                Fatal::UnexpectedMessage,
            ),
            (
                "all-zero inner plaintext",
                |a| raw_record(a, &[0, 0, 0], 0),
                Fatal::UnexpectedMessage,
            ),
            (
                "oversized inner plaintext",
                |a| raw_record(a, &vec![b'x'; MAX_FRAGMENT + 1], APPLICATION_DATA),
                Fatal::RecordOverflow,
            ),
            (
                "a 3-byte alert",
                |a| raw_record(a, &[1, 0, 0], ALERT),
                Fatal::DecodeError,
            ),
            (
                "a KeyUpdate",
                |a| raw_record(a, &[24, 0, 0, 1, 0], HANDSHAKE),
                Fatal::UnexpectedMessage,
            ),
        ];
        for (name, make, fatal) in cases {
            let (mut a, mut b) = aes128_pair();
            let mut wire = make(&mut a);
            assert!(b.open(&mut wire, &mut Vec::new()).is_err(), "{name}");
            assert_eq!(b.failure(), Some(fatal), "{name}");
            // The alert is sealed once, and then nothing more.
            let mut out = Vec::new();
            b.fatal_alert(&mut out);
            let mut plain = Vec::new();
            let err = a.open(&mut out, &mut plain).unwrap_err();
            assert!(
                err.to_string().contains(&format!("{}", fatal as u8)),
                "{name}: {err}"
            );
            assert!(b.seal(&[b"late"], 10, &mut Vec::new()).is_err(), "{name}");
        }
    }

    #[test]
    fn a_record_longer_than_the_protocol_allows_is_refused_before_it_is_read() {
        let (_, mut b) = aes128_pair();
        let len = MAX_FRAGMENT + 257;
        let mut wire = vec![APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8];
        assert!(b.open(&mut wire, &mut Vec::new()).is_err());
        assert_eq!(b.failure(), Some(Fatal::RecordOverflow));
    }

    #[test]
    fn data_after_close_notify_is_dropped() {
        let (mut a, mut b) = aes128_pair();
        let mut wire = Vec::new();
        a.seal(&[b"before"], 100, &mut wire).unwrap();
        a.close_notify(&mut wire).unwrap();
        a.seal(&[b"after"], 100, &mut wire).unwrap();
        let mut plain = Vec::new();
        assert!(b.open(&mut wire, &mut plain).unwrap().peer_closed);
        assert_eq!(plain, b"before");
        assert!(wire.is_empty());
        let mut more = Vec::new();
        a.seal(&[b"later"], 100, &mut more).unwrap();
        assert!(b.open(&mut more, &mut plain).unwrap().peer_closed);
        assert_eq!(plain, b"before", "ignored");
    }

    #[test]
    fn a_run_of_empty_records_is_refused() {
        let (mut a, mut b) = aes128_pair();
        let mut wire = Vec::new();
        for _ in 0..MAX_EMPTY_RECORDS {
            wire.extend(raw_record(&mut a, b"", APPLICATION_DATA));
        }
        b.open(&mut wire, &mut Vec::new()).unwrap();
        let mut one_more = raw_record(&mut a, b"", APPLICATION_DATA);
        assert!(b.open(&mut one_more, &mut Vec::new()).is_err());
    }
}
