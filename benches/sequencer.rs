//! How many events per second the sequencer acknowledges with durability on: each event is
//! validated, numbered, group-committed to SQLite (WAL, `synchronous=FULL`, a file on the build
//! disk, not tmpfs), broadcast to a no-op sink and acknowledged. `NORMAL` is measured for
//! comparison (survives a process crash, not a power loss).
//!
//! Run: `cargo bench --bench sequencer`.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;

use matchstream::domain::{EventKind, MatchScript};
use matchstream::sequencer::{
    system_clock_ms, Done, Reply, Request, Sequencer, SequencerHandle, Sink,
};
use matchstream::store::{SqliteStore, Synchronous};

/// Events submitted back to back per measured batch (the writer does not wait between them).
const BATCH: u64 = 64;

fn call(h: &SequencerHandle, request: Request) -> Reply {
    let (tx, rx) = mpsc::channel();
    h.submit(request, Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

/// A sequencer on a fresh database with the sample match created and started.
fn started_sequencer(dir: &std::path::Path, sync: Synchronous) -> (SequencerHandle, String) {
    let store = SqliteStore::open_with(dir, sync).unwrap();
    let sink: Sink = Arc::new(|_| {});
    let h = Sequencer::start(Box::new(store), sink, system_clock_ms).unwrap();
    let s = MatchScript::sample();
    for t in [&s.home, &s.visit] {
        let put = Request::PutTeam {
            id: t.id.clone(),
            name: t.name.clone(),
            division: t.division.clone(),
        };
        call(&h, put);
    }
    let create = Request::CreateMatch {
        home: s.home.id.clone(),
        visit: s.visit.id.clone(),
        start_date: s.start_date.clone(),
        stadium: s.stadium.clone(),
    };
    call(&h, create);
    let mid = s.match_id();
    let (kind, data) = s.events().next().unwrap();
    let start = Request::PostEvent {
        mid: mid.clone(),
        kind,
        data: data.clone(),
        minute: None,
        expect_seq: None,
    };
    call(&h, start);
    (h, mid)
}

fn shot(mid: &str) -> Request {
    Request::PostEvent {
        mid: mid.to_owned(),
        kind: EventKind::Shot,
        data: json!({"team": "tig", "player": 7}),
        minute: None,
        expect_seq: None,
    }
}

/// Submits `n` events at once and waits for every acknowledgement.
fn pipelined(h: &SequencerHandle, mid: &str, n: u64) {
    let (tx, rx) = mpsc::channel();
    for _ in 0..n {
        let tx = tx.clone();
        h.submit(shot(mid), Box::new(move |r| tx.send(r).unwrap()));
    }
    for _ in 0..n {
        match rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            Reply::Done(Done::Event { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Posts one event and waits for its acknowledgement before the next.
fn one_by_one(h: &SequencerHandle, mid: &str, n: u64) {
    for _ in 0..n {
        match call(h, shot(mid)) {
            Reply::Done(Done::Event { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}

fn bench_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("sequencer_ack");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (label, sync) in [("full", Synchronous::Full), ("normal", Synchronous::Normal)] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let (h, mid) = started_sequencer(dir.path(), sync);
        group.bench_function(BenchmarkId::new("pipelined", label), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    pipelined(&h, &mid, BATCH);
                }
                t.elapsed()
            })
        });
        group.bench_function(BenchmarkId::new("one_by_one", label), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    one_by_one(&h, &mid, BATCH);
                }
                t.elapsed()
            })
        });
        h.shutdown();
    }
    group.finish();
}

/// The criterion group (its generated function has no doc of its own).
mod group {
    #![allow(missing_docs)]
    criterion::criterion_group!(benches, super::bench_ack);
}

criterion_main!(group::benches);
