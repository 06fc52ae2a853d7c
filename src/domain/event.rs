//! Event kinds and stored events: what happens in a match, numbered by the sequencer.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The kinds of event an admin may post to a match (`status` is only a snapshot message
/// type, never an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Kick-off: sets the lineups, scores 0–0, period `first`.
    Start,
    /// End of the first half: period `halftime`.
    Halftime,
    /// Second half kick-off: period `last`.
    Continue,
    /// Final whistle: period `ended`; only comments may follow.
    Stop,
    /// Penalty shoot-out begins: period `penalties`.
    Penalties,
    /// A shot at goal.
    Shot,
    /// A save by the goalkeeper.
    Save,
    /// A goal: one more for `team`.
    Goal,
    /// A corner kick.
    Corner,
    /// A goal kick.
    Goalkick,
    /// An offside.
    Offside,
    /// A foul.
    Foul,
    /// A penalty kick awarded.
    Penalty,
    /// A free kick.
    Freekick,
    /// A yellow or red card; a red one sends `player` off.
    Card,
    /// `player_out` leaves the field, `player_in` comes on.
    Substitution,
    /// A throw-in.
    Throwin,
    /// Free text from the commentator; allowed at any time.
    Comment,
}

impl EventKind {
    /// Every postable kind, in the order DESIGN.md lists them.
    pub const ALL: [EventKind; 18] = [
        EventKind::Start,
        EventKind::Halftime,
        EventKind::Continue,
        EventKind::Stop,
        EventKind::Penalties,
        EventKind::Shot,
        EventKind::Save,
        EventKind::Goal,
        EventKind::Corner,
        EventKind::Goalkick,
        EventKind::Offside,
        EventKind::Foul,
        EventKind::Penalty,
        EventKind::Freekick,
        EventKind::Card,
        EventKind::Substitution,
        EventKind::Throwin,
        EventKind::Comment,
    ];

    /// The wire name, e.g. `"goal"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::Halftime => "halftime",
            EventKind::Continue => "continue",
            EventKind::Stop => "stop",
            EventKind::Penalties => "penalties",
            EventKind::Shot => "shot",
            EventKind::Save => "save",
            EventKind::Goal => "goal",
            EventKind::Corner => "corner",
            EventKind::Goalkick => "goalkick",
            EventKind::Offside => "offside",
            EventKind::Foul => "foul",
            EventKind::Penalty => "penalty",
            EventKind::Freekick => "freekick",
            EventKind::Card => "card",
            EventKind::Substitution => "substitution",
            EventKind::Throwin => "throwin",
            EventKind::Comment => "comment",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kind name that is not one of the 18 postable kinds (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown event kind: {0:?}")]
pub struct UnknownKind(pub String);

impl FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// One event of a match as stored and served by `GET /1/match/{id}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the match, 1, 2, 3… without gaps, assigned by the sequencer.
    pub seq: u64,
    /// Milliseconds since the epoch, assigned by the sequencer.
    pub ts: i64,
    /// What happened.
    pub kind: EventKind,
    /// Details (a JSON object), normalized by the fold: players as `[number, name]`.
    pub data: Value,
    /// The match minute the feed gave (0–[`MAX_MINUTE`]); absent when it gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<u8>,
}

/// The highest match minute an event may carry (extra time and stoppage included).
pub const MAX_MINUTE: u8 = 130;

/// A `minute` that is not an integer from 0 to [`MAX_MINUTE`] (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid minute {0}: expected an integer 0-130")]
pub struct InvalidMinute(pub String);

/// Checks a match minute given as JSON (`67`): an integer from 0 to [`MAX_MINUTE`].
pub fn parse_minute(value: &Value) -> Result<u8, InvalidMinute> {
    value
        .as_u64()
        .and_then(|m| u8::try_from(m).ok())
        .filter(|m| *m <= MAX_MINUTE)
        .ok_or_else(|| InvalidMinute(value.to_string()))
}

/// Checks a match minute already read as a number.
pub fn check_minute(minute: u8) -> Result<u8, InvalidMinute> {
    if minute <= MAX_MINUTE {
        Ok(minute)
    } else {
        Err(InvalidMinute(minute.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<EventKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn status_is_not_a_postable_kind() {
        assert_eq!(
            "status".parse::<EventKind>(),
            Err(UnknownKind("status".into()))
        );
        assert!(serde_json::from_str::<EventKind>("\"status\"").is_err());
        assert!("Goal".parse::<EventKind>().is_err());
    }

    #[test]
    fn event_serializes_in_history_order() {
        let e = Event {
            seq: 3,
            ts: 1000,
            kind: EventKind::Goal,
            data: serde_json::json!({"team": "tig"}),
            minute: None,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"ts":1000,"kind":"goal","data":{"team":"tig"}}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
        let timed = Event {
            minute: Some(67),
            ..e
        };
        let json = serde_json::to_string(&timed).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"ts":1000,"kind":"goal","data":{"team":"tig"},"minute":67}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), timed);
    }

    #[test]
    fn minutes_are_integers_from_0_to_130() {
        use serde_json::json;
        assert_eq!(parse_minute(&json!(0)), Ok(0));
        assert_eq!(parse_minute(&json!(67)), Ok(67));
        assert_eq!(parse_minute(&json!(130)), Ok(130));
        for bad in [
            json!(131),
            json!(-1),
            json!(45.5),
            json!("67"),
            json!(null),
            json!(300),
        ] {
            assert_eq!(parse_minute(&bad), Err(InvalidMinute(bad.to_string())));
        }
        assert_eq!(check_minute(130), Ok(130));
        assert!(check_minute(131).is_err());
    }
}
