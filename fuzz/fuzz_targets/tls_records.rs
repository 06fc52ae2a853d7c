//! Fuzzes `server::tls::records`, the TLS 1.3 record layer that takes over after the
//! handshake: arbitrary bytes as received records never panic (only errors; a well-formed
//! `KeyUpdate` among them may be answered), and what one end seals the other opens to the same
//! plaintext however the ciphertext is split. The first byte picks the split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::server::tls::key_schedule::{Suite, TrafficSecret};
use matchstream::server::tls::records::Records;

fn end(tx: u8, rx: u8) -> Records {
    let suite = Suite::Aes256Gcm;
    let secret = |b: u8| TrafficSecret::new(suite, &[b; 48]).expect("48 bytes");
    Records::new(suite, (0, secret(tx)), (0, secret(rx)))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let mut garbage = input.to_vec();
    let _ = end(1, 2).open(&mut garbage, &mut Vec::new(), &mut Vec::new());

    let (mut a, mut b) = (end(1, 2), end(2, 1));
    let mut wire = Vec::new();
    a.seal(&[input], usize::MAX, &mut wire).expect("seal");
    let cut = (usize::from(split) * 97).min(wire.len());
    let (mut incoming, mut plain, mut answer) = (wire[..cut].to_vec(), Vec::new(), Vec::new());
    b.open(&mut incoming, &mut plain, &mut answer)
        .expect("first piece");
    incoming.extend_from_slice(&wire[cut..]);
    b.open(&mut incoming, &mut plain, &mut answer)
        .expect("second piece");
    assert!(incoming.is_empty() && answer.is_empty());
    assert_eq!(plain, input);
});
