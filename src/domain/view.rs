//! Wire views of matches and events: the exact WebSocket text payloads and the detail
//! lines of the TCP line protocol. Built once per event by the sequencer, then shared.

use serde::Serialize;
use serde_json::Value;

use super::event::{Event, EventKind};
use super::matches::Match;

#[derive(Serialize)]
struct StatusMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "match")]
    mid: &'a str,
    seq: u64,
    ts: i64,
    state: &'a Match,
}

#[derive(Serialize)]
struct EventMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "match")]
    mid: &'a str,
    seq: u64,
    ts: i64,
    #[serde(rename = "kind")]
    event_kind: EventKind,
    data: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    minute: Option<u8>,
}

#[derive(Serialize)]
struct ErrorMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: &'a str,
}

/// The WebSocket status message of a match:
/// `{"type":"status","match":MID,"seq":N,"ts":MS,"state":{…match object…}}`, where `ts` is
/// the timestamp of the last event (0 before any).
pub fn status_message(m: &Match) -> String {
    to_json(&StatusMessage {
        kind: "status",
        mid: &m.id,
        seq: m.seq,
        ts: m.last_ts,
        state: m,
    })
}

/// The WebSocket event message:
/// `{"type":"event","match":MID,"seq":N,"ts":MS,"kind":"goal","data":{…}}`, with
/// `"minute":67` last when the event carries its match minute.
pub fn event_message(mid: &str, event: &Event) -> String {
    to_json(&EventMessage {
        kind: "event",
        mid,
        seq: event.seq,
        ts: event.ts,
        event_kind: event.kind,
        data: &event.data,
        minute: event.minute,
    })
}

/// The WebSocket error message: `{"type":"error","error":"…"}`.
pub fn error_message(error: &str) -> String {
    to_json(&ErrorMessage {
        kind: "error",
        error,
    })
}

fn to_json(value: &impl Serialize) -> String {
    // Serializing these plain structs (string keys, no maps with non-string keys) cannot fail.
    serde_json::to_string(value).expect("wire messages always serialize")
}

/// Detail lines of an event for the TCP line protocol: the event's match minute first
/// (`minute: 67`, when it carries one; a `minute` key of the data is then left out), then
/// each data key (in key order) with a readable value. Strings as they are, players as
/// `7 Luna`, lists of players as `25 Albil, 14 Mercado`, anything else as compact JSON.
pub fn event_line_fields(event: &Event) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = event
        .minute
        .map(|m| ("minute".to_owned(), m.to_string()))
        .into_iter()
        .collect();
    match &event.data {
        Value::Object(map) => fields.extend(
            map.iter()
                .filter(|(k, _)| event.minute.is_none() || k.as_str() != "minute")
                .map(|(k, v)| (k.clone(), readable(v))),
        ),
        Value::Null => {}
        other => fields.push(("data".into(), readable(other))),
    }
    fields
}

fn readable(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) => {
            if let Some(p) = player_text(v) {
                p
            } else if !items.is_empty() && items.iter().all(|i| player_text(i).is_some()) {
                items
                    .iter()
                    .filter_map(player_text)
                    .collect::<Vec<_>>()
                    .join(", ")
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// `[7, "Luna"]` → `7 Luna` (a player with no name: just the number).
fn player_text(v: &Value) -> Option<String> {
    match v.as_array()?.as_slice() {
        [Value::Number(n), Value::String(name)] if n.is_u64() => Some(if name.is_empty() {
            n.to_string()
        } else {
            format!("{n} {name}")
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Team;
    use serde_json::json;

    fn sample_match() -> Match {
        let h = Team::new("elp", "Estudiantes", "Primera A").unwrap();
        let v = Team::new("tig", "Tigre", "Primera A").unwrap();
        Match::new(&h, &v, "2011-09-10", "Unknown Stadium").unwrap()
    }

    #[test]
    fn status_message_wraps_the_match_object() {
        let mut m = sample_match();
        assert_eq!(
            status_message(&m),
            format!(
                r#"{{"type":"status","match":"elp-tig-2011-09-10","seq":0,"ts":0,"state":{}}}"#,
                serde_json::to_string(&m).unwrap()
            )
        );
        m.apply(EventKind::Start, &json!({}), 1_000).unwrap();
        let v: Value = serde_json::from_str(&status_message(&m)).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["ts"], 1_000);
        assert_eq!(v["state"]["period"], "first");
        assert_eq!(v["state"]["period_start"], 1_000);
    }

    #[test]
    fn event_message_is_exact() {
        let e = Event {
            seq: 2,
            ts: 5,
            kind: EventKind::Goal,
            data: json!({"team": "tig", "player": [7, "Luna"]}),
            minute: None,
        };
        assert_eq!(
            event_message("elp-tig-2011-09-10", &e),
            r#"{"type":"event","match":"elp-tig-2011-09-10","seq":2,"ts":5,"kind":"goal","data":{"player":[7,"Luna"],"team":"tig"}}"#
        );
        let timed = Event {
            minute: Some(67),
            ..e
        };
        assert_eq!(
            event_message("elp-tig-2011-09-10", &timed),
            r#"{"type":"event","match":"elp-tig-2011-09-10","seq":2,"ts":5,"kind":"goal","data":{"player":[7,"Luna"],"team":"tig"},"minute":67}"#
        );
    }

    #[test]
    fn line_fields_lead_with_the_event_minute() {
        let e = Event {
            seq: 2,
            ts: 5,
            kind: EventKind::Goal,
            data: json!({"team": "tig", "minute": "data's own"}),
            minute: Some(67),
        };
        assert_eq!(
            event_line_fields(&e),
            vec![
                ("minute".into(), "67".into()),
                ("team".into(), "tig".into()),
            ]
        );
    }

    #[test]
    fn error_messages_escape_their_text() {
        assert_eq!(
            error_message("match not found: \"x\""),
            r#"{"type":"error","error":"match not found: \"x\""}"#
        );
    }

    #[test]
    fn line_fields_are_readable() {
        let e = Event {
            seq: 1,
            ts: 0,
            kind: EventKind::Substitution,
            data: json!({
                "team": "elp",
                "player_in": [21, "Silva"],
                "player_out": [18, "Fernandez"],
                "minute": 12,
                "lineup": [[25, "Albil"], [14, "Mercado"]],
                "unnamed": [9, ""],
                "flags": [1, 2, 3],
                "extra": {"a": true},
                "none": null,
            }),
            minute: None,
        };
        assert_eq!(
            event_line_fields(&e),
            vec![
                ("extra".into(), r#"{"a":true}"#.into()),
                ("flags".into(), "[1,2,3]".into()),
                ("lineup".into(), "25 Albil, 14 Mercado".into()),
                ("minute".into(), "12".into()),
                ("none".into(), String::new()),
                ("player_in".into(), "21 Silva".into()),
                ("player_out".into(), "18 Fernandez".into()),
                ("team".into(), "elp".into()),
                ("unnamed".into(), "9".into()),
            ]
        );
        let empty = Event {
            data: json!({}),
            ..e
        };
        assert!(event_line_fields(&empty).is_empty());
    }
}
