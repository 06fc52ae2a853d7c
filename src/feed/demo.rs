//! `serve --demo`: replays the bundled sample match in a loop through the sequencer, so a
//! newcomer sees a live match at `http://localhost:8080/` straight away: played
//! [`DEFAULT_DEMO_SPEED`] times faster than its script (`--demo-speed`), the first goal is on
//! the scoreboard within seconds and the whole match takes under two minutes. Each event
//! carries the minute the script gives it, so the page's clock stays true at any speed.

use std::sync::mpsc;
use std::time::Duration;

use crate::domain::script::{MatchScript, Step};
use crate::sequencer::{Refused, Reply, Request, SequencerHandle};

/// Pause after the final whistle before the demo match is replayed again.
pub const DEMO_PAUSE: Duration = Duration::from_secs(30);

/// How many times faster than its script the demo plays by default (`--demo-speed`): the
/// sample's first goal comes 53 s into the script (5.3 s here), its final whistle at 18 m 14 s
/// (1 m 49 s here).
pub const DEFAULT_DEMO_SPEED: f64 = 10.0;

/// Reads a `--demo-speed`: a finite number above 0.
pub fn parse_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("{text:?} is not a speed above 0")),
    }
}

/// A script pause at `speed`.
fn scaled(sleep_ms: u64, speed: f64) -> Duration {
    Duration::from_secs_f64(sleep_ms as f64 / 1000.0 / speed)
}

fn ask(sequencer: &SequencerHandle, request: Request) -> Option<Reply> {
    let (tx, rx) = mpsc::channel();
    sequencer.submit(
        request,
        Box::new(move |reply| {
            let _ = tx.send(reply);
        }),
    );
    rx.recv().ok()
}

/// Starts the demo thread, playing `speed` times faster than the script.
pub fn spawn(sequencer: SequencerHandle, speed: f64) {
    let _ = std::thread::Builder::new()
        .name("demo".into())
        .spawn(move || loop {
            if play_once(&sequencer, speed).is_none() {
                return;
            }
            std::thread::sleep(DEMO_PAUSE);
        });
}

/// Plays the sample match once (deleting an earlier run of it first); `None` once the
/// sequencer has stopped.
fn play_once(sequencer: &SequencerHandle, speed: f64) -> Option<()> {
    let script = MatchScript::sample();
    let mid = script.match_id();
    for team in [&script.home, &script.visit] {
        let request = Request::PutTeam {
            id: team.id.clone(),
            name: team.name.clone(),
            division: team.division.clone(),
        };
        ask(sequencer, request)?;
    }
    ask(sequencer, Request::DeleteMatch { mid: mid.clone() })?;
    let create = Request::CreateMatch {
        home: script.home.id.clone(),
        visit: script.visit.id.clone(),
        start_date: script.start_date.clone(),
        stadium: script.stadium.clone(),
    };
    ask(sequencer, create)?;
    tracing::info!(%mid, speed, "demo: kick-off");
    for step in &script.steps {
        match step {
            Step::Sleep { sleep_ms } => std::thread::sleep(scaled(*sleep_ms, speed)),
            Step::Event {
                event,
                data,
                minute,
            } => {
                let request = Request::PostEvent {
                    mid: mid.clone(),
                    kind: *event,
                    data: data.clone(),
                    minute: *minute,
                    expect_seq: None,
                };
                if let Reply::Refused(
                    Refused::Stopped
                    | Refused::StoreFailed(_)
                    | Refused::StoreUnreachable
                    | Refused::NotReplicated { .. },
                ) = ask(sequencer, request)?
                {
                    return None;
                }
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;

    /// When each event of the sample is posted at `speed`, from the demo's start.
    fn timeline(speed: f64) -> Vec<(EventKind, Duration)> {
        let mut at = Duration::ZERO;
        let mut out = Vec::new();
        for step in MatchScript::sample().steps {
            match step {
                Step::Sleep { sleep_ms } => at += scaled(sleep_ms, speed),
                Step::Event { event, .. } => out.push((event, at)),
            }
        }
        out
    }

    #[test]
    fn at_the_default_speed_a_goal_comes_within_10_s_and_the_match_within_3_minutes() {
        let t = timeline(DEFAULT_DEMO_SPEED);
        let first_goal = t.iter().find(|(k, _)| *k == EventKind::Goal).unwrap().1;
        let (last, end) = *t.last().unwrap();
        assert_eq!(last, EventKind::Stop);
        assert!(first_goal < Duration::from_secs(10), "{first_goal:?}");
        assert!(end <= Duration::from_secs(180), "{end:?}");
        // At the script's own pace the same match takes 18 minutes.
        assert!(timeline(1.0).last().unwrap().1 > Duration::from_secs(18 * 60));
    }

    #[test]
    fn a_demo_speed_is_a_finite_number_above_0() {
        assert_eq!(parse_speed("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "fast"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
    }
}
