//! The scoreboard fold: applies one event to a match, or refuses it and changes nothing.
//!
//! Rules decided here, where DESIGN.md is silent:
//!
//! * `comment` is allowed at any time, even before `start` and after `stop`; its data is
//!   stored as given.
//! * Every other kind but `start` needs a started match; after `stop` only comments apply.
//! * Periods move forward only: `halftime` from `first`, `continue` from `halftime`,
//!   `penalties` from `last`, `stop` from any running period.
//! * Play events (everything but the period kinds and `comment`) may carry `team` (must be
//!   the home or visiting team id) and `player` (needs `team`). A player given as a bare
//!   number must be on that team's lineup, and is stored as `[number, name]` from it; a
//!   player given as `[number, name]` is taken from the lineup when there, else as given
//!   (a yellow card for a player on the bench), except where the rule needs the player on
//!   the field: a red card's `player` and a substitution's `player_out`.
//! * A `goal`'s `player_team`, when present, names the scorer's own team (own goal): the
//!   player is looked up on that lineup while `team` gets the goal.
//! * A substitution's `player_in` (`[number, name]`, or a bare number stored with an empty
//!   name) must not already be on the field.
//! * `seq` goes up by one and `last_ts` becomes `ts` for every applied event.

use serde_json::{Map, Value};
use thiserror::Error;

use super::event::EventKind;
use super::matches::{Match, Period, Player};

/// The state the fold works on: the match object itself.
pub type MatchState = Match;

/// Why an event cannot apply to a match (HTTP 422, the message is the error body).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// Event data must be a JSON object.
    #[error("event data must be a JSON object")]
    DataNotObject,
    /// Only `start` and `comment` may come before `start`.
    #[error("match has not started: {0} needs a start event first")]
    NotStarted(EventKind),
    /// `start` may happen once.
    #[error("match has already started")]
    AlreadyStarted,
    /// After `stop` only `comment` may follow.
    #[error("match has ended: only comments may follow stop, got {0}")]
    Ended(EventKind),
    /// Periods move forward only (`halftime` from `first`, `continue` from `halftime`,
    /// `penalties` from `last`).
    #[error("{kind} is not allowed during period {period}")]
    WrongPeriod {
        /// The refused kind.
        kind: EventKind,
        /// The match's period when it was refused.
        period: &'static str,
    },
    /// A field this kind needs is absent.
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    /// A field has the wrong JSON shape.
    #[error("invalid field {field:?}: expected {expected}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// What was expected there.
        expected: &'static str,
    },
    /// A team field names neither the home nor the visiting team.
    #[error("unknown team: {0}")]
    UnknownTeam(String),
    /// The player is not on the team's field (a bare number that cannot be resolved, a red
    /// card or a substitution's `player_out`).
    #[error("player {number} of {team} is not on the field")]
    NotOnField {
        /// The team id.
        team: String,
        /// The shirt number.
        number: u32,
    },
    /// A substitution's `player_in` is already on the field.
    #[error("player {number} of {team} is already on the field")]
    AlreadyOnField {
        /// The team id.
        team: String,
        /// The shirt number.
        number: u32,
    },
    /// A card must be `"yellow"` or `"red"`.
    #[error("invalid card {0:?}: expected \"yellow\" or \"red\"")]
    InvalidCard(String),
    /// A lineup lists the same shirt number twice.
    #[error("duplicate shirt number {number} in {field}")]
    DuplicateNumber {
        /// `home_players` or `visit_players`.
        field: &'static str,
        /// The repeated number.
        number: u32,
    },
}

/// Which side of the match a team id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Home,
    Visit,
}

/// A player as written in event data.
enum PlayerSpec {
    Number(u32),
    Full(Player),
}

/// What an accepted event changes, decided before anything is changed.
enum Change {
    Nothing,
    Start(Vec<Player>, Vec<Player>),
    Period(Period, Option<i64>),
    Goal(Side),
    SendOff(Side, usize),
    Substitute(Side, usize, Player),
}

const PLAYER_SHAPE: &str = "a shirt number or [number, name]";

impl Match {
    /// Applies one event at time `ts`: validates it first and changes nothing when it is
    /// refused; otherwise updates the state (`seq` + 1, `last_ts` = `ts`) and returns the
    /// data as it must be stored (players normalized to `[number, name]`).
    pub fn apply(&mut self, kind: EventKind, data: &Value, ts: i64) -> Result<Value, Rejection> {
        let obj = data.as_object().ok_or(Rejection::DataNotObject)?;
        self.check_period(kind)?;
        let mut out = obj.clone();
        let change = match kind {
            EventKind::Comment => Change::Nothing,
            EventKind::Start => start_lineups(&mut out)?,
            EventKind::Halftime => Change::Period(Period::Halftime, None),
            EventKind::Continue => Change::Period(Period::Last, Some(ts)),
            EventKind::Penalties => Change::Period(Period::Penalties, Some(ts)),
            EventKind::Stop => Change::Period(Period::Ended, None),
            EventKind::Goal => self.goal(&mut out)?,
            EventKind::Card => self.card(&mut out)?,
            EventKind::Substitution => self.substitution(&mut out)?,
            _ => {
                self.play_event(&mut out)?;
                Change::Nothing
            }
        };
        self.commit(change, ts);
        Ok(Value::Object(out))
    }

    fn check_period(&self, kind: EventKind) -> Result<(), Rejection> {
        use EventKind as K;
        let wrong = || Rejection::WrongPeriod {
            kind,
            period: self.period.as_str(),
        };
        match (kind, self.period) {
            (K::Comment, _) => Ok(()),
            (K::Start, Period::NotStarted) => Ok(()),
            (K::Start, _) => Err(Rejection::AlreadyStarted),
            (_, Period::NotStarted) => Err(Rejection::NotStarted(kind)),
            (_, Period::Ended) => Err(Rejection::Ended(kind)),
            (K::Halftime, p) if p != Period::First => Err(wrong()),
            (K::Continue, p) if p != Period::Halftime => Err(wrong()),
            (K::Penalties, p) if p != Period::Last => Err(wrong()),
            _ => Ok(()),
        }
    }

    fn commit(&mut self, change: Change, ts: i64) {
        match change {
            Change::Nothing => {}
            Change::Start(home, visit) => {
                self.home_players = home;
                self.visit_players = visit;
                self.home_score = 0;
                self.visit_score = 0;
                self.period = Period::First;
                self.period_start = Some(ts);
            }
            Change::Period(period, start) => {
                self.period = period;
                self.period_start = start;
            }
            Change::Goal(side) => *self.side_score(side) += 1,
            Change::SendOff(side, idx) => {
                self.side_lineup(side).remove(idx);
            }
            Change::Substitute(side, idx, player_in) => self.side_lineup(side)[idx] = player_in,
        }
        self.seq += 1;
        self.last_ts = ts;
    }

    fn side_score(&mut self, side: Side) -> &mut u32 {
        match side {
            Side::Home => &mut self.home_score,
            Side::Visit => &mut self.visit_score,
        }
    }

    fn side_lineup(&mut self, side: Side) -> &mut Vec<Player> {
        match side {
            Side::Home => &mut self.home_players,
            Side::Visit => &mut self.visit_players,
        }
    }

    fn lineup_of(&self, side: Side) -> &[Player] {
        match side {
            Side::Home => &self.home_players,
            Side::Visit => &self.visit_players,
        }
    }

    fn team_id(&self, side: Side) -> &str {
        match side {
            Side::Home => &self.home,
            Side::Visit => &self.visit,
        }
    }

    /// Reads a team field; `None` when absent.
    fn side_of(
        &self,
        obj: &Map<String, Value>,
        field: &'static str,
    ) -> Result<Option<Side>, Rejection> {
        let Some(v) = obj.get(field) else {
            return Ok(None);
        };
        let id = v.as_str().ok_or(Rejection::InvalidField {
            field,
            expected: "a team id string",
        })?;
        if id == self.home {
            Ok(Some(Side::Home))
        } else if id == self.visit {
            Ok(Some(Side::Visit))
        } else {
            Err(Rejection::UnknownTeam(id.to_owned()))
        }
    }

    fn required_side(
        &self,
        obj: &Map<String, Value>,
        field: &'static str,
    ) -> Result<Side, Rejection> {
        self.side_of(obj, field)?
            .ok_or(Rejection::MissingField(field))
    }

    /// Finds a player on the field by shirt number.
    fn on_field(&self, side: Side, number: u32) -> Result<(usize, &Player), Rejection> {
        self.lineup_of(side)
            .iter()
            .enumerate()
            .find(|(_, p)| p.0 == number)
            .ok_or_else(|| Rejection::NotOnField {
                team: self.team_id(side).to_owned(),
                number,
            })
    }

    /// Normalizes an optional `player` field of `side` (lenient: see the module rules).
    fn normalize_player(&self, out: &mut Map<String, Value>, side: Side) -> Result<(), Rejection> {
        let Some(spec) = player_spec(out, "player")? else {
            return Ok(());
        };
        let player = match spec {
            PlayerSpec::Number(n) => self.on_field(side, n)?.1.clone(),
            PlayerSpec::Full(p) => match self.on_field(side, p.0) {
                Ok((_, found)) => found.clone(),
                Err(_) => p,
            },
        };
        out.insert("player".into(), player_json(&player));
        Ok(())
    }

    fn play_event(&self, out: &mut Map<String, Value>) -> Result<(), Rejection> {
        match self.side_of(out, "team")? {
            Some(side) => self.normalize_player(out, side),
            None if out.contains_key("player") => Err(Rejection::MissingField("team")),
            None => Ok(()),
        }
    }

    fn goal(&self, out: &mut Map<String, Value>) -> Result<Change, Rejection> {
        let scorer = self.required_side(out, "team")?;
        let player_side = self.side_of(out, "player_team")?.unwrap_or(scorer);
        self.normalize_player(out, player_side)?;
        Ok(Change::Goal(scorer))
    }

    fn card(&self, out: &mut Map<String, Value>) -> Result<Change, Rejection> {
        let side = self.required_side(out, "team")?;
        let card = match out.get("card") {
            None => return Err(Rejection::MissingField("card")),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(Rejection::InvalidCard(other.to_string())),
        };
        if !out.contains_key("player") {
            return Err(Rejection::MissingField("player"));
        }
        match card.as_str() {
            "yellow" => {
                self.normalize_player(out, side)?;
                Ok(Change::Nothing)
            }
            "red" => {
                let number = required_number(out, "player")?;
                let (idx, player) = self.on_field(side, number)?;
                out.insert("player".into(), player_json(player));
                Ok(Change::SendOff(side, idx))
            }
            _ => Err(Rejection::InvalidCard(card)),
        }
    }

    fn substitution(&self, out: &mut Map<String, Value>) -> Result<Change, Rejection> {
        let side = self.required_side(out, "team")?;
        let out_number = required_number(out, "player_out")?;
        let player_in = match player_spec(out, "player_in")? {
            None => return Err(Rejection::MissingField("player_in")),
            Some(PlayerSpec::Number(n)) => (n, String::new()),
            Some(PlayerSpec::Full(p)) => p,
        };
        let (idx, leaving) = self.on_field(side, out_number)?;
        if self.on_field(side, player_in.0).is_ok() {
            return Err(Rejection::AlreadyOnField {
                team: self.team_id(side).to_owned(),
                number: player_in.0,
            });
        }
        out.insert("player_out".into(), player_json(leaving));
        out.insert("player_in".into(), player_json(&player_in));
        Ok(Change::Substitute(side, idx, player_in))
    }
}

/// Reads the lineups of a `start` event, stores them normalized in `out`.
fn start_lineups(out: &mut Map<String, Value>) -> Result<Change, Rejection> {
    let home = lineup_field(out, "home_players")?;
    let visit = lineup_field(out, "visit_players")?;
    out.insert("home_players".into(), lineup_json(&home));
    out.insert("visit_players".into(), lineup_json(&visit));
    Ok(Change::Start(home, visit))
}

fn lineup_field(obj: &Map<String, Value>, field: &'static str) -> Result<Vec<Player>, Rejection> {
    let invalid = Rejection::InvalidField {
        field,
        expected: "an array of [number, name]",
    };
    let Some(v) = obj.get(field) else {
        return Ok(Vec::new());
    };
    let items = v.as_array().ok_or(invalid.clone())?;
    let mut lineup: Vec<Player> = Vec::with_capacity(items.len());
    for item in items {
        let p = full_player(item).ok_or(invalid.clone())?;
        if lineup.iter().any(|q| q.0 == p.0) {
            return Err(Rejection::DuplicateNumber { field, number: p.0 });
        }
        lineup.push(p);
    }
    Ok(lineup)
}

fn full_player(v: &Value) -> Option<Player> {
    match v.as_array()?.as_slice() {
        [n, name] => Some((number(n)?, name.as_str()?.to_owned())),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Reads a player field; `None` when absent.
fn player_spec(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<PlayerSpec>, Rejection> {
    let Some(v) = obj.get(field) else {
        return Ok(None);
    };
    if let Some(n) = number(v) {
        return Ok(Some(PlayerSpec::Number(n)));
    }
    full_player(v)
        .map(|p| Some(PlayerSpec::Full(p)))
        .ok_or(Rejection::InvalidField {
            field,
            expected: PLAYER_SHAPE,
        })
}

/// The shirt number of a required player field.
fn required_number(obj: &Map<String, Value>, field: &'static str) -> Result<u32, Rejection> {
    match player_spec(obj, field)? {
        None => Err(Rejection::MissingField(field)),
        Some(PlayerSpec::Number(n)) => Ok(n),
        Some(PlayerSpec::Full(p)) => Ok(p.0),
    }
}

/// A player as stored: `[number, name]`.
pub(crate) fn player_json(p: &Player) -> Value {
    Value::Array(vec![Value::from(p.0), Value::from(p.1.as_str())])
}

fn lineup_json(lineup: &[Player]) -> Value {
    Value::Array(lineup.iter().map(player_json).collect())
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
