//! TLS against the real server (`--tls-cert` / `--tls-key`, a CA and certificates made by the
//! test): HTTPS, WSS, the line protocol and Server-Sent Events over TLS with every event
//! checked; plain clients on the TLS ports told to use TLS (HTTP 400, `ERROR: TLS required`)
//! or closed; a certificate reload on `SIGHUP` while a WSS watcher keeps receiving (and a bad
//! new certificate keeping the old one); the handshake timeout; a TLS watcher that stops
//! reading cut off by the same bounds as a plain one; start-up errors naming the flag or file
//! at fault.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use matchstream::proto::sse::SseParser;
use serde_json::Value;

#[test]
fn https_wss_tls_line_and_sse_all_get_every_event() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    assert!(server.stdout_text().contains("tls=on"));
    post_sample(&server, 0);
    let tls = server.tls_client();
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(m["seq"], 0, "HTTPS GET: {m}");
    let checkin = get_json(&server, "/1/checkin");
    assert!(
        checkin["ws"]
            .as_str()
            .unwrap()
            .starts_with("wss://localhost:"),
        "{checkin}"
    );

    let mut ws = Watcher::connect_tls(server.http, &tls);
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 0);
    let mut line = LineClient::connect_tls(server.tcp, &tls, SAMPLE_MID);
    let block = line.next_block().expect("status block");
    assert_eq!(
        (block.kind.as_str(), block.field("seq")),
        ("status", Some("0"))
    );
    let mut sse = tls_connect(server.http, &tls);
    write!(
        sse,
        "GET /1/match/{SAMPLE_MID}/events HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    sse.flush().unwrap();
    wait_until(WAIT, "the three watchers are counted", || {
        server.metric_sum("matchstream_websockets") == 1
            && server.metric_sum("matchstream_line_connections") == 1
            && server.metric_sum("matchstream_sse_connections") == 1
    });
    assert_eq!(
        server.metric_sum("matchstream_tls_watchers"),
        3,
        "the three TLS watchers are plane records"
    );

    let events = sample_events();
    post_events(&mut server.admin(), 1..=events.len());
    expect_whole_match(&mut ws, &events);
    for (i, (kind, _)) in events.iter().enumerate() {
        let block = line.next_block().expect("event block");
        assert_eq!(&block.kind, kind, "line block {}", i + 1);
    }
    line.expect_eof();

    let mut raw = Vec::new();
    let _ = sse.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let mut parser = SseParser::new();
    let mut messages = Vec::new();
    parser.feed(body.as_bytes(), &mut messages).unwrap();
    let ids: Vec<u64> = messages
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<u64> = std::iter::once(0).chain(1..=events.len() as u64).collect();
    assert_eq!(
        ids, expected,
        "SSE: the status, then every event once, in order"
    );
    let last: Value = serde_json::from_str(&messages.last().unwrap().data).unwrap();
    assert_eq!(last["kind"], "stop");

    // One engine: the TLS watchers got every event through the plane's broadcasts, one
    // io_uring_enter each, and left it (and its TLS table) when their streams ended.
    let broadcasts = server.metric_sum("matchstream_plane_broadcasts_total");
    assert!(broadcasts >= events.len() as u64, "{broadcasts}");
    assert_eq!(
        server.metric_sum("matchstream_plane_broadcast_enters_total"),
        broadcasts
    );
    wait_until(WAIT, "the TLS records are gone", || {
        server.metric_sum("matchstream_tls_watchers") == 0
    });
}

/// Sends `hello` in plaintext to `addr` and reads until the server closes.
fn plain_exchange(addr: std::net::SocketAddr, hello: &[u8]) -> String {
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    plain.write_all(hello).unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(started.elapsed() < WAIT, "closed at once, not left hanging");
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn plain_clients_on_the_tls_ports_are_told_to_use_tls_and_closed() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    // What `curl http://…` sends to an https port: told so, as nginx does.
    let text = plain_exchange(
        server.http,
        b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
    );
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 400 "), "{text:?}");
    assert!(head.contains("Connection: close"), "{text:?}");
    assert!(
        body.contains("use https://") && !body.contains('\n'),
        "{body:?}"
    );
    // A plain line client on the TLS line port.
    let text = plain_exchange(
        server.tcp,
        b"VERSION:1:CONNECT:e2e:MATCH:elp-tig-2011-09-10\r\n",
    );
    assert_eq!(text, "ERROR: TLS required\r\n");
    // Anything else is closed without a word, as before.
    for addr in [server.http, server.tcp] {
        assert_eq!(plain_exchange(addr, b"SSH-2.0-OpenSSH_9.6\r\n"), "");
    }
    // Counted; the server is fine, and nothing is left open.
    let m = server.metrics();
    let counted = |client: &str| {
        m.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "matchstream_plain_on_tls_port_total{{client=\"{client}\"}}"
                ))
            })
            .and_then(|l| l.rsplit_once(' '))
            .map(|(_, v)| v.to_owned())
    };
    assert_eq!(counted("http").as_deref(), Some("1"), "{m}");
    assert_eq!(counted("line").as_deref(), Some("1"), "{m}");
    assert_eq!(
        metric_sum(&m, "matchstream_connections"),
        1,
        "only this request"
    );
    assert!(!server.log_text().contains("panicked"));
}

#[test]
fn sighup_reloads_the_certificate_and_an_open_wss_watcher_keeps_receiving() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    let tls = server.tls_client();
    post_sample(&server, 2);
    let first = served_cert(server.http, &tls);
    let mut ws = Watcher::connect_tls(server.http, &tls);
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 2);

    let second = pki.issue("second");
    assert_ne!(first, second);
    hangup(&server);
    wait_until(WAIT, "new handshakes get the new certificate", || {
        served_cert(server.http, &tls) == second
    });
    post_events(&mut server.admin(), 3..=5);
    for seq in 3..=5 {
        ws.expect_event(SAMPLE_MID, seq);
    }

    // A bad new certificate: the old one stays, and the log says why.
    std::fs::write(&pki.cert, "not a certificate\n").unwrap();
    hangup(&server);
    wait_until(WAIT, "the failed reload is logged", || {
        server.log_text().contains("not reloaded")
    });
    assert_eq!(served_cert(server.http, &tls), second);
    post_events(&mut server.admin(), 6..=6);
    ws.expect_event(SAMPLE_MID, 6);
}

fn hangup(server: &Server) {
    // SAFETY: kill(2) on the pid of the test's own child process.
    unsafe {
        libc::kill(server.pid(), libc::SIGHUP);
    }
}

#[test]
fn clients_that_never_finish_the_handshake_are_cut_by_the_handshake_timeout() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--handshake-timeout-ms", "300"]);
    // Silent, and a ClientHello that stops half way.
    let half_hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    for (addr, bytes) in [
        (server.http, &[][..]),
        (server.tcp, &[][..]),
        (server.http, &half_hello[..]),
    ] {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(bytes).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "cut after the timeout, took {took:?}"
        );
    }
    wait_until(WAIT, "no connection is left", || {
        server.metric_sum("matchstream_connections") == 1
    });
    assert_eq!(
        handshake_failures(&server.metrics(), "timeout"),
        3,
        "each counted as a handshake timeout"
    );
}

/// `matchstream_tls_handshake_failures_total{reason="…"}`.
fn handshake_failures(metrics: &str, reason: &str) -> u64 {
    let key = format!("matchstream_tls_handshake_failures_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /metrics"))
}

#[test]
fn bytes_that_are_not_tls_are_a_failed_handshake_by_bad_record() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    for addr in [server.http, server.tcp] {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        // A handshake record header with a content type TLS does not have.
        stream
            .write_all(&[0x99, 0x03, 0x01, 0x00, 0x04, 1, 2, 3, 4])
            .unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
    }
    wait_until(WAIT, "both counted", || {
        handshake_failures(&server.metrics(), "bad_record") == 2
    });
    assert_eq!(handshake_failures(&server.metrics(), "timeout"), 0);
}

#[test]
fn a_tls_watcher_that_stops_reading_is_cut_off_and_the_others_get_everything() {
    let pki = TestPki::new();
    let server = Server::start_tls(
        &pki,
        &["--max-outbound-bytes", "65536", "--send-timeout-ms", "2000"],
    );
    let tls = server.tls_client();
    post_sample(&server, 1);
    // A small receive buffer, a WSS handshake and a watch, then no more reading.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.http.into(), WAIT).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let name = matchstream::feed::tls::server_name("localhost").unwrap();
    let stream = matchstream::feed::tls::connect(&tls, name, stream).unwrap();
    let url = format!("wss://localhost:{}/1/ws", server.http.port());
    let (mut slow, _) = tungstenite::client(url, stream).expect("wss handshake");
    slow.send(tungstenite::Message::text(format!(
        r#"{{"command":"watch","mid":"{SAMPLE_MID}"}}"#
    )))
    .unwrap();
    let mut normal = Watcher::connect_tls(server.http, &tls);
    normal.watch(SAMPLE_MID, None);
    normal.expect_status(SAMPLE_MID);
    wait_until(WAIT, "two watchers", || {
        server.metric_sum("matchstream_websockets") == 2
    });
    let mut admin = server.admin();
    // 6 MB: more than the kernel buffers of both ends hold on loopback.
    for i in 0..200u64 {
        let text = format!("{:0>30000}", i);
        let r = post_event(
            &mut admin,
            SAMPLE_MID,
            "comment",
            &serde_json::json!({"text": text}),
        );
        assert_eq!(r.status, 201);
        normal.expect_event(SAMPLE_MID, i + 2);
    }
    wait_until(
        Duration::from_secs(20),
        "the reader that stopped is cut off",
        || {
            server.metric_sum("matchstream_slow_consumer_closes_total")
                + server.metric_sum("matchstream_send_timeouts_total")
                >= 1
        },
    );
    wait_until(WAIT, "only the reading watcher is left", || {
        server.metric_sum("matchstream_websockets") == 1
    });
    drop(slow);
}

#[test]
fn replay_posts_a_match_over_https_trusting_the_given_ca() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    let url = server.url();
    let replay = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_matchstream"))
            .args(["replay", "sample", "--server", &url, "--admin-token", TOKEN])
            .args(["--speed", "1000", "--quiet"])
            .args(extra)
            .output()
            .unwrap()
    };
    let without = replay(&[]);
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("--ca"));
    let with = replay(&["--ca", pki.ca_pem.to_str().unwrap()]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(
        (m["seq"].as_u64(), m["period"].as_str()),
        (Some(31), Some("ended"))
    );
}

#[test]
fn start_up_errors_name_the_flag_or_the_file() {
    let pki = TestPki::new();
    let data = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_matchstream"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tcp-listen",
                "127.0.0.1:0",
            ])
            .args(["--admin-token", TOKEN, "--data-dir"])
            .arg(data.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?} must not start");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let cert = pki.cert.to_str().unwrap();
    let key = pki.key.to_str().unwrap();
    assert!(run(&["--tls-cert", cert]).contains("--tls-key"));
    assert!(run(&["--tls-key", key]).contains("--tls-cert"));
    let bad = pki.dir().join("bad.pem");
    std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let bad = bad.to_str().unwrap();
    let err = run(&["--tls-cert", bad, "--tls-key", key]);
    assert!(err.contains(bad), "names the file: {err}");
    let err = run(&["--tls-cert", cert, "--tls-key", cert]);
    assert!(err.contains("--tls-key") && err.contains(cert), "{err}");
    let missing = pki.dir().join("missing.pem");
    let err = run(&["--tls-cert", missing.to_str().unwrap(), "--tls-key", key]);
    assert!(err.contains("missing.pem"), "{err}");
}

/// One HTTPS request on a fresh connection (its session tickets are read on the way); how the
/// handshake went.
fn handshake_kind_of_a_request(
    addr: std::net::SocketAddr,
    tls: &std::sync::Arc<rustls::ClientConfig>,
) -> rustls::HandshakeKind {
    let mut stream = tls_connect(addr, tls);
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream.flush().unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    stream.conn.handshake_kind().expect("a finished handshake")
}

#[test]
fn a_reconnecting_client_resumes_even_after_a_restart() {
    let pki = TestPki::new();
    let mut server = Server::start_tls(&pki, &[]);
    let tls = server.tls_client();
    assert_eq!(
        handshake_kind_of_a_request(server.http, &tls),
        rustls::HandshakeKind::Full
    );
    assert_eq!(
        handshake_kind_of_a_request(server.http, &tls),
        rustls::HandshakeKind::Resumed,
        "the session ticket of the first connection resumes the second"
    );
    // The ticket keys are kept in the data directory: a restarted node still opens them.
    server.restart();
    wait_until(WAIT, "the restarted server answers", || {
        std::net::TcpStream::connect(server.http).is_ok()
    });
    assert_eq!(
        handshake_kind_of_a_request(server.http, &tls),
        rustls::HandshakeKind::Resumed,
        "resumed after the restart"
    );
    let keys = server.data_dir().join("tls-ticket-keys");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&keys).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{}", keys.display());
}

/// Client settings that speak TLS 1.2 only, trusting the test CA.
fn tls12_client(pki: &TestPki) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&pki.ca_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

#[test]
fn a_tls_1_2_watcher_is_a_plane_record_too_and_gets_every_event() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    post_sample(&server, 0);
    let tls12 = tls12_client(&pki);
    let mut ws = Watcher::connect_tls(server.http, &tls12);
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 0);
    assert_eq!(server.metric_sum("matchstream_tls_watchers"), 1);
    let events = sample_events();
    post_events(&mut server.admin(), 1..=events.len());
    expect_whole_match(&mut ws, &events);
    wait_until(WAIT, "the TLS 1.2 record is gone", || {
        server.metric_sum("matchstream_tls_watchers") == 0
    });
}

#[test]
fn a_watcher_that_updates_its_keys_keeps_receiving_and_sending() {
    let pki = TestPki::new();
    // Sealed in user space, where our own KeyUpdate is sent (a kTLS record ends instead).
    let server = Server::start_tls(&pki, &["--ktls", "off"]);
    post_sample(&server, 0);
    let mut ws = Watcher::connect_tls(server.http, &server.tls_client());
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 0);
    let events = sample_events();
    let mut next = 1;
    for round in 0..3 {
        // A KeyUpdate asking for the server's (rustls's `update_requested`), sent with the
        // next command: the server must follow it to read the command, and answer with
        // its own before the events that follow.
        ws.stream_mut().conn.refresh_traffic_keys().unwrap();
        ws.watch(SAMPLE_MID, Some(next - 1));
        let reply = ws.next_json();
        assert_eq!(reply["type"], "error", "round {round}: {reply}");
        assert!(reply.to_string().contains("already watching"), "{reply}");
        let upto = next + 5;
        post_events(&mut server.admin(), next as usize..=upto as usize);
        for seq in next..=upto {
            let v = ws.expect_event(SAMPLE_MID, seq);
            assert_eq!(
                v["kind"],
                events[seq as usize - 1].0.as_str(),
                "round {round}"
            );
        }
        next = upto + 1;
    }
    post_events(&mut server.admin(), next as usize..=events.len());
    for seq in next..=events.len() as u64 {
        ws.expect_event(SAMPLE_MID, seq);
    }
    assert_eq!(ws.expect_close().0, 1000, "close after stop");
    assert_eq!(server.metric_sum("matchstream_tls_record_errors_total"), 0);
}

/// Every event of the sample match in order on `ws`, then its close with 1000 after `stop`.
fn expect_whole_match<S: Wire>(ws: &mut Watcher<S>, events: &[(String, Value)]) {
    for (i, (kind, _)) in events.iter().enumerate() {
        let v = ws.expect_event(SAMPLE_MID, i as u64 + 1);
        assert_eq!(v["kind"], kind.as_str(), "{v}");
    }
    assert_eq!(ws.expect_close().0, 1000, "close after stop");
}
