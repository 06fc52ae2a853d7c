//! The watcher plane from outside: watchers on `/1/ws` and the line port are served by the
//! plane (no task each), a broadcast is one `io_uring_enter` per worker (as `/metrics` counts
//! it).

mod common;

use common::*;

/// Watches the sample match from `ws` WebSocket and `lines` line watchers, posts events 1–5
/// and checks every watcher got them in order. The watchers stay connected.
fn watch_five_events(server: &Server, ws: usize, lines: usize) -> (Vec<Watcher>, Vec<LineClient>) {
    post_sample(server, 0);
    let mut watchers: Vec<Watcher> = (0..ws).map(|_| server.ws()).collect();
    for w in &mut watchers {
        w.watch(SAMPLE_MID, None);
        w.expect_status(SAMPLE_MID);
    }
    let mut line_watchers: Vec<_> = (0..lines).map(|_| server.line(SAMPLE_MID)).collect();
    for l in &mut line_watchers {
        assert_eq!(l.next_block().expect("status block").kind, "status");
    }
    post_events(&mut server.admin(), 1..=5);
    let events = sample_events();
    for w in &mut watchers {
        for seq in 1..=5 {
            let v = w.expect_event(SAMPLE_MID, seq);
            assert_eq!(v["kind"], events[seq as usize - 1].0.as_str(), "{v}");
        }
    }
    for l in &mut line_watchers {
        for (kind, _) in &events[..5] {
            assert_eq!(&l.next_block().expect("event block").kind, kind);
        }
    }
    (watchers, line_watchers)
}

#[test]
fn watchers_are_plane_records_and_a_broadcast_is_one_submit_per_worker() {
    let server = Server::start(&["--workers", "2"]);
    let _watchers = watch_five_events(&server, 24, 4);
    let text = server.metrics();
    let broadcasts = metric_sum(&text, "matchstream_plane_broadcasts_total");
    let enters = metric_sum(&text, "matchstream_plane_broadcast_enters_total");
    assert!(
        broadcasts >= 5,
        "every worker with watchers fans out through the plane: {broadcasts}"
    );
    assert_eq!(
        enters, broadcasts,
        "one io_uring_enter per broadcast per worker"
    );
    assert_eq!(metric_sum(&text, "matchstream_websockets"), 24);
    assert_eq!(metric_sum(&text, "matchstream_line_connections"), 4);
}

#[test]
fn closed_watchers_leave_the_plane_and_the_counts() {
    let server = Server::start(&[]);
    post_sample(&server, 0);
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    let line = server.line(SAMPLE_MID);
    wait_until(WAIT, "two watchers", || {
        metric_sum(&server.metrics(), "matchstream_watchers") == 2
    });
    ws.close();
    drop(line);
    wait_until(WAIT, "both gone", || {
        let text = server.metrics();
        metric_sum(&text, "matchstream_watchers") == 0
            && metric_sum(&text, "matchstream_websockets") == 0
            && metric_sum(&text, "matchstream_line_connections") == 0
    });
}
