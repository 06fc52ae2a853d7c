//! Cluster mode under failure: a watcher of a node killed with `kill -9` checks in again,
//! resumes on another node with `since` and sees every event exactly once; while Redis is
//! down writes get 503 and watchers stay connected, and after it returns every node's
//! watchers get every event without a gap.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::Redis;
use common::*;
use serde_json::json;

/// The address in a checkin's `ws://HOST:PORT/1/ws`.
fn checkin_addr(server: &Server) -> SocketAddr {
    let c = get_json(server, "/1/checkin");
    let ws = c["ws"].as_str().expect("ws url");
    ws.trim_start_matches("ws://")
        .trim_end_matches("/1/ws")
        .parse()
        .unwrap_or_else(|e| panic!("{ws}: {e}"))
}

#[test]
fn watchers_of_a_killed_node_resume_elsewhere_exactly_once() {
    let redis = Redis::start();
    let a = Server::start_node(&redis, "a");
    let mut b = Server::start_node(&redis, "b");
    let c = Server::start_node(&redis, "c");
    post_sample(&a, 0);
    b.wait_for_match(SAMPLE_MID);
    let mut w = b.ws();
    w.watch(SAMPLE_MID, None);
    assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 0);
    post_events(&mut a.admin(), 1..=10);
    let mut got: Vec<u64> = (1..=7)
        .map(|seq| w.expect_event(SAMPLE_MID, seq)["seq"].as_u64().unwrap())
        .collect();

    b.kill9();
    drop(w);
    post_events(&mut a.admin(), 11..=15);

    // Checkin (on c) stops naming b once b's registration expires.
    let dead = b.http;
    wait_until(WAIT, "b gone from checkin", || {
        (0..20).all(|_| checkin_addr(&c) != dead)
    });
    let addr = checkin_addr(&c);
    assert!(addr == a.http || addr == c.http, "{addr}");
    let mut w = Watcher::connect(addr);
    w.watch(SAMPLE_MID, Some(*got.last().unwrap()));
    assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 15);
    for seq in 8..=15 {
        got.push(w.expect_event(SAMPLE_MID, seq)["seq"].as_u64().unwrap());
    }
    post_events(&mut a.admin(), 16..=31);
    for seq in 16..=31 {
        got.push(w.expect_event(SAMPLE_MID, seq)["seq"].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (1..=31).collect::<Vec<u64>>(),
        "every event exactly once"
    );
    assert_eq!(w.expect_close().0, 1000);
}

#[test]
fn redis_outage_refuses_writes_keeps_watchers_and_leaves_no_gap() {
    let mut redis = Redis::start();
    let a = Server::start_node(&redis, "a");
    let b = Server::start_node(&redis, "b");
    post_sample(&a, 5);
    b.wait_for_seq(SAMPLE_MID, 5);
    let mut watchers = vec![a.ws(), b.ws()];
    for w in &mut watchers {
        w.watch(SAMPLE_MID, None);
        assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 5);
    }

    redis.stop();
    let events = sample_events();
    for node in [&a, &b] {
        let (kind, data) = &events[5];
        let r = post_event(&mut node.admin(), SAMPLE_MID, kind, data);
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(body_json(&r), json!({"error": "redis unavailable"}));
        // Reads are served from memory.
        assert_eq!(get_json(node, &format!("/1/match/{SAMPLE_MID}"))["seq"], 5);
    }
    for w in &mut watchers {
        w.expect_silence(Duration::from_millis(300));
    }
    // A watcher may still join a node cut off from Redis.
    let mut late = b.ws();
    late.watch(SAMPLE_MID, Some(3));
    assert_eq!(late.expect_status(SAMPLE_MID)["seq"], 5);
    late.expect_event(SAMPLE_MID, 4);
    late.expect_event(SAMPLE_MID, 5);
    watchers.push(late);

    redis.restart();
    // Writes come back as soon as the node reconnects: event 6, then the rest alternating.
    let (kind, data) = &events[5];
    wait_until(WAIT, "writes accepted again", || {
        let r = post_event(&mut a.admin(), SAMPLE_MID, kind, data);
        match r.status {
            201 => {
                assert_eq!(body_json(&r)["seq"], 6);
                true
            }
            503 => false,
            other => panic!("unexpected {other}: {r:?}"),
        }
    });
    for n in 7..=31 {
        let node = if n % 2 == 0 { &a } else { &b };
        post_events(&mut node.admin(), n..=n);
    }
    for w in &mut watchers {
        for seq in 6..=31 {
            w.expect_event(SAMPLE_MID, seq);
        }
        assert_eq!(w.expect_close().0, 1000);
    }
}
