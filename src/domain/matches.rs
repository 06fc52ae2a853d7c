//! The match object: identity, lineups, score and period — the state the fold builds.

use serde::{Deserialize, Serialize};

use super::team::{validate_team_id, InputError, Team};

/// A player on a lineup: shirt number and name, serialized as `[number, name]`.
pub type Player = (u32, String);

/// Where a match stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Created, no `start` yet.
    NotStarted,
    /// First half running (after `start`).
    First,
    /// Half-time break (after `halftime`).
    Halftime,
    /// Second half running (after `continue`).
    Last,
    /// Penalty shoot-out (after `penalties`).
    Penalties,
    /// Over (after `stop`); only comments may follow.
    Ended,
}

impl Period {
    /// The wire name, e.g. `"not_started"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::NotStarted => "not_started",
            Period::First => "first",
            Period::Halftime => "halftime",
            Period::Last => "last",
            Period::Penalties => "penalties",
            Period::Ended => "ended",
        }
    }
}

/// A match: the object `GET /1/match/{id}` returns and the `state` of a status message.
///
/// The fold ([`Match::apply`](crate::domain::Match::apply)) keeps it up to date, one event
/// at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Match {
    /// `HOME-VISIT-YYYY-MM-DD`, e.g. `elp-tig-2011-09-10`.
    pub id: String,
    /// Home team id.
    pub home: String,
    /// Visiting team id.
    pub visit: String,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    /// Where it is played.
    pub stadium: String,
    /// Home players on the field (set by `start`, changed by red cards and substitutions).
    pub home_players: Vec<Player>,
    /// Visiting players on the field.
    pub visit_players: Vec<Player>,
    /// Goals for the home team.
    pub home_score: u32,
    /// Goals for the visiting team.
    pub visit_score: u32,
    /// Where the match stands.
    pub period: Period,
    /// When the running period began (ms since the epoch); absent when none is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<i64>,
    /// Number of the last event applied (0 before any).
    pub seq: u64,
    /// Timestamp of the last event applied (ms since the epoch, 0 before any). Not part of
    /// the match object; status messages carry it as `ts`.
    #[serde(skip)]
    pub last_ts: i64,
}

/// Builds a match id, `HOME-VISIT-YYYY-MM-DD`. Unambiguous because team ids have no `-`.
pub fn match_id(home: &str, visit: &str, start_date: &str) -> String {
    format!("{home}-{visit}-{start_date}")
}

/// The longest text that can be a match id (two team ids, two dashes, a date, with room).
pub const MAX_MATCH_ID_LEN: usize = 64;

/// Whether `id` can be a match id at all: `HOME-VISIT-YYYY-MM-DD` with two valid team ids and
/// a calendar date, at most [`MAX_MATCH_ID_LEN`] bytes. Lets the edge refuse garbage (a watch
/// of `../../etc`, a 60 KiB "id") without asking the sequencer.
pub fn is_match_id(id: &str) -> bool {
    if id.len() > MAX_MATCH_ID_LEN || id.len() < 14 || !id.is_ascii() {
        return false;
    }
    let (teams, date) = id.split_at(id.len() - 10);
    let Some(teams) = teams.strip_suffix('-') else {
        return false;
    };
    let Some((home, visit)) = teams.split_once('-') else {
        return false;
    };
    validate_date(date).is_ok()
        && super::team::validate_team_id(home).is_ok()
        && super::team::validate_team_id(visit).is_ok()
}

/// Checks that `date` is a calendar date written `YYYY-MM-DD`.
pub fn validate_date(date: &str) -> Result<(), InputError> {
    let bad = || InputError::InvalidDate(date.to_owned());
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| date[r].parse::<u32>().map_err(|_| bad());
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if (1..=days).contains(&day) {
        Ok(())
    } else {
        Err(bad())
    }
}

impl Match {
    /// A new, not yet started match between two teams.
    pub fn new(
        home: &Team,
        visit: &Team,
        start_date: &str,
        stadium: &str,
    ) -> Result<Match, InputError> {
        validate_team_id(&home.id)?;
        validate_team_id(&visit.id)?;
        if home.id == visit.id {
            return Err(InputError::SameTeams(home.id.clone()));
        }
        validate_date(start_date)?;
        Ok(Match {
            id: match_id(&home.id, &visit.id, start_date),
            home: home.id.clone(),
            visit: visit.id.clone(),
            start_date: start_date.to_owned(),
            stadium: stadium.to_owned(),
            home_players: Vec::new(),
            visit_players: Vec::new(),
            home_score: 0,
            visit_score: 0,
            period: Period::NotStarted,
            period_start: None,
            seq: 0,
            last_ts: 0,
        })
    }

    /// Whether `stop` has been applied.
    pub fn is_ended(&self) -> bool {
        self.period == Period::Ended
    }

    /// The lineup of `team` (a team id), if it plays this match.
    pub fn lineup(&self, team: &str) -> Option<&Vec<Player>> {
        if team == self.home {
            Some(&self.home_players)
        } else if team == self.visit {
            Some(&self.visit_players)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn teams() -> (Team, Team) {
        (
            Team::new("elp", "Estudiantes", "Primera A").unwrap(),
            Team::new("tig", "Tigre", "Primera A").unwrap(),
        )
    }

    #[test]
    fn new_match_builds_its_id_and_starts_empty() {
        let (h, v) = teams();
        let m = Match::new(&h, &v, "2011-09-10", "Unknown Stadium").unwrap();
        assert_eq!(m.id, "elp-tig-2011-09-10");
        assert_eq!(m.period, Period::NotStarted);
        assert_eq!((m.home_score, m.visit_score, m.seq), (0, 0, 0));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"id":"elp-tig-2011-09-10","home":"elp","visit":"tig","start_date":"2011-09-10","stadium":"Unknown Stadium","home_players":[],"visit_players":[],"home_score":0,"visit_score":0,"period":"not_started","seq":0}"#
        );
    }

    #[test]
    fn match_needs_two_teams_and_a_date() {
        let (h, v) = teams();
        assert_eq!(
            Match::new(&h, &h, "2011-09-10", "x"),
            Err(InputError::SameTeams("elp".into()))
        );
        for bad in [
            "2011-9-10",
            "2011-13-01",
            "2011-02-29",
            "2011-04-31",
            "20110910xx",
            "x",
        ] {
            assert_eq!(
                Match::new(&h, &v, bad, "x"),
                Err(InputError::InvalidDate(bad.into())),
                "{bad}"
            );
        }
        assert!(validate_date("2012-02-29").is_ok());
        assert!(validate_date("2000-02-29").is_ok());
        assert!(validate_date("1900-02-29").is_err());
    }

    #[test]
    fn period_start_and_players_serialize_as_in_the_contract() {
        let (h, v) = teams();
        let mut m = Match::new(&h, &v, "2011-09-10", "x").unwrap();
        m.home_players = vec![(7, "Luna".into())];
        m.period = Period::First;
        m.period_start = Some(42);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["home_players"], serde_json::json!([[7, "Luna"]]));
        assert_eq!(json["period"], "first");
        assert_eq!(json["period_start"], 42);
        let back: Match = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        for p in [Period::NotStarted, Period::Penalties, Period::Ended] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
    }

    #[test]
    fn match_ids_follow_the_rule() {
        for ok in [
            "elp-tig-2011-09-10",
            "a-b-2000-02-29",
            "boc_1-riv_2-1999-12-31",
        ] {
            assert!(is_match_id(ok), "{ok}");
        }
        let long = format!("{}-{}-2011-09-10", "a".repeat(16), "b".repeat(17));
        for bad in [
            "",
            "elp-tig",
            "elp-tig-2011-13-10",
            "elp-tig-2011-02-30",
            "elptig-2011-09-10",
            "elp-tig-x-2011-09-10",
            "ELP-tig-2011-09-10",
            "-tig-2011-09-10",
            "elp-tig-2011-09-10 ",
            "../../etc/passwd",
            "élp-tig-2011-09-10",
            long.as_str(),
        ] {
            assert!(!is_match_id(bad), "{bad:?}");
        }
        assert!(!is_match_id(&"a".repeat(100_000)));
    }
}
