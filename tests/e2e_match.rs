//! The sample match end to end: a WebSocket watcher and a TCP-line watcher see every event in
//! order and are closed after `stop`; the match object and history show the final state; the
//! `matchstream replay` command plays the fixture to the end, and `serve --demo` plays it at
//! `--demo-speed`; both send each event's match minute.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn has_player(lineup: &Value, number: u64, name: &str) -> bool {
    lineup
        .as_array()
        .expect("lineup is a list")
        .iter()
        .any(|p| p == &json!([number, name]))
}

fn has_number(lineup: &Value, number: u64) -> bool {
    lineup
        .as_array()
        .expect("lineup is a list")
        .iter()
        .any(|p| p[0] == number)
}

#[test]
fn sample_match_reaches_ws_and_line_watchers_in_order() {
    let server = Server::start(&[]);
    post_sample(&server, 0);
    let events = sample_events();
    assert_eq!(events.len(), 31);

    let mut ws = server.ws();
    ws.watch(SAMPLE_MID, None);
    let status = ws.expect_status(SAMPLE_MID);
    assert_eq!(status["seq"], 0);
    assert_eq!(status["state"]["period"], "not_started");

    let mut line = server.line(SAMPLE_MID);
    let block = line.next_block().expect("status block");
    assert_eq!(block.kind, "status");
    assert_eq!(block.field("match"), Some(SAMPLE_MID));
    assert_eq!(block.field("seq"), Some("0"));

    let mut admin = server.admin();
    post_events(&mut admin, 1..=31);

    for (i, (kind, data)) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        let v = ws.expect_event(SAMPLE_MID, seq);
        assert_eq!(v["kind"], kind.as_str(), "{v}");
        assert!(v["ts"].as_i64().unwrap() > 1_600_000_000_000, "{v}");
        if kind == "goal" {
            assert_eq!(v["data"]["team"], data["team"], "{v}");
        }
    }
    assert_eq!(ws.expect_close().0, 1000, "close after stop");

    for (i, (kind, data)) in events.iter().enumerate() {
        let block = line
            .next_block()
            .unwrap_or_else(|| panic!("EOF before block {}", i + 1));
        assert_eq!(&block.kind, kind, "block {}: {block:?}", i + 1);
        if let Some(team) = data.get("team").and_then(Value::as_str) {
            assert_eq!(block.field("team"), Some(team), "block {}", i + 1);
        }
    }
    line.expect_eof();

    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(m["home_score"], 1, "{m}");
    assert_eq!(m["visit_score"], 3, "{m}");
    assert_eq!(m["period"], "ended");
    assert_eq!(m["seq"], 31);
    let home = &m["home_players"];
    let visit = &m["visit_players"];
    assert!(!has_number(home, 25), "Albil sent off: {home}");
    for (n, name) in [(21, "Silva"), (22, "Galvan"), (23, "Benitez")] {
        assert!(has_player(home, n, name), "{name} in: {home}");
    }
    for n in [18, 19, 11] {
        assert!(!has_number(home, n), "elp #{n} substituted: {home}");
    }
    for (n, name) in [(22, "Pio"), (23, "Rodales"), (24, "Carrasco")] {
        assert!(has_player(visit, n, name), "{name} in: {visit}");
    }
    assert_eq!(home.as_array().unwrap().len(), 10);
    assert_eq!(visit.as_array().unwrap().len(), 11);

    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    let history = history.as_array().expect("history is a list");
    assert_eq!(history.len(), 31);
    for (i, e) in history.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["kind"], events[i].0.as_str());
    }
    let tail = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history?since=28"));
    let seqs: Vec<u64> = tail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [29, 30, 31]);
}

#[test]
fn line_blocks_have_the_seeds_format() {
    let server = Server::start(&[]);
    post_sample(&server, 2);
    let mut line = server.line(SAMPLE_MID);
    let status = line.next_block().expect("status block");
    assert_eq!(status.kind, "status");
    assert_eq!(status.field("home"), Some("elp"));
    assert_eq!(status.field("visit"), Some("tig"));
    assert_eq!(status.field("home_score"), Some("0"));
    assert_eq!(status.field("visit_score"), Some("1"));
    assert_eq!(status.field("period"), Some("first"));
    assert_eq!(status.field("seq"), Some("2"));
    post_events(&mut server.admin(), 3..=3);
    let penalty = line.next_block().expect("penalty block");
    assert_eq!(penalty.kind, "penalty");
    assert_eq!(penalty.field("team"), Some("tig"));
    assert!(
        penalty.field("player").is_some_and(|p| p.starts_with('6')),
        "{penalty:?}"
    );
}

#[test]
fn replay_command_plays_the_fixture() {
    let server = Server::start(&[]);
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/elp-tig-2011-09-10.json"
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_matchstream"))
        .args(["replay", fixture, "--server", &server.url()])
        .args(["--speed", "1000", "--admin-token", TOKEN, "--quiet"])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn replay");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("replay did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "replay exit: {status}");
    let m = get_json(&server, &format!("/1/match/{SAMPLE_MID}"));
    assert_eq!(
        (m["home_score"].as_u64(), m["visit_score"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(m["period"], "ended");
    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    assert_eq!(history.as_array().unwrap().len(), 31);
    // The script's minutes travel with its events, though it played 1000 times too fast.
    let minutes: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "goal")
        .map(|e| e["minute"].as_u64())
        .collect();
    assert_eq!(minutes, [Some(5), Some(22), Some(25), Some(58)]);
}

#[test]
fn demo_plays_the_sample_at_its_speed_with_the_script_minutes() {
    // 18 minutes of script at 400× is under 3 s; the wait allows a slow shared machine.
    let server = Server::start(&["--demo", "--demo-speed", "400"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = server
            .public()
            .request("GET", &format!("/1/match/{SAMPLE_MID}"), None)
            .unwrap();
        if r.status == 200 && body_json(&r)["period"] == "ended" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo match did not end in 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let history = get_json(&server, &format!("/1/match/{SAMPLE_MID}/history"));
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 31);
    assert_eq!(history[0]["minute"], 0);
    assert_eq!(history[1]["kind"], "goal");
    assert_eq!(history[1]["minute"], 5);
    assert_eq!(history[30]["minute"], 90);
}
