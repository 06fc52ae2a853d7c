//! [`WsSession`] with permessage-deflate: compressed messages in any fragmentation and read
//! split, the RSV1 rules, and the inflate bound (a zip bomb closes with 1009).

use super::*;
use crate::proto::close;
use flate2::{Compress, Compression, FlushCompress};
use proptest::prelude::*;

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::new();
    header.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], KEY, 0);
    out
}

/// A client's compressed message payload (§7.2.1: sync flush, tail removed).
fn compress(payload: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() + 1024);
    loop {
        let done = c.total_in() as usize;
        c.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
            .unwrap();
        if c.total_in() as usize == payload.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    out.truncate(out.len() - 4);
    out
}

/// `payload` compressed and sent as frames of at most `size` bytes (RSV1 on the first).
fn compressed_message(opcode: OpCode, payload: &[u8], size: usize) -> Vec<u8> {
    let data = compress(payload);
    let pieces: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(size).collect()
    };
    let mut wire = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let (rsv, op) = if i == 0 {
            (RSV1, opcode)
        } else {
            (0, OpCode::Continuation)
        };
        wire.extend(frame(i + 1 == pieces.len(), rsv, op, piece));
    }
    wire
}

fn deflate_session(limits: WsLimits) -> WsSession {
    let mut s = WsSession::new(limits);
    s.enable_deflate();
    s
}

fn run(session: &mut WsSession, input: &[u8]) -> Vec<WsEvent> {
    let mut events = Vec::new();
    session.receive(input, &mut events);
    events
}

fn close_code(events: &[WsEvent]) -> Option<u16> {
    events.iter().find_map(|e| match e {
        WsEvent::Send(bytes) if bytes[0] == 0x88 && bytes.len() >= 4 => {
            Some(u16::from_be_bytes([bytes[2], bytes[3]]))
        }
        _ => None,
    })
}

#[test]
fn compressed_and_plain_messages_mix() {
    let mut s = deflate_session(WsLimits::default());
    let mut wire = compressed_message(OpCode::Text, b"{\"command\":\"watch\"}", 1000);
    wire.extend(frame(true, 0, OpCode::Text, b"plain"));
    wire.extend(compressed_message(
        OpCode::Text,
        "é".repeat(500).as_bytes(),
        7,
    ));
    let events = run(&mut s, &wire);
    assert_eq!(
        events,
        [
            WsEvent::Text("{\"command\":\"watch\"}".into()),
            WsEvent::Text("plain".into()),
            WsEvent::Text("é".repeat(500)),
        ]
    );
    assert_eq!(
        s.buffered_capacity(),
        0,
        "idle again: no buffers, no inflater"
    );
    assert!(s.inflater.is_none());
}

#[test]
fn rsv1_rules() {
    // Not negotiated: RSV1 is a protocol error.
    let mut plain = WsSession::new(WsLimits::default());
    let events = run(&mut plain, &compressed_message(OpCode::Text, b"hi", 100));
    assert_eq!(close_code(&events), Some(close::PROTOCOL_ERROR));
    // On a continuation frame, or a control frame, or RSV2: also errors.
    for wire in [
        [
            frame(false, 0, OpCode::Text, b"a"),
            frame(true, RSV1, OpCode::Continuation, b"b"),
        ]
        .concat(),
        frame(true, RSV1, OpCode::Ping, b""),
        frame(true, 0b010, OpCode::Text, b"x"),
    ] {
        let mut s = deflate_session(WsLimits::default());
        assert_eq!(close_code(&run(&mut s, &wire)), Some(close::PROTOCOL_ERROR));
    }
}

#[test]
fn zip_bomb_closes_with_1009_and_corrupt_data_with_1007() {
    let limits = WsLimits {
        max_frame_bytes: 1 << 20,
        max_message_bytes: 64 << 10,
        accept_binary: true,
    };
    let mut s = deflate_session(limits);
    let bomb = compressed_message(OpCode::Binary, &vec![0u8; 16 << 20], 1 << 20);
    assert!(
        bomb.len() < 64 << 10,
        "the bomb fits the compressed limit: {}",
        bomb.len()
    );
    let events = run(&mut s, &bomb);
    assert_eq!(close_code(&events), Some(close::TOO_BIG));
    assert!(s.failed());
    let mut s = deflate_session(limits);
    let events = run(
        &mut s,
        &frame(true, RSV1, OpCode::Binary, &[0xff, 0xff, 0xff]),
    );
    assert_eq!(close_code(&events), Some(close::INVALID_PAYLOAD));
    // Compressed bytes count against the limit too (empty stored blocks inflate to nothing).
    let mut s = deflate_session(WsLimits {
        max_message_bytes: 100,
        ..limits
    });
    let empty_blocks: Vec<u8> = [0x00, 0x00, 0x00, 0xff, 0xff].repeat(30);
    let events = run(&mut s, &frame(true, RSV1, OpCode::Binary, &empty_blocks));
    assert_eq!(close_code(&events), Some(close::TOO_BIG));
}

#[test]
fn compressed_invalid_utf8_closes_with_1007() {
    let mut s = deflate_session(WsLimits::default());
    let events = run(
        &mut s,
        &compressed_message(OpCode::Text, &[b'a', 0xff, b'b'], 100),
    );
    assert_eq!(close_code(&events), Some(close::INVALID_PAYLOAD));
}

proptest! {
    #[test]
    fn compressed_messages_survive_any_split(
        text in "[a-zé {}\":,0-9]{0,2000}",
        frame_size in 1usize..300,
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = compressed_message(OpCode::Text, text.as_bytes(), frame_size);
        let cut = cut.index(wire.len() + 1);
        let mut s = deflate_session(WsLimits::default());
        let mut events = run(&mut s, &wire[..cut]);
        events.extend(run(&mut s, &wire[cut..]));
        prop_assert_eq!(events, vec![WsEvent::Text(text)]);
    }
}
