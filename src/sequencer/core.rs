//! The sequencer thread's state and request handling (see the parent module for the order
//! and durability guarantees).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};

use serde_json::{json, Value};

use super::{
    check_history, err, ok, ApiReply, Broadcast, Clock, Msg, Reply, Request, Sink, WatchReply,
    WatchStart,
};
use crate::domain::{
    error_message, event_line_fields, event_message, status_message, validate_team_id, Event,
    EventKind, Match, Team,
};
use crate::store::{Snapshot, Store, StoreError};

/// One match in memory: its state and its history, as events and as ready WebSocket texts.
struct MatchEntry {
    mid: Arc<str>,
    state: Arc<Match>,
    events: Vec<Event>,
    ws_texts: Vec<Arc<str>>,
}

impl MatchEntry {
    fn new(state: Match, events: Vec<Event>) -> MatchEntry {
        let ws_texts = events
            .iter()
            .map(|e| Arc::from(event_message(&state.id, e)))
            .collect();
        MatchEntry {
            mid: Arc::from(state.id.as_str()),
            state: Arc::new(state),
            events,
            ws_texts,
        }
    }

    /// Index of the first event after `since` (seqs are 1..=N, so event `i` has seq `i+1`).
    fn after(&self, since: u64) -> usize {
        usize::try_from(since).map_or(self.events.len(), |s| s.min(self.events.len()))
    }
}

/// Everything the sequencer thread owns.
pub(super) struct Core {
    store: Box<dyn Store>,
    sink: Sink,
    clock: Clock,
    teams: BTreeMap<String, Team>,
    matches: BTreeMap<String, MatchEntry>,
}

impl Core {
    /// Rebuilds memory from a store snapshot; refuses a history with gaps.
    pub(super) fn new(
        store: Box<dyn Store>,
        snap: Snapshot,
        sink: Sink,
        clock: Clock,
    ) -> Result<Core, StoreError> {
        let teams = snap.teams.into_iter().map(|t| (t.id.clone(), t)).collect();
        let mut matches = BTreeMap::new();
        for stored in snap.matches {
            check_history(&stored.state, &stored.events)?;
            let entry = MatchEntry::new(stored.state, stored.events);
            matches.insert(entry.state.id.clone(), entry);
        }
        Ok(Core {
            store,
            sink,
            clock,
            teams,
            matches,
        })
    }

    /// Serves messages until told to stop or until every handle is gone.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Request(request, pending) => {
                    let answer = self.handle(request);
                    pending.answer(answer);
                }
                Msg::Stop(done) => {
                    // Dropping the core closes the store before the caller is released.
                    drop(self);
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::PutTeam { id, name, division } => self.put_team(Team { id, name, division }),
            Request::CreateMatch {
                home,
                visit,
                start_date,
                stadium,
            } => self.create_match(&home, &visit, &start_date, &stadium),
            Request::PostEvent { mid, kind, data } => self.post_event(&mid, kind, &data),
            Request::DeleteMatch { mid } => self.delete_match(&mid),
            Request::GetTeam { id } => match self.teams.get(&id) {
                Some(team) => ok(200, json!(team)),
                None => err(404, format!("team not found: {id}")),
            },
            Request::ListMatches => ok(200, json!(self.matches.keys().collect::<Vec<_>>())),
            Request::GetMatch { mid } => match self.matches.get(&mid) {
                Some(entry) => ok(200, json!(*entry.state)),
                None => not_found(&mid),
            },
            Request::History { mid, since } => match self.matches.get(&mid) {
                Some(entry) => ok(200, json!(entry.events[entry.after(since)..])),
                None => not_found(&mid),
            },
            Request::Watch { mid, since } => Reply::Watch(self.watch(&mid, since)),
        }
    }

    fn put_team(&mut self, team: Team) -> Reply {
        if let Err(e) = validate_team_id(&team.id) {
            return err(422, e);
        }
        if let Err(e) = self.store.put_team(&team) {
            return store_failed(e);
        }
        let body = json!(team);
        let status = match self.teams.insert(team.id.clone(), team) {
            Some(_) => 200,
            None => 201,
        };
        ok(status, body)
    }

    fn create_match(&mut self, home: &str, visit: &str, start_date: &str, stadium: &str) -> Reply {
        let team = |id: &str| {
            self.teams
                .get(id)
                .ok_or_else(|| format!("unknown team: {id}"))
        };
        let (home, visit) = match (team(home), team(visit)) {
            (Ok(h), Ok(v)) => (h, v),
            (Err(e), _) | (_, Err(e)) => return err(422, e),
        };
        let m = match Match::new(home, visit, start_date, stadium) {
            Ok(m) => m,
            Err(e) => return err(422, e),
        };
        if self.matches.contains_key(&m.id) {
            return err(409, format!("match already exists: {}", m.id));
        }
        if let Err(e) = self.store.create_match(&m) {
            return store_failed(e);
        }
        let body = json!({ "id": m.id });
        self.matches
            .insert(m.id.clone(), MatchEntry::new(m, Vec::new()));
        ok(201, body)
    }

    fn post_event(&mut self, mid: &str, kind: EventKind, data: &Value) -> Reply {
        let Some(entry) = self.matches.get_mut(mid) else {
            return not_found(mid);
        };
        let mut next = Match::clone(&entry.state);
        let ts = (self.clock)().max(next.last_ts);
        let data = match next.apply(kind, data, ts) {
            Ok(data) => data,
            Err(rejection) => return err(422, rejection),
        };
        let event = Event {
            seq: next.seq,
            ts,
            kind,
            data,
        };
        if let Err(e) = self.store.append_event(mid, &event, &next) {
            return store_failed(e);
        }
        let state = Arc::new(next);
        let ws_text: Arc<str> = Arc::from(event_message(mid, &event));
        let broadcast = Broadcast::Event {
            mid: Arc::clone(&entry.mid),
            seq: event.seq,
            ts,
            kind,
            ended: state.is_ended(),
            ws_text: Arc::clone(&ws_text),
            line_fields: event_line_fields(&event).into(),
            state: Arc::clone(&state),
        };
        let body = json!({ "seq": event.seq, "ts": ts });
        entry.state = state;
        entry.events.push(event);
        entry.ws_texts.push(ws_text);
        (self.sink)(broadcast);
        ok(201, body)
    }

    fn delete_match(&mut self, mid: &str) -> Reply {
        let Entry::Occupied(slot) = self.matches.entry(mid.to_owned()) else {
            return not_found(mid);
        };
        if let Err(e) = self.store.delete_match(mid) {
            return store_failed(e);
        }
        let entry = slot.remove();
        (self.sink)(Broadcast::Cancelled { mid: entry.mid });
        ok(200, json!({ "id": mid }))
    }

    fn watch(&self, mid: &str, since: Option<u64>) -> WatchReply {
        let Some(entry) = self.matches.get(mid) else {
            return WatchReply::NotFound {
                error: error_message(&format!("match not found: {mid}")),
            };
        };
        let events = match since {
            Some(since) => entry.ws_texts[entry.after(since)..].to_vec(),
            None => Vec::new(),
        };
        WatchReply::Found(WatchStart {
            mid: Arc::clone(&entry.mid),
            seq: entry.state.seq,
            status: status_message(&entry.state),
            events,
            ended: entry.state.is_ended(),
            state: Arc::clone(&entry.state),
        })
    }
}

fn not_found(mid: &str) -> Reply {
    err(404, format!("match not found: {mid}"))
}

fn store_failed(e: StoreError) -> Reply {
    tracing::error!(error = %e, "store write failed; nothing acknowledged");
    Reply::Api(ApiReply {
        status: 500,
        body: crate::domain::error_body(&format!("store failure: {e}")),
    })
}
