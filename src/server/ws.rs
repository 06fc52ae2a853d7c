//! What a WebSocket serves (`/1/ws` watchers, `/1/echo`) and the watchers' commands. After
//! its upgrade every WebSocket is a record of the worker's watcher plane
//! ([`super::plane`]), whose session is the sans-I/O [`crate::proto::session::WsSession`].

use serde::Deserialize;

/// What a WebSocket connection serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsMode {
    /// `/1/echo`: every message comes back (the Autobahn suite's peer).
    Echo,
    /// `/1/ws`: match watchers.
    Watch,
}

/// A watcher's command, as sent over `/1/ws`.
#[derive(Debug, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Command {
    /// Watch a match (resume after `since`).
    Watch {
        /// The match.
        mid: String,
        /// The user (counted, as in the seed).
        #[serde(default)]
        #[allow(dead_code)]
        uid: Option<String>,
        /// Resume after this seq.
        #[serde(default)]
        since: Option<u64>,
    },
    /// Stop watching a match.
    Unwatch {
        /// The match.
        mid: String,
    },
}

/// Parses a watcher's command; the error says what is wrong.
pub fn parse_command(text: &str) -> Result<Command, String> {
    serde_json::from_str::<Command>(text).map_err(|e| e.to_string())
}
