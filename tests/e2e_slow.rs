//! Back-pressure and keepalive for real: a reader that never reads is closed as a slow
//! consumer while a normal watcher gets every event; a peer that never answers pings is
//! dropped as dead while one that answers stays connected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Waits until `n` watchers of the sample match are registered.
fn wait_for_watchers(server: &Server, n: u64) {
    let key = format!("matchstream_watchers{{match=\"{SAMPLE_MID}\"}} {n}");
    wait_until(WAIT, &key, || server.metrics().lines().any(|l| l == key));
}

#[test]
fn slow_reader_is_closed_and_does_not_slow_the_others() {
    let server = Server::start(&["--max-outbound-bytes", "65536"]);
    post_sample(&server, 1);

    let mut slow = RawWs::connect(server.http, Some(4096));
    slow.watch(SAMPLE_MID);
    let mut normal = server.ws();
    normal.watch(SAMPLE_MID, None);
    assert_eq!(normal.expect_status(SAMPLE_MID)["seq"], 1);
    wait_for_watchers(&server, 2);

    const COMMENTS: u64 = 200;
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        for seq in 2..=COMMENTS + 1 {
            let v = normal.expect_event(SAMPLE_MID, seq);
            assert_eq!(v["kind"], "comment");
            assert_eq!(v["data"]["text"].as_str().unwrap().len(), 30_000);
            let _ = seen_tx.send(seq);
        }
        (normal, started.elapsed())
    });
    let mut admin = server.admin();
    let posting = Instant::now();
    let mut seen = 1;
    for i in 0..COMMENTS {
        // The normal watcher is at most two comments (~60 KB, under its 64 KiB outbound
        // limit) behind, however the two cores are scheduled; the slow one never reads.
        let seq = i + 2;
        while seen + 2 < seq {
            seen = seen_rx
                .recv_timeout(WAIT)
                .expect("the normal watcher keeps up");
        }
        let text = format!("{:0>30000}", i);
        let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": text}));
        assert_eq!(r.status, 201, "comment {i}: {r:?}");
    }
    let posted_in = posting.elapsed();
    let (mut normal, read_in) = reader.join().expect("the normal watcher got every comment");
    eprintln!("posted {COMMENTS} x 30 KB in {posted_in:?}, normal watcher done in {read_in:?}");
    normal.expect_silence(Duration::from_millis(100));

    let (bytes, closed) = slow.drain(WAIT);
    assert!(closed, "slow reader still open after {} bytes", bytes.len());
    assert!(
        bytes.len() < 6_000_000,
        "the slow reader got {} bytes: it was not cut off",
        bytes.len()
    );
    assert_eq!(
        server.metric_sum("matchstream_slow_consumer_closes_total"),
        1,
        "one slow reader, counted once"
    );
    wait_for_watchers(&server, 1);

    // The server still serves the normal watcher.
    let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": "last"}));
    assert_eq!(r.status, 201);
    normal.expect_event(SAMPLE_MID, COMMENTS + 2);
}

#[test]
fn dead_peer_is_dropped_and_a_live_one_stays() {
    // Pings after 300 ms of silence; an unanswered ping is fatal after 2 s, generous enough
    // that a loaded machine's scheduling never makes the live watcher look dead.
    let server = Server::start(&["--ws-ping-after-ms", "300", "--ws-dead-after-ms", "2000"]);
    post_sample(&server, 1);

    let mut dead = RawWs::connect(server.http, None);
    dead.watch(SAMPLE_MID);
    let mut live = server.ws();
    live.watch(SAMPLE_MID, None);
    live.expect_status(SAMPLE_MID);
    wait_for_watchers(&server, 2);
    let pings_before = server.metric_sum("matchstream_pings_total");

    // Keep reading on the live watcher (tungstenite answers the pings) until the dead one is
    // dropped and the live one has been pinged several times (bounded).
    let started = Instant::now();
    loop {
        if let Some(read) = live.read_within(Duration::from_millis(100)) {
            panic!("live watcher got {read:?}");
        }
        let dropped = server.metric_sum("matchstream_dead_peers_total") >= 1;
        let pinged = server.metric_sum("matchstream_pings_total") >= pings_before + 4;
        if dropped && pinged {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "dead peer dropped: {dropped}, live watcher pinged: {pinged}"
        );
    }
    // The dead peer got its status and pings, then the server closed the socket.
    let (bytes, closed) = dead.drain(WAIT);
    assert!(closed, "dead peer still open");
    assert!(bytes.len() > 2, "nothing was sent to the dead peer");
    assert_eq!(server.metric_sum("matchstream_dead_peers_total"), 1);
    wait_for_watchers(&server, 1);

    // The live one is still connected and still watching.
    post_events(&mut server.admin(), 2..=2);
    live.expect_event(SAMPLE_MID, 2);
}
