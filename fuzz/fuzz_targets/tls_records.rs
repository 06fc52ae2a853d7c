//! Fuzzes `server::tls::records`, the TLS 1.3 record layer that takes over after the
//! handshake: arbitrary bytes as received records never panic (only errors), and what one end
//! seals the other opens to the same plaintext however the ciphertext is split. The first
//! byte picks the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::server::tls::records::Records;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets};

fn end(tx: u8, rx: u8) -> Records {
    let secret = |b: u8| ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([b; 32]),
        iv: Iv::new([b; 12]),
    };
    Records::new(ExtractedSecrets {
        tx: (0, secret(tx)),
        rx: (0, secret(rx)),
    })
    .expect("secrets")
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut garbage = input.to_vec();
    let _ = end(1, 2).open(&mut garbage, &mut Vec::new());

    let (mut a, mut b) = (end(1, 2), end(2, 1));
    let mut wire = Vec::new();
    a.seal(&[input], usize::MAX, &mut wire).expect("seal");
    let cut = (usize::from(split) * 97).min(wire.len());
    let (mut incoming, mut plain) = (wire[..cut].to_vec(), Vec::new());
    b.open(&mut incoming, &mut plain).expect("first piece");
    incoming.extend_from_slice(&wire[cut..]);
    b.open(&mut incoming, &mut plain).expect("second piece");
    assert!(incoming.is_empty());
    assert_eq!(plain, input);
});
