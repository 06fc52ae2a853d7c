//! Hostile and careless HTTP clients against the real binary: `HEAD` answers carry no body
//! (keep-alive stays in sync), a pipeline of 10,000 requests is answered in order with
//! bounded memory, a pipelining client that never reads is cut off by `--send-timeout-ms`,
//! and a WebSocket watcher that reads one byte a second is cut off the same way — while a
//! well-behaved admin and `/healthz` are served throughout. An upload past the body limit
//! gets its `413` even while it keeps sending (a lingering close, not a reset).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Reads `stream` to EOF (bounded by `WAIT`).
fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let (bytes, ended) = drain(stream, WAIT);
    assert!(ended, "the server closed the connection");
    bytes
}

/// Splits one response off the front of `buf`: `(status, head, body)`, framed by
/// `Content-Length` unless `head_only`.
fn split_response(buf: &[u8], head_only: bool) -> Option<(u16, String, Vec<u8>, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let len = if head_only {
        0
    } else {
        header(&head, "content-length").map_or(0, |v| v.parse().unwrap())
    };
    let body = buf.get(end..end + len)?.to_vec();
    Some((status, head, body, end + len))
}

/// The value of header `name` (case-insensitive) in a response head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

#[test]
fn head_is_the_head_of_get_without_a_body_on_every_get_route() {
    let server = Server::start(&[]);
    post_sample(&server, 3);
    let paths = [
        "/healthz".to_string(),
        "/metrics".into(),
        "/1/checkin".into(),
        "/1/matches".into(),
        format!("/1/match/{SAMPLE_MID}"),
        format!("/1/match/{SAMPLE_MID}/history?since=1"),
        "/1/team/elp".into(),
        "/".into(),
        "/1/match/boc-riv-2000-01-01".into(),
        "/no/such/path".into(),
        "/1/ws".into(),
    ];
    for path in &paths {
        let mut get = TcpStream::connect(server.http).unwrap();
        get.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let bytes = read_to_end(&mut get);
        let (get_status, get_head, get_body, _) = split_response(&bytes, false).unwrap();

        // HEAD, then a GET on the same connection: the second answer must start right
        // after the first head, or the client would be out of step.
        let mut c = TcpStream::connect(server.http).unwrap();
        c.write_all(
            format!(
                "HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let bytes = read_to_end(&mut c);
        let (status, head, _, used) = split_response(&bytes, true).unwrap();
        assert_eq!(status, get_status, "HEAD {path}: {head}");
        assert_eq!(
            header(&head, "content-type"),
            header(&get_head, "content-type"),
            "HEAD {path}"
        );
        let length =
            header(&head, "content-length").unwrap_or_else(|| panic!("HEAD {path}: {head}"));
        if path != "/metrics" {
            // The metrics page changes between the two requests; everything else is equal.
            assert_eq!(length, get_body.len().to_string(), "HEAD {path}");
        }
        let rest = &bytes[used..];
        let (next, _, body, n) = split_response(rest, false)
            .unwrap_or_else(|| panic!("after HEAD {path}: {:?}", String::from_utf8_lossy(rest)));
        assert_eq!(
            (next, body.as_slice()),
            (200, &br#"{"status":"ok"}"#[..]),
            "after HEAD {path}"
        );
        assert_eq!(n, rest.len(), "nothing but the two answers");
    }
}

#[test]
fn an_upload_past_the_body_limit_gets_its_413_while_still_sending() {
    // The server refuses the body from its head, while the client is still uploading: the
    // answer must survive (a FIN after it and the rest of the body drained, not an RST that
    // fails the client's next write and can destroy the 413 before it is read).
    let server = Server::start(&["--max-body-bytes", "1024"]);
    let mut stream = TcpStream::connect(server.http).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let body = vec![b'x'; 256 << 10];
    let head = format!(
        "POST /1/matches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for chunk in body.chunks(16 << 10) {
        stream
            .write_all(chunk)
            .expect("the server drains the rest of the body: no reset");
        std::thread::sleep(Duration::from_millis(10));
    }
    let bytes = read_to_end(&mut stream);
    let (status, _, body, _) = split_response(&bytes, false).expect("a whole response");
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&bytes));
    assert!(String::from_utf8_lossy(&body).contains("error"));
}

#[test]
fn baseline_without_an_attack() {
    // The figures of the attacks below are read against this: the same prober, the same
    // server flags, nobody attacking.
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let rss_before = rss_kb(server.pid());
    let probe = Probe::start(&server, Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kb(server.pid());
    let probe = probe.finish();
    report_attack("baseline: no attack, 2 s", rss_before, rss_after, &probe);
}

#[test]
fn a_pipeline_of_10000_requests_is_answered_in_order_with_bounded_memory() {
    const N: usize = 10_000;
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let rss_before = rss_kb(server.pid());
    let probe = Probe::start(&server, Duration::from_millis(100));
    let mut stream = TcpStream::connect(server.http).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut all = Vec::new();
        for i in 0..N {
            let path = if i % 2 == 0 { "/healthz" } else { "/1/checkin" };
            all.extend_from_slice(
                format!("GET {path}?n={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            );
        }
        writer.write_all(&all).unwrap();
    });
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut answered = 0;
    while answered < N {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{answered} of {N} answered"
        );
        let n = stream.read(&mut chunk).expect("responses keep coming");
        assert!(n > 0, "closed after {answered} answers");
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while let Some((status, _, body, used)) = split_response(&buf[at..], false) {
            assert_eq!(status, 200);
            let is_health = body.starts_with(br#"{"status""#);
            assert_eq!(
                is_health,
                answered % 2 == 0,
                "answer {answered} out of order"
            );
            answered += 1;
            at += used;
        }
        buf.drain(..at);
    }
    feeder.join().unwrap();
    let took = started.elapsed();
    let rss_after = rss_kb(server.pid());
    let probe = probe.finish();
    eprintln!("{N} pipelined requests answered in {took:?}");
    report_attack(
        "pipeline of 10,000 requests on one connection",
        rss_before,
        rss_after,
        &probe,
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_after} KiB"
    );
}

#[test]
fn a_pipelining_client_that_never_reads_is_cut_off_by_the_send_timeout() {
    let server = Server::start(&["--send-timeout-ms", "1000"]);
    post_sample(&server, 31);
    let rss_before = rss_kb(server.pid());
    let probe = Probe::start(&server, Duration::from_millis(100));
    let mut attacker = TcpStream::connect(server.http).unwrap();
    attacker
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET /1/match/{SAMPLE_MID}/history HTTP/1.1\r\nHost: t\r\n\r\n");
    let all = request.repeat(3000);
    // The server stops reading while its answers wait; the write may not complete.
    let _ = attacker.write_all(all.as_bytes());
    let started = Instant::now();
    wait_until(Duration::from_secs(15), "a send timeout", || {
        server.metric_sum("matchstream_send_timeouts_total") >= 1
    });
    let cut_after = started.elapsed();
    let rss_after = rss_kb(server.pid());
    let (read, ended) = drain(&mut attacker, WAIT);
    assert!(ended, "the server closed the connection");
    let answers = String::from_utf8_lossy(&read)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        answers < 3000,
        "it was cut off before getting everything ({answers})"
    );
    let probe = probe.finish();
    eprintln!(
        "never-reading pipeliner cut off {cut_after:?} after its write; it got {answers} answers"
    );
    report_attack(
        "pipelining client that never reads (3,000 history requests)",
        rss_before,
        rss_after,
        &probe,
    );
}

#[test]
fn a_watcher_reading_one_byte_a_second_is_cut_off_by_the_send_timeout() {
    one_byte_a_second(
        &[],
        "WebSocket watcher reading one byte a second (4.5 MB queued)",
    );
}

fn one_byte_a_second(extra: &[&str], name: &str) {
    let mut args = vec![
        "--send-timeout-ms",
        "2000",
        // Large enough that the queue bound does not close it first.
        "--max-outbound-bytes",
        "33554432",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    post_sample(&server, 1);
    let mut slow = RawWs::connect(server.http, Some(4096));
    slow.watch(SAMPLE_MID);
    let mut normal = server.ws();
    normal.watch(SAMPLE_MID, None);
    normal.expect_status(SAMPLE_MID);
    wait_until(WAIT, "two watchers", || {
        server
            .metrics()
            .lines()
            .any(|l| l == format!("matchstream_watchers{{match=\"{SAMPLE_MID}\"}} 2"))
    });
    let rss_before = rss_kb(server.pid());
    let mut admin = server.admin();
    const COMMENTS: u64 = 150;
    for i in 0..COMMENTS {
        let text = format!("{:0>30000}", i);
        let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": text}));
        assert_eq!(r.status, 201);
        normal.expect_event(SAMPLE_MID, i + 2);
    }
    let probe = Probe::start(&server, Duration::from_millis(100));
    let started = Instant::now();
    let mut stream = slow.stream;
    let mut byte = [0u8; 1];
    let mut read = 0;
    // Read one byte a second until the server counts the send timeout (what is already in
    // this socket's receive buffer keeps coming after the server closed, a byte at a time).
    while server.metric_sum("matchstream_send_timeouts_total") == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the one-byte-a-second reader is still served after {:?}",
            started.elapsed()
        );
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        if let Ok(1) = stream.read(&mut byte) {
            read += 1;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cut_after = started.elapsed();
    let rss_after = rss_kb(server.pid());
    let probe = probe.finish();
    let (rest, ended) = drain(&mut stream, WAIT);
    assert!(ended, "the connection was closed");
    assert_eq!(
        server.metric_sum("matchstream_slow_consumer_closes_total"),
        0
    );
    eprintln!(
        "one-byte-a-second reader cut off after {cut_after:?} ({read} bytes read slowly, {} left in its buffer)",
        rest.len()
    );
    // The normal watcher is still served.
    let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": "after"}));
    assert_eq!(r.status, 201);
    let last = body_json(&r)["seq"].as_u64().unwrap();
    let mut seen = 0;
    while seen < last {
        let v = normal.next_json();
        seen = v["seq"].as_u64().unwrap_or(seen);
    }
    report_attack(name, rss_before, rss_after, &probe);
}

/// A socket with a small receive buffer, connected to `addr`, that has sent `request`.
fn never_reader(addr: std::net::SocketAddr, request: &str) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

#[test]
fn never_reading_sse_and_line_watchers_are_cut_off_by_the_send_timeout() {
    sse_and_line_never_read(&[]);
}

fn sse_and_line_never_read(extra: &[&str]) {
    let mut args = vec![
        "--send-timeout-ms",
        "1000",
        "--max-outbound-bytes",
        "33554432",
    ];
    args.extend_from_slice(extra);
    let server = Server::start(&args);
    post_sample(&server, 1);
    let sse_request = format!(
        "GET /1/match/{SAMPLE_MID}/events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
    );
    let mut sse = never_reader(server.http, &sse_request);
    let line_request = format!("VERSION:1:CONNECT:u:MATCH:{SAMPLE_MID}\r\n");
    let mut line = never_reader(server.tcp, &line_request);
    let mut normal = server.ws();
    normal.watch(SAMPLE_MID, None);
    normal.expect_status(SAMPLE_MID);
    let mut admin = server.admin();
    let started = Instant::now();
    let mut seq = 1;
    while server.metric_sum("matchstream_send_timeouts_total") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "send timeouts: {}",
            server.metric_sum("matchstream_send_timeouts_total")
        );
        for _ in 0..10 {
            let text = format!("{:0>30000}", seq);
            let r = post_event(&mut admin, SAMPLE_MID, "comment", &json!({"text": text}));
            assert_eq!(r.status, 201);
            seq += 1;
            normal.expect_event(SAMPLE_MID, seq);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("both cut off {:?} after the first post", started.elapsed());
    for (name, stream) in [("SSE", &mut sse), ("line", &mut line)] {
        let (_, ended) = drain(stream, WAIT);
        assert!(ended, "the {name} watcher was closed");
    }
    assert_eq!(
        server.metric_sum("matchstream_slow_consumer_closes_total"),
        0
    );
}
