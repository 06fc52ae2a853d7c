//! Cluster mode: two admins posting to two nodes at once get one order — seqs 1..N each
//! exactly once, the same history on every node — and the same 422 rules (of two racing
//! `halftime`s exactly one is accepted).

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};

use common::redis::Redis;
use common::*;
use matchstream::feed::http_client::HttpClient;
use serde_json::{json, Value};

fn admin(url: &str) -> HttpClient {
    HttpClient::new(url, Some(TOKEN.to_string())).expect("http client")
}

#[test]
fn concurrent_posts_to_two_nodes_get_one_order() {
    let redis = Redis::start();
    let a = Server::start_node(&redis, "a");
    let b = Server::start_node(&redis, "b");
    post_sample(&a, 1);
    b.wait_for_seq(SAMPLE_MID, 1);
    let mut wa = a.ws();
    let mut wb = b.ws();
    for w in [&mut wa, &mut wb] {
        w.watch(SAMPLE_MID, None);
        assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 1);
    }

    const EACH: usize = 40;
    let barrier = Arc::new(Barrier::new(2));
    let posters: Vec<_> = [(a.url(), "a"), (b.url(), "b")]
        .into_iter()
        .map(|(url, name)| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut client = admin(&url);
                barrier.wait();
                (0..EACH)
                    .map(|i| {
                        let r = post_event(
                            &mut client,
                            SAMPLE_MID,
                            "comment",
                            &json!({"text": format!("{name}{i}")}),
                        );
                        assert_eq!(r.status, 201, "{name}{i}: {r:?}");
                        (body_json(&r)["seq"].as_u64().unwrap(), format!("{name}{i}"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acked: Vec<(u64, String)> = posters
        .into_iter()
        .flat_map(|t| t.join().expect("poster"))
        .collect();
    let seqs: BTreeSet<u64> = acked.iter().map(|(s, _)| *s).collect();
    let last = 1 + 2 * EACH as u64;
    assert_eq!(seqs.len(), 2 * EACH, "no seq given twice");
    assert_eq!(seqs, (2..=last).collect(), "seqs 2..={last} without gap");

    a.wait_for_seq(SAMPLE_MID, last);
    b.wait_for_seq(SAMPLE_MID, last);
    let path = format!("/1/match/{SAMPLE_MID}/history");
    let history = get_json(&a, &path);
    assert_eq!(history, get_json(&b, &path), "one history on both nodes");
    for (seq, text) in &acked {
        assert_eq!(history[*seq as usize - 1]["data"]["text"], text.as_str());
    }
    // Both nodes' watchers got the same events, in seq order.
    let mut from_a = Vec::new();
    let mut from_b = Vec::new();
    for seq in 2..=last {
        from_a.push(wa.expect_event(SAMPLE_MID, seq)["data"].clone());
        from_b.push(wb.expect_event(SAMPLE_MID, seq)["data"].clone());
    }
    assert_eq!(from_a, from_b);

    // An impossible event is still refused, whichever node gets it.
    for node in [&a, &b] {
        let r = post_event(&mut node.admin(), SAMPLE_MID, "start", &json!({}));
        assert_eq!(r.status, 422, "{r:?}");
    }
}

/// Two admins post the same period change to two nodes at once: one wins, one gets 422.
#[test]
fn racing_period_changes_are_judged_on_one_order() {
    let redis = Redis::start();
    let a = Server::start_node(&redis, "a");
    let b = Server::start_node(&redis, "b");
    post_sample(&a, 1);
    b.wait_for_seq(SAMPLE_MID, 1);
    let mut seq = 1;
    for kind in ["halftime", "continue", "stop"] {
        let barrier = Arc::new(Barrier::new(2));
        let racers: Vec<_> = [a.url(), b.url()]
            .into_iter()
            .map(|url| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let mut client = admin(&url);
                    barrier.wait();
                    post_event(&mut client, SAMPLE_MID, kind, &json!({}))
                })
            })
            .collect();
        let mut statuses: Vec<u16> = racers
            .into_iter()
            .map(|t| t.join().expect("racer").status)
            .collect();
        statuses.sort();
        assert_eq!(statuses, [201, 422], "{kind}: exactly one accepted");
        seq += 1;
        a.wait_for_seq(SAMPLE_MID, seq);
        b.wait_for_seq(SAMPLE_MID, seq);
    }
    let m: Value = get_json(&b, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(
        (m["period"].as_str(), m["seq"].as_u64()),
        (Some("ended"), Some(4))
    );
}
