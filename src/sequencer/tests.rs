//! Sequencer tests: the sample match end to end on SQLite, restart, watch splicing, errors
//! and store failures.

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::domain::{MatchScript, Period};
use crate::store::{MemoryStore, Snapshot, SqliteStore, StoredMatch};

const T0: i64 = 1_315_666_800_000;

fn clock() -> i64 {
    T0
}

type Seen = Arc<Mutex<Vec<Broadcast>>>;

pub(super) fn start(store: Box<dyn Store>) -> (SequencerHandle, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let sink: Sink = Arc::new(move |b| log.lock().unwrap().push(b));
    (Sequencer::start(store, sink, clock).unwrap(), seen)
}

fn call(h: &SequencerHandle, request: Request) -> Reply {
    let (tx, rx) = mpsc::channel();
    h.submit(
        request,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the sequencer answers")
}

pub(super) fn api(h: &SequencerHandle, request: Request) -> (u16, Value) {
    match call(h, request) {
        Reply::Watch(w) => panic!("expected an API reply, got {w:?}"),
        reply => {
            let (status, body) = crate::server::api::reply_status_body(&reply);
            (status, serde_json::from_str(&body).unwrap())
        }
    }
}

/// A public read, answered as a worker does: from a catalog fed by the broadcasts.
#[derive(Debug, Clone)]
pub(super) enum Read {
    Team(&'static str),
    Matches,
    Match(String),
    History(String, u64),
}

/// The catalog a worker would hold after every broadcast seen so far.
pub(super) fn catalog(seen: &Mutex<Vec<Broadcast>>) -> Catalog {
    let mut catalog = Catalog::default();
    for b in seen.lock().unwrap().iter() {
        catalog.apply(b);
    }
    catalog
}

pub(super) fn read(seen: &Mutex<Vec<Broadcast>>, what: Read) -> (u16, Value) {
    let mut c = catalog(seen);
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap();
    let missing = |what: &str| (404, json!({ "error": what }));
    match what {
        Read::Team(id) => c.team(id).map_or_else(
            || missing(&format!("team not found: {id}")),
            |t| (200, json(t)),
        ),
        Read::Matches => (200, json(&c.list())),
        Read::Match(mid) => c.get(&mid).map_or_else(
            || missing(&format!("match not found: {mid}")),
            |m| (200, json(m.json())),
        ),
        Read::History(mid, since) => c.get(&mid).map_or_else(
            || missing(&format!("match not found: {mid}")),
            |m| (200, json(&m.history.as_ref().unwrap().json_after(since))),
        ),
    }
}

fn watch(h: &SequencerHandle, mid: &str, since: Option<u64>) -> WatchReply {
    match call(
        h,
        Request::Watch {
            mid: mid.into(),
            since,
        },
    ) {
        Reply::Watch(w) => w,
        other => panic!("expected a watch reply, got {other:?}"),
    }
}

pub(super) fn post(h: &SequencerHandle, mid: &str, kind: EventKind, data: Value) -> (u16, Value) {
    api(
        h,
        Request::PostEvent {
            mid: mid.into(),
            kind,
            data,
            minute: None,
            expect_seq: None,
        },
    )
}

/// Creates the sample's teams and match; returns the script.
pub(super) fn create_sample(h: &SequencerHandle) -> MatchScript {
    let s = MatchScript::sample();
    for team in [&s.home, &s.visit] {
        let put = Request::PutTeam {
            id: team.id.clone(),
            name: team.name.clone(),
            division: team.division.clone(),
        };
        assert_eq!(api(h, put).0, 201);
    }
    let create = Request::CreateMatch {
        home: s.home.id.clone(),
        visit: s.visit.id.clone(),
        start_date: s.start_date.clone(),
        stadium: s.stadium.clone(),
    };
    assert_eq!(api(h, create), (201, json!({"id": "elp-tig-2011-09-10"})));
    s
}

pub(super) fn event_seqs(seen: &Mutex<Vec<Broadcast>>) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|b| match b {
            Broadcast::Event { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn msg_seq(text: &str) -> u64 {
    serde_json::from_str::<Value>(text).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

#[test]
fn the_sample_match_runs_through_the_sequencer_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (h, seen) = start(Box::new(SqliteStore::open(dir.path()).unwrap()));
    let script = create_sample(&h);
    let mid = script.match_id();
    let mut n = 0;
    for (kind, data) in script.events() {
        n += 1;
        assert_eq!(
            post(&h, &mid, kind, data.clone()),
            (201, json!({"seq": n, "ts": T0}))
        );
    }
    assert_eq!(event_seqs(&seen), (1..=n).collect::<Vec<_>>());
    {
        let seen = seen.lock().unwrap();
        let events: Vec<&Broadcast> = seen
            .iter()
            .filter(|b| matches!(b, Broadcast::Event { .. }))
            .collect();
        assert!(
            matches!(seen[0], Broadcast::Loaded(_)),
            "the load comes first"
        );
        let seen = events;
        for (i, b) in seen.iter().enumerate() {
            let Broadcast::Event {
                mid: m,
                seq,
                ended,
                ws_text,
                state,
                kind,
                ..
            } = b
            else {
                panic!("only events were broadcast");
            };
            assert_eq!(&**m, mid);
            assert_eq!(*ended, i + 1 == seen.len(), "only stop ends the match");
            let msg: Value = serde_json::from_str(ws_text).unwrap();
            assert_eq!(msg["type"], "event");
            assert_eq!(msg["seq"], *seq);
            assert_eq!(msg["kind"], kind.as_str());
            assert_eq!(state.seq, *seq);
        }
    }
    let (status, m) = read(&seen, Read::Match(mid.clone()));
    assert_eq!(status, 200);
    assert_eq!(
        (m["home_score"].as_u64(), m["visit_score"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(m["period"], "ended");
    h.shutdown();

    let (h, seen) = start(Box::new(SqliteStore::open(dir.path()).unwrap()));
    assert_eq!(read(&seen, Read::Match(mid.clone())), (200, m));
    let (_, history) = read(&seen, Read::History(mid.clone(), 0));
    assert_eq!(history.as_array().unwrap().len() as u64, n);
    assert_eq!(history[3]["data"]["player"], json!([25, "Albil"]));
    assert_eq!(
        post(
            &h,
            &mid,
            EventKind::Comment,
            json!({"text": "what a match"})
        ),
        (201, json!({"seq": n + 1, "ts": T0}))
    );
    assert_eq!(event_seqs(&seen), vec![n + 1]);
    let (_, teams) = read(&seen, Read::Team("tig"));
    assert_eq!(teams["name"], "Tigre");
    assert_eq!(read(&seen, Read::Matches), (200, json!([mid])));
}

#[test]
fn watch_mid_match_returns_exactly_the_missing_events() {
    let (h, seen) = start(Box::new(MemoryStore::new()));
    let script = create_sample(&h);
    let mid = script.match_id();
    for (kind, data) in script.events().take(10) {
        assert_eq!(post(&h, &mid, kind, data.clone()).0, 201);
    }
    let WatchReply::Found(w) = watch(&h, &mid, Some(4)) else {
        panic!("the match exists");
    };
    assert_eq!((w.seq, w.ended, &*w.mid), (10, false, mid.as_str()));
    let status: Value = serde_json::from_str(&w.status()).unwrap();
    assert_eq!(
        (status["type"].as_str(), status["seq"].as_u64()),
        (Some("status"), Some(10))
    );
    assert_eq!(status["state"]["period"], "first");
    let seqs: Vec<u64> = w.events.iter().map(|e| msg_seq(e)).collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9, 10]);

    let WatchReply::Found(w) = watch(&h, &mid, None) else {
        panic!()
    };
    assert!(w.events.is_empty());
    let WatchReply::Found(w) = watch(&h, &mid, Some(0)) else {
        panic!()
    };
    assert_eq!(w.events.len(), 10);
    let WatchReply::Found(w) = watch(&h, &mid, Some(99)) else {
        panic!()
    };
    assert!(w.events.is_empty());
    assert_eq!(
        watch(&h, "nope", Some(1)),
        WatchReply::NotFound {
            error: r#"{"type":"error","error":"match not found: nope"}"#.into()
        }
    );
    let (_, history) = read(&seen, Read::History(mid.clone(), 8));
    assert_eq!(history.as_array().unwrap().len(), 2);
    assert_eq!(history[0]["seq"], 9);
}

#[test]
fn watching_an_ended_match_says_so() {
    let (h, _) = start(Box::new(MemoryStore::new()));
    let script = create_sample(&h);
    let mid = script.match_id();
    for (kind, data) in script.events() {
        post(&h, &mid, kind, data.clone());
    }
    let WatchReply::Found(w) = watch(&h, &mid, None) else {
        panic!()
    };
    assert!(w.ended);
    assert_eq!(w.state.period, Period::Ended);
}

/// What a worker's FIFO inbox receives, from the sink and from reply closures.
#[derive(Debug)]
enum Inbox {
    Event(u64),
    Watch(u64, Vec<u64>),
}

#[test]
fn watch_replies_splice_into_live_events_without_gap_or_repeat() {
    const EVENTS: u64 = 200;
    const WATCHES: usize = 50;
    let inbox: Arc<Mutex<Vec<Inbox>>> = Arc::default();
    let sink_inbox = Arc::clone(&inbox);
    let sink: Sink = Arc::new(move |b| {
        if let Broadcast::Event { seq, .. } = b {
            sink_inbox.lock().unwrap().push(Inbox::Event(seq));
        }
    });
    let h = Sequencer::start(Box::new(MemoryStore::new()), sink, clock).unwrap();
    create_sample(&h);
    let mid = MatchScript::sample().match_id();
    let (done_tx, done_rx) = mpsc::channel();
    let writer = {
        let (h, mid, done_tx) = (h.clone(), mid.clone(), done_tx.clone());
        std::thread::spawn(move || {
            for i in 0..EVENTS {
                let tx = done_tx.clone();
                let data = json!({ "n": i });
                let req = Request::PostEvent {
                    mid: mid.clone(),
                    kind: EventKind::Comment,
                    data,
                    minute: None,
                    expect_seq: None,
                };
                h.submit(req, Box::new(move |_| tx.send(()).unwrap()));
            }
        })
    };
    for i in 0..WATCHES {
        let (tx, inbox) = (done_tx.clone(), Arc::clone(&inbox));
        let since = Some((i as u64 * 7) % 20);
        h.submit(
            Request::Watch {
                mid: mid.clone(),
                since,
            },
            Box::new(move |r| {
                let Reply::Watch(WatchReply::Found(w)) = r else {
                    panic!("watch found the match");
                };
                let seqs = w.events.iter().map(|e| msg_seq(e)).collect();
                inbox.lock().unwrap().push(Inbox::Watch(w.seq, seqs));
                tx.send(()).unwrap();
            }),
        );
        std::thread::yield_now();
    }
    writer.join().unwrap();
    for _ in 0..(EVENTS as usize + WATCHES) {
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    let inbox = inbox.lock().unwrap();
    let mut watches = 0;
    for (pos, item) in inbox.iter().enumerate() {
        let Inbox::Watch(n, replayed) = item else {
            continue;
        };
        watches += 1;
        let since = replayed.first().map_or(*n, |first| first - 1);
        let mut got = replayed.clone();
        got.extend(inbox[pos + 1..].iter().filter_map(|i| match i {
            Inbox::Event(seq) => Some(*seq),
            Inbox::Watch(..) => None,
        }));
        let want: Vec<u64> = (since.min(*n) + 1..=EVENTS).collect();
        assert_eq!(got, want, "watch at seq {n}");
    }
    assert_eq!(watches, WATCHES);
}

#[test]
fn api_errors_have_the_right_status() {
    let (h, seen) = start(Box::new(MemoryStore::new()));
    let put = |id: &str| Request::PutTeam {
        id: id.into(),
        name: "N".into(),
        division: "D".into(),
    };
    assert_eq!(api(&h, put("BAD")).0, 422);
    create_sample(&h);
    assert_eq!(
        api(&h, put("elp")),
        (200, json!({"id": "elp", "name": "N", "division": "D"}))
    );
    let create = |home: &str, visit: &str, date: &str| Request::CreateMatch {
        home: home.into(),
        visit: visit.into(),
        start_date: date.into(),
        stadium: "S".into(),
    };
    let (status, body) = api(&h, create("elp", "tig", "2011-09-10"));
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("match already exists: elp-tig-2011-09-10"))
    );
    assert_eq!(
        api(&h, create("elp", "boc", "2011-09-10")),
        (422, json!({"error": "unknown team: boc"}))
    );
    assert_eq!(api(&h, create("elp", "tig", "2011-09-31")).0, 422);
    assert_eq!(api(&h, create("elp", "elp", "2011-09-11")).0, 422);
    assert_eq!(read(&seen, Read::Team("boc")).0, 404);
    assert_eq!(read(&seen, Read::Match("x".into())).0, 404);
    assert_eq!(read(&seen, Read::History("x".into(), 0)).0, 404);
    assert_eq!(api(&h, Request::DeleteMatch { mid: "x".into() }).0, 404);
    assert_eq!(
        post(&h, "x", EventKind::Start, json!({})),
        (404, json!({"error": "match not found: x"}))
    );
    let mid = "elp-tig-2011-09-10";
    assert_eq!(
        post(&h, mid, EventKind::Goal, json!({"team": "tig"})),
        (
            422,
            json!({"error": "match has not started: goal needs a start event first"})
        )
    );
    assert_eq!(post(&h, mid, EventKind::Start, json!([])).0, 422);
    assert!(event_seqs(&seen).is_empty(), "refusals broadcast nothing");
    assert_eq!(read(&seen, Read::Match(mid.into())).1["seq"], 0);
}

#[test]
fn a_store_failure_acknowledges_and_broadcasts_nothing() {
    let store = MemoryStore::new();
    let switch = store.failure_switch();
    let (h, seen) = start(Box::new(store));
    let mid = create_sample(&h).match_id();
    assert_eq!(post(&h, &mid, EventKind::Start, json!({})).0, 201);
    switch.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, body) = post(&h, &mid, EventKind::Goal, json!({"team": "tig"}));
    assert_eq!(status, 500);
    assert!(body["error"].as_str().unwrap().starts_with("store failure"));
    assert_eq!(api(&h, Request::DeleteMatch { mid: mid.clone() }).0, 500);
    assert_eq!(
        api(
            &h,
            Request::PutTeam {
                id: "boc".into(),
                name: "B".into(),
                division: "D".into()
            }
        )
        .0,
        500
    );
    assert_eq!(read(&seen, Read::Team("boc")).0, 404);
    let (_, m) = read(&seen, Read::Match(mid.clone()));
    assert_eq!(
        (m["seq"].as_u64(), m["visit_score"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(event_seqs(&seen), [1]);
    switch.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        post(&h, &mid, EventKind::Goal, json!({"team": "tig"})),
        (201, json!({"seq": 2, "ts": T0}))
    );
    assert_eq!(event_seqs(&seen), [1, 2]);
}

#[test]
fn delete_cancels_watchers_and_forgets_the_match() {
    let (h, seen) = start(Box::new(MemoryStore::new()));
    let script = create_sample(&h);
    let mid = script.match_id();
    post(&h, &mid, EventKind::Start, json!({}));
    assert_eq!(
        api(&h, Request::DeleteMatch { mid: mid.clone() }),
        (200, json!({"id": mid}))
    );
    assert!(matches!(
        seen.lock().unwrap().last(),
        Some(Broadcast::Cancelled { mid: m }) if **m == *mid
    ));
    assert_eq!(read(&seen, Read::Match(mid.clone())).0, 404);
    assert_eq!(read(&seen, Read::Matches), (200, json!([])));
    // Created again, it starts over at seq 1.
    let create = Request::CreateMatch {
        home: "elp".into(),
        visit: "tig".into(),
        start_date: script.start_date.clone(),
        stadium: script.stadium.clone(),
    };
    assert_eq!(api(&h, create).0, 201);
    assert_eq!(post(&h, &mid, EventKind::Start, json!({})).1["seq"], 1);
}

#[test]
fn after_shutdown_requests_get_503() {
    let (h, _) = start(Box::new(MemoryStore::new()));
    h.shutdown();
    assert_eq!(api(&h, Request::DeleteMatch { mid: "x".into() }).0, 503);
    assert!(matches!(watch(&h, "x", None), WatchReply::NotFound { .. }));
}

/// A store whose snapshot has a gap in a match's history.
struct GappyStore;

impl Store for GappyStore {
    fn load_all(&mut self) -> crate::store::Result<Snapshot> {
        let s = MatchScript::sample();
        let mut state = Match::new(&s.home, &s.visit, &s.start_date, &s.stadium).unwrap();
        state.seq = 2;
        let e = |seq| Event {
            seq,
            ts: 0,
            kind: EventKind::Comment,
            data: json!({}),
            minute: None,
        };
        Ok(Snapshot {
            teams: vec![],
            matches: vec![StoredMatch {
                state,
                events: vec![e(1), e(3)],
            }],
        })
    }
    fn put_team(&mut self, _: &crate::domain::Team) -> crate::store::Result<()> {
        Ok(())
    }
    fn create_match(&mut self, _: &Match) -> crate::store::Result<()> {
        Ok(())
    }
    fn append_event(&mut self, _: &str, _: &Event, _: &Match) -> crate::store::Result<()> {
        Ok(())
    }
    fn delete_match(&mut self, _: &str) -> crate::store::Result<()> {
        Ok(())
    }
}

#[test]
fn start_refuses_a_history_with_gaps() {
    let sink: Sink = Arc::new(|_| {});
    let err = Sequencer::start(Box::new(GappyStore), sink, clock).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
}

#[test]
fn handles_and_broadcasts_are_shareable() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<SequencerHandle>();
    shareable::<Broadcast>();
}

#[test]
fn requests_racing_a_shutdown_are_all_answered() {
    let (h, _) = start(Box::new(MemoryStore::new()));
    let (tx, rx) = mpsc::channel();
    let submitter = {
        let h = h.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                let tx = tx.clone();
                let delete = Request::DeleteMatch { mid: "x".into() };
                h.submit(delete, Box::new(move |r| tx.send(r).unwrap()));
            }
        })
    };
    h.shutdown();
    submitter.join().unwrap();
    for _ in 0..200 {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("every request is answered")
        {
            Reply::Refused(Refused::UnknownMatch(_) | Refused::Stopped) => {}
            other => panic!("{other:?}"),
        }
    }
}
