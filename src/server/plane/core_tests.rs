//! The plane core on a fake clock, without sockets: the shell's part is played by the test
//! (it reads the operations and feeds completions back).

use super::*;
use crate::server::watch::Subscriptions;

const TICK_SLACK: u64 = 250;

fn config() -> PlaneConfig {
    PlaneConfig {
        ws_limits: WsLimits::default(),
        echo_limits: WsLimits::default(),
        echo_max_outbound_bytes: 4_000,
        keepalive: KeepalivePolicy {
            ping_after_ms: 1_000,
            dead_after_ms: 500,
        },
        max_outbound_bytes: 1_000,
        send_timeout_ms: 5_000,
        close_linger_ms: 2_000,
        message_timeout_ms: 3_000,
        sends_defer_pings: false,
    }
}

fn plane() -> PlaneCore<Vec<u32>> {
    PlaneCore::new(config(), 0)
}

fn ops<T: Default>(core: &mut PlaneCore<T>) -> Vec<IoOp> {
    std::iter::from_fn(|| core.poll_io()).collect()
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [1u8, 2, 3, 4];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn sends(ops: &[IoOp]) -> Vec<(u32, FrameId, u32)> {
    ops.iter()
        .filter_map(|op| match *op {
            IoOp::Send {
                key, frame, offset, ..
            } => Some((key, frame, offset)),
            _ => None,
        })
        .collect()
}

/// Completes every send in `ops` in full.
fn complete_sends<T: Default>(core: &mut PlaneCore<T>, ops: &[IoOp], now: u64) {
    for (key, frame, offset) in sends(ops) {
        let len = core.frame_bytes(frame).len() as u32 - offset;
        core.on_send_done(key, len as i32, now);
    }
}

/// Plays the shell's part of a teardown: the poll's cancellation completes.
fn finish_teardown<T: Default>(core: &mut PlaneCore<T>, ops: &[IoOp]) {
    for op in ops {
        if let IoOp::CancelPoll { key } = *op {
            core.on_poll_done(key, false);
        }
    }
}

fn closed_keys<T>(events: &[PlaneEvent<T>]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            PlaneEvent::Closed { id, .. } => Some(id.key),
            _ => None,
        })
        .collect()
}

#[test]
fn a_record_stays_within_128_bytes() {
    let size = std::mem::size_of::<Record<Subscriptions>>();
    eprintln!("Record<Subscriptions>: {size} bytes");
    assert!(size <= 128, "{size}");
}

#[test]
fn adopting_arms_one_multishot_poll() {
    let mut core = plane();
    let id = core.adopt(7, Flavour::Ws, 0);
    assert_eq!(ops(&mut core), vec![IoOp::Poll { key: id.key, fd: 7 }]);
}

#[test]
fn a_broadcast_is_one_send_per_record_of_the_same_bytes() {
    let mut core = plane();
    let ids: Vec<RecordId> = (0..3).map(|i| core.adopt(10 + i, Flavour::Ws, 0)).collect();
    ops(&mut core);
    let frame = core.share(Bytes::from_static(b"event"));
    for id in &ids {
        core.push(*id, frame, 1).unwrap();
    }
    core.unshare(frame);
    let out = ops(&mut core);
    assert_eq!(
        out.iter()
            .map(|op| match op {
                IoOp::Send { fd, offset: 0, .. } => *fd,
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    assert_eq!(core.frames_alive(), 1, "shared, not copied");
    complete_sends(&mut core, &out, 2);
    assert_eq!(core.frames_alive(), 0, "freed by the last completion");
    assert_eq!(core.take_counters().frames, 3);
}

#[test]
fn short_writes_are_requeued_from_where_they_stopped() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.send(id, Bytes::from_static(b"0123456789"), 0).unwrap();
    core.send(id, Bytes::from_static(b"next"), 0).unwrap();
    let out = ops(&mut core);
    assert_eq!(out.len(), 1, "one send in flight per socket");
    let (key, _, _) = sends(&out)[0];
    core.on_send_done(key, 4, 1);
    // The rest of the first frame and the one behind it go in one send.
    let out = ops(&mut core);
    let (_, joined, offset) = sends(&out)[0];
    assert_eq!((core.frame_bytes(joined), offset), (&b"456789next"[..], 0));
    core.on_send_done(key, 6, 2);
    let out = ops(&mut core);
    assert_eq!(sends(&out), vec![(key, joined, 6)]);
    assert_eq!(core.record(id).unwrap().queued_bytes(), 4);
    complete_sends(&mut core, &out, 3);
    assert_eq!(core.record(id).unwrap().queued_bytes(), 0);
    assert_eq!(core.take_counters().short_writes, 2);
    assert_eq!(core.frames_alive(), 0);
}

#[test]
fn a_record_that_fell_behind_catches_up_in_few_sends() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.send(id, Bytes::from_static(b"first"), 0).unwrap();
    let first = ops(&mut core);
    for i in 0..50u8 {
        core.send(id, Bytes::from(vec![b'a' + i % 26; 10]), 0)
            .unwrap();
    }
    assert!(ops(&mut core).is_empty(), "behind: nothing more in flight");
    complete_sends(&mut core, &first, 1);
    let out = ops(&mut core);
    let (_, joined, _) = sends(&out)[0];
    assert_eq!(
        core.frame_bytes(joined).len(),
        500,
        "fifty frames, one send"
    );
    complete_sends(&mut core, &out, 2);
    assert_eq!(core.record(id).unwrap().queued_bytes(), 0);
    assert_eq!(core.frames_alive(), 0);
}

#[test]
fn a_slow_consumer_overflows_into_a_close_and_everyone_else_is_served() {
    let mut core = plane();
    let slow = core.adopt(3, Flavour::Ws, 0);
    let fast = core.adopt(4, Flavour::Ws, 0);
    ops(&mut core);
    let big = core.share(Bytes::from(vec![b'x'; 600]));
    core.push(slow, big, 0).unwrap();
    core.push(fast, big, 0).unwrap();
    let first = ops(&mut core);
    // The fast reader's send completes; the slow one's stays in the kernel.
    core.on_send_done(fast.key, 600, 1);
    assert_eq!(core.push(fast, big, 2), Ok(()));
    assert_eq!(core.push(slow, big, 2), Err(Overflow));
    core.unshare(big);
    let out = ops(&mut core);
    assert!(out.contains(&IoOp::Shutdown { fd: 3 }));
    assert!(out.contains(&IoOp::CancelPoll { key: slow.key }));
    assert_eq!(sends(&out).len(), 1, "the fast reader's second frame");
    // Shutdown fails the blocked send; the poll's cancellation completes.
    core.on_send_done(slow.key, -libc::EPIPE, 3);
    finish_teardown(&mut core, &out);
    assert!(ops(&mut core).contains(&IoOp::Close { fd: 3 }));
    assert_eq!(closed_keys(&core.take_events()), vec![slow.key]);
    assert!(core.record(slow).is_none());
    assert_eq!(core.take_counters().slow_consumer_closes, 1);
    complete_sends(&mut core, &out, 4);
    let _ = first;
    assert_eq!(core.frames_alive(), 0);
}

#[test]
fn idle_websockets_are_pinged_through_their_session_then_dropped_when_silent() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.poll_timers(999);
    assert!(ops(&mut core).is_empty(), "not yet");
    core.poll_timers(1_000 + TICK_SLACK);
    let out = ops(&mut core);
    let (_, ping, _) = sends(&out)[0];
    assert_eq!(core.frame_bytes(ping), &[0x89, 0x00]);
    complete_sends(&mut core, &out, 1_300);
    core.poll_timers(1_400);
    assert!(ops(&mut core).is_empty(), "the dead deadline is later");
    core.poll_timers(1_800 + TICK_SLACK);
    let out = ops(&mut core);
    assert!(out.contains(&IoOp::Shutdown { fd: 3 }), "{out:?}");
    finish_teardown(&mut core, &out);
    assert_eq!(closed_keys(&core.take_events()), vec![id.key]);
    let c = core.take_counters();
    assert_eq!((c.pings, c.dead_peers), (1, 1));
}

#[test]
fn with_sends_deferring_pings_a_watcher_fed_events_is_not_pinged_but_a_ping_still_needs_an_answer()
{
    let mut core = PlaneCore::<Vec<u32>>::new(
        PlaneConfig {
            sends_defer_pings: true,
            ..config()
        },
        0,
    );
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    // An event written at 900 ms: the connection is not idle at 1,000 ms.
    core.send(id, Bytes::from_static(b"event"), 900).unwrap();
    let out = ops(&mut core);
    complete_sends(&mut core, &out, 900);
    core.poll_timers(1_000 + TICK_SLACK);
    assert!(ops(&mut core).is_empty(), "no ping while events flow");
    assert_eq!(core.take_counters().pings, 0);
    // Silent both ways for the ping interval: pinged.
    core.poll_timers(1_900 + TICK_SLACK);
    let out = ops(&mut core);
    let (_, ping, _) = sends(&out)[0];
    assert_eq!(core.frame_bytes(ping), &[0x89, 0x00]);
    complete_sends(&mut core, &out, 2_200);
    // Our own events do not answer the ping: the peer stays silent and is dropped.
    core.send(id, Bytes::from_static(b"event"), 2_300).unwrap();
    let out = ops(&mut core);
    complete_sends(&mut core, &out, 2_300);
    core.poll_timers(2_200 + 500 + TICK_SLACK);
    let out = ops(&mut core);
    assert!(out.contains(&IoOp::Shutdown { fd: 3 }), "{out:?}");
    assert_eq!(core.take_counters().dead_peers, 1);
}

#[test]
fn a_pong_answers_the_ping_and_activity_postpones_the_next() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.on_data(id.key, &client_frame(0xA, b""), 900);
    core.poll_timers(1_000 + TICK_SLACK);
    assert!(
        ops(&mut core).is_empty(),
        "active at 900: no ping before 1,900"
    );
    core.poll_timers(1_900 + TICK_SLACK);
    let out = ops(&mut core);
    assert_eq!(sends(&out).len(), 1, "pinged");
    complete_sends(&mut core, &out, 2_000);
    core.on_data(id.key, &client_frame(0xA, b""), 2_100);
    core.poll_timers(2_700);
    assert!(ops(&mut core).is_empty(), "answered: not dead");
    assert!(core.record(id).is_some());
    assert_eq!(core.take_counters().dead_peers, 0);
}

#[test]
fn client_pings_are_answered_and_commands_reach_the_application() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    let mut input = client_frame(0x9, b"hi");
    input.extend(client_frame(0x1, br#"{"command":"watch","mid":"m"}"#));
    core.on_data(id.key, &input[..5], 1);
    core.on_data(id.key, &input[5..], 2);
    let out = ops(&mut core);
    let (_, pong, _) = sends(&out)[0];
    assert_eq!(core.frame_bytes(pong), &[0x8A, 0x02, b'h', b'i']);
    match &core.take_events()[..] {
        [PlaneEvent::Text { id: got, text }] => {
            assert_eq!(*got, id);
            assert!(text.contains("watch"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn close_after_stop_sends_1000_then_waits_for_the_peers_close() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.send(id, Bytes::from_static(b"stop event"), 0).unwrap();
    core.close(id, 1000, "match ended", 0);
    assert!(!core.record(id).unwrap().is_open());
    assert_eq!(
        core.send(id, Bytes::from_static(b"late"), 0),
        Ok(()),
        "ignored after the close"
    );
    let out = ops(&mut core);
    complete_sends(&mut core, &out, 1);
    let out = ops(&mut core);
    let (_, close, _) = sends(&out)[0];
    let bytes = core.frame_bytes(close).to_vec();
    assert_eq!(&bytes[..4], &[0x88, 13, 0x03, 0xE8], "close 1000");
    assert_eq!(&bytes[4..], b"match ended");
    complete_sends(&mut core, &out, 2);
    assert!(ops(&mut core).is_empty(), "lingering for the peer's close");
    core.on_data(id.key, &client_frame(0x8, &[0x03, 0xE8]), 3);
    let out = ops(&mut core);
    assert_eq!(sends(&out).len(), 0, "no echo: our close was first");
    assert!(out.contains(&IoOp::Shutdown { fd: 3 }));
    finish_teardown(&mut core, &out);
    assert!(ops(&mut core).contains(&IoOp::Close { fd: 3 }));
    assert_eq!(closed_keys(&core.take_events()), vec![id.key]);
    assert_eq!(core.frames_alive(), 0);
}

#[test]
fn a_peer_that_never_answers_the_close_is_dropped_after_the_grace_period() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.close(id, 1000, "match ended", 0);
    let out = ops(&mut core);
    complete_sends(&mut core, &out, 10);
    core.poll_timers(1_000);
    assert!(ops(&mut core).is_empty());
    core.poll_timers(2_010 + TICK_SLACK);
    let out = ops(&mut core);
    assert!(out.contains(&IoOp::Shutdown { fd: 3 }), "{out:?}");
    assert_eq!(core.take_counters().pings, 0, "no ping while closing");
}

#[test]
fn shutdown_closes_websockets_with_1001_and_line_watchers_at_once() {
    let mut core = plane();
    let ws = core.adopt(3, Flavour::Ws, 0);
    let line = core.adopt(4, Flavour::Line, 0);
    ops(&mut core);
    core.close_all(1001, "server shutting down", 5);
    let out = ops(&mut core);
    let (key, frame, _) = sends(&out)[0];
    assert_eq!(key, ws.key);
    assert_eq!(&core.frame_bytes(frame)[2..4], &[0x03, 0xE9], "1001");
    assert!(out.contains(&IoOp::Shutdown { fd: 4 }));
    finish_teardown(&mut core, &out);
    assert_eq!(closed_keys(&core.take_events()), vec![line.key]);
}

#[test]
fn input_from_a_line_watcher_is_an_error_and_a_close() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Line, 0);
    ops(&mut core);
    core.on_data(id.key, b"hello\r\n", 1);
    let out = ops(&mut core);
    let (_, frame, _) = sends(&out)[0];
    assert!(core.frame_bytes(frame).starts_with(b"ERROR: "));
    complete_sends(&mut core, &out, 2);
    let out = ops(&mut core);
    assert_eq!(
        out,
        vec![IoOp::ShutdownWrite { fd: 3 }],
        "a FIN after the error"
    );
    assert!(
        core.record(id).is_some(),
        "lingering: the peer may still send"
    );
    // More input while lingering is dropped, not answered.
    core.on_data(id.key, b"more\r\n", 3);
    assert!(ops(&mut core).is_empty());
    core.on_eof(id.key, 4);
    assert!(ops(&mut core).contains(&IoOp::Shutdown { fd: 3 }));
}

#[test]
fn a_half_closed_line_watcher_keeps_getting_events_a_vanished_websocket_goes() {
    let mut core = plane();
    let line = core.adopt(3, Flavour::Line, 0);
    let ws = core.adopt(4, Flavour::Ws, 0);
    ops(&mut core);
    core.on_eof(line.key, 1);
    core.on_eof(ws.key, 1);
    let out = ops(&mut core);
    assert!(out.contains(&IoOp::CancelPoll { key: line.key }));
    assert!(!out.contains(&IoOp::Shutdown { fd: 3 }));
    assert!(out.contains(&IoOp::Shutdown { fd: 4 }));
    finish_teardown(&mut core, &out);
    core.send(line, Bytes::from_static(b"event"), 2).unwrap();
    assert_eq!(sends(&ops(&mut core)).len(), 1);
}

#[test]
fn queued_bytes_without_progress_hit_the_send_timeout() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Line, 0);
    ops(&mut core);
    core.send(id, Bytes::from_static(b"event"), 100).unwrap();
    ops(&mut core);
    core.poll_timers(4_000);
    assert!(ops(&mut core).is_empty());
    core.poll_timers(5_100 + TICK_SLACK);
    assert!(ops(&mut core).contains(&IoOp::Shutdown { fd: 3 }));
    assert_eq!(core.take_counters().send_timeouts, 1);
}

#[test]
fn a_protocol_error_fails_the_session_with_its_close_code() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.on_data(id.key, &client_frame(0x2, b"bin"), 1);
    let out = ops(&mut core);
    let (_, frame, _) = sends(&out)[0];
    assert_eq!(&core.frame_bytes(frame)[2..4], &[0x03, 0xEB], "1003");
    complete_sends(&mut core, &out, 2);
    // A lingering close: a FIN after the close frame, the peer's late bytes dropped, and the
    // socket closed at the end of the grace period if the peer never closes its side.
    assert_eq!(ops(&mut core), vec![IoOp::ShutdownWrite { fd: 3 }]);
    core.on_data(id.key, &client_frame(0x9, b"late ping"), 3);
    assert!(ops(&mut core).is_empty(), "no pong after the failure");
    core.poll_timers(1_000);
    assert!(ops(&mut core).is_empty());
    core.poll_timers(2 + 2_000 + TICK_SLACK);
    assert!(ops(&mut core).contains(&IoOp::Shutdown { fd: 3 }));
    assert_eq!(core.take_counters().protocol_errors, 1);
}

#[test]
fn stale_ids_and_reused_keys_do_not_mix() {
    let mut core = plane();
    let old = core.adopt(3, Flavour::Ws, 0);
    core.abort(old);
    let out = ops(&mut core);
    finish_teardown(&mut core, &out);
    let new = core.adopt(5, Flavour::Ws, 1);
    assert_eq!(new.key, old.key);
    ops(&mut core);
    core.send(old, Bytes::from_static(b"for the old one"), 2)
        .unwrap();
    assert!(ops(&mut core).is_empty());
    assert!(core.app_mut(old).is_none() && core.app_mut(new).is_some());
}

/// A masked client frame without FIN (the first fragment of a message).
fn first_fragment(payload: &[u8]) -> Vec<u8> {
    let mut frame = client_frame(0x1, payload);
    frame[0] &= 0x7f;
    frame
}

/// Close codes of the close frames among `ops`' sends.
fn close_codes<T: Default>(core: &PlaneCore<T>, ops: &[IoOp]) -> Vec<u16> {
    sends(ops)
        .into_iter()
        .map(|(_, frame, _)| core.frame_bytes(frame))
        .filter(|b| b[0] == 0x88 && b.len() >= 4)
        .map(|b| u16::from_be_bytes([b[2], b[3]]))
        .collect()
}

#[test]
fn an_unfinished_message_is_closed_with_1008_after_the_message_timeout() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.on_data(id.key, &first_fragment(b"{\"command\""), 10);
    let mut codes = Vec::new();
    // The client keeps the connection busy with pings: keepalive has nothing to say.
    for now in (400..=3_000).step_by(400) {
        core.on_data(id.key, &client_frame(0x9, b"p"), now);
        core.poll_timers(now);
        let out = ops(&mut core);
        codes.extend(close_codes(&core, &out));
        complete_sends(&mut core, &out, now);
    }
    assert!(codes.is_empty(), "{codes:?}");
    core.poll_timers(3_010 + TICK_SLACK);
    let out = ops(&mut core);
    assert_eq!(close_codes(&core, &out), vec![1008]);
    assert_eq!(core.take_counters().message_timeouts, 1);
}

#[test]
fn a_message_finished_in_time_clears_its_deadline() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.on_data(id.key, &first_fragment(br#"{"command":"#), 10);
    core.on_data(id.key, &client_frame(0x0, br#""unwatch","mid":"x"}"#), 900);
    assert_eq!(core.take_events().len(), 1, "the whole message");
    for now in (1_000..=6_000).step_by(250) {
        core.poll_timers(now);
        let out = ops(&mut core);
        assert!(!close_codes(&core, &out).contains(&1008));
        complete_sends(&mut core, &out, now);
    }
    assert_eq!(core.take_counters().message_timeouts, 0);
}

#[test]
fn a_command_waiting_for_the_application_stops_reading_until_taken() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    assert_eq!(core.wants_read(id.key), Some(3));
    core.on_data(id.key, &client_frame(0x1, b"{}"), 1);
    assert_eq!(core.wants_read(id.key), None, "a command is queued");
    assert!(core.take_read_owed().is_empty());
    assert_eq!(core.take_events().len(), 1);
    assert_eq!(core.wants_read(id.key), Some(3));
    assert_eq!(core.take_read_owed(), vec![id.key], "read again now");
}

#[test]
fn paused_reading_resumes_with_a_read() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.set_read_paused(id, true);
    assert_eq!(core.wants_read(id.key), None);
    core.set_read_paused(id, true);
    assert!(core.take_read_owed().is_empty());
    core.set_read_paused(id, false);
    assert_eq!(core.wants_read(id.key), Some(3));
    assert_eq!(core.take_read_owed(), vec![id.key]);
}

/// Sends every queued frame to completion; returns the bytes of each, in order, and the
/// operations seen.
fn written<T: Default>(core: &mut PlaneCore<T>, now: u64) -> (Vec<Vec<u8>>, Vec<IoOp>) {
    let mut frames = Vec::new();
    let mut all = Vec::new();
    loop {
        let out = ops(core);
        all.extend(out.iter().copied());
        let sent = sends(&out);
        if sent.is_empty() {
            return (frames, all);
        }
        for &(_, frame, _) in &sent {
            frames.push(core.frame_bytes(frame).to_vec());
        }
        complete_sends(core, &out, now);
    }
}

/// `watch`, a ping and a close, as one burst.
fn watch_ping_close() -> Vec<u8> {
    let mut input = client_frame(0x1, br#"{"command":"watch","mid":"m"}"#);
    input.extend(client_frame(0x9, b"hi"));
    input.extend(client_frame(0x8, &[0x03, 0xE8]));
    input
}

#[test]
fn a_command_is_answered_before_a_ping_and_close_sent_with_it() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.on_data(id.key, &watch_ping_close(), 1);
    assert!(
        written(&mut core, 2).0.is_empty(),
        "held behind the command"
    );
    assert!(
        core.record(id).unwrap().is_open(),
        "the answer may still come"
    );
    assert_eq!(core.take_events().len(), 1);
    // The answer comes later (say the catalog was behind), then the application releases.
    core.send(id, Bytes::from_static(b"status"), 5).unwrap();
    core.release(id, 6);
    let (frames, out) = written(&mut core, 7);
    // In this order on the wire (the two behind the status go in one send).
    assert_eq!(
        frames.concat(),
        [
            &b"status"[..],
            &[0x8A, 0x02, b'h', b'i'],
            &[0x88, 0x02, 0x03, 0xE8],
        ]
        .concat()
    );
    assert!(
        out.contains(&IoOp::ShutdownWrite { fd: 3 }),
        "a FIN after the echo of the close"
    );
    core.on_eof(id.key, 8);
    assert!(ops(&mut core).contains(&IoOp::Shutdown { fd: 3 }));
    core.release(id, 8);
    assert!(ops(&mut core).is_empty(), "released once");
}

#[test]
fn a_record_torn_down_while_holding_forgets_what_it_held() {
    let mut core = plane();
    let id = core.adopt(3, Flavour::Ws, 0);
    ops(&mut core);
    core.on_data(id.key, &watch_ping_close(), 1);
    core.abort(id);
    core.release(id, 2);
    let out = ops(&mut core);
    assert!(sends(&out).is_empty(), "{out:?}");
    assert_eq!(core.frames_alive(), 0);
}

#[test]
fn a_burst_leaves_no_working_memory_behind_once_trimmed() {
    let mut core = plane();
    let ids: Vec<RecordId> = (0..5_000)
        .map(|fd| core.adopt(fd, Flavour::Ws, 0))
        .collect();
    ops(&mut core);
    // A wave of statuses (a private frame each) and a broadcast (one shared frame).
    for &id in &ids {
        core.send(id, Bytes::from_static(b"status"), 1).unwrap();
    }
    let frame = core.share(Bytes::from_static(b"event"));
    for &id in &ids {
        core.push(id, frame, 1).unwrap();
    }
    core.unshare(frame);
    let out = written(&mut core, 2).1;
    assert!(sends(&out).len() >= 5_000);
    assert!(core.io.capacity() >= 5_000, "the burst grew the queue");
    core.trim_buffers();
    assert!(core.io.capacity() <= 1_024, "{}", core.io.capacity());
    assert_eq!(core.frames_alive(), 0);
    assert_eq!(core.len(), 5_000, "the records themselves stay");
}

#[test]
fn a_ktls_record_shares_the_plaintext_frame_reads_through_its_session_and_ends_with_an_alert() {
    use crate::server::tls::session::tests::{
        client_reads, client_sends, kernel_seal, kernel_tls_session,
    };
    let (session, mut client, mut kernel) = kernel_tls_session();
    let mut core = plane();
    let plain = core.adopt(10, Flavour::Ws, 0);
    let ktls = core.adopt_ktls(11, Flavour::Ws, 0, session);
    assert_eq!(
        ops(&mut core),
        vec![
            IoOp::Poll {
                key: plain.key,
                fd: 10
            },
            IoOp::Poll {
                key: ktls.key,
                fd: 11
            }
        ]
    );

    // A broadcast: one shared frame, one send each, no ciphertext of the record's own.
    let frame = core.share(Bytes::from_static(b"\x81\x05event"));
    core.push(plain, frame, 1).unwrap();
    core.push(ktls, frame, 1).unwrap();
    core.unshare(frame);
    let out = ops(&mut core);
    assert_eq!(
        sends(&out),
        vec![(plain.key, frame, 0), (ktls.key, frame, 0)]
    );
    assert_eq!(core.frames_alive(), 1, "shared, not sealed per record");
    // What the kernel makes of it is what the client reads.
    let wire = kernel_seal(&mut kernel, core.frame_bytes(frame), 23);
    assert_eq!(client_reads(&mut client, &wire), b"\x81\x05event");
    complete_sends(&mut core, &out, 2);

    // What the client sends is opened by the record's session.
    let cipher = client_sends(&mut client, &client_frame(0x1, b"{\"watch\":\"m1\"}"));
    core.on_data(ktls.key, &cipher, 3);
    let texts: Vec<_> = core
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            PlaneEvent::Text { id, text } => Some((id.key, text)),
            _ => None,
        })
        .collect();
    assert_eq!(texts.len(), 1);
    assert_eq!(texts[0].0, ktls.key);

    // The close: our close frame (plaintext to the kernel), the peer's answer, then the
    // close_notify as the kernel's alert record, before the socket is shut.
    core.close(ktls, 1000, "match ended", 4);
    let out = ops(&mut core);
    let (_, close, _) = sends(&out)[0];
    assert_eq!(&core.frame_bytes(close)[..2], &[0x88, 13]);
    complete_sends(&mut core, &out, 5);
    assert!(ops(&mut core).is_empty(), "lingering for the peer's close");
    let cipher = client_sends(&mut client, &client_frame(0x8, &[0x03, 0xE8]));
    core.on_data(ktls.key, &cipher, 6);
    let out = ops(&mut core);
    let alert = out
        .iter()
        .position(|op| {
            *op == IoOp::SendAlert {
                fd: 11,
                alert: [1, 0],
            }
        })
        .expect("close_notify sent");
    let shut = out
        .iter()
        .position(|op| {
            matches!(
                op,
                IoOp::Shutdown { fd: 11 } | IoOp::ShutdownWrite { fd: 11 }
            )
        })
        .expect("then the socket shut");
    assert!(alert < shut, "{out:?}");
    // The peer's FIN ends the lingering close.
    core.on_eof(ktls.key, 7);
    let out = ops(&mut core);
    finish_teardown(&mut core, &out);
    assert!(ops(&mut core).contains(&IoOp::Close { fd: 11 }));
    let events = core.take_events();
    assert!(events
        .iter()
        .any(|e| matches!(e, PlaneEvent::Closed { id, tls: true, .. } if id.key == ktls.key)));
    assert_eq!(core.tls_records(), 0, "the session went with the record");
}

/// A plane holding one kTLS record on socket `fd` (its poll already taken), and the rustls
/// client at the other end of its session.
fn plane_with_a_ktls_record(fd: i32) -> (PlaneCore<Vec<u32>>, RecordId, rustls::ClientConnection) {
    let (session, client, _) = crate::server::tls::session::tests::kernel_tls_session();
    let mut core = plane();
    let id = core.adopt_ktls(fd, Flavour::Ws, 0, session);
    ops(&mut core);
    (core, id, client)
}

#[test]
fn a_ktls_record_whose_client_asks_for_a_key_update_is_closed_cleanly() {
    let (mut core, id, mut client) = plane_with_a_ktls_record(11);
    client.refresh_traffic_keys().unwrap();
    let cipher =
        crate::server::tls::session::tests::client_sends(&mut client, &client_frame(0x9, b""));
    core.on_data(id.key, &cipher, 1);
    assert!(!core.record(id).unwrap().is_open(), "ended");
    assert_eq!(core.take_counters().ktls_update_closes, 1);
}

#[test]
fn a_ktls_record_that_reads_a_bad_record_ends_with_its_fatal_alert() {
    let (mut core, id, mut client) = plane_with_a_ktls_record(11);
    let mut cipher =
        crate::server::tls::session::tests::client_sends(&mut client, &client_frame(0x1, b"{}"));
    let last = cipher.len() - 1;
    cipher[last] ^= 1;
    core.on_data(id.key, &cipher, 1);
    let out = ops(&mut core);
    assert!(
        out.contains(&IoOp::SendAlert {
            fd: 11,
            alert: [2, 20]
        }),
        "bad_record_mac: {out:?}"
    );
    assert_eq!(core.take_counters().tls_errors, 1);
}
