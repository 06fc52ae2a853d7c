//! Fuzzes `WsSession::receive`. The first byte picks the limits and read-chunk size; the
//! rest is fed in chunks. Checked: no panic, nothing after `Closed`, every `Send` is one
//! well-formed unmasked server frame, and the same input fed in one piece yields the same
//! events (chunk boundaries never change the outcome).
#![no_main]

use libfuzzer_sys::fuzz_target;
use matchstream::proto::{FrameHeader, WsEvent, WsLimits, WsSession};

fn run(input: &[u8], chunk: usize, limits: WsLimits) -> Vec<WsEvent> {
    let mut session = WsSession::new(limits);
    let mut events = Vec::new();
    for piece in input.chunks(chunk) {
        session.receive(piece, &mut events);
    }
    if session.is_closed() {
        assert_eq!(session.buffered_capacity(), 0);
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let limits = WsLimits {
        max_frame_bytes: 64 << (knobs & 3),
        max_message_bytes: 256,
        accept_binary: knobs & 4 != 0,
    };
    let chunk = usize::from(knobs >> 3) + 1;
    let events = run(input, chunk, limits);
    if let Some(i) = events.iter().position(|e| *e == WsEvent::Closed) {
        assert_eq!(i + 1, events.len(), "nothing after Closed");
    }
    for event in &events {
        if let WsEvent::Send(bytes) = event {
            let (h, n) = FrameHeader::parse(bytes).unwrap().unwrap();
            assert!(h.fin && h.mask.is_none() && h.opcode.is_control());
            assert_eq!(bytes.len() as u64, n as u64 + h.payload_len);
        }
    }
    assert_eq!(events, run(input, input.len().max(1), limits));
});
