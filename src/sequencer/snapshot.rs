//! Immutable per-match snapshots, published by the sequencer after each commit, and the
//! read-only catalog a worker keeps of them.
//!
//! A [`MatchSnapshot`] holds the match object as JSON bytes (built once, by the first
//! reader) and the history as shared,
//! append-only encoded chunks ([`History`]): each event is encoded once (its WebSocket event
//! message) and the history item of `GET …/history` is a suffix of that text, so one string
//! per event serves both. Publishing a new snapshot copies at most one short tail chunk; the
//! sealed chunks are shared by every snapshot of the match.
//!
//! A [`Catalog`] is what one reader (a worker) knows: it applies [`Broadcast`]s in sequencer
//! order and answers the public reads (`/1/matches`, `/1/match/{id}`, `/history`,
//! `/1/team/{id}`) and watch starts from memory, with no lock. No I/O here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{Broadcast, WatchStart};
use crate::domain::{event_message, Event, Match, Team};

/// Events per sealed history chunk.
pub const CHUNK_EVENTS: usize = 64;

/// A run of [`CHUNK_EVENTS`] event messages, each slot written once, in order, by the
/// sequencer. Every history of a match shares its chunks; a history reads only the slots
/// it counts, which were written before it was published.
#[derive(Debug)]
struct Chunk {
    slots: [OnceLock<Arc<str>>; CHUNK_EVENTS],
}

impl Chunk {
    fn empty() -> Arc<Chunk> {
        Arc::new(Chunk {
            slots: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// The first `n` messages.
    fn first(&self, n: usize) -> impl Iterator<Item = &Arc<str>> {
        self.slots[..n].iter().filter_map(OnceLock::get)
    }
}

/// A match's history: every event's WebSocket message, in seq order (event `i` has seq
/// `i + 1`). Cheap to clone (two reference counts); appending writes one slot of the shared
/// tail chunk (a new chunk every [`CHUNK_EVENTS`] events), copying nothing.
#[derive(Debug, Clone)]
pub struct History {
    sealed: Arc<Vec<Arc<Chunk>>>,
    tail: Arc<Chunk>,
    /// How many slots of `tail` this history holds.
    tail_len: usize,
    /// Byte offset of `"seq"` in every message of this match (the history item starts
    /// there, after a `{`).
    item_at: usize,
}

impl History {
    /// An empty history of match `mid`.
    pub fn new(mid: &str) -> History {
        // `{"type":"event","match":` + the id as JSON + `,`
        let prefix = event_message(
            mid,
            &Event {
                seq: 0,
                ts: 0,
                kind: crate::domain::EventKind::Comment,
                data: serde_json::Value::Null,
                minute: None,
            },
        );
        let item_at = prefix.find("\"seq\"").unwrap_or(0);
        History {
            sealed: Arc::default(),
            tail: Chunk::empty(),
            tail_len: 0,
            item_at,
        }
    }

    /// The history of `mid` made of `events` (seqs 1..=N).
    pub fn from_events(mid: &str, events: &[Event]) -> History {
        let mut history = History::new(mid);
        for e in events {
            history = history.push(Arc::from(event_message(mid, e)));
        }
        history
    }

    /// A new history with `message` (the next event's WebSocket message) appended. This
    /// history stays as it was.
    pub fn push(&self, message: Arc<str>) -> History {
        let tail = match self.tail.slots[self.tail_len].set(message) {
            Ok(()) => Arc::clone(&self.tail),
            Err(message) => {
                // Not the latest history of its match: the slot is another's. Copy.
                let copy = Chunk::empty();
                for (slot, m) in copy.slots.iter().zip(self.tail.first(self.tail_len)) {
                    let _ = slot.set(Arc::clone(m));
                }
                let _ = copy.slots[self.tail_len].set(message);
                copy
            }
        };
        let tail_len = self.tail_len + 1;
        if tail_len < CHUNK_EVENTS {
            return History {
                sealed: Arc::clone(&self.sealed),
                tail,
                tail_len,
                item_at: self.item_at,
            };
        }
        let mut sealed = Vec::with_capacity(self.sealed.len() + 1);
        sealed.extend(self.sealed.iter().cloned());
        sealed.push(tail);
        History {
            sealed: Arc::new(sealed),
            tail: Chunk::empty(),
            tail_len: 0,
            item_at: self.item_at,
        }
    }

    /// How many events.
    pub fn len(&self) -> usize {
        self.sealed.len() * CHUNK_EVENTS + self.tail_len
    }

    /// Whether there is no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The WebSocket messages of the events after `since`, in order.
    pub fn after(&self, since: u64) -> impl Iterator<Item = &Arc<str>> {
        let since = usize::try_from(since).unwrap_or(usize::MAX).min(self.len());
        let sealed = self.sealed.get(since / CHUNK_EVENTS..).unwrap_or(&[]);
        sealed
            .iter()
            .flat_map(|c| c.first(CHUNK_EVENTS))
            .chain(self.tail.first(self.tail_len))
            .skip(since % CHUNK_EVENTS)
    }

    /// The JSON array of `GET /1/match/{id}/history?since=…`: the events after `since`.
    pub fn json_after(&self, since: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * self.len().saturating_sub(since as usize) + 2);
        out.push(b'[');
        for (i, message) in self.after(since).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            out.extend_from_slice(&message.as_bytes()[self.item_at..]);
        }
        out.push(b']');
        out
    }
}

/// One match as published after a commit. Immutable; shared by every worker.
#[derive(Debug)]
pub struct MatchSnapshot {
    /// The match id.
    pub mid: Arc<str>,
    /// The match state.
    pub state: Arc<Match>,
    /// The match object as JSON, built once by its first reader (not on the sequencer
    /// thread: most snapshots of a busy match are never read).
    json: OnceLock<Bytes>,
    /// The history, or `None` when it was let go from memory (an ended match past the
    /// bound; served from the store when asked).
    pub history: Option<History>,
}

impl MatchSnapshot {
    /// A snapshot of `state` with `history`.
    pub fn new(mid: Arc<str>, state: Arc<Match>, history: Option<History>) -> MatchSnapshot {
        MatchSnapshot {
            mid,
            state,
            json: OnceLock::new(),
            history,
        }
    }

    /// The match object, `GET /1/match/{id}`'s body (serialized on first use, then shared).
    pub fn json(&self) -> &Bytes {
        self.json.get_or_init(|| {
            Bytes::from(serde_json::to_vec(&*self.state).expect("a match always serializes"))
        })
    }

    /// The snapshot of a match loaded from the store.
    pub fn loaded(state: Match, events: &[Event]) -> MatchSnapshot {
        let mid: Arc<str> = Arc::from(state.id.as_str());
        let history = History::from_events(&mid, events);
        MatchSnapshot::new(mid, Arc::new(state), Some(history))
    }

    /// The same match without its history in memory.
    pub fn without_history(&self) -> MatchSnapshot {
        MatchSnapshot {
            mid: Arc::clone(&self.mid),
            state: Arc::clone(&self.state),
            json: self.json.clone(),
            history: None,
        }
    }

    /// What a new watcher is sent first: the status at this snapshot's seq plus the event
    /// messages after `since` (none without `since`, or when the history is not in memory).
    pub fn watch_start(&self, since: Option<u64>) -> WatchStart {
        let events = match (since, &self.history) {
            (Some(since), Some(h)) => h.after(since).cloned().collect(),
            _ => Vec::new(),
        };
        WatchStart {
            mid: Arc::clone(&self.mid),
            seq: self.state.seq,
            events,
            ended: self.state.is_ended(),
            state: Arc::clone(&self.state),
        }
    }
}

/// Everything the sequencer holds at start, published once to every worker.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every team: id and JSON.
    pub teams: Vec<(Arc<str>, Bytes)>,
    /// Every match.
    pub matches: Vec<Arc<MatchSnapshot>>,
}

/// A team's JSON object, `GET /1/team/{id}`'s body.
pub fn team_json(team: &Team) -> Bytes {
    Bytes::from(serde_json::to_vec(team).expect("a team always serializes"))
}

/// What one reader knows, built from the broadcasts in sequencer order.
#[derive(Debug, Default)]
pub struct Catalog {
    teams: HashMap<Arc<str>, Bytes>,
    matches: BTreeMap<Arc<str>, Arc<MatchSnapshot>>,
    list: Option<Bytes>,
    applied: u64,
}

impl Catalog {
    /// How many broadcasts were applied.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Applies the next broadcast.
    pub fn apply(&mut self, broadcast: &Broadcast) {
        self.applied += 1;
        match broadcast {
            Broadcast::Event { snapshot, .. } | Broadcast::Match(snapshot) => {
                let old = self
                    .matches
                    .insert(Arc::clone(&snapshot.mid), Arc::clone(snapshot));
                if old.is_none() {
                    self.list = None;
                }
            }
            Broadcast::Cancelled { mid } => {
                self.matches.remove(mid);
                self.list = None;
            }
            Broadcast::Team { id, json } => {
                self.teams.insert(Arc::clone(id), json.clone());
            }
            Broadcast::Loaded(loaded) => {
                self.teams = loaded.teams.iter().cloned().collect();
                self.matches = loaded
                    .matches
                    .iter()
                    .map(|m| (Arc::clone(&m.mid), Arc::clone(m)))
                    .collect();
                self.list = None;
            }
        }
    }

    /// The match `mid`.
    pub fn get(&self, mid: &str) -> Option<&Arc<MatchSnapshot>> {
        self.matches.get(mid)
    }

    /// Team `id`'s JSON.
    pub fn team(&self, id: &str) -> Option<&Bytes> {
        self.teams.get(id)
    }

    /// `GET /1/matches`: the sorted JSON array of match ids (built once per change).
    pub fn list(&mut self) -> Bytes {
        if let Some(list) = &self.list {
            return list.clone();
        }
        let ids: Vec<&str> = self.matches.keys().map(|k| &**k).collect();
        let list = Bytes::from(serde_json::to_vec(&ids).expect("ids serialize"));
        self.list = Some(list.clone());
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::EventKind;
    use serde_json::{json, Value};

    fn event(seq: u64) -> Event {
        Event {
            seq,
            ts: 1000 + seq as i64,
            kind: EventKind::Comment,
            data: json!({"text": format!("n{seq}"), "q": "\"x\""}),
            minute: None,
        }
    }

    #[test]
    fn history_items_are_the_events_as_stored() {
        for n in [0, 1, 63, 64, 65, 130] {
            let events: Vec<Event> = (1..=n).map(event).collect();
            let h = History::from_events("a-b-2011-09-10", &events);
            assert_eq!(h.len() as u64, n);
            for since in [0, 1, 5, 64, n, n + 3] {
                let got: Value = serde_json::from_slice(&h.json_after(since)).unwrap();
                let want: Vec<&Event> = events.iter().skip(since as usize).collect();
                assert_eq!(
                    got,
                    serde_json::to_value(&want).unwrap(),
                    "n={n} since={since}"
                );
                let seqs: Vec<u64> = h
                    .after(since)
                    .map(|m| {
                        serde_json::from_str::<Value>(m).unwrap()["seq"]
                            .as_u64()
                            .unwrap()
                    })
                    .collect();
                assert_eq!(seqs, (since + 1..=n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_pushed_history_leaves_the_older_one_as_it_was() {
        let mid = "a-b-2011-09-10";
        let mut h = History::new(mid);
        let mut olds = Vec::new();
        for seq in 1..=70 {
            olds.push(h.clone());
            h = h.push(Arc::from(event_message(mid, &event(seq))));
        }
        for (i, old) in olds.iter().enumerate() {
            assert_eq!(old.len(), i);
            assert_eq!(old.after(0).count(), i);
        }
        assert_eq!(h.len(), 70);
        // Appending to an older history (not the latest) copies instead of overwriting.
        let branch = olds[66].push(Arc::from("{\"other\":1}"));
        assert_eq!(branch.len(), 67);
        assert_eq!(&**branch.after(66).next().unwrap(), "{\"other\":1}");
        assert_ne!(&**h.after(66).next().unwrap(), "{\"other\":1}");
        assert_eq!(olds[66].len(), 66);
    }
}
