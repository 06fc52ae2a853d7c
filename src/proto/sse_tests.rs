//! Unit and property tests of the event-stream encoder, resume points and parser.

use super::*;
use proptest::prelude::*;

#[test]
fn messages_encode_as_the_format_says() {
    let mut out = Vec::new();
    encode_message(&mut out, "event", Some(7), r#"{"seq":7}"#);
    assert_eq!(out, b"event: event\nid: 7\ndata: {\"seq\":7}\n\n");
    out.clear();
    encode_message(&mut out, "status", None, "a\nb\r\nc");
    assert_eq!(out, b"event: status\ndata: a\ndata: b\ndata: c\n\n");
    out.clear();
    encode_comment(&mut out, "keepalive\n");
    assert_eq!(out, b": keepalive \n\n");
    let head = String::from_utf8(response_head()).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"));
    assert!(head.ends_with("\r\n\r\nretry: 1000\n\n"));
}

#[test]
fn resume_points() {
    assert_eq!(resume_after(None, None), Ok(None));
    assert_eq!(resume_after(None, Some("12")), Ok(Some(12)));
    assert_eq!(
        resume_after(Some(b" 30 "), Some("12")),
        Ok(Some(30)),
        "Last-Event-ID wins"
    );
    assert_eq!(
        resume_after(Some(b""), Some("12")),
        Ok(Some(12)),
        "empty = none"
    );
    assert_eq!(
        resume_after(Some(b"x"), None),
        Err(ResumeError::BadLastEventId)
    );
    assert_eq!(
        resume_after(Some(b"-1"), None),
        Err(ResumeError::BadLastEventId)
    );
    assert_eq!(resume_after(None, Some("1e3")), Err(ResumeError::BadSince));
    assert_eq!(
        resume_after(Some(b"99999999999999999999"), None),
        Err(ResumeError::BadLastEventId)
    );
}

#[test]
fn accept_header() {
    assert!(accepts_event_stream(None));
    assert!(accepts_event_stream(Some(b"text/event-stream")));
    assert!(accepts_event_stream(Some(
        b"application/json;q=0.9, Text/Event-Stream"
    )));
    assert!(accepts_event_stream(Some(b"*/*")));
    assert!(!accepts_event_stream(Some(b"application/json")));
}

#[test]
fn parser_reads_what_browsers_read() {
    let stream = b"retry: 1000\n\n: keepalive\n\nevent: status\nid: 3\ndata: {\"a\":1}\n\n\
        data: x\r\ndata: y\r\rid: 4\nevent: event\ndata\n\n";
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    parser.feed(stream, &mut out).unwrap();
    assert_eq!(parser.comments(), 1);
    assert_eq!(
        out,
        [
            SseMessage {
                event: "status".into(),
                id: Some("3".into()),
                data: "{\"a\":1}".into()
            },
            SseMessage {
                event: "message".into(),
                id: None,
                data: "x\ny".into()
            },
            SseMessage {
                event: "event".into(),
                id: Some("4".into()),
                data: String::new()
            },
        ]
    );
}

#[test]
fn parser_bounds_a_line() {
    let mut parser = SseParser::new();
    let mut out = Vec::new();
    let long = vec![b'a'; MAX_LINE + 1];
    assert_eq!(parser.feed(&long, &mut out), Err(SseError::LineTooLong));
    let mut parser = SseParser::new();
    assert_eq!(
        parser.feed(b"data: \xff\n", &mut out),
        Err(SseError::NotUtf8)
    );
}

proptest! {
    #[test]
    fn encoded_messages_parse_back_in_any_chunking(
        messages in proptest::collection::vec(("[a-z]{1,8}", proptest::option::of(0u64..1000), "[ -~\n]{0,60}"), 0..8),
        cut in any::<prop::sample::Index>(),
        crlf in any::<bool>(),
    ) {
        let mut wire = Vec::new();
        for (event, id, data) in &messages {
            encode_message(&mut wire, event, *id, data);
            encode_comment(&mut wire, "k");
        }
        if crlf {
            wire = String::from_utf8(wire).unwrap().replace('\n', "\r\n").into_bytes();
        }
        let cut = cut.index(wire.len() + 1);
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        parser.feed(&wire[..cut], &mut out).unwrap();
        parser.feed(&wire[cut..], &mut out).unwrap();
        let expected: Vec<SseMessage> = messages
            .iter()
            .map(|(e, id, d)| SseMessage { event: e.clone(), id: id.map(|i| i.to_string()), data: d.clone() })
            .collect();
        prop_assert_eq!(out, expected);
        prop_assert_eq!(parser.comments(), messages.len() as u64);
    }

    #[test]
    fn parser_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6)) {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for c in &chunks {
            if parser.feed(c, &mut out).is_err() {
                break;
            }
        }
    }
}
