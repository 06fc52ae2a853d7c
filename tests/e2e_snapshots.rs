//! Reads from published snapshots while events are written: the watch invariant (status at
//! N, then exactly N+1, N+2…) holds for watchers and resumes started in the middle of a
//! storm of concurrent posts; a read that follows an acknowledged write sees it, on any
//! connection; and an ended match whose history was let go from memory is served from the
//! store, before and after a restart. A keep-alive `GET /1/match/{id}` (answered from a
//! response prebuilt per snapshot) follows every acknowledged write and the match's deletion.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const PUBLISHERS: u64 = 4;
const POSTS_EACH: u64 = 150;

/// Reads one watch to the end (`last` events) and returns the seqs it got after the status.
fn watch_to(server_ws: &mut Watcher, since: Option<u64>, last: u64) -> (u64, Vec<u64>) {
    server_ws.watch(SAMPLE_MID, since);
    let status = server_ws.expect_status(SAMPLE_MID);
    let n = status["seq"].as_u64().unwrap();
    assert_eq!(status["state"]["seq"], n, "{status}");
    let mut seqs = Vec::new();
    let mut at = since.map_or(n, |s| s.min(n));
    while at < last {
        let v = server_ws.next_json();
        assert_eq!(v["type"], "event", "{v}");
        at = v["seq"].as_u64().unwrap();
        seqs.push(at);
    }
    (n, seqs)
}

#[test]
fn watches_resumes_and_reads_during_concurrent_writes_see_every_event_once() {
    let server = Server::start(&[]);
    post_sample(&server, 1); // created and started: seq 1
    let last = 1 + PUBLISHERS * POSTS_EACH;
    let writing = Arc::new(AtomicBool::new(true));
    std::thread::scope(|scope| {
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let server = &server;
                scope.spawn(move || {
                    let mut admin = server.admin();
                    let mut reader = server.public();
                    for i in 0..POSTS_EACH {
                        let data = json!({ "text": format!("p{p} #{i}") });
                        let r = post_event(&mut admin, SAMPLE_MID, "comment", &data);
                        assert_eq!(r.status, 201, "{r:?}");
                        let seq = body_json(&r)["seq"].as_u64().unwrap();
                        // Read-your-writes on another connection (maybe another worker).
                        let path = format!("/1/match/{SAMPLE_MID}");
                        let m = body_json(&reader.request("GET", &path, None).unwrap());
                        assert!(m["seq"].as_u64().unwrap() >= seq, "{m} after {seq}");
                    }
                })
            })
            .collect();
        let watchers: Vec<_> = (0..6u64)
            .map(|w| {
                let server = &server;
                let writing = Arc::clone(&writing);
                scope.spawn(move || {
                    let mut rounds = 0;
                    while writing.load(Ordering::Relaxed) || rounds == 0 {
                        let mut ws = server.ws();
                        let since = match (w + rounds) % 3 {
                            0 => None,
                            1 => Some(0),
                            _ => Some(rounds * 7 % 40),
                        };
                        let (n, seqs) = watch_to(&mut ws, since, last);
                        let from = since.map_or(n, |s| s.min(n));
                        assert_eq!(
                            seqs,
                            (from + 1..=last).collect::<Vec<_>>(),
                            "watch since {since:?} at status {n}"
                        );
                        ws.close();
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        let reads = scope.spawn(|| {
            let mut client = server.public();
            let mut seen = 0;
            let mut gets = 0;
            while writing.load(Ordering::Relaxed) {
                let path = format!("/1/match/{SAMPLE_MID}/history?since={seen}");
                let r = client.request("GET", &path, None).unwrap();
                assert_eq!(r.status, 200, "{r:?}");
                let h = body_json(&r);
                let items = h.as_array().unwrap();
                for (i, e) in items.iter().enumerate() {
                    assert_eq!(e["seq"], seen + 1 + i as u64, "history is contiguous");
                }
                seen += items.len() as u64;
                let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
                assert!(
                    m["seq"].as_u64().unwrap() >= seen,
                    "{m} behind history {seen}"
                );
                gets += 1;
            }
            gets
        });
        for p in publishers {
            p.join().unwrap();
        }
        writing.store(false, Ordering::Relaxed);
        let rounds: u64 = watchers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(rounds >= 6);
        assert!(reads.join().unwrap() > 0);
    });
    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history.as_array().unwrap().len() as u64, last);
    assert_eq!(
        get_json(&server, &format!("/1/match/{SAMPLE_MID}"))["seq"],
        last
    );
}

#[test]
fn an_ended_matchs_history_let_go_from_memory_is_read_from_the_store() {
    let mut server = Server::start(&["--ended-history-matches", "0"]);
    post_sample(&server, 31);
    let path = format!("/1/match/{SAMPLE_MID}/history");
    let all = get_json(&server, &path);
    assert_eq!(all.as_array().unwrap().len(), 31);
    assert_eq!(all[30]["kind"], "stop");
    let since = get_json(&server, &format!("{path}?since=29"));
    assert_eq!(since, json!([all[29], all[30]]));
    // A comment after the final whistle is stored and served too.
    let r = post_event(
        &mut server.admin(),
        SAMPLE_MID,
        "comment",
        &json!({"text": "gg"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let after = get_json(&server, &path);
    assert_eq!(after.as_array().unwrap().len(), 32);
    server.restart();
    assert_eq!(get_json(&server, &path), after);
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(
        (m["seq"].clone(), m["period"].clone()),
        (json!(32), json!("ended"))
    );
    let unknown = server
        .public()
        .request("GET", "/1/match/x-y-2011-01-01/history", None)
        .unwrap();
    assert_eq!(unknown.status, 404);
}

#[test]
fn reads_are_answered_while_writes_queue() {
    // A burst of reads interleaved with a burst of writes: every read is a full, valid
    // answer and never goes backwards.
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut admin = server.admin();
            for i in 0..100 {
                let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({ "n": i }));
                assert_eq!(r.status, 201, "{r:?}");
            }
        });
        let mut client = server.public();
        let mut last = 0;
        while !writer.is_finished() && Instant::now() < deadline {
            for path in ["/1/matches", "/1/team/elp"] {
                let r = client.request("GET", path, None).unwrap();
                assert_eq!(r.status, 200, "{path}: {r:?}");
            }
            let r = client
                .request("GET", &format!("/1/match/{SAMPLE_MID}"), None)
                .unwrap();
            let m: Value = body_json(&r);
            let seq = m["seq"].as_u64().unwrap();
            assert!(seq >= last, "seq went back from {last} to {seq}");
            last = seq;
        }
        writer.join().unwrap();
    });
}

#[test]
fn resuming_an_ended_match_whose_history_left_memory_replays_from_the_store() {
    let server = Server::start(&["--ended-history-matches", "0"]);
    post_sample(&server, 31);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, Some(25));
    let status = ws.expect_status(SAMPLE_MID);
    assert_eq!(status["seq"], 31, "{status}");
    for seq in 26..=31 {
        ws.expect_event(SAMPLE_MID, seq);
    }
    assert_eq!(ws.expect_close().0, 1000);
    let mut line = server.line(SAMPLE_MID);
    let block = line.next_block().expect("a status block");
    assert_eq!(block.field("seq"), Some("31"));
    line.expect_eof();
}

#[test]
fn a_keep_alive_reader_sees_each_acknowledged_write_and_the_deletion() {
    // The keep-alive answer is built once per snapshot and reused: each answer must still
    // be the match as of the last acknowledged write, on the same connection.
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut admin = server.admin();
    let mut reader = RawHttp::connect(server.http);
    let get = format!("GET /1/match/{SAMPLE_MID} HTTP/1.1\r\nHost: e2e\r\n\r\n");
    for n in 2..=6u64 {
        let before = reader.exchange(get.as_bytes());
        let again = reader.exchange(get.as_bytes());
        assert_eq!(before.status, 200, "{before:?}");
        assert_eq!(before.body, again.body);
        assert_eq!(before.json()["seq"], n - 1);
        let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({ "n": n }));
        assert_eq!(r.status, 201, "{r:?}");
        let after = reader.exchange(get.as_bytes());
        assert_eq!(
            after.json()["seq"],
            n,
            "the read after the 201 of event {n}"
        );
        assert_eq!(after.header("connection"), None);
    }
    // A closing request gets the same match, and says it closes.
    let mut once = RawHttp::connect(server.http);
    let closing = once.exchange(
        format!("GET /1/match/{SAMPLE_MID} HTTP/1.1\r\nHost: e2e\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(closing.header("connection"), Some("close"));
    assert_eq!(closing.body, reader.exchange(get.as_bytes()).body);
    let r = admin
        .request("DELETE", &format!("/1/match/{SAMPLE_MID}"), None)
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let gone = reader.exchange(get.as_bytes());
    assert_eq!(gone.status, 404, "{gone:?}");
}
