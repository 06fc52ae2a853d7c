//! Kernel TLS (`--ktls`) against the real server. Where the kernel offers the `tls` ULP, a
//! TLS 1.3 watcher's sending key goes to the kernel: it gets the whole match (the kernel seals
//! the shared plaintext frame), `/metrics` counts it, and its close is clean. Where the kernel
//! does not (this project's development and CI machines), the server says so at start, counts
//! nothing, and the same watcher gets the whole match sealed in user space; the test says
//! plainly that it skipped the kernel half. `--ktls off` is said at start and honoured.

mod common;

use common::*;
use matchstream::server::tls::ktls::{probe, Availability};

/// A WSS watcher gets the whole sample match, then the close after `stop`.
fn watch_whole_match(server: &Server) {
    let mut ws = Watcher::connect_tls(server.http, &server.tls_client());
    ws.watch(SAMPLE_MID, None);
    assert_eq!(ws.expect_status(SAMPLE_MID)["seq"], 0);
    // A command after the hand-over: what the client sends is still read and answered.
    ws.watch(SAMPLE_MID, Some(0));
    let reply = ws.next_json();
    assert!(reply.to_string().contains("already watching"), "{reply}");
    let events = sample_events();
    post_events(&mut server.admin(), 1..=events.len());
    for (i, (kind, _)) in events.iter().enumerate() {
        let v = ws.expect_event(SAMPLE_MID, i as u64 + 1);
        assert_eq!(v["kind"], kind.as_str(), "{v}");
    }
    assert_eq!(ws.expect_close().0, 1000, "close after stop");
}

#[test]
fn ktls_auto_hands_the_sending_key_to_the_kernel_exactly_where_it_has_the_tls_ulp() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &[]);
    post_sample(&server, 0);
    watch_whole_match(&server);
    assert_eq!(server.metric_sum("matchstream_tls_record_errors_total"), 0);
    let log = format!("{}{}", server.stdout_text(), server.log_text());
    match probe() {
        Availability::Available => {
            assert!(log.contains("kTLS on"), "{log}");
            assert_eq!(server.metric_sum("matchstream_ktls_enabled"), 1);
            assert_eq!(server.metric_sum("matchstream_ktls_watchers_total"), 1);
            assert_eq!(server.metric_sum("matchstream_ktls_refused_total"), 0);
        }
        Availability::Unavailable(why) => {
            assert!(
                log.contains("kTLS off: this kernel has no tls ULP"),
                "{log}"
            );
            assert_eq!(server.metric_sum("matchstream_ktls_enabled"), 0);
            assert_eq!(server.metric_sum("matchstream_ktls_watchers_total"), 0);
            eprintln!(
                "SKIPPED the kernel half of this test: {why}. The watcher was sealed in user space."
            );
        }
    }
}

#[test]
fn ktls_off_is_said_at_start_and_every_record_is_sealed_in_user_space() {
    let pki = TestPki::new();
    let server = Server::start_tls(&pki, &["--ktls", "off"]);
    post_sample(&server, 0);
    watch_whole_match(&server);
    let log = format!("{}{}", server.stdout_text(), server.log_text());
    assert!(log.contains("kTLS off (--ktls off)"), "{log}");
    assert_eq!(server.metric_sum("matchstream_ktls_enabled"), 0);
    assert_eq!(server.metric_sum("matchstream_ktls_watchers_total"), 0);
}
