//! Tests of the SQLite store (and, through the same scenario, the memory store).

use super::*;
use crate::domain::MatchScript;
use crate::store::MemoryStore;

/// Teams and the sample match, with its first `n` events applied and appended.
fn play_sample(store: &mut dyn Store, n: usize) -> (Match, Vec<Event>) {
    let script = MatchScript::sample();
    store.put_team(&script.home).unwrap();
    store.put_team(&script.visit).unwrap();
    let mut m = Match::new(
        &script.home,
        &script.visit,
        &script.start_date,
        &script.stadium,
    )
    .unwrap();
    store.create_match(&m).unwrap();
    let mut events = Vec::new();
    let minutes = script.derived_minutes();
    for (i, ((kind, data), minute)) in script.events().zip(minutes).take(n).enumerate() {
        let ts = 1_000 + i as i64;
        let data = m.apply(kind, data, ts).unwrap();
        let event = Event {
            seq: m.seq,
            ts,
            kind,
            data,
            minute,
        };
        store.append_event(&m.id, &event, &m).unwrap();
        events.push(event);
    }
    (m, events)
}

fn check_snapshot(store: &mut dyn Store, m: &Match, events: &[Event]) {
    let snap = store.load_all().unwrap();
    let ids: Vec<&str> = snap.teams.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["elp", "tig"]);
    assert_eq!(snap.matches.len(), 1);
    assert_eq!(&snap.matches[0].state, m);
    assert_eq!(snap.matches[0].events, events);
}

#[test]
fn open_creates_a_wal_database_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested/data");
    let mut store = SqliteStore::open(&data_dir).unwrap();
    assert!(data_dir.join(DB_FILE).exists());
    assert_eq!(store.synchronous_level().unwrap(), 2);
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(store.load_all().unwrap(), Snapshot::default());
    let normal = SqliteStore::open_with(&data_dir, Synchronous::Normal).unwrap();
    assert_eq!(normal.synchronous_level().unwrap(), 1);
}

#[test]
fn reopen_restores_everything_and_seq_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (mut m, events) = {
        let mut store = SqliteStore::open(dir.path()).unwrap();
        play_sample(&mut store, 10)
    };
    let mut store = SqliteStore::open(dir.path()).unwrap();
    check_snapshot(&mut store, &m, &events);
    assert_eq!(m.seq, 10);
    assert_eq!(m.last_ts, 1_009);

    let data = m
        .apply(
            EventKind::Comment,
            &serde_json::json!({"text": "go on"}),
            5_000,
        )
        .unwrap();
    let next = Event {
        seq: 11,
        ts: 5_000,
        kind: EventKind::Comment,
        data,
        minute: None,
    };
    store.append_event(&m.id, &next, &m).unwrap();
    drop(store);
    let mut store = SqliteStore::open(dir.path()).unwrap();
    let snap = store.load_all().unwrap();
    assert_eq!(snap.matches[0].state.seq, 11);
    assert_eq!(snap.matches[0].state.last_ts, 5_000);
    assert_eq!(snap.matches[0].events.last(), Some(&next));
}

#[test]
fn a_failed_append_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path()).unwrap();
    let (m, events) = play_sample(&mut store, 3);
    // The same seq again: the primary key refuses it, the state is not touched.
    let mut later = m.clone();
    later.home_score = 9;
    assert!(matches!(
        store.append_event(&m.id, &events[2], &later),
        Err(StoreError::Sqlite(_))
    ));
    // An unknown match: the event insert is rolled back.
    let stray = Event {
        seq: 1,
        ..events[0].clone()
    };
    assert!(matches!(
        store.append_event("nope-x-2011-01-01", &stray, &m),
        Err(StoreError::NoSuchMatch(_))
    ));
    check_snapshot(&mut store, &m, &events);
    let stray_rows: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM events WHERE mid = 'nope-x-2011-01-01'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stray_rows, 0);
}

#[test]
fn put_team_replaces_and_duplicate_match_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path()).unwrap();
    let (m, _) = play_sample(&mut store, 0);
    let renamed = Team::new("elp", "Estudiantes LP", "Primera B").unwrap();
    store.put_team(&renamed).unwrap();
    assert!(store.create_match(&m).is_err());
    let snap = store.load_all().unwrap();
    assert_eq!(snap.teams[0], renamed);
    assert_eq!(snap.teams.len(), 2);
}

#[test]
fn delete_removes_the_match_and_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path()).unwrap();
    let (m, _) = play_sample(&mut store, 5);
    store.delete_match(&m.id).unwrap();
    store.delete_match(&m.id).unwrap();
    let snap = store.load_all().unwrap();
    assert!(snap.matches.is_empty());
    assert_eq!(snap.teams.len(), 2);
    // The same id can be created again and starts over at seq 1.
    let (m2, events) = play_sample(&mut store, 2);
    assert_eq!(m2.id, m.id);
    drop(store);
    let mut store = SqliteStore::open(dir.path()).unwrap();
    check_snapshot(&mut store, &m2, &events);
}

#[test]
fn a_schema_1_data_dir_opens_and_its_events_have_no_minute() {
    let dir = tempfile::tempdir().unwrap();
    let (m, mut events) = {
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let played = play_sample(&mut store, 3);
        assert_eq!(played.1[1].minute, Some(5), "the first goal, 5'");
        // What a build before the match minute left behind.
        store
            .conn
            .execute_batch("ALTER TABLE events DROP COLUMN minute; PRAGMA user_version = 1;")
            .unwrap();
        played
    };
    let mut store = SqliteStore::open(dir.path()).unwrap();
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    for e in &mut events {
        e.minute = None;
    }
    check_snapshot(&mut store, &m, &events);
    // New events keep their minute, next to the old ones without.
    let mut next = m.clone();
    let data = next
        .apply(
            EventKind::Comment,
            &serde_json::json!({"text": "hi"}),
            2_000,
        )
        .unwrap();
    let event = Event {
        seq: next.seq,
        ts: 2_000,
        kind: EventKind::Comment,
        data,
        minute: Some(19),
    };
    store.append_event(&m.id, &event, &next).unwrap();
    events.push(event);
    check_snapshot(&mut store, &next, &events);
    let mut history = store.history_source().unwrap();
    let tail = history.history(&m.id, 2).unwrap().unwrap();
    assert_eq!(tail, events[2..]);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).unwrap();
        store.conn.pragma_update(None, "user_version", 7).unwrap();
    }
    match SqliteStore::open(dir.path()) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (7, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[test]
fn corrupt_rows_are_reported_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path()).unwrap();
    play_sample(&mut store, 2);
    store
        .conn
        .execute("UPDATE events SET kind = 'status' WHERE seq = 2", [])
        .unwrap();
    assert!(matches!(store.load_all(), Err(StoreError::Corrupt(_))));
}

#[test]
fn memory_store_behaves_the_same() {
    let mut store = MemoryStore::new();
    let (m, events) = play_sample(&mut store, 12);
    check_snapshot(&mut store, &m, &events);
    let switch = store.failure_switch();
    switch.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        store.delete_match(&m.id),
        Err(StoreError::Unavailable)
    ));
    switch.store(false, std::sync::atomic::Ordering::SeqCst);
    store.delete_match(&m.id).unwrap();
    assert!(store.load_all().unwrap().matches.is_empty());
}

#[test]
fn background_checkpoints_keep_the_wal_small_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open_with(dir.path(), Synchronous::Normal).unwrap();
    store.checkpoint_in_background().unwrap();
    let (mut m, _) = play_sample(&mut store, 1);
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    let mut largest = 0;
    for batch in 0..40 {
        let mut events = Vec::new();
        let mut states = Vec::new();
        for i in 0..250 {
            let data = serde_json::json!({ "text": format!("{batch}/{i} {}", "x".repeat(200)) });
            let data = m.apply(EventKind::Comment, &data, 5_000).unwrap();
            events.push(Event {
                seq: m.seq,
                ts: 5_000,
                kind: EventKind::Comment,
                data,
                minute: None,
            });
            states.push(m.clone());
        }
        let batch: Vec<Append<'_>> = events
            .iter()
            .zip(&states)
            .map(|(event, state)| Append {
                mid: &m.id,
                event,
                state,
            })
            .collect();
        store.append_batch(&batch).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |md| md.len()));
    }
    // The writer never checkpoints (autocheckpoint is off): the rows reach the database
    // file only through the background thread.
    std::thread::sleep(CHECKPOINT_EVERY * 3);
    let db = std::fs::metadata(dir.path().join(DB_FILE)).unwrap().len();
    assert!(
        db > 2 << 20,
        "10,000 rows of ~250 bytes checkpointed: db is {db} bytes"
    );
    assert!(largest < 24 << 20, "WAL grew to {largest} bytes");
    drop(store);
    let mut again = SqliteStore::open(dir.path()).unwrap();
    let snap = again.load_all().unwrap();
    assert_eq!(snap.matches[0].events.len(), 1 + 10_000);
    assert_eq!(snap.matches[0].state.seq, 10_001);
}

#[test]
fn a_storm_without_pauses_keeps_restarting_the_wal_and_loses_nothing() {
    const COMMITS: u64 = 600;
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(dir.path()).unwrap();
    store.sync_wal_separately().unwrap();
    store.restart_wal_every(50);
    let (mut m, _) = play_sample(&mut store, 1);
    let wal = dir.path().join(format!("{DB_FILE}-wal"));
    let mut wal_bytes = 0;
    for _ in 0..COMMITS {
        let data = serde_json::json!({ "text": "x".repeat(500) });
        let data = m.apply(EventKind::Comment, &data, 5_000).unwrap();
        let event = Event {
            seq: m.seq,
            ts: 5_000,
            kind: EventKind::Comment,
            data,
            minute: None,
        };
        let batch = [Append {
            mid: &m.id,
            event: &event,
            state: &m,
        }];
        store.append_batch(&batch).unwrap();
        wal_bytes = wal_bytes.max(std::fs::metadata(&wal).unwrap().len());
    }
    // Without the writer's checkpoints every commit appends (≥ 2 pages): ≥ 4.8 MB here.
    assert!(
        wal_bytes < 2 << 20,
        "the WAL grew to {wal_bytes} bytes over {COMMITS} commits"
    );
    drop(store);
    let stored = SqliteStore::open(dir.path()).unwrap().load_all().unwrap();
    assert_eq!(stored.matches[0].state.seq, m.seq);
    assert_eq!(stored.matches[0].events.len() as u64, m.seq);
}
