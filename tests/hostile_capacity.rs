//! At the fd limit nothing hangs and the operator still gets in: a server with a small
//! `ulimit -n` offered more WebSocket upgrades than it can hold answers every one within a
//! second (101 or 503), serves at least 95 % of the capacity it logs, says `ERROR: server
//! full` on the line port, logs one line per change of state (not per attempt), and serves
//! again once connections close; a server filled to `--max-connections` with watchers
//! still takes the operator's event on `--admin-listen`, and every watcher receives it.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// How long any one connection may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// What one offered connection got.
enum Answer {
    /// `101 Switching Protocols` (the socket, kept open).
    Served(TcpStream),
    /// `503` with the server's reason.
    Refused,
    /// Anything else, or nothing within [`ANSWER_WITHIN`].
    Unanswered(String),
}

/// Offers one WebSocket upgrade on `addr` and reads the answer's head, all within
/// [`ANSWER_WITHIN`].
fn offer(addr: SocketAddr) -> Answer {
    let started = Instant::now();
    let mut stream = match TcpStream::connect_timeout(&addr, ANSWER_WITHIN) {
        Ok(s) => s,
        Err(e) => return Answer::Unanswered(format!("connect: {e}")),
    };
    let request = matchstream::load::client::handshake_request(
        &addr.to_string(),
        "/1/ws",
        "dGhlIHNhbXBsZSBub25jZQ==",
    );
    if let Err(e) = stream.write_all(&request) {
        return Answer::Unanswered(format!("write: {e}"));
    }
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = ANSWER_WITHIN.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Answer::Unanswered(format!("no answer within {ANSWER_WITHIN:?}"));
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) => return Answer::Unanswered(format!("read: {e} after {head:?}")),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    if text.starts_with("HTTP/1.1 101") {
        Answer::Served(stream)
    } else if text.starts_with("HTTP/1.1 503") && text.contains("server full") {
        Answer::Refused
    } else {
        Answer::Unanswered(text)
    }
}

/// What offering `count` upgrades from `threads` threads at once got.
#[derive(Default)]
struct Offered {
    served: Vec<TcpStream>,
    refused: usize,
    unanswered: Vec<String>,
}

fn offer_many(addr: SocketAddr, count: usize, threads: usize) -> Offered {
    let total = Arc::new(Mutex::new(Offered::default()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let total = total.clone();
            std::thread::spawn(move || {
                for _ in (t..count).step_by(threads) {
                    let answer = offer(addr);
                    let mut total = total.lock().unwrap();
                    match answer {
                        Answer::Served(s) => total.served.push(s),
                        Answer::Refused => total.refused += 1,
                        Answer::Unanswered(why) => total.unanswered.push(why),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("offering thread");
    }
    Arc::try_unwrap(total)
        .ok()
        .expect("threads done")
        .into_inner()
        .unwrap()
}

/// The capacity the server logged at start (`capacity: N connections = …`).
fn logged_capacity(server: &Server) -> u64 {
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("capacity: "))
        .unwrap_or_else(|| panic!("no capacity line in the log:\n{log}"));
    let after = line.split("capacity: ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn admin_metrics(server: &Server) -> String {
    let r = server
        .admin_port()
        .request("GET", "/metrics", None)
        .expect("GET /metrics on --admin-listen");
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

#[test]
fn every_connection_past_the_fd_limit_is_answered_within_a_second() {
    const OFFERED: usize = 700;
    let server = Server::start_with_nofile(200, &["--admin-listen", "127.0.0.1:0"]);
    let capacity = logged_capacity(&server);
    let got = offer_many(server.http, OFFERED, 4);
    assert!(
        got.unanswered.is_empty(),
        "{} of {OFFERED} connections not answered within {ANSWER_WITHIN:?}, e.g. {:?}; log:\n{}",
        got.unanswered.len(),
        &got.unanswered[..got.unanswered.len().min(3)],
        server.log_text() + &admin_metrics(&server)
    );
    let served = got.served.len() as u64;
    assert_eq!(served as usize + got.refused, OFFERED);
    assert!(
        served * 100 >= capacity * 95,
        "served {served} of a logged capacity of {capacity}"
    );
    // Every worker is full: the line port refuses at once too.
    let mut line = TcpStream::connect_timeout(&server.tcp, ANSWER_WITHIN).expect("connect");
    line.set_read_timeout(Some(ANSWER_WITHIN)).unwrap();
    let mut said = String::new();
    let _ = line.read_to_string(&mut said);
    assert_eq!(said, "ERROR: server full\r\n");
    // The operator's port answers although every public slot is taken.
    let metrics = admin_metrics(&server);
    let slots = metric_sum(&metrics, "matchstream_connection_slots");
    assert!(served >= slots, "served {served}, slots {slots}");
    let pauses = metric_sum(&metrics, "matchstream_accept_pauses_total");
    assert!(pauses >= 2, "both workers left the distribution: {pauses}");
    assert_eq!(metric_sum(&metrics, "matchstream_accept_paused"), 2);
    assert!(metric_sum(&metrics, "matchstream_refused_worker_full_total") > 0);
    // One log line per change of state, none per attempt.
    let log = server.log_text();
    assert!(!log.contains("accept failed"), "{log}");
    let paused_lines = log.matches("out of the accept distribution").count() as u64;
    assert_eq!(paused_lines, pauses, "{log}");
    assert_eq!(log.matches("every worker is full").count(), 1, "{log}");
    // Connections close: the workers come back and serve again.
    drop(got.served);
    wait_until(WAIT, "the workers to have room again", || {
        metric_sum(&admin_metrics(&server), "matchstream_accept_paused") == 0
    });
    let again = offer_many(server.http, 40, 2);
    assert_eq!(again.served.len(), 40, "refused {}", again.refused);
    assert!(server
        .log_text()
        .contains("back in the accept distribution"));
}

#[test]
fn a_server_full_of_watchers_takes_the_operators_event() {
    const MAX: usize = 30;
    let max = MAX.to_string();
    let server = Server::start(&["--max-connections", &max, "--admin-listen", "127.0.0.1:0"]);
    post_sample(&server, 1);
    let mut watchers: Vec<Watcher> = (0..MAX)
        .map(|_| {
            let mut w = Watcher::connect(server.http);
            w.watch(SAMPLE_MID, None);
            w.expect_status(SAMPLE_MID);
            w
        })
        .collect();
    // The public port is full: another watcher, and the admin API there, get 503.
    assert!(matches!(offer(server.http), Answer::Refused));
    let refused = server
        .admin()
        .request("GET", "/healthz", None)
        .map(|r| r.status);
    assert!(!matches!(refused, Ok(200)), "{refused:?}");
    // The operator's address is never refused for capacity.
    let mut admin = server.admin_port();
    let r = admin.request("GET", "/healthz", None).expect("healthz");
    assert_eq!(r.status, 200);
    let (kind, data) = &sample_events()[1];
    let r = post_event(&mut admin, SAMPLE_MID, kind, data);
    assert_eq!(r.status, 201, "{r:?}");
    for w in &mut watchers {
        w.expect_event(SAMPLE_MID, 2);
    }
    let r = post_event(
        &mut admin,
        SAMPLE_MID,
        "comment",
        &json!({"text": "full house"}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    for w in &mut watchers {
        w.expect_event(SAMPLE_MID, 3);
    }
    let metrics = admin_metrics(&server);
    assert!(metric_sum(&metrics, "matchstream_refused_total") >= 2);
}

#[test]
fn a_full_worker_is_steered_around_until_every_slot_is_taken() {
    let server = Server::start_with_nofile(200, &[]);
    let mut served = Vec::new();
    // Without --admin-listen, so /metrics is refused too: the slots come from the log.
    // One at a time: each answer comes after the server counted the connection and, when
    // that filled its worker, steered new connections to the other one.
    let first_refusal = loop {
        match offer(server.http) {
            Answer::Served(s) => served.push(s),
            Answer::Refused => break served.len() as u64,
            Answer::Unanswered(why) => panic!("unanswered after {}: {why}", served.len()),
        }
        assert!(served.len() < 1_000, "never refused");
    };
    let log = server.log_text();
    let slots: u64 = log
        .lines()
        .filter_map(|l| l.split("room for ").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        first_refusal, slots,
        "the first refusal came only once every worker's slots were taken; log:\n{log}"
    );
}
