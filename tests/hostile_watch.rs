//! Watch commands as a weapon, against the real binary: past `--max-watches-per-connection`
//! an error, and a client that keeps asking is closed with 1008; ids that cannot be match
//! ids are refused on the worker; a watch/unwatch storm from 20 connections keeps every
//! connection served, the admin fast and memory bounded.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Creates `n` more matches (`t0-t1-2020-01-01`, `t2-t3-2020-01-01`, …); returns their ids.
fn create_matches(server: &Server, n: usize) -> Vec<String> {
    let mut admin = server.admin();
    let mut ids = Vec::new();
    for i in 0..n {
        let (home, visit) = (format!("t{}", 2 * i), format!("t{}", 2 * i + 1));
        for team in [&home, &visit] {
            let body = json!({"name": team, "division": "A"}).to_string();
            let r = admin
                .request("PUT", &format!("/1/team/{team}"), Some(&body))
                .unwrap();
            assert!(matches!(r.status, 200 | 201), "{r:?}");
        }
        let body = json!({"home": home, "visit": visit, "start_date": "2020-01-01"}).to_string();
        let r = admin.request("POST", "/1/matches", Some(&body)).unwrap();
        assert_eq!(r.status, 201, "{r:?}");
        ids.push(format!("{home}-{visit}-2020-01-01"));
    }
    ids
}

/// The next message, which must be an error; returns its text.
fn expect_error(w: &mut Watcher) -> String {
    let v = w.next_json();
    assert_eq!(v["type"], "error", "{v}");
    v["error"].as_str().unwrap().to_string()
}

#[test]
fn past_the_watch_limit_an_error_and_a_client_that_keeps_asking_is_closed() {
    watch_limit(&[]);
}

fn watch_limit(extra: &[&str]) {
    let mut args = vec!["--max-watches-per-connection", "4"];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    let ids = create_matches(&server, 5);
    let mut w = server.ws();
    for id in &ids[..4] {
        w.watch(id, None);
        w.expect_status(id);
    }
    w.watch(&ids[4], None);
    let text = expect_error(&mut w);
    assert!(text.contains("too many watches"), "{text}");
    // Unwatching makes room again.
    w.unwatch(&ids[0]);
    w.watch(&ids[4], None);
    w.expect_status(&ids[4]);
    // A client that keeps asking: refused 8 times in all, then closed with 1008.
    for _ in 0..6 {
        w.watch(&ids[0], None);
        assert!(expect_error(&mut w).contains("too many watches"));
    }
    w.watch(&ids[0], None);
    assert!(expect_error(&mut w).contains("too many watches"));
    let (code, reason) = w.expect_close();
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(server.metric_sum("matchstream_watches_refused_total"), 8);
}

#[test]
fn ids_that_cannot_be_match_ids_are_refused_on_the_worker() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut w = server.ws();
    let huge = "x".repeat(60_000);
    for (mid, shown) in [
        ("../../etc/passwd", "../../etc/passwd"),
        ("ELP-TIG-2011-09-10", "ELP-TIG-2011-09-10"),
        ("elp-tig-2011-02-30", "elp-tig-2011-02-30"),
        (huge.as_str(), &huge[..64]),
    ] {
        w.watch(mid, None);
        let text = expect_error(&mut w);
        assert_eq!(text, format!("not a match id: {shown}"));
    }
    // A valid id that names no match still asks the sequencer (and is not a refusal).
    w.watch("boc-riv-2000-01-01", None);
    assert_eq!(expect_error(&mut w), "match not found: boc-riv-2000-01-01");
    // The connection still works.
    w.watch(SAMPLE_MID, None);
    w.expect_status(SAMPLE_MID);
    assert_eq!(server.metric_sum("matchstream_watches_refused_total"), 4);

    // The line protocol refuses it with ERROR and closes.
    let mut line = LineClient::connect_raw(server.tcp);
    line.write_all(b"VERSION:1:CONNECT:u:MATCH:../x\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = line.read_to_string(&mut out);
    assert_eq!(out, "ERROR: not a match id: ../x\r\n");
}

#[test]
fn a_watch_unwatch_storm_keeps_everyone_served_with_bounded_memory() {
    storm(&[], "watch/unwatch storm (20 connections x 2,000 pairs)");
}

fn storm(extra: &[&str], name: &str) {
    const CONNECTIONS: usize = 20;
    const PAIRS: usize = 2_000;
    let server = Server::start(extra);
    post_sample(&server, 1);
    let rss_before = rss_kb(server.pid());
    let probe = Probe::start(&server, Duration::from_millis(100));
    let started = Instant::now();
    let mut threads = Vec::new();
    for c in 0..CONNECTIONS {
        let addr = server.http;
        threads.push(std::thread::spawn(move || {
            let ws = RawWs::connect(addr, None);
            let mut writer = ws.stream.try_clone().unwrap();
            let mut reader = ws.stream;
            let feeder = std::thread::spawn(move || {
                // Valid ids of matches that do not exist: each watch asks the sequencer.
                for i in 0..PAIRS {
                    let mid = format!("s{c}-x{}-2020-01-01", i % 50);
                    let watch = json!({"command": "watch", "mid": mid}).to_string();
                    let unwatch = json!({"command": "unwatch", "mid": mid}).to_string();
                    let mut bytes = client_text(&watch);
                    bytes.extend(client_text(&unwatch));
                    writer.write_all(&bytes).expect("the server keeps reading");
                }
                let last = json!({"command": "watch", "mid": SAMPLE_MID}).to_string();
                writer.write_all(&client_text(&last)).unwrap();
            });
            // Read everything until the status of the last watch arrives.
            let mut seen = Vec::new();
            let mut chunk = vec![0u8; 64 << 10];
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                assert!(Instant::now() < deadline, "connection {c}: no final status");
                reader
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let n = reader.read(&mut chunk).expect("connection stays open");
                assert!(n > 0, "connection {c} was closed");
                seen.extend_from_slice(&chunk[..n]);
                const STATUS: &[u8] = br#""type":"status","#;
                if seen.windows(STATUS.len()).any(|w| w == STATUS) {
                    break;
                }
                let done = seen.len().saturating_sub(STATUS.len());
                seen.drain(..done);
            }
            feeder.join().unwrap();
        }));
    }
    for t in threads {
        t.join().expect("every storming connection is still served");
    }
    let took = started.elapsed();
    let rss_after = rss_kb(server.pid());
    let probe = probe.finish();
    eprintln!("{CONNECTIONS} connections x {PAIRS} watch/unwatch pairs answered in {took:?}");
    report_attack(name, rss_before, rss_after, &probe);
    assert_eq!(server.metric_sum("matchstream_watches_refused_total"), 0);
    assert!(
        rss_after < rss_before + 64 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
}

/// A masked client text frame.
fn client_text(text: &str) -> Vec<u8> {
    matchstream::load::client::client_frame(
        matchstream::proto::frame::OpCode::Text,
        text.as_bytes(),
        [1, 2, 3, 4],
    )
}

#[test]
fn max_refused_watches_sets_how_many_refusals_close_the_connection() {
    let server = Server::start(&["--max-refused-watches", "2"]);
    let mut w = server.ws();
    w.watch("not-an-id", None);
    assert!(expect_error(&mut w).starts_with("not a match id"));
    w.watch("../x", None);
    assert!(expect_error(&mut w).starts_with("not a match id"));
    let (code, _) = w.expect_close();
    assert_eq!(code, 1008);
}
