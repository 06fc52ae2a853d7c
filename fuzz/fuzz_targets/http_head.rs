//! Fuzzes `parse_request` (with small limits so they are reached) and, for upgrade
//! requests, `accept_handshake`: no panic, consumed bytes within the input, pipelined
//! requests parsed one after another. Then feeds the same bytes to the incremental
//! `RequestReader` in reads of a fuzzer-chosen size: it must yield exactly the requests
//! `parse_request` yields, in order, and refuse only what `parse_request` refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::{accept_handshake, is_upgrade_request, parse_request};
use matchstream::proto::{HandshakePolicy, HttpLimits, RequestReader};

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits {
        max_request_line: 256,
        max_head_bytes: 1024,
        max_headers: 16,
        max_body_bytes: 512,
    };
    let policy = HandshakePolicy {
        allowed_origins: Some(vec!["http://a".into()]),
        // Upgrades also run the permessage-deflate offer parser.
        permessage_deflate: true,
        deflate_small_windows: true,
    };
    let (chunk, data) = match data.split_first() {
        Some((&c, rest)) => (usize::from(c % 64) + 1, rest),
        None => (1, data),
    };
    let mut expected = Vec::new();
    let mut refused = false;
    let mut rest = data;
    loop {
        match parse_request(rest, &limits) {
            Ok(Some((req, used))) => {
                assert!(used > 0 && used <= rest.len());
                assert!(req.body.len() <= limits.max_body_bytes);
                let _ = (req.path(), req.query_param("since"), req.header_str("host"));
                if is_upgrade_request(&req) {
                    match accept_handshake(&req, &policy) {
                        Ok(resp) => assert!(resp.starts_with(b"HTTP/1.1 101 ")),
                        Err(e) => {
                            let mut out = Vec::new();
                            e.write_response(&mut out);
                        }
                    }
                }
                expected.push(req);
                rest = &rest[used..];
            }
            Ok(None) => break,
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    let mut reader = RequestReader::new();
    let mut got = Vec::new();
    'feed: for piece in data.chunks(chunk) {
        reader.extend(piece);
        loop {
            match reader.next_request(&limits) {
                Ok(Some(req)) => got.push(req),
                Ok(None) => break,
                Err(_) => {
                    assert!(refused, "the reader refused what parse_request accepts");
                    break 'feed;
                }
            }
        }
    }
    assert!(got.len() <= expected.len());
    assert_eq!(&got[..], &expected[..got.len()]);
});
