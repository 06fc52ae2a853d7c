//! TCP-level liveness against the real binary: line and WebSocket sockets run the kernel's
//! keepalive timer (`SO_KEEPALIVE`), and a half-open peer — one that vanished without a FIN
//! or RST, here by taking the loopback interface down inside a private network namespace —
//! is dropped by keepalive and `TCP_USER_TIMEOUT` while its client still thinks it is
//! connected. The namespace part needs root (`CAP_SYS_ADMIN`, `CAP_NET_ADMIN`) and the `ip`
//! tool; without them it says so and passes.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `(local, remote, state, timer)` of every TCP socket in this thread's network namespace.
fn tcp_sockets() -> Vec<(SocketAddr, SocketAddr, String, String)> {
    // thread-self: the test may have moved this thread into its own namespace.
    let text = std::fs::read_to_string("/proc/thread-self/net/tcp").expect("proc net tcp");
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = |s: &str| -> Option<SocketAddr> {
                let (ip, port) = s.split_once(':')?;
                let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
                Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
            };
            let timer = f.get(5)?.split(':').next()?.to_string();
            Some((addr(f[1])?, addr(f[2])?, f[3].to_string(), timer))
        })
        .collect()
}

/// The established server-side sockets of `port`, with their timer kind (`02` = keepalive).
fn server_side(port: u16) -> Vec<(SocketAddr, String)> {
    tcp_sockets()
        .into_iter()
        .filter(|(local, _, state, _)| local.port() == port && state == "01")
        .map(|(_, remote, _, timer)| (remote, timer))
        .collect()
}

#[test]
fn line_and_websocket_sockets_run_the_keepalive_timer() {
    let server = Server::start(&[]);
    post_sample(&server, 1);
    let mut line = server.line(SAMPLE_MID);
    line.next_block().expect("status block");
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    for port in [server.tcp.port(), server.http.port()] {
        // 01 is the retransmit timer: bytes just written and not yet acknowledged (a
        // delayed ACK on an idle box). The keepalive timer shows once they are.
        let mut socks = server_side(port);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while socks.iter().any(|(_, t)| t == "01") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            socks = server_side(port);
        }
        assert!(!socks.is_empty(), "no established socket on port {port}");
        for (peer, timer) in socks {
            // 02: the keepalive timer is armed (00 would mean no timer at all).
            assert_eq!(timer, "02", "server socket of port {port} to {peer}");
        }
    }
}

#[test]
fn keepalive_off_leaves_no_timer() {
    let server = Server::start(&["--tcp-keepalive-idle-secs", "0"]);
    post_sample(&server, 1);
    let mut line = server.line(SAMPLE_MID);
    line.next_block().expect("status block");
    let socks = server_side(server.tcp.port());
    assert_eq!(socks.len(), 1);
    assert_eq!(socks[0].1, "00");
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_half_open_peer_is_dropped_by_keepalive() {
    // SAFETY: unshare only changes this thread's namespaces; the server is spawned from this
    // thread and inherits the new one.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 || !ip(&["link", "set", "lo", "up"]) {
        eprintln!("skipped: cannot make a private network namespace (needs root and `ip`)");
        return;
    }
    let server = Server::start(&[
        "--tcp-keepalive-idle-secs",
        "1",
        "--tcp-keepalive-interval-secs",
        "1",
        "--tcp-keepalive-probes",
        "2",
        "--tcp-user-timeout-ms",
        "3000",
    ]);
    post_sample(&server, 1);
    let mut line = server.line(SAMPLE_MID);
    line.next_block().expect("status block");
    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    ws.expect_status(SAMPLE_MID);
    assert_eq!(server.metric_sum("matchstream_line_connections"), 1);
    assert_eq!(server.metric_sum("matchstream_websockets"), 1);

    // The path vanishes: nothing gets through either way, no FIN, no RST.
    assert!(ip(&["link", "set", "lo", "down"]));
    std::thread::sleep(Duration::from_secs(7));
    assert!(ip(&["link", "set", "lo", "up"]));

    wait_until(WAIT, "the half-open peers to be dropped", || {
        server.metric_sum("matchstream_line_connections") == 0
            && server.metric_sum("matchstream_websockets") == 0
    });
    // The clients never heard of it: their side is still established.
    let client_side: Vec<_> = tcp_sockets()
        .into_iter()
        .filter(|(_, remote, state, _)| {
            (remote.port() == server.tcp.port() || remote.port() == server.http.port())
                && state == "01"
        })
        .collect();
    assert!(
        client_side.len() >= 2,
        "the clients still think they are connected: {client_side:?}"
    );
    assert!(server_side(server.tcp.port()).is_empty());
}
