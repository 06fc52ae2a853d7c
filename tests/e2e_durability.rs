//! Durability: after a graceful restart or a `kill -9`, every acknowledged (201) event and the
//! match state are there, and sequence numbers continue without gap — with the WAL synced in
//! its own thread (the default) and in each commit (`--wal-sync-thread false`).

mod common;

use common::*;
use matchstream::feed::http_client::HttpClient;
use serde_json::{json, Value};

fn history(server: &Server) -> Vec<Value> {
    get_json(server, &format!("/1/match/{SAMPLE_MID}/history"))
        .as_array()
        .expect("history list")
        .clone()
}

#[test]
fn graceful_restart_keeps_state_and_seq_continues() {
    let mut server = Server::start(&[]);
    post_sample(&server, 10);
    let before = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    server.restart();
    let after = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(after, before, "match state after restart");
    assert_eq!(after["seq"], 10);
    assert_eq!(get_json(&server, "/1/matches"), json!([SAMPLE_MID]));
    assert_eq!(get_json(&server, "/1/team/tig")["name"], "Tigre");

    // A watcher resuming after the restart gets the missed events, then live ones.
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, Some(8));
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 10);
    ws.expect_event(SAMPLE_MID, 9);
    ws.expect_event(SAMPLE_MID, 10);
    post_events(&mut server.admin(), 11..=11);
    ws.expect_event(SAMPLE_MID, 11);

    let events = sample_events();
    let h = history(&server);
    assert_eq!(h.len(), 11);
    for (i, e) in h.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["kind"], events[i].0.as_str());
        // Players given by number come back with their name filled in: compare the team.
        assert_eq!(
            e["data"]["team"],
            events[i].1["team"],
            "data of event {}",
            i + 1
        );
    }
}

#[test]
fn kill9_loses_no_acknowledged_event() {
    let mut server = Server::start(&[]);
    post_sample(&server, 10);
    server.restart();
    post_events(&mut server.admin(), 11..=20);
    server.kill9();
    server.restart();
    let events = sample_events();
    let h = history(&server);
    assert_eq!(h.len(), 20, "every acknowledged event after kill -9");
    for (i, e) in h.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["kind"], events[i].0.as_str());
    }
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(m["seq"], 20);
    assert_eq!(
        (m["home_score"].as_u64(), m["visit_score"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(m["period"], "first");
    post_events(&mut server.admin(), 21..=31);
    assert_eq!(
        get_json(&server, &format!("/1/match/{SAMPLE_MID}"))["period"],
        "ended"
    );
}

#[test]
fn kill9_while_posting_loses_no_acknowledged_event() {
    let mut server = Server::start(&[]);
    post_sample(&server, 1);
    let url = server.url();
    let poster = std::thread::spawn(move || post_until_killed(&url, "comment"));
    wait_until(WAIT, "some comments acknowledged", || {
        get_json(&server, &format!("/1/match/{SAMPLE_MID}"))["seq"]
            .as_u64()
            .unwrap()
            > 50
    });
    server.kill9();
    let acked = poster.join().expect("poster thread");
    assert!(acked.len() >= 50, "only {} acknowledged", acked.len());
    server.restart();
    let h = history(&server);
    assert!(
        h.len() > acked.len(),
        "{} stored, {} acked",
        h.len(),
        acked.len()
    );
    for (i, e) in h.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "no gap in the stored log");
    }
    for (seq, text) in &acked {
        let e = &h[*seq as usize - 1];
        assert_eq!(e["data"]["text"], text.as_str(), "acknowledged event {seq}");
    }
    // And the next event continues the sequence.
    let r = post_event(
        &mut server.admin(),
        SAMPLE_MID,
        "comment",
        &json!({"text": "after"}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(body_json(&r)["seq"], h.len() as u64 + 1);
}

#[test]
fn kill9_while_eight_publishers_post_loses_no_acknowledged_event() {
    eight_publishers_then_kill9(&["--wal-restart-commits", "20"]);
}

#[test]
fn kill9_while_eight_publishers_post_with_the_wal_synced_in_each_commit_loses_nothing() {
    eight_publishers_then_kill9(&["--wal-sync-thread", "false", "--wal-restart-commits", "20"]);
}

/// 8 publishers post comments until the server is killed; after the restart every
/// acknowledged one is at its seq, the log has no gap and the state matches it.
fn eight_publishers_then_kill9(flags: &[&str]) {
    let mut server = Server::start(flags);
    post_sample(&server, 1);
    let posters: Vec<_> = (0..8)
        .map(|p| {
            let url = server.url();
            std::thread::spawn(move || post_until_killed(&url, &format!("publisher {p} comment")))
        })
        .collect();
    wait_until(WAIT, "some comments acknowledged", || {
        get_json(&server, &format!("/1/match/{SAMPLE_MID}"))["seq"]
            .as_u64()
            .unwrap()
            > 400
    });
    server.kill9();
    let acked: Vec<(u64, String)> = posters
        .into_iter()
        .flat_map(|t| t.join().expect("poster thread"))
        .collect();
    assert!(acked.len() >= 400, "only {} acknowledged", acked.len());
    server.restart();
    let h = history(&server);
    assert!(
        h.len() >= acked.len(),
        "{} stored, {} acked",
        h.len(),
        acked.len()
    );
    for (i, e) in h.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "no gap in the stored log");
    }
    for (seq, text) in &acked {
        let e = &h[*seq as usize - 1];
        assert_eq!(e["data"]["text"], text.as_str(), "acknowledged event {seq}");
    }
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(m["seq"], h.len() as u64, "the state matches the log");
}

/// Posts comments `"{label} {i}"` to the sample match until the server stops answering;
/// returns the acknowledged ones with their seqs.
fn post_until_killed(url: &str, label: &str) -> Vec<(u64, String)> {
    let mut admin = HttpClient::new(url, Some(TOKEN.to_string())).unwrap();
    let mut acked: Vec<(u64, String)> = Vec::new();
    for i in 0..100_000 {
        let text = format!("{label} {i}");
        let body = json!({"kind": "comment", "data": {"text": text}}).to_string();
        let path = format!("/1/match/{SAMPLE_MID}/events");
        match admin.request("POST", &path, Some(&body)) {
            Ok(r) if r.status == 201 => {
                let v: Value = serde_json::from_str(&r.body).unwrap();
                acked.push((v["seq"].as_u64().unwrap(), text));
            }
            Ok(r) => panic!("unexpected answer {r:?}"),
            Err(_) => break,
        }
    }
    acked
}
