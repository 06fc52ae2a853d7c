//! Operations: cancelling a match closes its watchers, graceful shutdown closes WebSockets with
//! 1001, `--max-connections` refuses the excess, and the health, metrics and checkin routes.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn cancel_closes_watchers_and_removes_the_match() {
    let server = Server::start(&[]);
    post_sample(&server, 5);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 5);
    let mut line = server.line(SAMPLE_MID);
    assert_eq!(line.next_block().unwrap().kind, "status");

    let mut admin = server.admin();
    let r = admin
        .request("DELETE", &format!("/1/match/{SAMPLE_MID}"), None)
        .unwrap();
    assert!(matches!(r.status, 200 | 204), "{r:?}");
    assert_eq!(ws.expect_close(), (1000, "match cancelled".to_string()));
    line.expect_eof();

    let mut public = server.public();
    let r = public
        .request("GET", &format!("/1/match/{SAMPLE_MID}"), None)
        .unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    assert!(body_json(&r)["error"].is_string());
    let r = public
        .request("GET", &format!("/1/match/{SAMPLE_MID}/history"), None)
        .unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(get_json(&server, "/1/matches"), json!([]));
    let r = admin
        .request("DELETE", &format!("/1/match/{SAMPLE_MID}"), None)
        .unwrap();
    assert_eq!(r.status, 404, "{r:?}");
    let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": "x"}));
    assert_eq!(r.status, 404, "{r:?}");

    // Watching it now is an error; creating it again starts from an empty history.
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.next_json()["type"], "error");
    post_sample(&server, 2);
    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history.as_array().unwrap().len(), 2);
}

#[test]
fn cancel_keeps_a_connection_that_watches_another_match() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut admin = server.admin();
    let body = json!({"home": "tig", "visit": "elp", "start_date": "2011-09-17"}).to_string();
    assert_eq!(
        admin
            .request("POST", "/1/matches", Some(&body))
            .unwrap()
            .status,
        201
    );
    let other = "tig-elp-2011-09-17";
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    ws.watch(other, None);
    ws.expect_status(other);
    let r = admin
        .request("DELETE", &format!("/1/match/{other}"), None)
        .unwrap();
    assert!(matches!(r.status, 200 | 204), "{r:?}");
    ws.expect_silence(Duration::from_millis(200));
    post_events(&mut admin, 2..=2);
    ws.expect_event(SAMPLE_MID, 2);
}

#[test]
fn sigterm_closes_websockets_with_1001() {
    let mut server = Server::start(&[]);
    post_sample(&server, 3);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    let mut idle = server.ws();
    let mut line = server.line(SAMPLE_MID);
    assert_eq!(line.next_block().unwrap().kind, "status");
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(server.pid(), libc::SIGTERM);
    }
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1001);
    assert_eq!(idle.expect_close().0, 1001);
    line.expect_eof();
    assert!(
        server.terminate(WAIT),
        "server did not exit on SIGTERM; log:\n{}",
        server.log_tail()
    );
}

#[test]
fn max_connections_refuses_the_excess() {
    let server = Server::start(&["--max-connections", "2"]);
    let first = server.ws();
    let second = server.ws();
    let mut third = std::net::TcpStream::connect_timeout(&server.http, WAIT).unwrap();
    let (bytes, closed) = drain(&mut third, WAIT);
    assert!(closed, "the third connection was left open");
    if !bytes.is_empty() {
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        let body = &text[text.find("\r\n\r\n").expect("head end") + 4..];
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert!(v["error"].is_string(), "{v}");
    }
    let mut line = LineClient::connect_raw(server.tcp);
    let (bytes, closed) = drain(&mut line, WAIT);
    assert!(closed);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.is_empty() || text.starts_with("ERROR: "), "{text}");

    drop(first);
    drop(second);
    let mut refused = 0;
    wait_until(WAIT, "metrics once a slot is free", || {
        match server.public().request("GET", "/metrics", None) {
            Ok(r) if r.status == 200 => {
                refused = metric_sum(&r.body, "matchstream_refused_total");
                true
            }
            _ => false,
        }
    });
    assert!(refused >= 2, "refused_total = {refused}");
}

#[test]
fn health_metrics_and_checkin() {
    let server = Server::start(&[]);
    let r = server.public().request("GET", "/healthz", None).unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    let checkin = get_json(&server, "/1/checkin");
    assert_eq!(checkin["port"], server.tcp.port(), "{checkin}");
    assert_eq!(
        checkin["ws"],
        format!("ws://127.0.0.1:{}/1/ws", server.http.port()),
        "{checkin}"
    );

    post_sample(&server, 1);
    let key = format!("matchstream_watchers{{match=\"{SAMPLE_MID}\"}}");
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    let text = server.metrics();
    assert!(
        text.lines().any(|l| l == format!("{key} 1")),
        "no `{key} 1` in:\n{text}"
    );
    for name in [
        "matchstream_connections",
        "matchstream_refused_total",
        "matchstream_slow_consumer_closes_total",
        "matchstream_dead_peers_total",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    let mut line = server.line(SAMPLE_MID);
    line.next_block().unwrap();
    wait_until(WAIT, "two watchers", || {
        server.metrics().lines().any(|l| l == format!("{key} 2"))
    });
    // One live event to two watchers: frames and their bytes are counted, whether the
    // socket took them at once or they waited in the queue.
    let before = server.metrics();
    let (frames0, bytes0, events0) = (
        metric_sum(&before, "matchstream_frames_sent_total"),
        metric_sum(&before, "matchstream_bytes_sent_total"),
        metric_sum(&before, "matchstream_events_fanned_out_total"),
    );
    let r = post_event(
        &mut server.admin(),
        SAMPLE_MID,
        "corner",
        &json!({"team": "elp"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    ws.expect_event(SAMPLE_MID, 2);
    line.next_block().unwrap();
    // The counters are bumped right after the writes: poll rather than race them.
    let mut after = String::new();
    wait_until(WAIT, "two more frames counted", || {
        after = server.metrics();
        metric_sum(&after, "matchstream_frames_sent_total") - frames0 >= 2
    });
    assert_eq!(
        metric_sum(&after, "matchstream_frames_sent_total") - frames0,
        2,
        "{after}"
    );
    assert!(
        metric_sum(&after, "matchstream_bytes_sent_total") - bytes0 > 60,
        "{after}"
    );
    let fanouts = metric_sum(&after, "matchstream_events_fanned_out_total") - events0;
    assert!(
        (1..=2).contains(&fanouts),
        "one fan-out per worker that has watchers, got {fanouts}:\n{after}"
    );
    ws.unwatch(SAMPLE_MID);
    wait_until(WAIT, "one watcher after unwatch", || {
        server.metrics().lines().any(|l| l == format!("{key} 1"))
    });
    // A line client that goes away: the server keeps half-closed line watchers (the seed's
    // `printf … | nc` use), so it notices on the next writes.
    drop(line);
    let mut admin = server.admin();
    for _ in 0..3 {
        let r = post_event(
            &mut admin,
            SAMPLE_MID,
            "comment",
            &json!({"text": "anyone?"}),
        );
        assert_eq!(r.status, 201);
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_until(WAIT, "no watchers left", || {
        let text = server.metrics();
        text.lines().any(|l| l == format!("{key} 0")) || !text.contains(&key)
    });

    let r = server.public().request("GET", "/", None).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.to_ascii_lowercase().contains("<html"), "page");
    let r = server.public().request("GET", "/1/ws", None).unwrap();
    assert_eq!(r.status, 426, "{r:?}");
}
