//! The WebSocket watch protocol: resuming with `since`, several matches on one connection,
//! unknown and ended matches, and late watchers joining a running match without gap or repeat.

mod common;

use std::time::Duration;

use common::*;
use matchstream::feed::http_client::HttpClient;
use serde_json::{json, Value};

const OTHER_MID: &str = "tig-elp-2011-09-17";

/// Creates a second match between the same teams (tig at home).
fn create_other(admin: &mut HttpClient) {
    let body = json!({"home": "tig", "visit": "elp", "start_date": "2011-09-17",
        "stadium": "Monumental de Victoria"})
    .to_string();
    let r = admin.request("POST", "/1/matches", Some(&body)).unwrap();
    assert_eq!(r.status, 201, "{r:?}");
}

/// The `start` data of the second match (the sample's lineups, swapped).
fn other_start() -> Value {
    let start = &sample_events()[0].1;
    json!({"home_players": start["visit_players"], "visit_players": start["home_players"]})
}

/// Sends a watch that fails and waits for its error: every command sent before it has been
/// handled by the server when this returns.
fn sync(ws: &mut Watcher) {
    ws.watch("xxx-yyy-1999-01-01", None);
    let v = ws.next_json();
    assert_eq!(v["type"], "error", "{v}");
}

#[test]
fn resume_with_since_then_live_without_gap_or_repeat() {
    let server = Server::start(&[]);
    post_sample(&server, 10);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, Some(4));
    let status = ws.expect_status(SAMPLE_MID);
    assert_eq!(status["seq"], 10, "{status}");
    assert_eq!(status["state"]["seq"], 10, "{status}");
    for seq in 5..=10 {
        ws.expect_event(SAMPLE_MID, seq);
    }
    post_events(&mut server.admin(), 11..=31);
    for seq in 11..=31 {
        ws.expect_event(SAMPLE_MID, seq);
    }
    assert_eq!(ws.expect_close().0, 1000);
}

#[test]
fn two_matches_on_one_connection_and_unwatch() {
    let server = Server::start(&[]);
    post_sample(&server, 0);
    let mut admin = server.admin();
    create_other(&mut admin);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.watch(OTHER_MID, None);
    let mut statuses = [ws.next_json(), ws.next_json()];
    statuses.sort_by_key(|v| v["match"].as_str().unwrap().to_string());
    assert_eq!(statuses[0]["type"], "status");
    assert_eq!(statuses[0]["match"], SAMPLE_MID);
    assert_eq!(statuses[1]["type"], "status");
    assert_eq!(statuses[1]["match"], OTHER_MID);

    let events = sample_events();
    let other: Vec<(&str, Value)> = vec![
        ("start", other_start()),
        ("shot", json!({"team": "tig", "player": 9})),
        ("goal", json!({"team": "elp", "player": 9})),
        ("corner", json!({"team": "tig"})),
    ];
    for i in 0..4 {
        let (kind, data) = &events[i];
        assert_eq!(post_event(&mut admin, SAMPLE_MID, kind, data).status, 201);
        let (kind, data) = &other[i];
        assert_eq!(post_event(&mut admin, OTHER_MID, kind, data).status, 201);
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let v = ws.next_json();
        assert_eq!(v["type"], "event", "{v}");
        match v["match"].as_str().unwrap() {
            SAMPLE_MID => a.push(v["seq"].as_u64().unwrap()),
            OTHER_MID => b.push(v["seq"].as_u64().unwrap()),
            other => panic!("event of {other}"),
        }
    }
    assert_eq!(a, [1, 2, 3, 4]);
    assert_eq!(b, [1, 2, 3, 4]);

    ws.unwatch(OTHER_MID);
    sync(&mut ws);
    let r = post_event(&mut admin, OTHER_MID, "throwin", &json!({"team": "elp"}));
    assert_eq!(r.status, 201);
    post_events(&mut admin, 5..=5);
    ws.expect_event(SAMPLE_MID, 5);
    ws.expect_silence(Duration::from_millis(300));
    let m = get_json(&server, &format!("/1/match/{OTHER_MID}"));
    assert_eq!(m["seq"], 5, "the unwatched match went on");
    assert_eq!(
        (m["home_score"].as_u64(), m["visit_score"].as_u64()),
        (Some(0), Some(1))
    );
}

#[test]
fn unknown_match_is_an_error_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    post_sample(&server, 3);
    let mut ws = server.ws();
    ws.watch("nope-nada-2000-01-01", None);
    let v = ws.next_json();
    assert_eq!(
        v,
        json!({"type": "error", "error": "match not found: nope-nada-2000-01-01"})
    );
    ws.watch(SAMPLE_MID, None);
    let status = ws.expect_status(SAMPLE_MID);
    assert_eq!(status["seq"], 3);
    post_events(&mut server.admin(), 4..=4);
    ws.expect_event(SAMPLE_MID, 4);
}

#[test]
fn bad_command_is_an_error_and_the_connection_stays_open() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut ws = server.ws();
    ws.send(&json!({"command": "dance"}));
    let v = ws.next_json();
    assert_eq!(v["type"], "error", "{v}");
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 1);
}

#[test]
fn watching_an_ended_match_sends_status_then_close() {
    let server = Server::start(&[]);
    post_sample(&server, 31);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    let status = ws.expect_status(SAMPLE_MID);
    assert_eq!(status["seq"], 31);
    assert_eq!(status["state"]["period"], "ended");
    assert_eq!(ws.expect_close().0, 1000);

    // With `since`, the missed events come before the close.
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, Some(29));
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 31);
    ws.expect_event(SAMPLE_MID, 30);
    ws.expect_event(SAMPLE_MID, 31);
    assert_eq!(ws.expect_close().0, 1000);

    // The line protocol: status block, then the server closes.
    let mut line = server.line(SAMPLE_MID);
    let block = line.next_block().expect("status block");
    assert_eq!(block.field("period"), Some("ended"));
    line.expect_eof();
}

#[test]
fn late_watchers_get_exactly_the_events_after_their_status() {
    let server = Server::start(&["--workers", "2"]);
    post_sample(&server, 0);
    let mut admin = server.admin();
    let mut first = server.ws();
    first.watch(SAMPLE_MID, None);
    assert_eq!(first.expect_status(SAMPLE_MID)["seq"], 0);
    post_events(&mut admin, 1..=5);
    // Several late watchers, so that some share a worker with `first` (answered from the
    // worker's replica) and some do not (answered by the sequencer).
    let mut late: Vec<Watcher> = (0..4).map(|_| server.ws()).collect();
    for w in &mut late {
        w.watch(SAMPLE_MID, None);
        let status = w.expect_status(SAMPLE_MID);
        assert_eq!(status["seq"], 5, "{status}");
        assert_eq!(status["state"]["visit_score"], 1, "{status}");
    }
    post_events(&mut admin, 6..=10);
    for seq in 1..=10 {
        first.expect_event(SAMPLE_MID, seq);
    }
    for w in &mut late {
        for seq in 6..=10 {
            w.expect_event(SAMPLE_MID, seq);
        }
        w.expect_silence(Duration::from_millis(100));
    }
}

#[test]
fn late_watchers_racing_with_events_miss_nothing() {
    let server = Server::start(&["--workers", "2"]);
    post_sample(&server, 1);
    let mut anchor = server.ws();
    anchor.watch(SAMPLE_MID, None);
    anchor.expect_status(SAMPLE_MID);
    let url = server.url();
    let poster = std::thread::spawn(move || {
        let mut admin = HttpClient::new(&url, Some(TOKEN.to_string())).unwrap();
        post_events(&mut admin, 2..=31);
    });
    // Join while events are being posted: each watcher must see status at N, then N+1…31.
    let mut watchers = Vec::new();
    for _ in 0..6 {
        let mut w = server.ws();
        w.watch(SAMPLE_MID, None);
        watchers.push(w);
        std::thread::sleep(Duration::from_millis(5));
    }
    poster.join().expect("poster");
    for w in &mut watchers {
        let status = w.expect_status(SAMPLE_MID);
        let from = status["seq"].as_u64().unwrap();
        if from == 31 {
            assert_eq!(w.expect_close().0, 1000);
            continue;
        }
        for seq in from + 1..=31 {
            w.expect_event(SAMPLE_MID, seq);
        }
        assert_eq!(w.expect_close().0, 1000);
    }
}
