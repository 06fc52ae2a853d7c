//! Pipelined group commit on real SQLite with the WAL synced apart
//! ([`SqliteStore::sync_wal_separately`]): no event is broadcast or answered before the sync
//! that covers it returns, the events that arrive during a sync are one commit after it, a
//! failed sync acknowledges nothing, and what was acknowledged is there after a reopen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::tests::{create_sample, event_seqs};
use super::*;
use crate::store::{Append, BatchOutcome, Snapshot, SqliteStore, Syncer};

/// SQLite whose deferred sync the test controls: the first sync waits for the gate (or
/// fails, when `fail` is set); the writes are counted.
struct Held {
    inner: SqliteStore,
    gate: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    entered: mpsc::Sender<()>,
    fail: bool,
    writes: Arc<AtomicU64>,
}

impl Store for Held {
    fn load_all(&mut self) -> Result<Snapshot, StoreError> {
        self.inner.load_all()
    }
    fn put_team(&mut self, team: &Team) -> Result<(), StoreError> {
        self.inner.put_team(team)
    }
    fn create_match(&mut self, m: &Match) -> Result<(), StoreError> {
        self.inner.create_match(m)
    }
    fn append_event(&mut self, mid: &str, e: &Event, state: &Match) -> Result<(), StoreError> {
        self.inner.append_event(mid, e, state)
    }
    fn write_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write_batch(batch)
    }
    fn deferred_sync(&self) -> Option<Syncer> {
        let real = self.inner.deferred_sync()?;
        let gate = Arc::clone(&self.gate);
        let entered = Mutex::new(self.entered.clone());
        let fail = self.fail;
        Some(Arc::new(move || {
            let held = gate.lock().unwrap().take();
            if let Some(release) = held {
                let _ = entered.lock().unwrap().send(());
                let _ = release.recv_timeout(Duration::from_secs(10));
                if fail {
                    return Err(std::io::Error::other("disk on fire"));
                }
            }
            real()
        }))
    }
    fn delete_match(&mut self, mid: &str) -> Result<(), StoreError> {
        self.inner.delete_match(mid)
    }
}

struct Rig {
    h: SequencerHandle,
    seen: Arc<Mutex<Vec<Broadcast>>>,
    writes: Arc<AtomicU64>,
    release: mpsc::Sender<()>,
    entered: mpsc::Receiver<()>,
    mid: String,
    dir: tempfile::TempDir,
}

/// The sample match created, then the next sync held (failing after release when `fail`).
fn rig(fail: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteStore::open(dir.path()).unwrap();
    sqlite.sync_wal_separately().unwrap();
    let (release, gate) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    let slot = Arc::new(Mutex::new(None));
    let writes = Arc::new(AtomicU64::new(0));
    let store = Held {
        inner: sqlite,
        gate: Arc::clone(&slot),
        entered: entered_tx,
        fail,
        writes: Arc::clone(&writes),
    };
    let seen: Arc<Mutex<Vec<Broadcast>>> = Arc::default();
    let log = Arc::clone(&seen);
    let sink: Sink = Arc::new(move |b| log.lock().unwrap().push(b));
    let h = Sequencer::start_with(Box::new(store), sink, || 1_000, Limits::default()).unwrap();
    let mid = create_sample(&h).match_id();
    *slot.lock().unwrap() = Some(gate);
    Rig {
        h,
        seen,
        writes,
        release,
        entered,
        mid,
        dir,
    }
}

fn submit(h: &SequencerHandle, mid: &str, kind: EventKind) -> mpsc::Receiver<Reply> {
    let (tx, rx) = mpsc::channel();
    let req = Request::PostEvent {
        mid: mid.into(),
        kind,
        data: json!({}),
        minute: None,
        expect_seq: None,
    };
    h.submit(req, Box::new(move |r| tx.send(r).unwrap()));
    rx
}

fn answer(rx: &mpsc::Receiver<Reply>) -> Reply {
    rx.recv_timeout(Duration::from_secs(10)).expect("answered")
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn nothing_is_broadcast_or_answered_before_its_sync_and_what_waits_is_one_commit() {
    const N: u64 = 20;
    let rig = rig(false);
    let first = submit(&rig.h, &rig.mid, EventKind::Start);
    rig.entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the first event's sync starts");
    let rest: Vec<_> = (0..N)
        .map(|_| submit(&rig.h, &rig.mid, EventKind::Comment))
        .collect();
    // The events queued behind the held sync are staged, not yet written.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        rig.writes.load(Ordering::SeqCst),
        1,
        "written during the sync"
    );
    assert!(
        first.recv_timeout(Duration::from_millis(100)).is_err(),
        "answered before its sync returned"
    );
    assert!(rest.iter().all(|rx| rx.try_recv().is_err()));
    assert_eq!(
        event_seqs(&rig.seen),
        Vec::<u64>::new(),
        "broadcast unsynced"
    );
    rig.release.send(()).unwrap();
    assert_eq!(
        answer(&first),
        Reply::Done(Done::Event { seq: 1, ts: 1_000 })
    );
    for (i, rx) in rest.iter().enumerate() {
        let seq = i as u64 + 2;
        assert_eq!(answer(rx), Reply::Done(Done::Event { seq, ts: 1_000 }));
    }
    assert_eq!(event_seqs(&rig.seen), (1..=N + 1).collect::<Vec<_>>());
    assert_eq!(
        rig.writes.load(Ordering::SeqCst),
        2,
        "the {N} events that waited are one commit"
    );
    rig.h.shutdown();
    let stored = SqliteStore::open(rig.dir.path())
        .unwrap()
        .load_all()
        .unwrap();
    assert_eq!(stored.matches[0].events.len() as u64, N + 1);
    assert_eq!(stored.matches[0].state.seq, N + 1);
}

#[test]
fn a_failed_sync_acknowledges_nothing_it_covered_nor_any_later_event() {
    let rig = rig(true);
    let first = submit(&rig.h, &rig.mid, EventKind::Start);
    rig.entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the first event's sync starts");
    let behind = submit(&rig.h, &rig.mid, EventKind::Comment);
    std::thread::sleep(Duration::from_millis(100));
    rig.release.send(()).unwrap();
    for rx in [first, behind] {
        assert!(matches!(
            answer(&rx),
            Reply::Refused(Refused::StoreFailed(_))
        ));
    }
    let later = submit(&rig.h, &rig.mid, EventKind::Comment);
    assert!(matches!(
        answer(&later),
        Reply::Refused(Refused::StoreFailed(_))
    ));
    assert_eq!(event_seqs(&rig.seen), Vec::<u64>::new());
}

#[test]
fn dropping_every_handle_stops_the_thread_and_closes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut sqlite = SqliteStore::open(dir.path()).unwrap();
    sqlite.sync_wal_separately().unwrap();
    let sink: Sink = Arc::new(|_| {});
    let h = Sequencer::start(Box::new(sqlite), sink, || 1_000).unwrap();
    let mid = create_sample(&h).match_id();
    assert!(matches!(
        answer(&submit(&h, &mid, EventKind::Start)),
        Reply::Done(_)
    ));
    drop(h);
    // The last connection's close removes the WAL file.
    let wal = dir.path().join(format!("{}-wal", crate::store::DB_FILE));
    wait_for("the store to close", || !wal.exists());
}
