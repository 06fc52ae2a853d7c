//! The sequencer on a real `redis-server`, without the stream reader (so a node learns of
//! other writers only through its appends): a node *ahead* of Redis — the match deleted and
//! re-created behind its back (Redis at seq 0), or Redis restored from an older snapshot —
//! never answers 201 for an event that was not stored: it resyncs the match from Redis and
//! posts on top of what Redis holds. Group commits over several matches and racing nodes
//! keep one contiguous log per match with every acknowledged event in it exactly once. An
//! event's match minute is stored in its stream entry and read back.

mod common;

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::redis::Redis;
use matchstream::domain::{Event, EventKind, Match, MatchScript};
use matchstream::sequencer::{
    Broadcast, Done, Refused, Reply, Request, Sequencer, SequencerHandle, Sink,
};
use matchstream::store::{RedisStore, Store};
use serde_json::json;

type Seen = Arc<Mutex<Vec<Broadcast>>>;

fn node(redis: &Redis) -> (SequencerHandle, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let sink: Sink = Arc::new(move |b| log.lock().unwrap().push(b));
    let store = RedisStore::open(&redis.url()).unwrap();
    let h = Sequencer::start(Box::new(store), sink, || 1_000).unwrap();
    (h, seen)
}

fn call(h: &SequencerHandle, request: Request) -> Reply {
    let (tx, rx) = mpsc::channel();
    h.submit(request, Box::new(move |r| tx.send(r).unwrap()));
    rx.recv_timeout(Duration::from_secs(10)).expect("answered")
}

fn comment(h: &SequencerHandle, mid: &str, n: u64) -> Reply {
    let req = Request::PostEvent {
        mid: mid.into(),
        kind: EventKind::Comment,
        data: json!({ "n": n }),
        minute: None,
        expect_seq: None,
    };
    call(h, req)
}

/// Creates the sample's teams and `n` matches between them (one per day from the 10th).
fn create_matches(h: &SequencerHandle, n: usize) -> Vec<String> {
    let s = MatchScript::sample();
    for t in [&s.home, &s.visit] {
        let put = Request::PutTeam {
            id: t.id.clone(),
            name: t.name.clone(),
            division: t.division.clone(),
        };
        assert!(matches!(call(h, put), Reply::Done(_)));
    }
    (0..n)
        .map(|i| {
            let create = Request::CreateMatch {
                home: s.home.id.clone(),
                visit: s.visit.id.clone(),
                start_date: format!("2011-09-{:02}", 10 + i),
                stadium: s.stadium.clone(),
            };
            match call(h, create) {
                Reply::Done(Done::MatchCreated { id }) => id,
                other => panic!("{other:?}"),
            }
        })
        .collect()
}

/// The seqs of the events stored in Redis for `mid`.
fn stored_seqs(redis: &Redis, mid: &str) -> Vec<u64> {
    let mut store = RedisStore::open(&redis.url()).unwrap();
    store
        .load_match(mid)
        .unwrap()
        .map_or_else(Vec::new, |m| m.events.iter().map(|e| e.seq).collect())
}

fn event_seqs(seen: &Seen, mid: &str) -> Vec<u64> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|b| match b {
            Broadcast::Event { mid: m, seq, .. } if &**m == mid => Some(*seq),
            _ => None,
        })
        .collect()
}

/// Deletes `mid` in Redis and re-creates it (seq 0), as another node would.
fn recreate_behind_its_back(redis: &Redis, mid: &str) -> Match {
    let mut other = RedisStore::open(&redis.url()).unwrap();
    let state = other.load_match(mid).unwrap().unwrap().state;
    let mut fresh = state.clone();
    fresh.seq = 0;
    fresh.last_ts = 0;
    other.delete_match(mid).unwrap();
    let s = MatchScript::sample();
    let m = Match::new(&s.home, &s.visit, &fresh.start_date, &fresh.stadium).unwrap();
    other.create_match(&m).unwrap();
    m
}

#[test]
fn an_event_minute_is_stored_in_redis_and_read_back() {
    let redis = Redis::start();
    let (h, _) = node(&redis);
    let mid = create_matches(&h, 1).remove(0);
    for (seq, minute) in [(1, Some(67)), (2, None), (3, Some(0))] {
        let req = Request::PostEvent {
            mid: mid.clone(),
            kind: EventKind::Comment,
            data: json!({ "n": seq }),
            minute,
            expect_seq: None,
        };
        assert!(matches!(call(&h, req), Reply::Done(Done::Event { .. })));
    }
    let mut store = RedisStore::open(&redis.url()).unwrap();
    let stored = store.load_match(&mid).unwrap().unwrap();
    let minutes: Vec<_> = stored.events.iter().map(|e| (e.seq, e.minute)).collect();
    assert_eq!(minutes, [(1, Some(67)), (2, None), (3, Some(0))]);
}

#[test]
fn a_node_ahead_of_a_recreated_match_resyncs_instead_of_acknowledging_a_lost_event() {
    let redis = Redis::start();
    let (a, seen) = node(&redis);
    let mid = create_matches(&a, 1).remove(0);
    for n in 1..=3 {
        assert_eq!(
            comment(&a, &mid, n),
            Reply::Done(Done::Event { seq: n, ts: 1_000 })
        );
    }
    recreate_behind_its_back(&redis, &mid);
    // a's replica is at 3, Redis at 0: the append must not be taken for a success.
    assert_eq!(
        comment(&a, &mid, 4),
        Reply::Done(Done::Event { seq: 1, ts: 1_000 })
    );
    assert_eq!(
        stored_seqs(&redis, &mid),
        [1],
        "what a acknowledged is stored"
    );
    // Watchers of the old replica were told (cancelled); then the stored match is published.
    let seen_now = seen.lock().unwrap();
    let tail: Vec<String> = seen_now
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(|b| match b {
            Broadcast::Cancelled { .. } => "cancelled".to_string(),
            Broadcast::Match(m) => format!("match at {}", m.state.seq),
            Broadcast::Event { seq, .. } => format!("event {seq}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(tail, ["cancelled", "match at 0", "event 1"]);
}

#[test]
fn a_node_ahead_of_a_restored_redis_resyncs_and_posts_on_top_of_it() {
    let redis = Redis::start();
    let (a, _seen) = node(&redis);
    let mid = create_matches(&a, 1).remove(0);
    for n in 1..=5 {
        assert!(matches!(comment(&a, &mid, n), Reply::Done(_)));
    }
    // Redis comes back from an older snapshot: the match at seq 2.
    let m = recreate_behind_its_back(&redis, &mid);
    let mut other = RedisStore::open(&redis.url()).unwrap();
    let mut state = m;
    for seq in 1..=2 {
        state.seq = seq;
        state.last_ts = 500;
        let e = Event {
            seq,
            ts: 500,
            kind: EventKind::Comment,
            data: json!({ "old": seq }),
            minute: None,
        };
        other.append_event(&mid, &e, &state).unwrap();
    }
    // Before the fix every post retried 32 times and answered 503 until a restart.
    assert_eq!(
        comment(&a, &mid, 6),
        Reply::Done(Done::Event { seq: 3, ts: 1_000 })
    );
    assert_eq!(stored_seqs(&redis, &mid), [1, 2, 3]);
    assert_eq!(
        comment(&a, &mid, 7),
        Reply::Done(Done::Event { seq: 4, ts: 1_000 })
    );
}

#[test]
fn group_commits_of_racing_nodes_keep_one_log_with_every_acknowledged_event_once() {
    const MATCHES: usize = 3;
    const PER_NODE: u64 = 120;
    let redis = Redis::start();
    let (a, seen_a) = node(&redis);
    let mids = create_matches(&a, MATCHES);
    let (b, _) = node(&redis); // knows the matches from its load
    let (tx, rx) = mpsc::channel::<(String, String, Reply)>();
    // Both nodes get their posts all at once: each takes them in batches over the matches.
    for (name, h) in [("a", &a), ("b", &b)] {
        for i in 0..PER_NODE {
            let mid = mids[i as usize % MATCHES].clone();
            let tx = tx.clone();
            let tag = format!("{name}{i}");
            let req = Request::PostEvent {
                mid: mid.clone(),
                kind: EventKind::Comment,
                data: json!({ "tag": tag }),
                minute: None,
                expect_seq: None,
            };
            h.submit(req, Box::new(move |r| tx.send((mid, tag, r)).unwrap()));
        }
    }
    drop(tx);
    let mut acked: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for (mid, tag, reply) in rx.iter() {
        match reply {
            Reply::Done(Done::Event { seq, .. }) => {
                let prev = acked.entry(mid).or_default().insert(seq, tag);
                assert!(prev.is_none(), "seq {seq} acknowledged twice");
            }
            Reply::Refused(Refused::Contention) => {} // allowed: nothing was stored
            other => panic!("{other:?}"),
        }
    }
    let mut store = RedisStore::open(&redis.url()).unwrap();
    let mut total = 0;
    for mid in &mids {
        let stored = store.load_match(mid).unwrap().unwrap();
        let seqs: Vec<u64> = stored.events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "contiguous"
        );
        assert_eq!(stored.state.seq, seqs.len() as u64);
        let by_seq: BTreeMap<u64, String> = stored
            .events
            .iter()
            .map(|e| (e.seq, e.data["tag"].as_str().unwrap().to_string()))
            .collect();
        let mine = acked.get(mid).cloned().unwrap_or_default();
        for (seq, tag) in &mine {
            assert_eq!(
                by_seq.get(seq),
                Some(tag),
                "acknowledged {tag} is stored as {seq}"
            );
        }
        assert_eq!(mine.len(), by_seq.len(), "nothing stored unacknowledged");
        total += mine.len();
        // a broadcast each of its own events and the ones it caught up, in order.
        let a_seqs = event_seqs(&seen_a, mid);
        assert!(a_seqs.windows(2).all(|w| w[1] == w[0] + 1), "{a_seqs:?}");
    }
    assert!(total as u64 >= PER_NODE, "most posts go through: {total}");
}
