//! Every watcher's outcome summed against what was published: the verdict of a run.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::drive::{Feed, UNKNOWN};
use super::watch::{Outcome, Phase};

/// Failed watchers described one by one in the report.
const MAX_SAMPLES: usize = 5;

/// What every watcher got, summed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Watchers asked for.
    pub clients: u64,
    /// Watchers that connected and finished the handshake.
    pub connected: u64,
    /// TCP connects that failed.
    pub connect_failures: u64,
    /// Opening handshakes that failed.
    pub handshake_failures: u64,
    /// Connected watchers that never got a status.
    pub no_status: u64,
    /// Connections that ended before the match did, or with a close code other than 1000.
    pub unexpected_closes: u64,
    /// Watchers still connecting or watching when the run ended.
    pub unfinished: u64,
    /// Events in the watched matches during the run (all matches).
    pub events: u64,
    /// Events received (first copies).
    pub deliveries: u64,
    /// Events the watchers should have received.
    pub expected_deliveries: u64,
    /// Events some watcher never got.
    pub lost: u64,
    /// Events some watcher got twice.
    pub duplicated: u64,
    /// Events some watcher got after a later one.
    pub reordered: u64,
    /// Events that came before the status.
    pub before_status: u64,
    /// Failures by kind (first reason of each watcher).
    pub errors: BTreeMap<String, u64>,
    /// A few failed watchers in detail, for diagnosis.
    pub failed_samples: Vec<String>,
    /// Reconnects after dropped connections (all watchers).
    pub reconnects: u64,
    /// The most reconnects of one watcher.
    pub max_reconnects: u64,
    /// Watchers that reconnected at least once.
    pub reconnected_watchers: u64,
    /// Watchers per server they first watched on.
    pub watchers_per_server: BTreeMap<String, u64>,
    /// Watchers per server they watched on last.
    pub watchers_per_server_end: BTreeMap<String, u64>,
}

impl Tally {
    /// Whether every watcher got everything.
    pub fn passed(&self) -> bool {
        self.connected == self.clients
            && self.connect_failures + self.handshake_failures + self.no_status == 0
            && self.unexpected_closes + self.unfinished == 0
            && self.lost + self.duplicated + self.reordered + self.before_status == 0
    }
}

/// The last event number of each feed: what the publisher posted, or in a passive run the
/// `stop` (or the highest number) some watcher saw.
pub fn final_seqs(feeds: &[Feed], outcomes: &[Outcome]) -> Vec<u64> {
    feeds
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let posted = f.final_seq.load(Ordering::Acquire);
            if posted != 0 {
                return posted;
            }
            let mine = outcomes.iter().filter(|o| o.feed as usize == i);
            let stop = mine.clone().filter_map(|o| o.stop_seq).max();
            stop.unwrap_or_else(|| mine.map(|o| o.checker.last()).max().unwrap_or(0))
        })
        .collect()
}

/// Sums the outcomes against the feeds' last numbers.
pub fn tally(feeds: &[Feed], outcomes: &[Outcome]) -> Tally {
    let finals = final_seqs(feeds, outcomes);
    let mut t = Tally {
        clients: outcomes.len() as u64,
        events: events_in_run(feeds, outcomes, &finals),
        ..Tally::default()
    };
    for o in outcomes {
        t.add(o, &finals, feeds);
    }
    t
}

/// Events in the watched matches during the run: from each feed's number at the start
/// (or the earliest status a watcher got) to its last.
fn events_in_run(feeds: &[Feed], outcomes: &[Outcome], finals: &[u64]) -> u64 {
    let mut events = 0;
    for (i, f) in feeds.iter().enumerate() {
        let base = f.base.load(Ordering::Acquire);
        let start = if base != UNKNOWN {
            base
        } else {
            let starts = outcomes.iter().filter(|o| o.feed as usize == i);
            starts
                .filter_map(|o| o.checker.start())
                .min()
                .unwrap_or(finals[i])
        };
        events += finals[i].saturating_sub(start);
    }
    events
}

impl Tally {
    /// Adds one watcher's outcome.
    fn add(&mut self, o: &Outcome, finals: &[u64], feeds: &[Feed]) {
        self.add_whereabouts(o);
        match o.phase {
            Phase::Pending => {
                self.unfinished += 1;
                return;
            }
            Phase::ConnectFailed => {
                self.connect_failures += 1;
                return;
            }
            Phase::HandshakeFailed => {
                self.handshake_failures += 1;
                return;
            }
            Phase::Watching if !o.unexpected_close => self.unfinished += 1,
            Phase::Watching | Phase::Finished => {}
        }
        self.connected += 1;
        if o.unexpected_close {
            self.unexpected_closes += 1;
        }
        let c = &o.checker;
        self.before_status += c.before_status;
        if !c.has_status() {
            self.no_status += 1;
            return;
        }
        let last = finals[o.feed as usize];
        self.deliveries += c.delivered;
        self.expected_deliveries += c.expected(last);
        self.lost += c.lost(last);
        self.duplicated += c.duplicated;
        self.reordered += c.reordered;
        let failed = o.unexpected_close || c.lost(last) + c.duplicated + c.reordered > 0;
        if failed && self.failed_samples.len() < MAX_SAMPLES {
            self.failed_samples
                .push(failed_sample(o, &feeds[o.feed as usize].id, last));
        }
    }

    /// Adds where a watcher was (servers, reconnects) and why it failed, whatever its phase.
    fn add_whereabouts(&mut self, o: &Outcome) {
        self.reconnects += u64::from(o.reconnects);
        self.max_reconnects = self.max_reconnects.max(u64::from(o.reconnects));
        self.reconnected_watchers += u64::from(o.reconnects > 0);
        if let Some(a) = o.first_server {
            *self.watchers_per_server.entry(a.to_string()).or_default() += 1;
        }
        if let Some(a) = o.server {
            *self
                .watchers_per_server_end
                .entry(a.to_string())
                .or_default() += 1;
        }
        if let Some(e) = &o.error {
            let key: String = e.chars().take(100).collect();
            *self.errors.entry(key).or_default() += 1;
        }
    }
}

/// One failed watcher described for the report.
fn failed_sample(o: &Outcome, match_id: &str, last: u64) -> String {
    let c = &o.checker;
    format!(
        "match {match_id}: status seq {:?}, last seq {}, of {last}; missing {:?}; duplicated {}, \
         reordered {}; {}",
        c.start(),
        c.last(),
        &c.missing()[..c.missing().len().min(8)],
        c.duplicated,
        c.reordered,
        o.error.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MatchScript;
    use crate::load::drive::numbered_plan;
    use std::time::Duration;

    fn watcher(events: &[u64], stop: bool) -> Outcome {
        let mut o = Outcome {
            phase: Phase::Finished,
            ..Outcome::default()
        };
        o.checker.status(0);
        for &e in events {
            o.checker.event(e);
        }
        o.stop_seq = stop.then_some(*events.last().unwrap());
        o
    }

    #[test]
    fn a_lost_event_fails_the_run() {
        let feeds = vec![Feed::new(
            "m".into(),
            &numbered_plan(&MatchScript::sample(), Duration::ZERO, 2),
        )];
        feeds[0].base.store(0, Ordering::Release);
        feeds[0].final_seq.store(4, Ordering::Release);
        let good = tally(
            &feeds,
            &[watcher(&[1, 2, 3, 4], true), watcher(&[1, 2, 3, 4], true)],
        );
        assert!(good.passed(), "{good:?}");
        assert_eq!(
            (good.events, good.deliveries, good.expected_deliveries),
            (4, 8, 8)
        );
        let bad = tally(
            &feeds,
            &[watcher(&[1, 2, 4], true), watcher(&[1, 3, 2, 4], true)],
        );
        assert!(!bad.passed());
        assert_eq!((bad.lost, bad.reordered), (1, 1));
    }

    #[test]
    fn a_passive_run_takes_the_end_from_the_stop_seen() {
        let feeds = vec![Feed::new("m".into(), &[])];
        let t = tally(
            &feeds,
            &[watcher(&[1, 2, 3], true), watcher(&[1, 2], false)],
        );
        assert_eq!((t.events, t.lost), (3, 1));
    }
}
