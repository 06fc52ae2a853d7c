//! Unit and property tests for [`WsSession`], driven by hand-built client frames.

use super::*;
use crate::proto::close;
use proptest::prelude::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame.
fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        fin,
        rsv: 0,
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

fn text(s: &str) -> Vec<u8> {
    frame(true, OpCode::Text, s.as_bytes())
}

fn run(session: &mut WsSession, input: &[u8]) -> Vec<WsEvent> {
    let mut events = Vec::new();
    session.receive(input, &mut events);
    events
}

fn open() -> WsSession {
    WsSession::new(WsLimits::default())
}

/// The opcode and payload of a server frame the session asked to send.
fn sent(event: &WsEvent) -> (OpCode, Vec<u8>) {
    let WsEvent::Send(bytes) = event else {
        panic!("expected Send, got {event:?}");
    };
    let (h, n) = FrameHeader::parse(bytes).unwrap().unwrap();
    assert!(h.fin && h.mask.is_none());
    assert_eq!(bytes.len(), n + h.payload_len as usize);
    (h.opcode, bytes[n..].to_vec())
}

/// Asserts the events are exactly: a close frame with `code`, then `Closed`.
fn assert_fails_with(events: &[WsEvent], code: u16) {
    assert_eq!(events.len(), 2, "{events:?}");
    let (op, payload) = sent(&events[0]);
    assert_eq!(op, OpCode::Close);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), code);
    assert_eq!(events[1], WsEvent::Closed);
}

#[test]
fn single_text_message() {
    let mut s = open();
    assert_eq!(run(&mut s, &text("hello")), [WsEvent::Text("hello".into())]);
    assert!(!s.is_closing());
}

#[test]
fn every_split_point_gives_the_same_message() {
    let mut wire = text("first");
    wire.extend(frame(true, OpCode::Ping, b"p"));
    wire.extend(text(&"x".repeat(300)));
    for cut in 0..=wire.len() {
        let mut s = open();
        let mut events = run(&mut s, &wire[..cut]);
        events.extend(run(&mut s, &wire[cut..]));
        assert_eq!(events.len(), 3, "cut {cut}");
        assert_eq!(events[0], WsEvent::Text("first".into()));
        assert_eq!(sent(&events[1]), (OpCode::Pong, b"p".to_vec()));
        assert_eq!(events[2], WsEvent::Text("x".repeat(300)));
        assert_eq!(s.buffered_capacity(), 0, "cut {cut}");
    }
}

#[test]
fn idle_session_owns_no_heap() {
    let mut s = open();
    let wire = text("a complete message");
    run(&mut s, &wire[..1]); // an unfinished header is kept...
    assert!(s.buffered_capacity() > 0);
    run(&mut s, &wire[1..]); // ...and released once the message is complete
    assert_eq!(s.buffered_capacity(), 0);
    assert!(
        std::mem::size_of::<WsSession>() <= 128,
        "{}",
        std::mem::size_of::<WsSession>()
    );
}

#[test]
fn fragmented_message_with_interleaved_control_frames() {
    let mut wire = frame(false, OpCode::Text, b"frag");
    wire.extend(frame(true, OpCode::Ping, b"hb"));
    wire.extend(frame(false, OpCode::Continuation, b"men"));
    wire.extend(frame(true, OpCode::Pong, b"ignored"));
    wire.extend(frame(true, OpCode::Continuation, b"ted"));
    let events = run(&mut open(), &wire);
    assert_eq!(events.len(), 2);
    assert_eq!(sent(&events[0]), (OpCode::Pong, b"hb".to_vec()));
    assert_eq!(events[1], WsEvent::Text("fragmented".into()));
}

#[test]
fn empty_fragments_and_empty_messages() {
    let mut wire = frame(false, OpCode::Text, b"");
    wire.extend(frame(true, OpCode::Continuation, b""));
    wire.extend(text(""));
    let events = run(&mut open(), &wire);
    assert_eq!(
        events,
        [WsEvent::Text(String::new()), WsEvent::Text(String::new())]
    );
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let mut wire = Vec::new();
    encode_frame(&mut wire, OpCode::Text, b"hi");
    let mut s = open();
    assert_fails_with(&run(&mut s, &wire), close::PROTOCOL_ERROR);
    assert!(s.is_closed());
    assert!(
        run(&mut s, &text("after")).is_empty(),
        "input after close is ignored"
    );
}

#[test]
fn fragmentation_rules() {
    let events = run(&mut open(), &frame(true, OpCode::Continuation, b"x"));
    assert_fails_with(&events, close::PROTOCOL_ERROR);
    let mut wire = frame(false, OpCode::Text, b"a");
    wire.extend(text("b"));
    assert_fails_with(&run(&mut open(), &wire), close::PROTOCOL_ERROR);
}

#[test]
fn header_errors_close_with_1002() {
    for bad in [[0xc1u8, 0x80], [0x83, 0x80], [0x09, 0x80], [0x89, 0xfe]] {
        assert_fails_with(&run(&mut open(), &bad), close::PROTOCOL_ERROR);
    }
}

#[test]
fn invalid_utf8_fails_fast() {
    // A whole message.
    assert_fails_with(&run(&mut open(), &frame(true, OpCode::Text, &[0xff])), 1007);
    // The first fragment is already impossible: fail before the message ends.
    let events = run(
        &mut open(),
        &frame(false, OpCode::Text, &[b'a', 0xed, 0xa0]),
    );
    assert_fails_with(&events, close::INVALID_PAYLOAD);
    // Inside one frame whose payload has not all arrived (Autobahn 6.4.x).
    let wire = frame(true, OpCode::Text, b"ok\xf4\x90 and the rest of the frame");
    let events = run(&mut open(), &wire[..10]);
    assert_fails_with(&events, close::INVALID_PAYLOAD);
    // A code point cut between fragments is fine; an unfinished one at the end is not.
    let mut wire = frame(false, OpCode::Text, &[0xe2, 0x82]);
    wire.extend(frame(true, OpCode::Continuation, &[0xac]));
    assert_eq!(run(&mut open(), &wire), [WsEvent::Text("€".into())]);
    let mut wire = frame(false, OpCode::Text, b"a");
    wire.extend(frame(true, OpCode::Continuation, &[0xe2, 0x82]));
    assert_fails_with(&run(&mut open(), &wire), close::INVALID_PAYLOAD);
}

#[test]
fn size_limits_close_with_1009() {
    let limits = WsLimits {
        max_frame_bytes: 10,
        max_message_bytes: 15,
        accept_binary: false,
    };
    // The announced length alone fails the frame: no payload needs to arrive.
    let wire = frame(true, OpCode::Text, &[b'a'; 11]);
    assert_fails_with(
        &run(&mut WsSession::new(limits), &wire[..8]),
        close::TOO_BIG,
    );
    let mut wire = frame(false, OpCode::Text, &[b'a'; 10]);
    wire.extend(frame(true, OpCode::Continuation, &[b'a'; 6]));
    assert_fails_with(&run(&mut WsSession::new(limits), &wire), close::TOO_BIG);
    let mut wire = frame(false, OpCode::Text, &[b'a'; 10]);
    wire.extend(frame(true, OpCode::Continuation, &[b'a'; 5]));
    assert_eq!(
        run(&mut WsSession::new(limits), &wire),
        [WsEvent::Text("a".repeat(15))]
    );
}

#[test]
fn binary_policy() {
    let wire = frame(true, OpCode::Binary, &[1, 2, 3]);
    assert_fails_with(&run(&mut open(), &wire), close::UNSUPPORTED_DATA);
    let limits = WsLimits {
        accept_binary: true,
        ..WsLimits::default()
    };
    assert_eq!(
        run(&mut WsSession::new(limits), &wire),
        [WsEvent::Binary(vec![1, 2, 3])]
    );
}

#[test]
fn ping_gets_pong_with_same_payload() {
    let payload = [9u8; 125];
    let events = run(&mut open(), &frame(true, OpCode::Ping, &payload));
    assert_eq!(sent(&events[0]), (OpCode::Pong, payload.to_vec()));
}

#[test]
fn peer_close_is_echoed() {
    let mut s = open();
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    let events = run(&mut s, &frame(true, OpCode::Close, &payload));
    assert_eq!(events.len(), 2);
    assert_eq!(
        sent(&events[0]),
        (OpCode::Close, 1000u16.to_be_bytes().to_vec())
    );
    assert_eq!(events[1], WsEvent::Closed);
    assert!(s.is_closed() && s.close(1000, "").is_none());

    let events = run(&mut open(), &frame(true, OpCode::Close, &[]));
    assert_eq!(sent(&events[0]), (OpCode::Close, vec![]));
    assert_eq!(events[1], WsEvent::Closed);
}

#[test]
fn bad_close_frames() {
    let close_with = |p: &[u8]| run(&mut open(), &frame(true, OpCode::Close, p));
    assert_fails_with(&close_with(&[0x03]), close::PROTOCOL_ERROR);
    assert_fails_with(&close_with(&1005u16.to_be_bytes()), close::PROTOCOL_ERROR);
    assert_fails_with(
        &close_with(&[0x03, 0xe8, 0xce, 0xba, 0xff]),
        close::INVALID_PAYLOAD,
    );
    let events = close_with(&4999u16.to_be_bytes());
    assert_eq!(sent(&events[0]).1, 4999u16.to_be_bytes());
}

#[test]
fn server_initiated_close_waits_for_peer() {
    let mut s = open();
    let frame_bytes = s.close(close::GOING_AWAY, "shutdown").unwrap();
    let (h, n) = FrameHeader::parse(&frame_bytes).unwrap().unwrap();
    assert_eq!(h.opcode, OpCode::Close);
    assert_eq!(&frame_bytes[n..n + 2], &1001u16.to_be_bytes());
    assert!(s.is_closing() && !s.is_closed());
    assert!(s.close(close::NORMAL, "").is_none());
    // Messages and pings while closing are dropped; the peer's close finishes it.
    let mut wire = text("late");
    wire.extend(frame(true, OpCode::Ping, b""));
    wire.extend(frame(true, OpCode::Close, &1001u16.to_be_bytes()));
    assert_eq!(run(&mut s, &wire), [WsEvent::Closed]);
    assert!(s.is_closed());
}

#[test]
fn server_ping_frame() {
    let bytes = open().ping(&[1; 200]);
    let (h, n) = FrameHeader::parse(&bytes).unwrap().unwrap();
    assert_eq!((h.opcode, h.payload_len, h.mask), (OpCode::Ping, 125, None));
    assert_eq!(bytes.len(), n + 125);
}

/// Splits `len` bytes into pieces at the given (sorted, clamped) cut points.
fn pieces(len: usize, cuts: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for p in points {
        out.push(start..p);
        start = p;
    }
    out.push(start..len);
    out
}

#[test]
fn parked_sessions_resume_where_they_were() {
    let mut s = open();
    assert_eq!(s.park(), Some(Parked::Open));
    let msg = text("hello");
    s.receive(&msg[..3], &mut Vec::new());
    assert_eq!(s.park(), None, "a frame is unfinished");
    let events = run(&mut s, &msg[3..]);
    assert_eq!(events, vec![WsEvent::Text("hello".into())]);
    let mut s = WsSession::unpark(WsLimits::default(), s.park().unwrap());
    assert!(s.close(1001, "bye").is_some());
    assert_eq!(s.park(), Some(Parked::Closing));
    let mut s = WsSession::unpark(WsLimits::default(), Parked::Closing);
    assert!(s.close(1000, "again").is_none(), "one close frame only");
    let events = run(&mut s, &frame(true, OpCode::Close, &[0x03, 0xe9]));
    assert_eq!(events, vec![WsEvent::Closed], "no echo: our close was sent");
    assert_eq!(s.park(), None, "closed sessions do not park");
}

proptest! {
    #[test]
    fn random_fragments_and_reads_reassemble(
        message in "\\PC{0,200}",
        frag_cuts in proptest::collection::vec(any::<usize>(), 0..6),
        read_cuts in proptest::collection::vec(any::<usize>(), 0..10),
        pings in any::<u8>(),
    ) {
        let bytes = message.as_bytes();
        let frags = pieces(bytes.len(), &frag_cuts);
        let mut wire = Vec::new();
        for (i, range) in frags.iter().enumerate() {
            let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
            wire.extend(frame(i + 1 == frags.len(), op, &bytes[range.clone()]));
            if pings & (1 << (i % 8)) != 0 {
                wire.extend(frame(true, OpCode::Ping, &[i as u8]));
            }
        }
        let mut s = open();
        let mut events = Vec::new();
        for range in pieces(wire.len(), &read_cuts) {
            s.receive(&wire[range], &mut events);
        }
        let texts: Vec<_> = events.iter().filter(|e| !matches!(e, WsEvent::Send(_))).collect();
        let expected = WsEvent::Text(message.clone());
        prop_assert_eq!(texts, vec![&expected]);
        prop_assert_eq!(s.buffered_capacity(), 0);
    }

    #[test]
    fn arbitrary_input_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut s = WsSession::new(WsLimits { max_frame_bytes: 100, max_message_bytes: 200, accept_binary: true });
        let mut events = Vec::new();
        for chunk in &chunks {
            s.receive(chunk, &mut events);
        }
        if let Some(i) = events.iter().position(|e| *e == WsEvent::Closed) {
            prop_assert_eq!(i + 1, events.len(), "nothing after Closed");
        }
    }
}
