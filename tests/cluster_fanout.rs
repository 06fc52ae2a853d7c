//! Cluster mode on a real `redis-server`: an event posted on node A reaches the watchers of
//! A, B and C with the same seqs in the same order; `/1/checkin` spreads watchers over the
//! live nodes; a node restart (graceful or `kill -9`) loses nothing.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::redis::Redis;
use common::*;
use serde_json::Value;

/// Reads events 1..=n of the sample match, then the close that follows `stop`.
fn read_all(w: &mut Watcher, n: u64) -> Vec<Value> {
    (1..=n).map(|seq| w.expect_event(SAMPLE_MID, seq)).collect()
}

#[test]
fn event_posted_on_a_reaches_watchers_on_a_b_and_c() {
    let redis = Redis::start();
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| Server::start_node(&redis, n))
        .collect();
    post_sample(&nodes[0], 0);
    let mut watchers = Vec::new();
    for node in &nodes {
        node.wait_for_match(SAMPLE_MID);
        let mut w = node.ws();
        w.watch(SAMPLE_MID, None);
        assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 0);
        watchers.push(w);
    }
    let mut line = nodes[2].line(SAMPLE_MID);
    assert_eq!(line.next_block().expect("status block").kind, "status");

    post_events(&mut nodes[0].admin(), 1..=31);

    let seen: Vec<Vec<Value>> = watchers.iter_mut().map(|w| read_all(w, 31)).collect();
    for (i, got) in seen.iter().enumerate() {
        assert_eq!(got, &seen[0], "node {i} saw the same events as node a");
    }
    for w in &mut watchers {
        assert_eq!(w.expect_close().0, 1000, "closed after stop");
    }
    let kinds: Vec<String> = std::iter::from_fn(|| line.next_block())
        .map(|b| b.kind)
        .collect();
    assert_eq!(kinds.len(), 31, "every event on the TCP line watcher of c");
    assert_eq!(kinds.last().map(String::as_str), Some("stop"));
    let history = get_json(&nodes[1], &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history.as_array().map(Vec::len), Some(31));
}

#[test]
fn checkin_spreads_watchers_over_live_nodes() {
    let redis = Redis::start();
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| Server::start_node(&redis, n))
        .collect();
    let expected: BTreeSet<String> = nodes
        .iter()
        .map(|n| format!("ws://{}/1/ws", n.http))
        .collect();
    let ports: BTreeSet<u64> = nodes.iter().map(|n| u64::from(n.tcp.port())).collect();
    wait_until(WAIT, "checkin on a names every node", || {
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            let c = get_json(&nodes[0], "/1/checkin");
            assert!(ports.contains(&c["port"].as_u64().unwrap()), "{c}");
            seen.insert(c["ws"].as_str().unwrap().to_string());
        }
        assert!(seen.is_subset(&expected), "{seen:?}");
        seen == expected
    });
}

#[test]
fn node_restart_and_kill9_lose_nothing() {
    let redis = Redis::start();
    let mut a = Server::start_node(&redis, "a");
    let mut b = Server::start_node(&redis, "b");
    post_sample(&a, 10);
    b.wait_for_seq(SAMPLE_MID, 10);

    b.restart();
    let history = get_json(&b, &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history.as_array().map(Vec::len), Some(10));
    assert_eq!(get_json(&b, "/1/team/tig")["name"], "Tigre");
    let mut w = b.ws();
    w.watch(SAMPLE_MID, Some(5));
    assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 10);
    for seq in 6..=10 {
        w.expect_event(SAMPLE_MID, seq);
    }
    post_events(&mut b.admin(), 11..=12);
    w.expect_event(SAMPLE_MID, 11);
    w.expect_event(SAMPLE_MID, 12);

    a.kill9();
    a.restart();
    let m = get_json(&a, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(m["seq"], 12);
    assert_eq!(m, get_json(&b, &format!("/1/match/{SAMPLE_MID}")));
    post_events(&mut a.admin(), 13..=13);
    w.expect_event(SAMPLE_MID, 13);
    w.expect_silence(Duration::from_millis(200));
}
