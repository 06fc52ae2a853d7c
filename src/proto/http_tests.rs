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
