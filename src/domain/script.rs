//! The match script format (`matchstream replay`, `--demo`, fixtures): two teams, a date, a
//! stadium and a list of steps, each a pause or an event to post.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::event::EventKind;
use super::matches::match_id;
use super::team::Team;

/// The bundled sample match, Estudiantes vs Tigre 2011-09-10 (ends 1–3).
pub const SAMPLE_SCRIPT: &str = include_str!("../../fixtures/elp-tig-2011-09-10.json");

/// A whole match script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchScript {
    /// The home team (created or updated by the replayer).
    pub home: Team,
    /// The visiting team.
    pub visit: Team,
    /// `YYYY-MM-DD`.
    pub start_date: String,
    /// Where it is played.
    pub stadium: String,
    /// What to do, in order.
    pub steps: Vec<Step>,
}

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step {
    /// Wait this long (at speed 1) before the next step.
    Sleep {
        /// Milliseconds to wait.
        sleep_ms: u64,
    },
    /// Post this event.
    Event {
        /// The kind to post.
        event: EventKind,
        /// Its data (an empty object when absent).
        #[serde(default = "empty_object")]
        data: Value,
    },
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl MatchScript {
    /// Parses a script from JSON text.
    pub fn parse(json: &str) -> Result<MatchScript, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The bundled sample match.
    pub fn sample() -> MatchScript {
        // The fixture is compiled in and covered by tests.
        MatchScript::parse(SAMPLE_SCRIPT).expect("bundled sample script parses")
    }

    /// The id of the match this script plays.
    pub fn match_id(&self) -> String {
        match_id(&self.home.id, &self.visit.id, &self.start_date)
    }

    /// The events of the script in order, without the pauses.
    pub fn events(&self) -> impl Iterator<Item = (EventKind, &Value)> {
        self.steps.iter().filter_map(|s| match s {
            Step::Event { event, data } => Some((*event, data)),
            Step::Sleep { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_script_parses() {
        let s = MatchScript::sample();
        assert_eq!(s.home.id, "elp");
        assert_eq!(s.visit.name, "Tigre");
        assert_eq!(s.match_id(), "elp-tig-2011-09-10");
        assert_eq!(s.steps[0], Step::Sleep { sleep_ms: 3000 });
        let kinds: Vec<EventKind> = s.events().map(|(k, _)| k).collect();
        assert_eq!(kinds.first(), Some(&EventKind::Start));
        assert_eq!(kinds.last(), Some(&EventKind::Stop));
        assert_eq!(kinds.iter().filter(|k| **k == EventKind::Goal).count(), 4);
    }

    #[test]
    fn event_step_data_defaults_to_an_empty_object() {
        let s: Step = serde_json::from_str(r#"{"event":"halftime"}"#).unwrap();
        assert_eq!(
            s,
            Step::Event {
                event: EventKind::Halftime,
                data: serde_json::json!({})
            }
        );
        assert!(serde_json::from_str::<Step>(r#"{"event":"status"}"#).is_err());
        assert!(serde_json::from_str::<Step>(r#"{"pause":1}"#).is_err());
    }
}
