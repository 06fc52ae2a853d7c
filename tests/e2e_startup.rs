//! What the server says when it starts: the connection capacity once, a warning only when the
//! operator asked for more connections than the open-files limit allows, and a plain-text log
//! (no ANSI escapes) when stderr is not a terminal.

mod common;

use common::*;

#[test]
fn default_max_connections_logs_the_capacity_without_a_warning() {
    let server = Server::start(&[]);
    let log = server.log_tail();
    assert_eq!(log.matches("capacity").count(), 1, "{log}");
    assert!(!log.contains("WARN"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a log file:\n{log:?}"
    );
}

#[test]
fn asking_for_more_than_the_capacity_warns_once_naming_the_fix() {
    let server = Server::start(&["--max-connections", "1000000000000"]);
    let log = server.log_tail();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains("cannot be reached"), "{warning}");
    assert!(warning.contains("--workers"), "{warning}");
    assert_eq!(log.matches("capacity").count(), 1, "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a log file:\n{log:?}"
    );
}
