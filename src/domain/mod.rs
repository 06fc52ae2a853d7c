//! The domain: teams, matches, events, the scoreboard fold and the wire views of them.
//!
//! No I/O and no clock here: the sequencer passes each event's timestamp in. A match's
//! state is a fold over its events ([`Match::apply`]); replaying a match's stored
//! (normalized) history from a fresh match rebuilds the same state.

mod event;
mod fold;
mod matches;
pub mod script;
mod team;
mod view;

pub use event::{
    check_minute, parse_minute, Event, EventKind, InvalidMinute, UnknownKind, MAX_MINUTE,
};
pub use fold::{MatchState, Rejection};
pub use matches::{is_match_id, match_id, validate_date, Match, Period, Player, MAX_MATCH_ID_LEN};
pub use script::{MatchScript, Step};
pub use team::{validate_team_id, InputError, Team, MAX_TEAM_ID_LEN};
pub use view::{error_message, event_line_fields, event_message, status_message};
