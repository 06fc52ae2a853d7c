//! Unit and property tests of permessage-deflate negotiation, compression and bounded inflate.

use super::*;
use flate2::{Compress, Compression, FlushCompress};
use proptest::prelude::*;

fn agreed(values: &[&str]) -> Option<Agreed> {
    negotiate(values.iter().map(|v| v.as_bytes()), true)
}

/// What a client does (§7.2.1): compress with a sync flush, then drop the `00 00 ff ff` tail.
fn client_compress(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    c.compress_vec(payload, &mut out, FlushCompress::Sync)
        .unwrap();
    while c.total_in() < payload.len() as u64 || out.capacity() == out.len() {
        out.reserve(payload.len() + 64);
        let done = c.total_in() as usize;
        c.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
            .unwrap();
    }
    assert!(out.ends_with(&SYNC_TAIL));
    out.truncate(out.len() - 4);
    out
}

#[test]
fn plain_and_browser_offers_are_accepted() {
    let expected = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    for offer in [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "Permessage-Deflate; client_max_window_bits=10; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=\"15\"",
        "x-webkit-deflate-frame, permessage-deflate",
    ] {
        let a = agreed(&[offer]).unwrap_or_else(|| panic!("declined {offer:?}"));
        assert!(a.may_compress(), "{offer}");
        assert!(a.response_value().starts_with(expected), "{offer}");
    }
    let a = agreed(&["permessage-deflate; server_max_window_bits=15"]).unwrap();
    assert_eq!(
        a.response_value(),
        format!("{expected}; server_max_window_bits=15")
    );
}

#[test]
fn a_smaller_server_window_is_accepted_but_never_compressed() {
    let a = agreed(&["permessage-deflate; server_max_window_bits=9"]).unwrap();
    assert!(!a.may_compress());
    assert!(a.response_value().ends_with("; server_max_window_bits=9"));
}

#[test]
fn small_windows_are_declined_unless_allowed() {
    let two = b"permessage-deflate; server_max_window_bits=10, permessage-deflate".as_slice();
    assert_eq!(
        negotiate([two], false),
        Some(Agreed {
            server_max_window_bits: None
        }),
        "the second offer"
    );
    let one = b"permessage-deflate; server_max_window_bits=10".as_slice();
    assert_eq!(negotiate([one], false), None);
    assert!(negotiate([one], true).is_some_and(|a| !a.may_compress()));
}

#[test]
fn invalid_offers_are_declined_and_the_next_one_taken() {
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=\"x\"",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; CLIENT_MAX_WINDOW_BITS; client_max_window_bits",
    ] {
        assert_eq!(agreed(&[bad]), None, "{bad}");
        let two = format!("{bad}, permessage-deflate; server_max_window_bits=12");
        assert_eq!(
            agreed(&[&two]).map(|a| a.server_max_window_bits),
            Some(Some(12)),
            "{two}"
        );
    }
    // Offers in a second header line count too.
    assert!(agreed(&["x-foo", "permessage-deflate"]).is_some());
}

#[test]
fn malformed_headers_and_other_extensions_decline() {
    for value in [
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate;",
        "permessage-deflate; =1",
        "permessage-deflate; a=\"unterminated",
        "permessage-deflate x",
        ";permessage-deflate",
    ] {
        assert_eq!(agreed(&[value]), None, "{value:?}");
    }
    assert_eq!(
        parse_offers(b"permessage-deflate; client_max_window_bits, permessage-deflate; x").unwrap(),
        vec![
            Ok(Offer {
                client_max_window_bits: Some(None),
                ..Offer::default()
            }),
            Err(OfferError::UnknownParameter("x".into())),
        ]
    );
}

#[test]
fn compressed_frames_carry_rsv1_and_inflate_back() {
    let json = br#"{"type":"event","match":"elp-tig-2011-09-10","seq":7,"ts":1315670000000,"kind":"goal","data":{"team":"tig","player":[9,"Carlos Luna"]}}"#;
    let mut deflater = MessageDeflater::new();
    let frame = deflater.compressed_frame(OpCode::Text, json).unwrap();
    let (h, n) = FrameHeader::parse_with(&frame, RSV1).unwrap().unwrap();
    assert_eq!((h.fin, h.rsv, h.opcode), (true, RSV1, OpCode::Text));
    assert_eq!(frame.len(), n + h.payload_len as usize);
    assert!(frame.len() < json.len());
    assert_eq!(inflate_message(&frame[n..], 1 << 20).unwrap(), json);
    // Too small to gain: the caller sends the plain frame.
    assert_eq!(deflater.compressed_frame(OpCode::Text, b"{}"), None);
}

#[test]
fn zip_bomb_stops_at_the_limit() {
    let bomb = client_compress(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 16 << 10, "{}", bomb.len());
    let limit = 64 << 10;
    let mut inflater = Inflater::new(limit);
    let mut out = Vec::new();
    assert_eq!(inflater.feed(&bomb, &mut out), Err(InflateError::TooBig));
    assert!(out.capacity() <= limit + 1, "allocated {}", out.capacity());
    // Exactly at the limit is fine; one byte more is not.
    let exact = client_compress(&vec![b'a'; limit]);
    assert_eq!(inflate_message(&exact, limit).map(|m| m.len()), Ok(limit));
    let over = client_compress(&vec![b'a'; limit + 1]);
    assert_eq!(inflate_message(&over, limit), Err(InflateError::TooBig));
}

#[test]
fn corrupt_data_is_refused() {
    // BTYPE = 11 (reserved).
    assert_eq!(
        inflate_message(&[0xff, 0xff, 0xff], 1024),
        Err(InflateError::Corrupt)
    );
    // A stored block whose LEN and NLEN disagree.
    assert_eq!(
        inflate_message(&[0x00, 0x05, 0x00, 0x00, 0x00], 1024),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn empty_message_round_trips() {
    assert_eq!(inflate_message(&client_compress(b""), 10).unwrap(), b"");
    assert_eq!(
        inflate_message(&[0x00], 10).unwrap(),
        b"",
        "Autobahn's empty message"
    );
}

proptest! {
    #[test]
    fn client_messages_inflate_in_any_chunking(
        text in "[a-z {}\":,0-9]{0,3000}",
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let compressed = client_compress(text.as_bytes());
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(compressed.len() + 1)).collect();
        cuts.sort_unstable();
        let mut inflater = Inflater::new(1 << 20);
        let mut out = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().chain([compressed.len()]) {
            inflater.feed(&compressed[at..cut], &mut out).unwrap();
            at = cut;
        }
        inflater.finish(&mut out).unwrap();
        prop_assert_eq!(out, text.as_bytes());
    }

    #[test]
    fn our_frames_inflate_to_the_payload(payload in proptest::collection::vec(any::<u8>(), 0..5000)) {
        let mut deflater = MessageDeflater::new();
        if let Some(c) = deflater.compress(&payload) {
            let c = c.to_vec();
            prop_assert!(c.len() < payload.len());
            prop_assert_eq!(inflate_message(&c, payload.len()).unwrap(), payload);
        }
    }

    #[test]
    fn inflate_never_exceeds_its_bound(data in proptest::collection::vec(any::<u8>(), 0..400), limit in 0usize..3000) {
        let mut out = Vec::new();
        let mut inflater = Inflater::new(limit);
        if inflater.feed(&data, &mut out).is_ok() {
            let _ = inflater.finish(&mut out);
        }
        prop_assert!(out.len() <= limit + 1 && out.capacity() <= limit + 1);
    }

    #[test]
    fn negotiate_never_panics(value in "[ -~]{0,80}") {
        let _ = negotiate([value.as_bytes()], true);
    }
}

/// A receiver that keeps one inflater for the whole connection (as browsers do: with
/// `server_no_context_takeover` it need not reset), appending the tail after each message.
fn inflate_with_one_inflater(messages: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut d = flate2::Decompress::new(false);
    let mut out = Vec::new();
    for m in messages {
        let mut input = m.clone();
        input.extend_from_slice(&SYNC_TAIL);
        let mut buf = Vec::with_capacity(1 << 16);
        let before = d.total_in();
        d.decompress_vec(&input, &mut buf, flate2::FlushDecompress::Sync)
            .map_err(|e| e.to_string())?;
        if (d.total_in() - before) as usize != input.len() {
            return Err(format!(
                "consumed {} of {}",
                d.total_in() - before,
                input.len()
            ));
        }
        out.push(buf);
    }
    Ok(out)
}

#[test]
fn a_receiver_keeping_one_inflater_reads_every_message() {
    let mut deflater = MessageDeflater::new();
    let payloads: Vec<Vec<u8>> = (0..5)
        .map(|i| {
            format!(
                r#"{{"type":"event","seq":{i},"kind":"comment","data":{{"text":"{}"}}}}"#,
                "goal ".repeat(20 + i)
            )
            .into_bytes()
        })
        .collect();
    let compressed: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| deflater.compress(p).expect("compressible").to_vec())
        .collect();
    assert_eq!(inflate_with_one_inflater(&compressed).unwrap(), payloads);
}
