//! `serve --demo`: replays the bundled sample match in a loop through the sequencer, so a
//! newcomer sees a live match at `http://localhost:8080/` straight away.

use std::sync::mpsc;
use std::time::Duration;

use crate::domain::script::{MatchScript, Step};
use crate::sequencer::{Refused, Reply, Request, SequencerHandle};

/// Pause after the final whistle before the demo match is replayed again.
pub const DEMO_PAUSE: Duration = Duration::from_secs(30);

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

/// Starts the demo thread.
pub fn spawn(sequencer: SequencerHandle) {
    let _ = std::thread::Builder::new()
        .name("demo".into())
        .spawn(move || loop {
            if play_once(&sequencer).is_none() {
                return;
            }
            std::thread::sleep(DEMO_PAUSE);
        });
}

/// Plays the sample match once (deleting an earlier run of it first); `None` once the
/// sequencer has stopped.
fn play_once(sequencer: &SequencerHandle) -> Option<()> {
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
    tracing::info!(%mid, "demo: kick-off");
    for step in &script.steps {
        match step {
            Step::Sleep { sleep_ms } => std::thread::sleep(Duration::from_millis(*sleep_ms)),
            Step::Event { event, data } => {
                let request = Request::PostEvent {
                    mid: mid.clone(),
                    kind: *event,
                    data: data.clone(),
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
