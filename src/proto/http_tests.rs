//! Unit and property tests for [`parse_request`].

use super::*;
use proptest::prelude::*;

fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
    parse_request(buf, &HttpLimits::default())
}

fn parse_ok(buf: &[u8]) -> (Request, usize) {
    parse(buf).unwrap().unwrap()
}

#[test]
fn simple_get() {
    let raw = b"GET /1/match/elp-tig?since=3&x HTTP/1.1\r\nHost: a\r\nX-Thing: v\r\n\r\n";
    let (req, n) = parse_ok(raw);
    assert_eq!(n, raw.len());
    assert_eq!((req.method.as_str(), req.version), ("GET", 1));
    assert_eq!(req.path(), "/1/match/elp-tig");
    assert_eq!(req.query_param("since"), Some("3"));
    assert_eq!(req.query_param("x"), Some(""));
    assert_eq!(req.query_param("nope"), None);
    assert_eq!(req.header("x-thing"), Some(&b"v"[..]));
    assert_eq!(req.header_str("HOST"), Some("a"));
    assert!(req.keep_alive && req.body.is_empty());
}

#[test]
fn incomplete_head_or_body_needs_more() {
    let raw = b"POST /1/matches HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    for len in 0..raw.len() {
        assert_eq!(parse(&raw[..len]), Ok(None), "len {len}");
    }
    let (req, n) = parse_ok(raw);
    assert_eq!((req.body.as_slice(), n), (&b"hello"[..], raw.len()));
}

#[test]
fn pipelined_requests() {
    let raw = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\nGET /c HT";
    let (first, n) = parse_ok(raw);
    assert_eq!((first.path(), first.body.as_slice()), ("/a", &b"hi"[..]));
    let (second, m) = parse_ok(&raw[n..]);
    assert_eq!(second.path(), "/b");
    assert_eq!(parse(&raw[n + m..]), Ok(None));
}

#[test]
fn keep_alive_rules() {
    let ka = |raw: &[u8]| parse_ok(raw).0.keep_alive;
    assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.1\r\nConnection: Upgrade, Close\r\n\r\n"));
    assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
    assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
}

#[test]
fn limits_map_to_statuses() {
    let limits = HttpLimits {
        max_request_line: 20,
        max_head_bytes: 60,
        max_headers: 2,
        max_body_bytes: 4,
    };
    let p = |raw: &[u8]| parse_request(raw, &limits).map_err(|e| e.status());
    // Request line: exactly 20 is fine, 21 is not, even before the line ends.
    assert!(p(b"GET /aaaaaa HTTP/1.1\r\n\r\n").unwrap().is_some());
    assert_eq!(p(b"GET /aaaaaaa HTTP/1.1\r\n\r\n"), Err(414));
    assert_eq!(p(b"GET /aaaaaaaaaaaaaaaaaaaaaaaa"), Err(414));
    assert_eq!(p(b"GET / HTTP/1.1\r\n"), Ok(None));
    // Head size and header count.
    assert_eq!(
        p(b"GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n"),
        Err(431)
    );
    let big = b"GET / HTTP/1.1\r\nA: 0123456789012345678901234567890123456789\r\n";
    assert_eq!(p(big), Err(431));
    // Body size is refused from the header, before the body arrives.
    assert_eq!(p(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"), Err(413));
    assert_eq!(
        p(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n").unwrap(),
        None
    );
}

#[test]
fn framing_errors() {
    let status = |raw: &[u8]| parse(raw).unwrap_err().status();
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        411
    );
    assert_eq!(status(b"POST / HTTP/1.1\r\n\r\n"), 411);
    assert_eq!(status(b"PUT / HTTP/1.1\r\n\r\n"), 411);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
        400
    );
    for bad in ["-1", "+1", "1 1", "0x10", "", "99999999999999999999"] {
        let raw = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(status(raw.as_bytes()), 400, "{bad:?}");
    }
    assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), 400);
    assert_eq!(status(b"G@T / HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn token_lists() {
    let (req, _) = parse_ok(b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n\r\n");
    assert!(req.has_token("connection", "upgrade"));
    assert!(!req.has_token("connection", "close"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((_, n))) = parse(&buf) {
            prop_assert!(n <= buf.len());
        }
    }

    #[test]
    fn any_split_of_a_valid_request(cut in 0usize..80, body in "[a-z]{0,10}") {
        let raw = format!("PUT /1/team/x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let cut = cut.min(raw.len());
        if cut < raw.len() {
            prop_assert_eq!(parse(&raw.as_bytes()[..cut]), Ok(None));
        }
        let (req, n) = parse_ok(raw.as_bytes());
        prop_assert_eq!(n, raw.len());
        prop_assert_eq!(req.body, body.into_bytes());
    }
}

// ------------------------------------------------------------------ RequestReader

/// Feeds `raw` to a reader in `chunks`-byte pieces, collecting requests until an error.
/// Each request is given back to the reader as the server does ([`RequestReader::recycle`]),
/// so the next one is parsed into its allocations.
fn read_all(raw: &[u8], chunk: usize, limits: &HttpLimits) -> (Vec<Request>, Option<HttpError>) {
    let mut reader = RequestReader::new();
    let mut out = Vec::new();
    for piece in raw.chunks(chunk.max(1)) {
        reader.extend(piece);
        loop {
            match reader.next_request(limits) {
                Ok(Some(r)) => {
                    reader.recycle(r.clone());
                    out.push(r);
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// What repeated [`parse_request`] calls make of the whole of `raw`.
fn parse_all(raw: &[u8], limits: &HttpLimits) -> (Vec<Request>, Option<HttpError>) {
    let mut rest = raw;
    let mut out = Vec::new();
    loop {
        match parse_request(rest, limits) {
            Ok(Some((r, n))) => {
                out.push(r);
                rest = &rest[n..];
            }
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

#[test]
fn reader_gives_the_same_requests_whatever_the_reads() {
    let raw = b"\r\nPOST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\nHost: x\n\nHEAD /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /d HT";
    let limits = HttpLimits::default();
    let (expected, err) = parse_all(raw, &limits);
    assert_eq!(err, None);
    assert_eq!(expected.len(), 3);
    for chunk in 1..=raw.len() {
        let (got, err) = read_all(raw, chunk, &limits);
        assert_eq!(err, None, "chunk {chunk}");
        assert_eq!(got, expected, "chunk {chunk}");
    }
}

#[test]
fn a_recycled_request_leaves_nothing_behind_in_the_next() {
    let limits = HttpLimits::default();
    let mut reader = RequestReader::new();
    reader.extend(b"POST /long/target HTTP/1.1\r\nA: 1\r\nB: 2\r\nContent-Length: 3\r\n\r\nxyz");
    let first = reader.next_request(&limits).unwrap().unwrap();
    reader.recycle(first);
    reader.extend(b"GET / HTTP/1.0\r\nH: v\r\n\r\n");
    let second = reader.next_request(&limits).unwrap().unwrap();
    let fresh = parse_request(b"GET / HTTP/1.0\r\nH: v\r\n\r\n", &limits)
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(second, fresh);
    // A request holding much memory is not kept for the next one.
    let mut big = second.clone();
    big.headers
        .push(("X".into(), vec![b'x'; 4 * MAX_SPARE_BYTES]));
    reader.recycle(big);
    assert!(reader.spare.is_none());
}

#[test]
fn reader_keeps_what_follows_for_the_next_phase() {
    let mut reader = RequestReader::new();
    reader.extend(b"GET /1/ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x85abc");
    let r = reader
        .next_request(&HttpLimits::default())
        .unwrap()
        .unwrap();
    assert_eq!(r.path(), "/1/ws");
    assert_eq!(reader.pending(), b"\x81\x85abc");
    assert!(!reader.is_empty());
    assert_eq!(reader.into_pending(), b"\x81\x85abc");
}

#[test]
fn reader_applies_the_limits() {
    let limits = HttpLimits {
        max_request_line: 32,
        max_head_bytes: 64,
        max_headers: 4,
        max_body_bytes: 8,
    };
    let long_line = [b"GET /".as_slice(), &[b'a'; 40], b" HTTP/1.1\r\n\r\n"].concat();
    let no_newline = [b"GET /".as_slice(), &[b'a'; 40]].concat();
    let big_head = [
        b"GET / HTTP/1.1\r\nX: ".as_slice(),
        &[b'v'; 60],
        b"\r\n\r\n",
    ]
    .concat();
    let endless_head = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'v'; 60]].concat();
    let cases: [(&[u8], HttpError); 6] = [
        (&long_line, HttpError::RequestLineTooLong),
        (&no_newline, HttpError::RequestLineTooLong),
        (&big_head, HttpError::HeadTooLarge),
        (&endless_head, HttpError::HeadTooLarge),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\n",
            HttpError::BodyTooLarge,
        ),
        (
            b"\x16\x03\x01 garbage\r\n",
            HttpError::Malformed("invalid token in request line"),
        ),
    ];
    for (raw, want) in cases {
        for chunk in [1, 3, raw.len()] {
            let (got, err) = read_all(raw, chunk, &limits);
            assert!(got.is_empty());
            assert_eq!(
                err.as_ref(),
                Some(&want),
                "{:?} chunk {chunk}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}

#[test]
fn reader_refuses_a_garbage_request_line_before_the_head_ends() {
    let mut reader = RequestReader::new();
    reader.extend(b"\x00\x01\x02 / HTTP/1.1\r\nHost: a\r\n");
    assert!(matches!(
        reader.next_request(&HttpLimits::default()),
        Err(HttpError::Malformed(_))
    ));
}

#[test]
fn reader_work_stays_linear_in_a_long_pipeline() {
    // 10,000 pipelined requests arriving a few bytes at a time: each byte is scanned a
    // bounded number of times and the buffer never holds much more than one read.
    let one = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    let raw = one.repeat(10_000);
    let mut reader = RequestReader::new();
    let mut count = 0;
    let mut max_buffered = 0;
    for piece in raw.chunks(7) {
        reader.extend(piece);
        while let Some(r) = reader.next_request(&HttpLimits::default()).unwrap() {
            assert_eq!(r.path(), "/healthz");
            count += 1;
        }
        max_buffered = max_buffered.max(reader.buf.capacity());
    }
    assert_eq!(count, 10_000);
    assert!(reader.is_empty());
    assert!(
        max_buffered <= 4 * one.len(),
        "buffer grew to {max_buffered}"
    );
}

proptest! {
    #[test]
    fn reader_matches_parse_request_on_any_split(
        raw in prop::collection::vec(prop_oneof![
            Just(b"GET /a HTTP/1.1\r\n\r\n".to_vec()),
            Just(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"HEAD / HTTP/1.0\nConnection: keep-alive\n\n".to_vec()),
            Just(b"GET /c?q=1 HTTP/1.1\r\nA: 1\r\nBb: 22\r\nC: 333\r\n\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ], 0..12).prop_map(|v| v.concat()),
        chunk in 1usize..40,
    ) {
        let limits = HttpLimits { max_request_line: 64, max_head_bytes: 128, max_headers: 8, max_body_bytes: 16 };
        let (expected, expected_err) = parse_all(&raw, &limits);
        let (got, err) = read_all(&raw, chunk, &limits);
        // Every request the reader yields is one parse_request yields, in order.
        prop_assert!(got.len() <= expected.len());
        prop_assert_eq!(&got[..], &expected[..got.len()]);
        if err.is_some() {
            prop_assert!(expected_err.is_some(), "reader refused what parse_request accepts");
        } else if expected_err.is_none() {
            prop_assert_eq!(got.len(), expected.len());
        }
    }
}

#[test]
fn path_segments_split_like_the_routes_expect() {
    let split = |p: &str| {
        super::PathSegments::of(p)
            .as_slice()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(split("/1/match/x"), ["1", "match", "x"]);
    assert_eq!(split("//1/match/x/"), ["1", "match", "x", ""]);
    assert_eq!(split("/"), [""]);
    assert_eq!(split(""), [""]);
    // A path longer than any route keeps its rest in the last segment: it matches no route.
    assert_eq!(
        split("/a/b/c/d/e/f/g/h"),
        ["a", "b", "c", "d", "e", "f/g/h"]
    );
    for p in ["/1/match/x/history", "/a/b/c/d/e", "/1//2"] {
        let all: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        assert_eq!(split(p), all, "{p}");
    }
}
