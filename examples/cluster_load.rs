//! A small fan-out measurement for a matchstream cluster (used for
//! `benches/results/*-cluster`): W WebSocket watchers on each node, E comments posted to the
//! first node at R per second; every watcher must get every event in order. Prints the
//! posting rate, deliveries, and publish → receive latency per node (the first watcher of
//! each reader thread, and the last one, which waits behind its siblings).
//!
//! ```text
//! cargo run --release --example cluster_load -- \
//!     http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083 1000 300 50 TOKEN
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use matchstream::http_client::HttpClient;
use matchstream::load::client::{client_frame, handshake_request, next_frame, ServerFrame};
use matchstream::proto::frame::OpCode;
use serde_json::{json, Value};

const THREADS_PER_NODE: usize = 4;
const MID: &str = "loada-loadb-2030-01-01";

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(http: &str) -> Conn {
        let addr = http.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream
            .write_all(&handshake_request(
                addr,
                "/1/ws",
                "dGhlIHNhbXBsZSBub25jZQ==",
            ))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk).expect("handshake");
            assert!(n > 0, "closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"));
        let buf = buf.split_off(end + 4);
        let watch = json!({"command": "watch", "mid": MID}).to_string();
        stream
            .write_all(&client_frame(OpCode::Text, watch.as_bytes(), [1, 2, 3, 4]))
            .unwrap();
        Conn { stream, buf }
    }

    fn next_json(&mut self) -> Value {
        serde_json::from_slice(&self.next_text()).unwrap()
    }

    /// The `seq` of the next event message, read without a full JSON parse.
    fn next_seq(&mut self) -> u64 {
        let text = self.next_text();
        let at = text
            .windows(6)
            .position(|w| w == b"\"seq\":")
            .expect("an event with a seq")
            + 6;
        text[at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0, |n, b| n * 10 + u64::from(b - b'0'))
    }

    fn next_text(&mut self) -> Vec<u8> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match next_frame(&mut self.buf).expect("frame") {
                Some(ServerFrame::Text(t)) => return t,
                Some(ServerFrame::Close(code)) => panic!("closed {code}"),
                Some(_) => continue,
                None => {
                    let n = self.stream.read(&mut chunk).expect("read (timed out?)");
                    assert!(n > 0, "EOF");
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn cpu_s(pid: u32) -> f64 {
    matchstream::load::procfs::cpu_us(pid).map_or(0.0, |(u, s)| (u + s) as f64 / 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let nodes: Vec<String> = args[1].split(',').map(str::to_owned).collect();
    let per_node: usize = args[2].parse().unwrap();
    let events: usize = args[3].parse().unwrap();
    let rate: f64 = args[4].parse().unwrap();
    let token = args[5].clone();
    let pids: Vec<u32> = args
        .get(6)
        .map(|p| p.split(',').map(|x| x.parse().unwrap()).collect())
        .unwrap_or_default();

    let mut admin = HttpClient::new(&nodes[0], Some(token)).unwrap();
    let _ = admin.request("DELETE", &format!("/1/match/{MID}"), None);
    for t in ["loada", "loadb"] {
        let body = json!({"name": t, "division": "load"}).to_string();
        admin
            .request("PUT", &format!("/1/team/{t}"), Some(&body))
            .unwrap();
    }
    let body = json!({"home": "loada", "visit": "loadb", "start_date": "2030-01-01"});
    let r = admin
        .request("POST", "/1/matches", Some(&body.to_string()))
        .unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    for node in &nodes {
        let mut c = HttpClient::new(node, None).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c
            .request("GET", &format!("/1/match/{MID}"), None)
            .unwrap()
            .status
            != 200
        {
            assert!(Instant::now() < deadline, "{node} never saw the match");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let base = Instant::now();
    let posted: Arc<Vec<AtomicU64>> = Arc::new((0..=events).map(|_| AtomicU64::new(0)).collect());
    let threads = nodes.len() * THREADS_PER_NODE;
    let ready = Arc::new(Barrier::new(threads + 1));
    let connect_start = Instant::now();
    let mut readers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for _ in 0..THREADS_PER_NODE {
            let (node, posted, ready) = (node.clone(), posted.clone(), ready.clone());
            readers.push(std::thread::spawn(move || {
                let mut conns: Vec<Conn> = (0..per_node / THREADS_PER_NODE)
                    .map(|_| Conn::open(&node))
                    .collect();
                for c in &mut conns {
                    assert_eq!(c.next_json()["type"], "status");
                }
                ready.wait();
                let (mut first, mut last) = (Vec::new(), Vec::new());
                for seq in 1..=events as u64 {
                    let count = conns.len();
                    for (i, c) in conns.iter_mut().enumerate() {
                        assert_eq!(c.next_seq(), seq, "in order, nothing lost or repeated");
                        if i == 0 || i == count - 1 {
                            let at = base.elapsed().as_micros() as u64;
                            let sent = posted[seq as usize].load(Ordering::Acquire);
                            let lat = at.saturating_sub(sent);
                            if i == 0 {
                                first.push(lat);
                            }
                            if i == count - 1 {
                                last.push(lat);
                            }
                        }
                    }
                }
                (n, conns.len() as u64 * events as u64, first, last)
            }));
        }
    }
    ready.wait();
    let connect_s = connect_start.elapsed().as_secs_f64();
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_s(p)).collect();
    let start = Instant::now();
    for seq in 1..=events {
        let due = start + Duration::from_secs_f64((seq - 1) as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        posted[seq].store(base.elapsed().as_micros() as u64, Ordering::Release);
        let body = json!({"kind": "comment", "data": {"text": format!("load {seq}")}});
        let r = admin
            .request(
                "POST",
                &format!("/1/match/{MID}/events"),
                Some(&body.to_string()),
            )
            .unwrap();
        assert_eq!(r.status, 201, "{r:?}");
    }
    let post_s = start.elapsed().as_secs_f64();
    let mut deliveries = 0;
    let mut per_node: Vec<(Vec<u64>, Vec<u64>)> = vec![(Vec::new(), Vec::new()); nodes.len()];
    for r in readers {
        let (n, d, first, last) = r.join().expect("reader");
        deliveries += d;
        per_node[n].0.extend(first);
        per_node[n].1.extend(last);
    }
    let total_s = start.elapsed().as_secs_f64();
    let cpu1: Vec<f64> = pids.iter().map(|&p| cpu_s(p)).collect();
    println!(
        "watchers: {} ({} per node) connected in {connect_s:.2} s",
        per_node.len() * (args[2].parse::<usize>().unwrap() / THREADS_PER_NODE * THREADS_PER_NODE),
        args[2]
    );
    println!(
        "events: {events} posted to {} in {post_s:.2} s = {:.0}/s",
        nodes[0],
        events as f64 / post_s
    );
    println!(
        "deliveries: {deliveries} in {total_s:.2} s = {:.0}/s, all in order, none lost",
        deliveries as f64 / total_s
    );
    for (i, (first, last)) in per_node.iter_mut().enumerate() {
        first.sort_unstable();
        last.sort_unstable();
        println!(
            "node {i} ({}): latency first watcher p50 {} us p99 {} us max {} us; last watcher p50 {} us p99 {} us max {} us",
            nodes[i],
            percentile(first, 0.5),
            percentile(first, 0.99),
            first.last().copied().unwrap_or(0),
            percentile(last, 0.5),
            percentile(last, 0.99),
            last.last().copied().unwrap_or(0),
        );
    }
    for (i, pid) in pids.iter().enumerate() {
        let used = cpu1[i] - cpu0[i];
        println!(
            "pid {pid}: {used:.2} CPU s over {total_s:.2} s = {:.1}% of one core",
            100.0 * used / total_s
        );
    }
}
