//! Every 4xx the API gives, each with a JSON `{"error": …}` body, nothing changed by a refused
//! write, keep-alive kept after an API error; garbage on the TCP line port gets `ERROR:`.

mod common;

use std::io::Write;

use common::*;
use serde_json::{json, Value};

const UNKNOWN_MID: &str = "boc-riv-2000-01-01";

/// The bytes of one HTTP/1.1 request; `body` adds a Content-Length.
fn request(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: e2e\r\n");
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or("").as_bytes());
    bytes
}

/// Asserts the status and a JSON `{"error": "<non-empty text>"}` body; returns the text.
fn assert_error(r: &RawResponse, status: u16) -> String {
    assert_eq!(r.status, status, "{r:?}");
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r:?}"
    );
    let v = r.json();
    let text = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {r:?}"));
    assert!(!text.is_empty());
    assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
    text.to_string()
}

fn seq_of(server: &Server) -> Value {
    get_json(server, &format!("/1/match/{SAMPLE_MID}"))["seq"].clone()
}

fn post(conn: &mut RawHttp, token: Option<&str>, kind: &str, data: Value) -> RawResponse {
    let body = json!({"kind": kind, "data": data}).to_string();
    let path = format!("/1/match/{SAMPLE_MID}/events");
    conn.exchange(&request("POST", &path, token, Some(&body)))
}

#[test]
fn api_errors_keep_the_connection_alive() {
    let server = Server::start(&[]);
    post_sample(&server, 3);
    let mut c = RawHttp::connect(server.http);

    let r = c.exchange(&request(
        "POST",
        "/1/matches",
        Some(TOKEN),
        Some("{not json"),
    ));
    assert_error(&r, 400);
    let path = format!("/1/match/{SAMPLE_MID}/events");
    let r = c.exchange(&request("POST", &path, Some(TOKEN), Some("[1,2")));
    assert_error(&r, 400);

    let r = c.exchange(&request(
        "GET",
        &format!("/1/match/{UNKNOWN_MID}"),
        None,
        None,
    ));
    let text = assert_error(&r, 404);
    assert!(text.contains(UNKNOWN_MID), "{text}");
    let path = format!("/1/match/{UNKNOWN_MID}/events");
    let body = json!({"kind": "comment", "data": {"text": "hi"}}).to_string();
    assert_error(
        &c.exchange(&request("POST", &path, Some(TOKEN), Some(&body))),
        404,
    );
    let path = format!("/1/match/{UNKNOWN_MID}/history");
    assert_error(&c.exchange(&request("GET", &path, None, None)), 404);
    assert_error(&c.exchange(&request("GET", "/1/team/zzz", None, None)), 404);
    assert_error(
        &c.exchange(&request("GET", "/no/such/path", None, None)),
        404,
    );

    assert_error(
        &c.exchange(&request("DELETE", "/1/matches", Some(TOKEN), None)),
        405,
    );
    // GET on the events path is the Server-Sent Events stream (tests/e2e_sse.rs).
    let path = format!("/1/match/{SAMPLE_MID}/events");
    assert_error(&c.exchange(&request("PUT", &path, None, Some("{}"))), 405);
    assert_error(
        &c.exchange(&request("POST", "/1/checkin", None, Some("{}"))),
        405,
    );

    // Still the same connection, still answering.
    let r = c.exchange(&request("GET", "/healthz", None, None));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(seq_of(&server), 3);
}

#[test]
fn missing_or_wrong_token_is_401_and_changes_nothing() {
    // 17 failures from one address: past the default budget (10 a minute, then 429).
    let server = Server::start(&["--max-failed-logins-per-minute", "100"]);
    post_sample(&server, 3);
    let mut c = RawHttp::connect(server.http);
    for token in [
        None,
        Some("wrong"),
        Some("e2e-secret-token-but-longer"),
        Some(""),
    ] {
        let r = post(&mut c, token, "comment", json!({"text": "x"}));
        assert_error(&r, 401);
        let body = json!({"name": "Hacked", "division": "Z"}).to_string();
        let r = c.exchange(&request("PUT", "/1/team/elp", token, Some(&body)));
        assert_error(&r, 401);
        let body = json!({"home": "tig", "visit": "elp", "start_date": "2011-10-01"}).to_string();
        let r = c.exchange(&request("POST", "/1/matches", token, Some(&body)));
        assert_error(&r, 401);
        let r = c.exchange(&request(
            "DELETE",
            &format!("/1/match/{SAMPLE_MID}"),
            token,
            None,
        ));
        assert_error(&r, 401);
    }
    // A scheme other than Bearer.
    let mut raw = format!("DELETE /1/match/{SAMPLE_MID} HTTP/1.1\r\nHost: e2e\r\n").into_bytes();
    raw.extend_from_slice(format!("Authorization: Basic {TOKEN}\r\n\r\n").as_bytes());
    assert_error(&c.exchange(&raw), 401);

    assert_eq!(seq_of(&server), 3);
    assert_eq!(
        get_json(&server, "/1/team/elp")["name"],
        "Estudiantes de La Plata"
    );
    assert_eq!(get_json(&server, "/1/matches"), json!([SAMPLE_MID]));
    assert_eq!(
        get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"))
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn match_creation_conflicts_and_unknown_teams() {
    let server = Server::start(&[]);
    post_sample(&server, 0);
    let mut c = RawHttp::connect(server.http);
    let body = json!({"home": "elp", "visit": "tig", "start_date": "2011-09-10",
        "stadium": "again"})
    .to_string();
    assert_error(
        &c.exchange(&request("POST", "/1/matches", Some(TOKEN), Some(&body))),
        409,
    );
    let body = json!({"home": "elp", "visit": "boc", "start_date": "2011-09-11"}).to_string();
    let text = assert_error(
        &c.exchange(&request("POST", "/1/matches", Some(TOKEN), Some(&body))),
        422,
    );
    assert!(text.contains("boc"), "{text}");
    assert_eq!(get_json(&server, "/1/matches"), json!([SAMPLE_MID]));
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(
        m["stadium"], "Unknown Stadium",
        "the duplicate changed nothing"
    );
}

#[test]
fn impossible_events_are_422_and_change_nothing() {
    let server = Server::start(&[]);
    post_sample(&server, 5);
    let mut c = RawHttp::connect(server.http);
    let before = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    let start = sample_events()[0].1.clone();
    let refused = [
        ("goal", json!({"team": "boc", "player": 7})),
        ("card", json!({"card": "red", "team": "elp", "player": 99})),
        // #25 Albil was sent off at seq 4: he is no longer on the field.
        ("card", json!({"card": "red", "team": "elp", "player": 25})),
        (
            "substitution",
            json!({"team": "elp", "player_in": [30, "X"], "player_out": 99}),
        ),
        ("start", start),
        ("nonsense", json!({})),
        ("status", json!({})),
    ];
    for (kind, data) in refused {
        let r = post(&mut c, Some(TOKEN), kind, data.clone());
        assert_error(&r, 422);
        let after = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
        assert_eq!(after, before, "{kind} {data} changed the match");
    }
    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history.as_array().unwrap().len(), 5);
    // The next accepted event still gets seq 6.
    post_events(&mut server.admin(), 6..=6);
}

#[test]
fn after_stop_only_comments_are_accepted() {
    let server = Server::start(&[]);
    post_sample(&server, 31);
    let mut c = RawHttp::connect(server.http);
    for (kind, data) in [
        ("goal", json!({"team": "elp", "player": 9})),
        ("continue", json!({})),
        ("stop", json!({})),
        (
            "card",
            json!({"card": "yellow", "team": "tig", "player": 7}),
        ),
    ] {
        assert_error(&post(&mut c, Some(TOKEN), kind, data), 422);
        assert_eq!(seq_of(&server), 31);
    }
    let r = post(
        &mut c,
        Some(TOKEN),
        "comment",
        json!({"text": "what a match"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.json()["seq"], 32);
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(
        (m["home_score"].as_u64(), m["visit_score"].as_u64()),
        (Some(1), Some(3))
    );
}

#[test]
fn request_framing_errors() {
    let server = Server::start(&["--max-body-bytes", "1024"]);
    post_sample(&server, 1);

    // POST without Content-Length → 411.
    let mut c = RawHttp::connect(server.http);
    let raw = format!(
        "POST /1/match/{SAMPLE_MID}/events HTTP/1.1\r\nHost: e2e\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    );
    assert_error(&c.exchange(raw.as_bytes()), 411);

    // A body over --max-body-bytes → 413, whether announced or not yet sent.
    let mut c = RawHttp::connect(server.http);
    let text = "x".repeat(2000);
    let body = json!({"kind": "comment", "data": {"text": text}}).to_string();
    let path = format!("/1/match/{SAMPLE_MID}/events");
    assert_error(
        &c.exchange(&request("POST", &path, Some(TOKEN), Some(&body))),
        413,
    );
    let mut c = RawHttp::connect(server.http);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: e2e\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100000000\r\n\r\n"
    );
    assert_error(&c.exchange(head.as_bytes()), 413);
    // A body just under the limit is fine.
    let text = "y".repeat(900);
    let body = json!({"kind": "comment", "data": {"text": text}}).to_string();
    assert!(body.len() <= 1024);
    let r =
        RawHttp::connect(server.http).exchange(&request("POST", &path, Some(TOKEN), Some(&body)));
    assert_eq!(r.status, 201, "{r:?}");

    // A request line over 8 KiB → 414.
    let mut c = RawHttp::connect(server.http);
    let long = format!("/1/team/{}", "a".repeat(9000));
    assert_error(&c.exchange(&request("GET", &long, None, None)), 414);

    // Headers over 16 KiB → 431.
    let mut c = RawHttp::connect(server.http);
    let mut raw = b"GET /healthz HTTP/1.1\r\nHost: e2e\r\n".to_vec();
    for i in 0..20 {
        raw.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert_error(&c.exchange(&raw), 431);

    // Not HTTP at all → 400.
    let mut c = RawHttp::connect(server.http);
    assert_error(&c.exchange(b"\x16\x03\x01 hello there\r\n\r\n"), 400);

    // Only the one comment above was accepted.
    assert_eq!(seq_of(&server), 2);
}

#[test]
fn garbage_on_the_line_port_gets_error_and_close() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"VERSION:2:CONNECT:u:MATCH:elp-tig-2011-09-10\r\n",
        b"VERSION:1:CONNECT::MATCH:\r\n",
        b"\xff\xfe\xfd\n",
    ] {
        let mut s = LineClient::connect_raw(server.tcp);
        s.write_all(garbage).unwrap();
        let (bytes, closed) = drain(&mut s, WAIT);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("ERROR: ") && text.ends_with("\r\n"),
            "{garbage:?} → {text:?}"
        );
        assert_eq!(text.matches("\r\n").count(), 1, "{text:?}");
        assert!(closed, "{garbage:?}: connection left open");
    }
    // A line that never ends is cut off too.
    let mut s = LineClient::connect_raw(server.tcp);
    s.write_all(&[b'A'; 4096]).unwrap();
    let (bytes, closed) = drain(&mut s, WAIT);
    assert!(
        String::from_utf8_lossy(&bytes).starts_with("ERROR: "),
        "{bytes:?}"
    );
    assert!(closed);
    // Unknown match on the line port.
    let mut s = LineClient::connect_raw(server.tcp);
    s.write_all(format!("VERSION:1:CONNECT:u:MATCH:{UNKNOWN_MID}\r\n").as_bytes())
        .unwrap();
    let (bytes, closed) = drain(&mut s, WAIT);
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        format!("ERROR: match not found: {UNKNOWN_MID}\r\n")
    );
    assert!(closed);
    // Input after CONNECT.
    let mut line = server.line(SAMPLE_MID);
    assert_eq!(line.next_block().unwrap().kind, "status");
    let mut s = LineClient::connect_raw(server.tcp);
    s.write_all(format!("VERSION:1:CONNECT:u:MATCH:{SAMPLE_MID}\r\nmore\r\n").as_bytes())
        .unwrap();
    let (bytes, closed) = drain(&mut s, WAIT);
    assert!(
        String::from_utf8_lossy(&bytes).contains("ERROR: "),
        "{bytes:?}"
    );
    assert!(closed);
}
