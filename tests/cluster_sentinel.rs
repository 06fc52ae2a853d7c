//! Redis high availability with real processes (a primary with `appendonly yes`, two
//! replicas, three Sentinels, quorum 2): with `--redis-min-replicas 1` a SIGKILL of the
//! primary in the middle of a write storm loses no acknowledged event (both nodes'
//! histories, and a node started afterwards, hold every 201), every watcher sees 1..N
//! without a gap, a duplicate or an event the new primary lacks, and writes are accepted
//! again within 10 s (also with a Sentinel and a node killed); a `SENTINEL FAILOVER` with
//! the old primary alive keeps every 201 when every replica must confirm; an event that no
//! replica confirms is answered 503, counted in `/metrics` and shown to no watcher on any
//! node until a replica holds it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::sentinel::{Proc, RedisHa, MASTER};
use common::*;
use matchstream::feed::http_client::HttpClient;
use serde_json::{json, Value};

/// One write of the storm: its text, the answer's status, and the seq of a 201.
#[derive(Debug, Clone)]
struct Posted {
    text: String,
    status: u16,
    seq: Option<u64>,
    at: Instant,
}

/// Posts comments one after another, alternating between `clients`, until `stop`.
struct Publisher {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Posted>>>,
    thread: JoinHandle<()>,
}

impl Publisher {
    fn start(mut clients: Vec<HttpClient>) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, a, l) = (stop.clone(), acked.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            let mut n = 0usize;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                let text = format!("storm {n}");
                let client = &mut clients[n % 2];
                let (status, seq) = match client.request(
                    "POST",
                    &format!("/1/match/{SAMPLE_MID}/events"),
                    Some(&json!({"kind": "comment", "data": {"text": text}}).to_string()),
                ) {
                    Ok(r) if r.status == 201 => (201, body_json(&r)["seq"].as_u64()),
                    Ok(r) => {
                        assert_eq!(r.status, 503, "only 201 or 503 while failing over: {r:?}");
                        std::thread::sleep(Duration::from_millis(50));
                        (503, None)
                    }
                    Err(e) => panic!("the node itself must answer: {e}"),
                };
                if status == 201 {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                let at = Instant::now();
                l.lock().unwrap().push(Posted {
                    text,
                    status,
                    seq,
                    at,
                });
            }
        });
        Publisher {
            stop,
            acked,
            log,
            thread,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    fn finish(self) -> Vec<Posted> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("publisher");
        let log = self.log.lock().unwrap();
        log.clone()
    }
}

/// Posts a last event through `node` (retrying 503s, ≤ 10 s) once the storm is over: its
/// seq is the end of the log, which `node` then holds whole.
fn post_last(node: &Server) -> u64 {
    let mut admin = node.admin();
    let mut seq = 0;
    wait_until(WAIT, "a last event acknowledged", || {
        let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": "last"}));
        seq = body_json(&r)["seq"].as_u64().unwrap_or(0);
        r.status == 201
    });
    seq
}

/// `/history` of the match on `node`, checked to be 1..N in order.
fn history(node: &Server) -> Vec<Value> {
    let h = get_json(node, &format!("/1/match/{SAMPLE_MID}/history"));
    let events = h.as_array().expect("history array").clone();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1, "history is 1..N on {}", node.http);
    }
    events
}

/// Every 201 is in `events` under its seq, with its text.
fn assert_holds_every_ack(events: &[Value], posted: &[Posted], what: &str) {
    for p in posted.iter().filter(|p| p.status == 201) {
        let seq = p.seq.expect("seq of a 201");
        let e = events
            .get(seq as usize - 1)
            .unwrap_or_else(|| panic!("{what}: acknowledged seq {seq} missing"));
        assert_eq!(e["data"]["text"], p.text.as_str(), "{what}: seq {seq}");
    }
}

/// Reads `w`'s events after `from` up to `last`: each the next seq, each as in `truth`.
fn assert_watcher_saw(w: &mut Watcher, from: u64, last: u64, truth: &[Value], what: &str) {
    for seq in from + 1..=last {
        let e = w.expect_event(SAMPLE_MID, seq);
        let t = &truth[seq as usize - 1];
        assert_eq!(
            (&e["kind"], &e["data"], &e["ts"]),
            (&t["kind"], &t["data"], &t["ts"]),
            "{what}: watcher's seq {seq} is the new primary's"
        );
    }
}

/// Starts a storm through `clients`, calls `fail` with the primary's port once 30 writes
/// are acknowledged, waits for the Sentinels to name another primary, and stops after 30
/// writes acknowledged after that. Returns the writes and the time of the failure.
fn storm_through_failover(
    ha: &mut RedisHa,
    clients: Vec<HttpClient>,
    fail: impl FnOnce(&mut RedisHa, u16),
) -> (Vec<Posted>, Instant) {
    let publisher = Publisher::start(clients);
    wait_until(Duration::from_secs(20), "30 writes before the kill", || {
        publisher.acked() >= 30
    });
    let old = ha.primary_port().expect("a primary");
    let killed = Instant::now();
    let before = publisher.acked();
    fail(ha, old);
    wait_until(Duration::from_secs(30), "the sentinels to promote", || {
        ha.primary_port().is_some_and(|p| p != old)
    });
    eprintln!("failover done {:?} after the kill", killed.elapsed());
    wait_until(Duration::from_secs(40), "30 writes after the kill", || {
        publisher.acked() >= before + 30
    });
    (publisher.finish(), killed)
}

/// Asserts the writes came back within 10 s of the kill; returns how long it took.
fn assert_writes_back(posted: &[Posted], killed: Instant) -> Duration {
    let first = posted
        .iter()
        .find(|p| p.status == 201 && p.at > killed)
        .expect("a 201 after the kill");
    let back = first.at - killed;
    eprintln!(
        "first 201 {back:?} after the kill; {} acknowledged, {} answered 503",
        posted.iter().filter(|p| p.status == 201).count(),
        posted.iter().filter(|p| p.status == 503).count()
    );
    assert!(
        back <= Duration::from_secs(10),
        "writes back after {back:?}"
    );
    back
}

fn watch_from_start(node: &Server) -> Watcher {
    let mut w = node.ws();
    w.watch(SAMPLE_MID, Some(0));
    let status = w.expect_status(SAMPLE_MID);
    assert_eq!(status["seq"], 1, "the storm starts after the kick-off");
    w.expect_event(SAMPLE_MID, 1);
    w
}

#[test]
fn a_primary_killed_mid_storm_loses_no_acknowledged_event() {
    let mut ha = RedisHa::start(2);
    let a = Server::start_ha_node(&ha, "a", 1);
    let b = Server::start_ha_node(&ha, "b", 1);
    post_sample(&a, 1);
    b.wait_for_seq(SAMPLE_MID, 1);
    let mut watchers = [watch_from_start(&a), watch_from_start(&b)];

    let (posted, killed) =
        storm_through_failover(&mut ha, vec![a.admin(), b.admin()], |ha, old| {
            ha.data_on(old).kill9()
        });

    let last = post_last(&a);
    let truth = history(&a);
    assert_eq!(truth.len() as u64, last);
    b.wait_for_seq(SAMPLE_MID, last);
    assert_eq!(history(&b), truth, "both nodes hold the same log");
    assert_holds_every_ack(&truth, &posted, "node a");
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_watcher_saw(w, 1, last, &truth, &format!("watcher {i}"));
        w.expect_silence(Duration::from_millis(200));
    }
    let c = Server::start_ha_node(&ha, "c", 1);
    assert_eq!(history(&c), truth, "a node started afterwards loads it all");
    assert_writes_back(&posted, killed);
}

#[test]
fn failover_with_a_sentinel_and_a_node_killed_too() {
    let mut ha = RedisHa::start(2);
    let a = Server::start_ha_node(&ha, "a", 1);
    let mut b = Server::start_ha_node(&ha, "b", 1);
    post_sample(&a, 1);
    b.wait_for_seq(SAMPLE_MID, 1);
    let mut w = watch_from_start(&a);
    // The first Sentinel of every node's list is gone: discovery asks the next ones.
    ha.sentinels[0].kill9();

    // Node b dies with the primary; the storm goes on through a.
    let (posted, killed) =
        storm_through_failover(&mut ha, vec![a.admin(), a.admin()], |ha, old| {
            ha.data_on(old).kill9();
            b.kill9();
        });
    b.restart();

    let last = post_last(&a);
    let truth = history(&a);
    assert_eq!(truth.len() as u64, last);
    assert_holds_every_ack(&truth, &posted, "node a");
    assert_watcher_saw(&mut w, 1, last, &truth, "watcher on a");
    b.wait_for_seq(SAMPLE_MID, last);
    assert_eq!(history(&b), truth, "node b, restarted, loads it all");
    assert_writes_back(&posted, killed);
}

/// A switch with the old primary alive (`SENTINEL FAILOVER`): until Sentinel reconfigures
/// the other replica, the old primary and that replica still confirm `WAIT 1`, so only
/// `--redis-min-replicas` = every replica (here 2) keeps every 201 (docs/cluster.md).
#[test]
fn a_manual_failover_keeps_every_ack_with_every_replica_confirming() {
    let mut ha = RedisHa::start(2);
    let a = Server::start_ha_node(&ha, "a", 2);
    let b = Server::start_ha_node(&ha, "b", 2);
    post_sample(&a, 1);
    b.wait_for_seq(SAMPLE_MID, 1);
    let mut watchers = [watch_from_start(&a), watch_from_start(&b)];

    let (posted, switched) =
        storm_through_failover(&mut ha, vec![a.admin(), b.admin()], |ha, _| {
            let ok: String = ha.sentinels[1]
                .query(&["SENTINEL", "FAILOVER", MASTER])
                .expect("SENTINEL FAILOVER");
            assert_eq!(ok, "OK");
        });

    let last = post_last(&a);
    let truth = history(&a);
    b.wait_for_seq(SAMPLE_MID, last);
    assert_eq!(history(&b), truth, "both nodes hold the same log");
    assert_holds_every_ack(&truth, &posted, "node a");
    for (i, w) in watchers.iter_mut().enumerate() {
        assert_watcher_saw(w, 1, last, &truth, &format!("watcher {i}"));
    }
    let back = posted
        .iter()
        .find(|p| p.status == 201 && p.at > switched)
        .map(|p| p.at - switched);
    eprintln!("first 201 {back:?} after the switch");
}

#[test]
fn an_event_no_replica_confirms_is_503_and_shown_only_once_replicated() {
    let primary = Redis::start();
    // A full sync starts at once instead of after the default 5 s wait for more replicas.
    let _: () = ::redis::Client::open(primary.url())
        .and_then(|c| c.get_connection())
        .and_then(|mut c| {
            ::redis::cmd("CONFIG")
                .arg("SET")
                .arg("repl-diskless-sync-delay")
                .arg(0)
                .query(&mut c)
        })
        .expect("CONFIG SET");
    let flags = |name| {
        let url = primary.url();
        Server::start(&[
            "--redis",
            &url,
            "--redis-min-replicas",
            "1",
            "--redis-wait-ms",
            "1000",
            "--node-id",
            name,
        ])
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut replica = Proc::replica_of(primary.port, dir.path().join("replica"));
    let (a, b) = (flags("a"), flags("b"));
    let mut admin = a.admin();
    create_sample(&mut admin);
    b.wait_for_match(SAMPLE_MID);
    let mut watchers = [a.ws(), b.ws()];
    for w in &mut watchers {
        w.watch(SAMPLE_MID, None);
        assert_eq!(w.expect_status(SAMPLE_MID)["seq"], 0);
    }

    // The replica dies: the next event is appended on the primary, confirmed by none.
    replica.kill9();
    let events = sample_events();
    let (kind, data) = &events[0];
    let r = post_event(&mut admin, SAMPLE_MID, kind, data);
    assert_eq!(r.status, 503, "{r:?}");
    let why = body_json(&r)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("may or may not survive"), "{why}");
    assert_eq!(a.metric_sum("matchstream_writes_unreplicated_total"), 1);
    for w in &mut watchers {
        w.expect_silence(Duration::from_millis(700));
    }
    for node in [&a, &b] {
        assert_eq!(get_json(node, &format!("/1/match/{SAMPLE_MID}"))["seq"], 0);
    }

    // The replica returns and copies it: now it survives, and every watcher gets it once.
    replica.start_again();
    for w in &mut watchers {
        assert_eq!(w.expect_event(SAMPLE_MID, 1)["kind"], "start");
    }
    let (kind, data) = &events[1];
    let r = post_event(&mut b.admin(), SAMPLE_MID, kind, data);
    assert_eq!(
        (r.status, body_json(&r)["seq"].as_u64()),
        (201, Some(2)),
        "{r:?}"
    );
    for w in &mut watchers {
        w.expect_event(SAMPLE_MID, 2);
    }
}
