//! Start-up's port check against the real binary: a restart right after `kill -9` of a
//! server holding thousands of connections succeeds on its first try (the killed process's
//! listeners linger while the kernel tears its io_uring instance down; start-up waits for
//! them), while a port a live server listens on is refused at once, naming that process.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn a_restart_right_after_kill_9_succeeds_on_the_first_try() {
    // A generous wait: on this shared 2-core box, under the whole test suite, the kernel has
    // taken more than the default 5 s to tear down a killed server with 5,000 connections.
    let mut server = Server::start(&["--handshake-timeout-ms", "60000", "--port-wait-ms", "30000"]);
    post_sample(&server, 2);
    for round in 0..2 {
        // Thousands of open connections make the killed process's teardown take a while.
        let sockets: Vec<_> = (0..5000)
            .map(|_| std::net::TcpStream::connect(server.http).expect("connect"))
            .collect();
        wait_until(WAIT, "5000 connections", || {
            server.metric_sum("matchstream_connections") >= 5000
        });
        server.kill9();
        let started = Instant::now();
        if let Err(e) = server.start_again_once() {
            panic!("round {round}: the first restart failed: {e}");
        }
        eprintln!("round {round}: restarted in {:?}", started.elapsed());
        drop(sockets);
        // It is the same server, data and all.
        assert_eq!(
            get_json(&server, &format!("/1/match/{SAMPLE_MID}"))["seq"],
            2
        );
    }
    let log = server.log_text();
    eprintln!(
        "waited for a dying listener: {}",
        log.contains("no live process owns")
    );
}

#[test]
fn a_port_a_live_server_listens_on_is_refused_at_once() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_matchstream"))
        .args(["serve", "--workers", "1", "--admin-token", "x"])
        // Would wait this long for an exiting holder; a live one is refused at once.
        .args(["--port-wait-ms", "60000"])
        .args(["--listen", &server.http.to_string()])
        .args(["--tcp-listen", &server.tcp.to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(40) {
            let _ = child.kill();
            panic!("the second server did not give up");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains(&format!("process {}", server.pid())),
        "{stderr}"
    );
    assert!(stderr.contains("another server"), "{stderr}");
    // Refused without waiting out --port-wait-ms.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!("refused after {took:?}");
    // The first server is untouched.
    assert_eq!(get_json(&server, "/healthz")["status"], "ok");
}
