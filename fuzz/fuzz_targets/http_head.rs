//! Fuzzes `parse_request` (with small limits so they are reached) and, for upgrade
//! requests, `accept_handshake`: no panic, consumed bytes within the input, pipelined
//! requests parsed one after another.
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::{accept_handshake, is_upgrade_request, parse_request};
use matchstream::proto::{HandshakePolicy, HttpLimits};

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits {
        max_request_line: 256,
        max_head_bytes: 1024,
        max_headers: 16,
        max_body_bytes: 512,
    };
    let policy = HandshakePolicy {
        allowed_origins: Some(vec!["http://a".into()]),
    };
    let mut rest = data;
    while let Ok(Some((req, used))) = parse_request(rest, &limits) {
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
        rest = &rest[used..];
    }
});
