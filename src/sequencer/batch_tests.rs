//! Group commit on real SQLite: N events queued together are one transaction (one fsync),
//! keep their order, and a refused event in the middle refuses only itself; the write queue
//! is bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::tests::{create_sample, event_seqs, post};
use super::*;
use crate::store::{Append, BatchOutcome, Snapshot, SqliteStore};

/// A store that holds its first group commit until the test lets it go, so that the
/// requests submitted meanwhile queue up behind it.
struct Gated {
    inner: Box<dyn Store>,
    gate: Arc<Mutex<Option<Gate>>>,
    batches: Arc<AtomicU64>,
}

/// Tells the test the first commit began, then waits to be let go.
struct Gate {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
}

impl Store for Gated {
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
    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome, StoreError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.entered.send(());
            let _ = gate.release.recv_timeout(Duration::from_secs(10));
        }
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.append_batch(batch)
    }
    fn delete_match(&mut self, mid: &str) -> Result<(), StoreError> {
        self.inner.delete_match(mid)
    }
}

struct Rig {
    h: SequencerHandle,
    seen: Arc<Mutex<Vec<Broadcast>>>,
    commits: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
    open_gate: mpsc::Sender<()>,
    entered: mpsc::Receiver<()>,
    mid: String,
    _dir: tempfile::TempDir,
}

/// A sequencer on SQLite with the sample match created, its store gated.
fn rig(limits: Limits) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let commits = sqlite.commit_counter();
    let (open_gate, release) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    let batches = Arc::new(AtomicU64::new(0));
    let store = Gated {
        inner: Box::new(sqlite),
        gate: Arc::new(Mutex::new(None)),
        batches: Arc::clone(&batches),
    };
    let gate_slot = Arc::clone(&store.gate);
    let seen: Arc<Mutex<Vec<Broadcast>>> = Arc::default();
    let log = Arc::clone(&seen);
    let sink: Sink = Arc::new(move |b| log.lock().unwrap().push(b));
    let h = Sequencer::start_with(Box::new(store), sink, || 1_000, limits).unwrap();
    let mid = create_sample(&h).match_id();
    *gate_slot.lock().unwrap() = Some(Gate {
        entered: entered_tx,
        release,
    });
    Rig {
        h,
        seen,
        commits,
        batches,
        open_gate,
        entered,
        mid,
        _dir: dir,
    }
}

/// Submits a post; its answer arrives on the returned receiver.
fn submit(h: &SequencerHandle, mid: &str, kind: EventKind, data: Value) -> mpsc::Receiver<Reply> {
    let (tx, rx) = mpsc::channel();
    let req = Request::PostEvent {
        mid: mid.into(),
        kind,
        data,
        minute: None,
        expect_seq: None,
    };
    h.submit(req, Box::new(move |r| tx.send(r).unwrap()));
    rx
}

fn answer(rx: &mpsc::Receiver<Reply>) -> Reply {
    rx.recv_timeout(Duration::from_secs(10)).expect("answered")
}

/// Waits until the sequencer holds the gated commit of the first event.
fn wait_until_gated(rig: &Rig) {
    rig.entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the first post reaches the store");
}

#[test]
fn n_events_queued_together_are_one_commit_in_order() {
    const N: u64 = 50;
    let rig = rig(Limits::default());
    let first = submit(&rig.h, &rig.mid, EventKind::Start, json!({}));
    wait_until_gated(&rig);
    let rest: Vec<_> = (0..N)
        .map(|i| submit(&rig.h, &rig.mid, EventKind::Comment, json!({ "n": i })))
        .collect();
    rig.open_gate.send(()).unwrap();
    assert_eq!(
        answer(&first),
        Reply::Done(Done::Event { seq: 1, ts: 1_000 })
    );
    for (i, rx) in rest.iter().enumerate() {
        let seq = i as u64 + 2;
        assert_eq!(answer(rx), Reply::Done(Done::Event { seq, ts: 1_000 }));
    }
    assert_eq!(
        rig.commits.load(Ordering::SeqCst),
        2,
        "one transaction for the first event, one for the {N} queued behind it"
    );
    assert_eq!(rig.batches.load(Ordering::SeqCst), 2);
    assert_eq!(event_seqs(&rig.seen), (1..=N + 1).collect::<Vec<_>>());
    // Broadcast in order, each with the data it was posted with.
    let seen = rig.seen.lock().unwrap();
    let texts: Vec<u64> = seen
        .iter()
        .filter_map(|b| match b {
            Broadcast::Event { seq, ws_text, .. } if *seq > 1 => {
                let v: Value = serde_json::from_str(ws_text).unwrap();
                Some(v["data"]["n"].as_u64().unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(texts, (0..N).collect::<Vec<_>>());
}

#[test]
fn a_refused_event_in_the_middle_of_a_batch_refuses_only_itself() {
    let rig = rig(Limits::default());
    let first = submit(&rig.h, &rig.mid, EventKind::Start, json!({}));
    wait_until_gated(&rig);
    let a = submit(&rig.h, &rig.mid, EventKind::Comment, json!({"n": "a"}));
    let bad = submit(&rig.h, &rig.mid, EventKind::Start, json!({}));
    let unknown = submit(&rig.h, "nope", EventKind::Comment, json!({}));
    let b = submit(&rig.h, &rig.mid, EventKind::Goal, json!({"team": "tig"}));
    rig.open_gate.send(()).unwrap();
    assert!(matches!(
        answer(&first),
        Reply::Done(Done::Event { seq: 1, .. })
    ));
    assert!(matches!(
        answer(&a),
        Reply::Done(Done::Event { seq: 2, .. })
    ));
    assert_eq!(
        answer(&bad),
        Reply::Refused(Refused::Rejected(Rejection::AlreadyStarted))
    );
    assert_eq!(
        answer(&unknown),
        Reply::Refused(Refused::UnknownMatch("nope".into()))
    );
    assert!(matches!(
        answer(&b),
        Reply::Done(Done::Event { seq: 3, .. })
    ));
    assert_eq!(rig.commits.load(Ordering::SeqCst), 2);
    assert_eq!(event_seqs(&rig.seen), [1, 2, 3]);
    let state = super::tests::catalog(&rig.seen)
        .get(&rig.mid)
        .unwrap()
        .state
        .clone();
    assert_eq!((state.seq, state.visit_score), (3, 1));
}

#[test]
fn a_lone_event_is_committed_alone() {
    let rig = rig(Limits::default());
    rig.open_gate.send(()).unwrap();
    for seq in 1..=3 {
        let kind = if seq == 1 {
            EventKind::Start
        } else {
            EventKind::Comment
        };
        assert_eq!(post(&rig.h, &rig.mid, kind, json!({})).0, 201);
        assert_eq!(rig.commits.load(Ordering::SeqCst), seq);
    }
}

#[test]
fn an_event_minute_is_broadcast_and_one_past_130_is_refused_alone() {
    let rig = rig(Limits::default());
    rig.open_gate.send(()).unwrap();
    let with = |kind, minute| Request::PostEvent {
        mid: rig.mid.clone(),
        kind,
        data: json!({}),
        minute,
        expect_seq: None,
    };
    let send = |request| {
        let (tx, rx) = mpsc::channel();
        rig.h
            .submit(request, Box::new(move |r| tx.send(r).unwrap()));
        answer(&rx)
    };
    assert!(matches!(
        send(with(EventKind::Start, Some(0))),
        Reply::Done(_)
    ));
    assert!(matches!(
        send(with(EventKind::Comment, Some(131))),
        Reply::Refused(Refused::Invalid(_))
    ));
    assert!(matches!(
        send(with(EventKind::Comment, Some(67))),
        Reply::Done(Done::Event { seq: 2, .. })
    ));
    let pushed: Vec<(Value, Vec<(String, String)>)> = rig
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|b| match b {
            Broadcast::Event {
                ws_text,
                line_fields,
                ..
            } => Some((serde_json::from_str(ws_text).unwrap(), line_fields.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.len(), 2, "the refused event is not broadcast");
    assert_eq!(pushed[0].0["minute"], 0);
    assert_eq!(pushed[1].0["minute"], 67);
    assert_eq!(pushed[1].1, vec![("minute".to_owned(), "67".to_owned())]);
}

#[test]
fn past_the_queue_bound_writes_are_refused_busy_and_nothing_is_lost() {
    let limits = Limits {
        max_queued_writes: 4,
        ..Limits::default()
    };
    let rig = rig(limits);
    let first = submit(&rig.h, &rig.mid, EventKind::Start, json!({}));
    wait_until_gated(&rig);
    let queued: Vec<_> = (0..3)
        .map(|i| submit(&rig.h, &rig.mid, EventKind::Comment, json!({ "n": i })))
        .collect();
    let over = submit(&rig.h, &rig.mid, EventKind::Comment, json!({"n": "over"}));
    assert_eq!(
        over.try_recv().expect("refused at once, on the caller"),
        Reply::Refused(Refused::Busy)
    );
    rig.open_gate.send(()).unwrap();
    assert!(matches!(
        answer(&first),
        Reply::Done(Done::Event { seq: 1, .. })
    ));
    for (i, rx) in queued.iter().enumerate() {
        let seq = i as u64 + 2;
        assert!(matches!(answer(rx), Reply::Done(Done::Event { seq: s, .. }) if s == seq));
    }
    assert_eq!(rig.h.queued_writes(), 0);
    assert_eq!(post(&rig.h, &rig.mid, EventKind::Comment, json!({})).0, 201);
    assert_eq!(event_seqs(&rig.seen), [1, 2, 3, 4, 5]);
}

#[test]
fn answered_writes_leave_the_queue_bound() {
    let limits = Limits {
        max_queued_writes: 1,
        ..Limits::default()
    };
    let rig = rig(limits);
    rig.open_gate.send(()).unwrap();
    for _ in 0..5 {
        assert_eq!(post(&rig.h, &rig.mid, EventKind::Comment, json!({})).0, 201);
        assert_eq!(rig.h.queued_writes(), 0);
    }
    let put = Request::PutTeam {
        id: "boc".into(),
        name: "Boca".into(),
        division: "A".into(),
    };
    assert_eq!(super::tests::api(&rig.h, put).0, 201);
    assert_eq!(rig.h.queued_writes(), 0);
}
