//! TLS 1.3's key schedule after the handshake (RFC 8446 §7.1–7.3), sans I/O: the key and IV
//! a traffic secret makes, and the next traffic secret a `KeyUpdate` moves to.
//!
//! `HKDF-Expand-Label(Secret, Label, "", Length)` is HKDF-Expand with the info
//! `Length ‖ len("tls13 " ‖ Label) ‖ "tls13 " ‖ Label ‖ 0` (an empty context).

use ring::{aead, hkdf};

/// The longest traffic secret (SHA-384's output).
const MAX_SECRET: usize = 48;
/// The longest AEAD key (AES-256-GCM, ChaCha20-Poly1305).
pub const MAX_KEY: usize = 32;

/// A TLS 1.3 cipher suite: the AEAD and the hash of its key schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `TLS_AES_128_GCM_SHA256` (what Chrome and Firefox pick on AES hardware).
    Aes128Gcm,
    /// `TLS_AES_256_GCM_SHA384`.
    Aes256Gcm,
    /// `TLS_CHACHA20_POLY1305_SHA256`.
    Chacha20Poly1305,
}

impl Suite {
    /// The suite's AEAD.
    pub fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes128Gcm | Suite::Chacha20Poly1305 => hkdf::HKDF_SHA256,
            Suite::Aes256Gcm => hkdf::HKDF_SHA384,
        }
    }

    /// Length of the suite's traffic secrets (its hash's output).
    pub fn secret_len(self) -> usize {
        match self {
            Suite::Aes128Gcm | Suite::Chacha20Poly1305 => 32,
            Suite::Aes256Gcm => 48,
        }
    }
}

/// One direction's application traffic secret (`[sender]_application_traffic_secret_N`).
/// Wiped when dropped.
pub struct TrafficSecret {
    bytes: [u8; MAX_SECRET],
}

impl TrafficSecret {
    /// The secret `bytes` of a connection using `suite`; `None` when the length is not the
    /// suite's.
    pub fn new(suite: Suite, bytes: &[u8]) -> Option<TrafficSecret> {
        if bytes.len() != suite.secret_len() {
            return None;
        }
        let mut secret = TrafficSecret {
            bytes: [0; MAX_SECRET],
        };
        secret.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(secret)
    }

    /// The secret after a `KeyUpdate` (§7.2): `HKDF-Expand-Label(secret, "traffic upd", "",
    /// Hash.length)`.
    pub fn next(&self, suite: Suite) -> TrafficSecret {
        let mut next = TrafficSecret {
            bytes: [0; MAX_SECRET],
        };
        let len = suite.secret_len();
        self.expand_label(suite, b"traffic upd", &mut next.bytes[..len]);
        next
    }

    /// The record key (its first `key_len` bytes) and IV this secret makes (§7.3).
    pub fn key_and_iv(&self, suite: Suite) -> ([u8; MAX_KEY], [u8; aead::NONCE_LEN]) {
        let mut key = [0; MAX_KEY];
        let mut iv = [0; aead::NONCE_LEN];
        self.expand_label(suite, b"key", &mut key[..suite.aead().key_len()]);
        self.expand_label(suite, b"iv", &mut iv);
        (key, iv)
    }

    fn expand_label(&self, suite: Suite, label: &[u8], out: &mut [u8]) {
        const PREFIX: &[u8] = b"tls13 ";
        let secret = &self.bytes[..suite.secret_len()];
        let prk = hkdf::Prk::new_less_safe(suite.hkdf(), secret);
        let length = (out.len() as u16).to_be_bytes();
        let label_len = [(PREFIX.len() + label.len()) as u8];
        let info: [&[u8]; 5] = [&length, &label_len, PREFIX, label, &[0]];
        prk.expand(&info, OutputLen(out.len()))
            .and_then(|okm| okm.fill(out))
            .expect("outputs of at most 48 bytes are always within HKDF's limit");
    }
}

impl Drop for TrafficSecret {
    fn drop(&mut self) {
        wipe(&mut self.bytes);
    }
}

/// Overwrites key material with zeros in a way the compiler keeps.
pub fn wipe(bytes: &mut [u8]) {
    for b in bytes {
        // SAFETY: a volatile write to a byte the caller owns, so that the wipe is kept.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// An HKDF output length.
struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8448 §3, "derive write traffic keys for application data" (the server's).
    #[test]
    fn rfc_8448_application_keys() {
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let secret = TrafficSecret::new(Suite::Aes128Gcm, &secret).unwrap();
        let (key, iv) = secret.key_and_iv(Suite::Aes128Gcm);
        assert_eq!(key[..16], hex("9f02283b6c9c07efc26bb9f2ac92e356")[..]);
        assert_eq!(key[16..], [0; 16]);
        assert_eq!(iv[..], hex("cf782b88dd83549aadf1e984")[..]);
        // The next secret, as Python's hmac module computes HKDF-Expand-Label "traffic upd".
        let next = secret.next(Suite::Aes128Gcm);
        assert_eq!(
            next.bytes[..32],
            hex("51921b8aa3001976eb401d0a4319a8516416a6c56001a357e5d162031e84f916")[..]
        );
        assert_eq!(next.bytes[32..], [0; 16]);
    }

    #[test]
    fn a_secret_of_the_wrong_length_is_refused() {
        assert!(TrafficSecret::new(Suite::Aes256Gcm, &[1; 32]).is_none());
        assert!(TrafficSecret::new(Suite::Chacha20Poly1305, &[1; 48]).is_none());
        assert!(TrafficSecret::new(Suite::Aes256Gcm, &[1; 48]).is_some());
    }

    #[test]
    fn each_update_makes_a_different_key() {
        let suite = Suite::Aes256Gcm;
        let first = TrafficSecret::new(suite, &[9; 48]).unwrap();
        let second = first.next(suite);
        assert_ne!(first.key_and_iv(suite), second.key_and_iv(suite));
        assert_ne!(second.bytes, first.bytes);
    }
}
