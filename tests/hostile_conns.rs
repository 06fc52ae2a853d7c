//! One source address opening 10,000 sockets against the real binary: past
//! `--max-connections-per-ip` HTTP gets 503 and the line port `ERROR: too many connections`,
//! each refusal is counted, other addresses are served all along, and slots come back when
//! the address closes its sockets.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Reads what the server says on a refused socket (bounded).
fn refusal(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn ten_thousand_sockets_from_one_address_get_their_limit_and_no_more() {
    const LIMIT: usize = 2_000;
    const SOCKETS: usize = 10_000;
    let limit = LIMIT.to_string();
    let server = Server::start(&[
        "--max-connections-per-ip",
        &limit,
        // The admitted sockets say nothing: keep them for the whole test.
        "--handshake-timeout-ms",
        "120000",
    ]);
    post_sample(&server, 1);
    let rss_before = rss_kb(server.pid());
    let probe = Probe::start(&server, Duration::from_millis(100));
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(SOCKETS);
    for i in 0..SOCKETS {
        let s = connect_from(ATTACKER, server.http).unwrap_or_else(|e| panic!("connect {i}: {e}"));
        sockets.push(s);
    }
    let opened_in = started.elapsed();
    wait_until(Duration::from_secs(30), "every refusal counted", || {
        server.metric_sum("matchstream_refused_per_ip_total") == (SOCKETS - LIMIT) as u64
    });
    let rss_after = rss_kb(server.pid());
    // Everyone else is served meanwhile: the prober, and a fresh client from 127.0.0.1.
    let probe = probe.finish();
    assert_eq!(get_json(&server, "/healthz")["status"], "ok");
    // The server holds the attacker's LIMIT sockets (plus nothing of the refused ones).
    assert!(server.metric_sum("matchstream_connections") >= LIMIT as u64);
    assert!(server.metric_sum("matchstream_connections") < LIMIT as u64 + 10);
    // The refused ones were told why: the last sockets are certainly past the limit.
    let text = refusal(&mut sockets[SOCKETS - 1]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text:?}");
    assert!(
        text.ends_with(r#"{"error":"too many connections"}"#),
        "{text:?}"
    );
    // The line port counts the same connections (one limit per address, every port).
    let mut line = connect_from(ATTACKER, server.tcp).unwrap();
    assert_eq!(refusal(&mut line), "ERROR: too many connections\r\n");
    report_attack(
        "10,000 sockets from one address (limit 2,000)",
        rss_before,
        rss_after,
        &probe,
    );
    eprintln!("opened {SOCKETS} sockets from {ATTACKER} in {opened_in:?}");

    // Closing them gives the slots back.
    drop(sockets);
    wait_until(Duration::from_secs(30), "the slots are given back", || {
        server.metric_sum("matchstream_connections") < 10
    });
    let mut again = connect_from(ATTACKER, server.http).unwrap();
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = refusal(&mut again);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
}

#[test]
fn zero_turns_the_per_address_limit_off() {
    let server = Server::start(&["--max-connections-per-ip", "0"]);
    let sockets: Vec<_> = (0..300)
        .map(|_| connect_from(ATTACKER, server.http).unwrap())
        .collect();
    wait_until(WAIT, "300 connections", || {
        server.metric_sum("matchstream_connections") >= 300
    });
    assert_eq!(server.metric_sum("matchstream_refused_per_ip_total"), 0);
    drop(sockets);
}
