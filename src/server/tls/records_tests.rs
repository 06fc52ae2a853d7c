//! Tests of the TLS 1.3 record layer: round trips in every suite, each refused record and its
//! alert, `KeyUpdate`s both ways, the record limit.
use super::*;

/// Two ends of one connection: `a`'s tx is `b`'s rx.
fn pair(suite: Suite) -> (Records, Records) {
    let secret = |x: u8| TrafficSecret::new(suite, &vec![x; suite.secret_len()]).unwrap();
    (
        Records::new(suite, (0, secret(1)), (0, secret(2))),
        Records::new(suite, (0, secret(2)), (0, secret(1))),
    )
}

/// Opens `wire` on `b`, which must have nothing to send back; returns the plaintext.
fn open_all(b: &mut Records, wire: &mut Vec<u8>) -> Result<Vec<u8>, Error> {
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    b.open(wire, &mut plain, &mut out)?;
    assert!(out.is_empty(), "nothing to answer");
    Ok(plain)
}

#[test]
fn sealed_records_open_on_the_other_end_in_any_split() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
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
            closed |= b
                .open(&mut incoming, &mut plain, &mut Vec::new())
                .unwrap()
                .peer_closed;
        }
        assert!(closed && incoming.is_empty());
        assert_eq!(&plain[..6], b"hello ");
        assert_eq!(&plain[6..], &big[..]);
    }
}

#[test]
fn a_changed_byte_a_handshake_message_or_a_plain_record_is_an_error() {
    let (mut a, mut b) = pair(Suite::Aes256Gcm);
    let mut wire = Vec::new();
    a.seal(&[b"x"], 100, &mut wire).unwrap();
    let mut tampered = wire.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert!(b
        .open(&mut tampered, &mut Vec::new(), &mut Vec::new())
        .is_err());

    let (mut a, mut b) = pair(Suite::Aes256Gcm);
    let mut wire = Vec::new();
    let key = a.tx.aead(a.suite);
    // A NewSessionTicket is for clients to receive, never to send.
    a.seal_one(&key, &[4, 0, 0, 1, 0], HANDSHAKE, &mut wire)
        .unwrap();
    let err = b
        .open(&mut wire, &mut Vec::new(), &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("post-handshake message"), "{err}");

    let (_, mut b) = pair(Suite::Aes256Gcm);
    let mut plain_record = vec![22, 3, 3, 0, 2, 1, 2];
    assert!(b
        .open(&mut plain_record, &mut Vec::new(), &mut Vec::new())
        .is_err());
}

#[test]
fn at_the_record_limit_our_key_is_updated_not_worn_out() {
    let (mut a, mut b) = pair(Suite::Chacha20Poly1305);
    a.tx.seq = MAX_RECORDS - 1;
    b.rx.seq = MAX_RECORDS - 1;
    let mut wire = Vec::new();
    a.seal(&[b"one ", b"more"], 100, &mut wire).unwrap();
    assert_eq!(
        a.tx.seq, 2,
        "the KeyUpdate took the last nonce, two records since"
    );
    assert_eq!(open_all(&mut b, &mut wire).unwrap(), b"one more");
    assert_eq!(b.rx.seq, 2, "the peer follows");
}

#[test]
fn a_seal_that_cannot_happen_leaves_the_wire_as_it_was() {
    let (mut a, _) = pair(Suite::Chacha20Poly1305);
    let mut wire = Vec::new();
    a.seal(&[b"last"], 100, &mut wire).unwrap();
    let before = wire.clone();
    // What a fatal alert leaves: nothing may be sealed any more.
    a.tx.seq = MAX_RECORDS;
    assert!(a.seal(&[b"one too many"], 100, &mut wire).is_err());
    assert_eq!(wire, before, "a failed seal leaves the wire as it was");
    assert!(a.close_notify(&mut wire).is_err());
    assert_eq!(wire, before, "no plaintext alert either");
}

#[test]
fn a_key_update_moves_the_peer_on_and_answers_when_asked() {
    for suite in [Suite::Aes128Gcm, Suite::Aes256Gcm, Suite::Chacha20Poly1305] {
        let (mut a, mut b) = pair(suite);
        // `a` asks for an update, and what it seals after it is under its next key:
        // `b` opens the lot from one buffer.
        let mut wire = raw_record(&mut a, &[KEY_UPDATE, 0, 0, 1, UPDATE_REQUESTED], HANDSHAKE);
        a.tx.update(suite);
        a.seal(&[b"under the new key"], 100, &mut wire).unwrap();
        let (mut plain, mut answer) = (Vec::new(), Vec::new());
        b.open(&mut wire, &mut plain, &mut answer).unwrap();
        assert_eq!(plain, b"under the new key", "{suite:?}");
        // `b` answered with its own KeyUpdate, then seals under its next key.
        b.seal(&[b"news"], 100, &mut answer).unwrap();
        assert_eq!(open_all(&mut a, &mut answer).unwrap(), b"news", "{suite:?}");
        // An update that does not ask for ours gets no answer.
        let mut wire = raw_record(
            &mut a,
            &[KEY_UPDATE, 0, 0, 1, UPDATE_NOT_REQUESTED],
            HANDSHAKE,
        );
        a.tx.update(suite);
        a.seal(&[b"again"], 100, &mut wire).unwrap();
        assert_eq!(open_all(&mut b, &mut wire).unwrap(), b"again", "{suite:?}");
    }
}

#[test]
fn a_run_of_key_updates_without_data_is_refused() {
    let (mut a, mut b) = aes128_pair();
    let mut wire = Vec::new();
    for _ in 0..=MAX_EMPTY_RECORDS {
        wire.extend(raw_record(&mut a, &[KEY_UPDATE, 0, 0, 1, 0], HANDSHAKE));
        a.tx.update(a.suite);
    }
    assert!(b.open(&mut wire, &mut Vec::new(), &mut Vec::new()).is_err());
    assert_eq!(b.failure(), Some(Fatal::UnexpectedMessage));
}

fn aes128_pair() -> (Records, Records) {
    pair(Suite::Aes128Gcm)
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
    b.open(&mut wire, &mut plain, &mut Vec::new()).unwrap();
    assert_eq!(plain, b"chrome");
}

#[test]
fn each_refused_record_latches_its_fatal_alert() {
    type Case = (&'static str, fn(&mut Records) -> Vec<u8>, Fatal);
    let cases: [Case; 8] = [
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
            "a KeyUpdate request of 2",
            |a| raw_record(a, &[KEY_UPDATE, 0, 0, 1, 2], HANDSHAKE),
            Fatal::IllegalParameter,
        ),
        (
            "a KeyUpdate that does not end its record",
            |a| {
                raw_record(
                    a,
                    &[KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE, 0, 0, 1, 0],
                    HANDSHAKE,
                )
            },
            Fatal::UnexpectedMessage,
        ),
        (
            "a KeyUpdate whose length is not 1",
            |a| raw_record(a, &[KEY_UPDATE, 0, 0, 2, 0, 0], HANDSHAKE),
            Fatal::DecodeError,
        ),
    ];
    for (name, make, fatal) in cases {
        let (mut a, mut b) = aes128_pair();
        let mut wire = make(&mut a);
        assert!(
            b.open(&mut wire, &mut Vec::new(), &mut Vec::new()).is_err(),
            "{name}"
        );
        assert_eq!(b.failure(), Some(fatal), "{name}");
        // The alert is sealed once, and then nothing more.
        let mut out = Vec::new();
        b.fatal_alert(&mut out);
        let mut plain = Vec::new();
        let err = a.open(&mut out, &mut plain, &mut Vec::new()).unwrap_err();
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
    assert!(b.open(&mut wire, &mut Vec::new(), &mut Vec::new()).is_err());
    assert_eq!(b.failure(), Some(Fatal::RecordOverflow));
}

#[test]
fn data_after_close_notify_is_dropped() {
    let (mut a, mut b) = aes128_pair();
    let mut wire = Vec::new();
    a.seal(&[b"before"], 100, &mut wire).unwrap();
    a.close_notify(&mut wire).unwrap();
    assert!(
        a.seal(&[b"after"], 100, &mut Vec::new()).is_err(),
        "we never do"
    );
    // A peer that does.
    wire.extend(raw_record(&mut a, b"after", APPLICATION_DATA));
    let mut plain = Vec::new();
    assert!(
        b.open(&mut wire, &mut plain, &mut Vec::new())
            .unwrap()
            .peer_closed
    );
    assert_eq!(plain, b"before");
    assert!(wire.is_empty());
    let mut more = raw_record(&mut a, b"later", APPLICATION_DATA);
    assert!(
        b.open(&mut more, &mut plain, &mut Vec::new())
            .unwrap()
            .peer_closed
    );
    assert_eq!(plain, b"before", "ignored");
}

#[test]
fn a_run_of_empty_records_is_refused() {
    let (mut a, mut b) = aes128_pair();
    let mut wire = Vec::new();
    for _ in 0..MAX_EMPTY_RECORDS {
        wire.extend(raw_record(&mut a, b"", APPLICATION_DATA));
    }
    b.open(&mut wire, &mut Vec::new(), &mut Vec::new()).unwrap();
    let mut one_more = raw_record(&mut a, b"", APPLICATION_DATA);
    assert!(b
        .open(&mut one_more, &mut Vec::new(), &mut Vec::new())
        .is_err());
}

#[test]
fn with_the_kernel_sealing_the_closing_alert_is_named_and_nothing_is_sealed_here() {
    // A clean end: close_notify.
    let (mut a, mut b) = aes128_pair();
    let tx = b.kernel_tx().expect("handed over");
    drop(tx);
    b.hand_tx_to_kernel();
    assert!(b.tx_in_kernel());
    assert!(b.seal(&[b"x"], 1, &mut Vec::new()).is_err());
    assert!(b.close_notify(&mut Vec::new()).is_err());
    let mut wire = Vec::new();
    a.seal(&[b"still read"], 100, &mut wire).unwrap();
    assert_eq!(open_all(&mut b, &mut wire).unwrap(), b"still read");
    assert_eq!(b.kernel_alert(), Some([1, 0]));

    // A bad record: its fatal alert, which this layer does not seal itself.
    let mut bad = raw_record(&mut a, b"data", 23);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(open_all(&mut b, &mut bad).is_err());
    assert_eq!(b.kernel_alert(), Some([2, Fatal::BadRecordMac as u8]));
    let mut out = Vec::new();
    b.fatal_alert(&mut out);
    assert!(out.is_empty(), "the kernel sends it");

    // The peer's own fatal alert is not answered.
    let (mut a, mut b) = aes128_pair();
    b.hand_tx_to_kernel();
    let mut alert = raw_record(&mut a, &[2, 40], 21);
    assert!(open_all(&mut b, &mut alert).is_err());
    assert_eq!(b.kernel_alert(), None);
}
