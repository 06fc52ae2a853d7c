//! The sequencer on a store shared with another node (an in-memory stand-in for Redis):
//! conflicts are caught up and retried, other nodes' events are applied in order and
//! broadcast once, duplicates are skipped, an unreachable store answers 503.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::tests::{api, create_sample, event_seqs, post, read, start, Read};
use super::*;
use crate::domain::Team;
use crate::store::{Snapshot, StoredMatch};

/// What both nodes see: one log per match; appends check the expected seq like the Lua
/// script does.
#[derive(Default)]
struct Shared {
    teams: BTreeMap<String, Team>,
    matches: BTreeMap<String, StoredMatch>,
}

#[derive(Clone, Default)]
struct SharedStore {
    shared: Arc<Mutex<Shared>>,
    down: Arc<AtomicBool>,
}

impl SharedStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(StoreError::Redis("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

impl Store for SharedStore {
    fn load_all(&mut self) -> Result<Snapshot, StoreError> {
        let s = self.shared.lock().unwrap();
        Ok(Snapshot {
            teams: s.teams.values().cloned().collect(),
            matches: s.matches.values().cloned().collect(),
        })
    }
    fn put_team(&mut self, team: &Team) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.shared.lock().unwrap();
        s.teams.insert(team.id.clone(), team.clone());
        Ok(())
    }
    fn create_match(&mut self, m: &Match) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.shared.lock().unwrap();
        if s.matches.contains_key(&m.id) {
            return Err(StoreError::Conflict(m.id.clone()));
        }
        let stored = StoredMatch {
            state: m.clone(),
            events: Vec::new(),
        };
        s.matches.insert(m.id.clone(), stored);
        Ok(())
    }
    fn append_event(&mut self, mid: &str, event: &Event, state: &Match) -> Result<(), StoreError> {
        self.check()?;
        let mut s = self.shared.lock().unwrap();
        let stored = s.matches.get_mut(mid).unwrap();
        if stored.state.seq + 1 != event.seq {
            return Err(StoreError::Conflict(format!("at {}", stored.state.seq)));
        }
        stored.events.push(event.clone());
        stored.state = state.clone();
        Ok(())
    }
    fn delete_match(&mut self, mid: &str) -> Result<(), StoreError> {
        self.check()?;
        self.shared.lock().unwrap().matches.remove(mid);
        Ok(())
    }
    fn is_shared(&self) -> bool {
        true
    }
    fn events_after(&mut self, mid: &str, seq: u64) -> Result<Vec<Event>, StoreError> {
        self.check()?;
        let s = self.shared.lock().unwrap();
        Ok(s.matches.get(mid).map_or(Vec::new(), |m| {
            m.events.iter().filter(|e| e.seq > seq).cloned().collect()
        }))
    }
}

#[test]
fn a_stale_node_catches_up_on_conflict_and_broadcasts_in_order() {
    let store = SharedStore::default();
    let (a, seen_a) = start(Box::new(store.clone()));
    let s = create_sample(&a);
    let mid = "elp-tig-2011-09-10";
    // b starts after the match exists but knows none of a's events.
    let (b, seen_b) = start(Box::new(store.clone()));
    let first = s.events().next().unwrap();
    assert_eq!(post(&a, mid, first.0, first.1.clone()).0, 201);
    assert_eq!(post(&a, mid, EventKind::Comment, json!({"n": 2})).0, 201);
    // b validates against seq 0, conflicts, catches up 1 and 2, then appends 3.
    let (status, body) = post(&b, mid, EventKind::Comment, json!({"n": 3}));
    assert_eq!((status, body["seq"].clone()), (201, json!(3)));
    assert_eq!(event_seqs(&seen_b), [1, 2, 3]);
    // a hears of 3 from its reader; a duplicate of 2 is skipped.
    let events = store.clone().events_after(mid, 1);
    let remote = Request::Remote(Remote::Events {
        mid: mid.into(),
        events: events.unwrap(),
    });
    assert_eq!(api(&a, remote).0, 200);
    assert_eq!(event_seqs(&seen_a), [1, 2, 3]);
    // The fold's rules still hold on the shared order: no second start.
    assert_eq!(post(&b, mid, first.0, first.1.clone()).0, 422);
}

#[test]
fn a_rejection_on_a_stale_replica_is_judged_again_on_the_latest() {
    let store = SharedStore::default();
    let (a, _) = start(Box::new(store.clone()));
    let s = create_sample(&a);
    let mid = "elp-tig-2011-09-10";
    let (b, seen_b) = start(Box::new(store.clone()));
    let first = s.events().next().unwrap();
    assert_eq!(post(&a, mid, first.0, first.1.clone()).0, 201);
    // b still thinks the match has not started; the store knows better.
    assert_eq!(post(&b, mid, EventKind::Halftime, json!({})).0, 201);
    assert_eq!(event_seqs(&seen_b), [1, 2]);
}

#[test]
fn remote_changes_create_teams_and_matches_and_gaps_are_filled() {
    let store = SharedStore::default();
    let (a, _) = start(Box::new(store.clone()));
    let (b, seen_b) = start(Box::new(store.clone()));
    let s = create_sample(&a);
    let mid = "elp-tig-2011-09-10";
    for team in [&s.home, &s.visit] {
        let t = Team::new(&team.id, &team.name, &team.division).unwrap();
        assert_eq!(api(&b, Request::Remote(Remote::Team(t))).0, 200);
    }
    let state = store.shared.lock().unwrap().matches[mid].state.clone();
    let created = Request::Remote(Remote::Created(Box::new(state)));
    assert_eq!(api(&b, created).0, 200);
    let first = s.events().next().unwrap();
    assert_eq!(post(&a, mid, first.0, first.1.clone()).0, 201);
    assert_eq!(post(&a, mid, EventKind::Comment, json!({})).0, 201);
    // Only event 2 arrives: event 1 is read from the store first.
    let two = store.clone().events_after(mid, 1).unwrap();
    let remote = Request::Remote(Remote::Events {
        mid: mid.into(),
        events: two,
    });
    assert_eq!(api(&b, remote).0, 200);
    assert_eq!(event_seqs(&seen_b), [1, 2]);
    let (_, m) = read(&seen_b, Read::Match(mid.into()));
    assert_eq!(
        (m["seq"].clone(), m["period"].clone()),
        (json!(2), json!("first"))
    );
    assert_eq!(api(&b, Request::Remote(Remote::Deleted(mid.into()))).0, 200);
    assert_eq!(read(&seen_b, Read::Match(mid.into())).0, 404);
}

#[test]
fn an_unreachable_store_refuses_writes_with_503() {
    let store = SharedStore::default();
    let (a, seen) = start(Box::new(store.clone()));
    create_sample(&a);
    store.down.store(true, Ordering::SeqCst);
    let (status, body) = post(&a, "elp-tig-2011-09-10", EventKind::Comment, json!({}));
    assert_eq!((status, body), (503, json!({"error": "redis unavailable"})));
    assert!(event_seqs(&seen).is_empty());
    store.down.store(false, Ordering::SeqCst);
    assert_eq!(
        post(&a, "elp-tig-2011-09-10", EventKind::Comment, json!({})).0,
        201
    );
}

#[test]
fn a_post_with_an_expected_seq_is_never_applied_twice() {
    let store = SharedStore::default();
    let (a, _) = start(Box::new(store.clone()));
    let s = create_sample(&a);
    let mid = "elp-tig-2011-09-10";
    let (b, seen_b) = start(Box::new(store.clone()));
    let first = s.events().next().unwrap();
    let expect = |h: &SequencerHandle, seq: u64, n: u64| {
        api(
            h,
            Request::PostEvent {
                mid: mid.into(),
                kind: EventKind::Comment,
                data: json!({ "n": n }),
                minute: None,
                expect_seq: Some(seq),
            },
        )
    };
    assert_eq!(post(&a, mid, first.0, first.1.clone()).0, 201);
    assert_eq!(expect(&a, 2, 2).0, 201);
    // The same event again (its first answer lost): a knows it exists.
    let (status, body) = expect(&a, 2, 2);
    assert_eq!((status, body["seq"].clone()), (409, json!(2)));
    // b's replica is behind: it catches up, then refuses rather than appending it as 3.
    let (status, body) = expect(&b, 2, 2);
    assert_eq!((status, body["seq"].clone()), (409, json!(2)));
    assert_eq!(event_seqs(&seen_b), [1, 2]);
    // The next number goes through on either node; one too far ahead is refused.
    assert_eq!(expect(&b, 3, 3).0, 201);
    assert_eq!(expect(&a, 3, 3).0, 409);
    assert_eq!(expect(&a, 9, 9).0, 409);
    assert_eq!(expect(&a, 4, 4).0, 201);
}
