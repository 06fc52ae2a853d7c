//! Fuzzes permessage-deflate: the first byte picks what the rest is.
//! * even: a `Sec-WebSocket-Extensions` value for `negotiate` and `parse_offers` (no panic;
//!   an agreed response value is accepted again when offered back);
//! * odd: a compressed message payload for the bounded inflater, with a limit from the first
//!   byte, fed in two pieces (no panic, the output never passes limit + 1 bytes, and the
//!   split never changes the outcome), then the same bytes as RSV1 frames to a
//!   deflate-enabled `WsSession` (nothing after `Closed`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::deflate::{negotiate, parse_offers, Inflater, RSV1};
use matchstream::proto::{FrameHeader, OpCode, WsEvent, WsLimits, WsSession};

fn inflate(input: &[u8], split: usize, limit: usize) -> Result<Vec<u8>, ()> {
    let mut inflater = Inflater::new(limit);
    let mut out = Vec::new();
    let (a, b) = input.split_at(split.min(input.len()));
    let result = inflater
        .feed(a, &mut out)
        .and_then(|()| inflater.feed(b, &mut out))
        .and_then(|()| inflater.finish(&mut out));
    assert!(out.len() <= limit + 1 && out.capacity() <= limit + 1);
    result.map(|()| out).map_err(|_| ())
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    if knobs & 1 == 0 {
        let _ = parse_offers(input);
        if let Some(agreed) = negotiate([input], true) {
            let again = agreed.response_value();
            assert_eq!(negotiate([again.as_bytes()], true), Some(agreed));
        }
        return;
    }
    let limit = usize::from(knobs) * 64;
    let whole = inflate(input, input.len(), limit);
    assert_eq!(whole, inflate(input, input.len() / 2, limit));
    let limits = WsLimits {
        max_frame_bytes: 1 << 16,
        max_message_bytes: limit,
        accept_binary: true,
    };
    let mut session = WsSession::new(limits);
    session.enable_deflate();
    let mut wire = Vec::new();
    let header = FrameHeader {
        fin: true,
        rsv: RSV1,
        opcode: OpCode::Binary,
        mask: Some([1, 2, 3, 4]),
        payload_len: input.len() as u64,
    };
    header.encode(&mut wire);
    let start = wire.len();
    wire.extend_from_slice(input);
    matchstream::proto::apply_mask(&mut wire[start..], [1, 2, 3, 4], 0);
    let mut events = Vec::new();
    session.receive(&wire, &mut events);
    if let Some(i) = events.iter().position(|e| *e == WsEvent::Closed) {
        assert_eq!(i + 1, events.len(), "nothing after Closed");
    }
    if let (Ok(out), Some(WsEvent::Binary(got))) = (&whole, events.first()) {
        assert_eq!(out, got);
    }
});
