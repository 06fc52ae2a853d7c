//! Teams, the ids they are known by, and the checks on what an admin may create.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest team id accepted, in bytes.
pub const MAX_TEAM_ID_LEN: usize = 16;

/// A team, as `PUT /1/team/{id}` stores it and `GET /1/team/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// Short lowercase slug (`[a-z0-9_]{1,16}`), e.g. `elp`.
    pub id: String,
    /// Full name, e.g. `Estudiantes de La Plata`.
    pub name: String,
    /// The league division it plays in, e.g. `Primera A`.
    pub division: String,
}

/// Why a team or match description given by an admin cannot be accepted (HTTP 422).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    /// A team id must be 1–16 characters of `a-z`, `0-9` or `_`.
    #[error("invalid team id {0:?}: expected 1-16 characters of a-z, 0-9, _")]
    InvalidTeamId(String),
    /// A match date must be a real calendar date written `YYYY-MM-DD`.
    #[error("invalid start_date {0:?}: expected YYYY-MM-DD")]
    InvalidDate(String),
    /// A team cannot play itself.
    #[error("a match needs two different teams, got {0:?} twice")]
    SameTeams(String),
    /// An event's match minute must be an integer from 0 to 130.
    #[error(transparent)]
    InvalidMinute(#[from] super::event::InvalidMinute),
}

/// Checks that `id` is a valid team slug: `[a-z0-9_]{1,16}`.
pub fn validate_team_id(id: &str) -> Result<(), InputError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_TEAM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(InputError::InvalidTeamId(id.to_owned()))
    }
}

impl Team {
    /// Builds a team after checking its id.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        division: impl Into<String>,
    ) -> Result<Team, InputError> {
        let id = id.into();
        validate_team_id(&id)?;
        Ok(Team {
            id,
            name: name.into(),
            division: division.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn team_ids_are_short_lowercase_slugs() {
        for good in ["elp", "tig", "a", "river_2", "abcdefghijklmnop"] {
            assert!(validate_team_id(good).is_ok(), "{good}");
        }
        for bad in ["", "ELP", "el-p", "el p", "abcdefghijklmnopq", "é", "a/b"] {
            assert_eq!(
                validate_team_id(bad),
                Err(InputError::InvalidTeamId(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn new_team_checks_its_id() {
        let t = Team::new("elp", "Estudiantes", "Primera A").unwrap();
        assert_eq!(t.id, "elp");
        assert!(Team::new("Elp", "x", "y").is_err());
    }

    #[test]
    fn team_json_round_trips() {
        let t = Team::new("tig", "Tigre", "Primera A").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"id":"tig","name":"Tigre","division":"Primera A"}"#
        );
        assert_eq!(serde_json::from_str::<Team>(&json).unwrap(), t);
    }
}
