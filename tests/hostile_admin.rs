//! Admin authentication against the real binary: `--admin-token-file`, a generated token
//! written 0600 to the data directory and never printed, and failed logins rate-limited per
//! source address (429 with `Retry-After`, other addresses unaffected).

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::json;

/// Sends `PUT /1/team/zzz` with `token` from `src`; returns the status line and headers.
fn put_team_from(server: &Server, src: IpAddr, token: &str) -> (u16, String) {
    let mut s = connect_from(src, server.http).unwrap();
    let body = json!({"name": "Z", "division": "A"}).to_string();
    let req = format!(
        "PUT /1/team/zzz HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out)
}

#[test]
fn the_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "  from-a-file\n").unwrap();
    let server = Server::start_without_token(&["--admin-token-file", path.to_str().unwrap()]);
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(put_team_from(&server, local, "from-a-file").0, 201);
    assert_eq!(put_team_from(&server, local, TOKEN).0, 401);
}

#[test]
fn a_generated_token_is_written_0600_and_never_printed() {
    let server = Server::start_without_token(&[]);
    let path = server.data_dir().join("admin-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(token.len() >= 20, "{token:?}");
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(put_team_from(&server, local, &token).0, 201);
    let (stdout, log) = (server.stdout_text(), server.log_text());
    assert!(!stdout.contains(&token), "stdout: {stdout}");
    assert!(!log.contains(&token), "log: {log}");
    assert!(
        log.contains(&path.display().to_string()),
        "the log names the file: {log}"
    );
}

#[test]
fn failed_logins_are_rate_limited_per_address() {
    let server = Server::start(&[]);
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for i in 0..10 {
        let (status, text) = put_team_from(&server, attacker, &format!("guess-{i}"));
        assert_eq!(status, 401, "{text}");
    }
    let (status, text) = put_team_from(&server, attacker, "guess-10");
    assert_eq!(status, 429, "{text}");
    let retry: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .unwrap_or_else(|| panic!("no Retry-After: {text}"))
        .trim()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Even the right token waits: the token is not even looked at.
    assert_eq!(put_team_from(&server, attacker, TOKEN).0, 429);
    // Other addresses are not affected.
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(put_team_from(&server, local, TOKEN).0, 201);
    assert_eq!(put_team_from(&server, local, "wrong").0, 401);
    // Reads never count.
    assert_eq!(get_json(&server, "/1/team/zzz")["name"], "Z");
    assert_eq!(
        server.metric_sum("matchstream_logins_rate_limited_total"),
        2
    );
}
