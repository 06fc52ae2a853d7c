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
        /// The match minute it happens at (0–130), sent with the event when present.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minute: Option<u8>,
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
            Step::Event { event, data, .. } => Some((*event, data)),
            Step::Sleep { .. } => None,
        })
    }

    /// The match minute of each event (in order), derived from the script's own timeline:
    /// each half is the time its period events span in the script (`start` to `halftime`,
    /// `continue` to `stop` or `penalties`), read as 45 minutes, so an event's minute is
    /// where its sleeps put it inside its half (rounded down) plus 45 in the second half.
    /// Events before `start` have no minute; those at half-time say 45, those after the
    /// second half 90. A script without these period events gets no minutes.
    pub fn derived_minutes(&self) -> Vec<Option<u8>> {
        let mut at = 0u64;
        let mut timed = Vec::new();
        for step in &self.steps {
            match step {
                Step::Sleep { sleep_ms } => at += sleep_ms,
                Step::Event { event, .. } => timed.push((*event, at)),
            }
        }
        let when = |kinds: &[EventKind]| timed.iter().find(|(k, _)| kinds.contains(k)).map(|e| e.1);
        let first = when(&[EventKind::Start]).zip(when(&[EventKind::Halftime]));
        let last = when(&[EventKind::Continue]).zip(when(&[EventKind::Stop, EventKind::Penalties]));
        let minute = |from: u64, span: (u64, u64), t: u64| -> u8 {
            let length = span.1.saturating_sub(span.0).max(1);
            let into = t.clamp(span.0, span.1) - span.0;
            from as u8 + (into * 45 / length) as u8
        };
        timed
            .iter()
            .map(|&(_, t)| match (first, last) {
                (Some(h1), _) if t < h1.0 => None,
                (Some(h1), _) if t <= h1.1 => Some(minute(0, h1, t)),
                (Some(_), Some(h2)) if t < h2.0 => Some(45),
                (Some(_), Some(h2)) => Some(minute(45, h2, t)),
                _ => None,
            })
            .collect()
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

    fn given_minutes(s: &MatchScript) -> Vec<Option<u8>> {
        s.steps
            .iter()
            .filter_map(|step| match step {
                Step::Event { minute, .. } => Some(*minute),
                Step::Sleep { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_sample_minutes_are_the_ones_its_timeline_gives() {
        let s = MatchScript::sample();
        let minutes = given_minutes(&s);
        assert_eq!(minutes, s.derived_minutes());
        // Kick-off 0', the first goal (50 s into a 441 s half) 5', half-time 45', the own
        // goal (150 s into a 500 s half) 58', the final whistle 90'.
        let at = |kind: EventKind, nth: usize| {
            s.events()
                .zip(&minutes)
                .filter(|((k, _), _)| *k == kind)
                .nth(nth)
                .and_then(|(_, m)| *m)
        };
        assert_eq!(at(EventKind::Start, 0), Some(0));
        assert_eq!(at(EventKind::Goal, 0), Some(5));
        assert_eq!(at(EventKind::Halftime, 0), Some(45));
        assert_eq!(at(EventKind::Continue, 0), Some(45));
        assert_eq!(at(EventKind::Goal, 3), Some(58));
        assert_eq!(at(EventKind::Stop, 0), Some(90));
    }

    #[test]
    fn minutes_need_the_period_events() {
        let s: MatchScript = MatchScript::parse(
            r#"{"home":{"id":"a","name":"A","division":"d"},"visit":{"id":"b","name":"B","division":"d"},
            "start_date":"2020-01-01","stadium":"s","steps":[
              {"event":"comment"},{"sleep_ms":10},{"event":"start"},{"sleep_ms":50},
              {"event":"goal"},{"sleep_ms":50},{"event":"halftime"},{"sleep_ms":10},
              {"event":"comment"},{"sleep_ms":10},{"event":"continue"},{"sleep_ms":99},
              {"event":"goal"},{"sleep_ms":1},{"event":"stop"},{"event":"comment"}]}"#,
        )
        .unwrap();
        assert_eq!(
            s.derived_minutes(),
            [
                None,
                Some(0),
                Some(22),
                Some(45),
                Some(45),
                Some(45),
                Some(89),
                Some(90),
                Some(90)
            ]
        );
        let mut no_periods = s.clone();
        no_periods.steps.retain(|st| {
            !matches!(
                st,
                Step::Event {
                    event: EventKind::Start,
                    ..
                }
            )
        });
        assert!(no_periods.derived_minutes().iter().all(Option::is_none));
    }

    #[test]
    fn event_step_data_defaults_to_an_empty_object() {
        let s: Step = serde_json::from_str(r#"{"event":"halftime"}"#).unwrap();
        assert_eq!(
            s,
            Step::Event {
                event: EventKind::Halftime,
                data: serde_json::json!({}),
                minute: None,
            }
        );
        let s: Step = serde_json::from_str(r#"{"event":"goal","minute":67}"#).unwrap();
        assert!(matches!(
            s,
            Step::Event {
                minute: Some(67),
                ..
            }
        ));
        assert!(serde_json::from_str::<Step>(r#"{"event":"status"}"#).is_err());
        assert!(serde_json::from_str::<Step>(r#"{"pause":1}"#).is_err());
    }
}
