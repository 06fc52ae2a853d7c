//! The fan-out hot path, piece by piece: encoding an event once (the WebSocket text frame and
//! the TCP-line block), the JSON status snapshot a new watcher gets first (the sample match at
//! full time, full lineups), and the watcher plane's user-space share of a broadcast: 10,000
//! records get the frame, their SEND operations are drained (what the shell turns into SQEs)
//! and completed.
//!
//! Run: `cargo bench --bench fanout`.

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use matchstream::domain::{
    event_line_fields, event_message, status_message, Event, EventKind, Match, MatchScript,
};
use matchstream::proto::keepalive::KeepalivePolicy;
use matchstream::proto::line::encode_block;
use matchstream::server::plane::core::{IoOp, PlaneConfig, PlaneCore};
use matchstream::server::plane::record::{Flavour, RecordId};
use matchstream::server::watch::text_frame;

/// Watchers on one worker in the queueing bench.
const WATCHERS: usize = 10_000;

/// The sample match played to the end (every event applied).
fn played_sample() -> (Match, Vec<Event>) {
    let s = MatchScript::sample();
    let mut m = Match::new(&s.home, &s.visit, &s.start_date, &s.stadium).unwrap();
    let mut events = Vec::new();
    for (i, (kind, data)) in s.events().enumerate() {
        let ts = 1_315_681_200_000 + i as i64 * 1000;
        let data = m.apply(kind, data, ts).unwrap();
        events.push(Event {
            seq: i as u64 + 1,
            ts,
            kind,
            data,
            minute: None,
        });
    }
    (m, events)
}

fn encode_once(c: &mut Criterion) {
    let (m, events) = played_sample();
    let goal = events
        .iter()
        .find(|e| e.kind == EventKind::Goal)
        .unwrap()
        .clone();
    let mut g = c.benchmark_group("encode_event");
    let frame_len = text_frame(&event_message(&m.id, &goal)).len();
    g.throughput(Throughput::Bytes(frame_len as u64));
    g.bench_function("ws_text_frame", |b| {
        b.iter(|| text_frame(&event_message(black_box(&m.id), black_box(&goal))))
    });
    g.bench_function("line_block", |b| {
        b.iter(|| {
            let fields = event_line_fields(&goal);
            let fields: Vec<(&str, String)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let mut out = Vec::with_capacity(256);
            encode_block(&mut out, goal.ts, goal.kind.as_str(), &fields);
            Bytes::from(out)
        })
    });
    g.finish();
}

fn plane_broadcast(c: &mut Criterion) {
    let mut core: PlaneCore<()> = PlaneCore::new(
        PlaneConfig {
            ws_limits: Default::default(),
            echo_limits: Default::default(),
            echo_max_outbound_bytes: 4 << 20,
            keepalive: KeepalivePolicy {
                ping_after_ms: 30_000,
                dead_after_ms: 30_000,
            },
            max_outbound_bytes: 256 << 10,
            send_timeout_ms: 60_000,
            close_linger_ms: 2_000,
            message_timeout_ms: 10_000,
            sends_defer_pings: true,
        },
        0,
    );
    let ids: Vec<RecordId> = (0..WATCHERS)
        .map(|i| core.adopt(i as i32, Flavour::Ws, 0))
        .collect();
    while core.poll_io().is_some() {}
    let frame = Bytes::from(vec![b'x'; 200]);
    let mut g = c.benchmark_group("plane_broadcast");
    g.throughput(Throughput::Elements(WATCHERS as u64));
    g.bench_function("10k_records_push_drain_complete", |b| {
        let mut sends = Vec::with_capacity(WATCHERS);
        b.iter(|| {
            let f = core.share(frame.clone());
            for id in &ids {
                let _ = core.push(*id, f, 1);
            }
            core.unshare(f);
            sends.clear();
            while let Some(op) = core.poll_io() {
                if let IoOp::Send { key, frame, .. } = op {
                    sends.push((key, core.frame_bytes(frame).len() as i32));
                }
            }
            for &(key, len) in &sends {
                core.on_send_done(key, len, 1);
            }
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let (m, _) = played_sample();
    let mut g = c.benchmark_group("status_snapshot");
    g.throughput(Throughput::Bytes(status_message(&m).len() as u64));
    g.bench_function("sample_full_time", |b| {
        b.iter(|| status_message(black_box(&m)))
    });
    g.finish();
}

criterion_group!(benches, encode_once, plane_broadcast, snapshot);
criterion_main!(benches);
