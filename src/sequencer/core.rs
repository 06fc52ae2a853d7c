//! The sequencer thread's state and request handling (see the parent module for the order
//! and durability guarantees).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};

use serde_json::{json, Value};

use super::{
    check_history, err, ok, ApiReply, Broadcast, Clock, Msg, Remote, Reply, Request, Sink,
    WatchReply, WatchStart, MAX_ATTEMPTS,
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
            Request::PostEvent {
                mid,
                kind,
                data,
                expect_seq,
            } => self.post_event(&mid, kind, &data, expect_seq),
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
            Request::Remote(remote) => {
                self.remote(remote);
                ok(200, Value::Null)
            }
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
        match self.store.create_match(&m) {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return err(409, format!("match already exists: {}", m.id));
            }
            Err(e) => return store_failed(e),
        }
        let body = json!({ "id": m.id });
        self.matches
            .insert(m.id.clone(), MatchEntry::new(m, Vec::new()));
        ok(201, body)
    }

    fn post_event(
        &mut self,
        mid: &str,
        kind: EventKind,
        data: &Value,
        expect_seq: Option<u64>,
    ) -> Reply {
        for _ in 0..MAX_ATTEMPTS {
            let Some(entry) = self.matches.get(mid) else {
                return not_found(mid);
            };
            if let Some(want) = expect_seq {
                let at = entry.state.seq;
                if at >= want {
                    return taken(want, at);
                }
                if at + 1 < want {
                    // A shared store may be ahead of this replica: judge on the latest.
                    match self.catch_up(mid) {
                        Ok(0) => {
                            return err(
                                409,
                                format!("event {want} cannot be next: match is at {at}"),
                            )
                        }
                        Ok(_) => continue,
                        Err(e) => return store_failed(e),
                    }
                }
            }
            let mut next = Match::clone(&entry.state);
            let ts = (self.clock)().max(next.last_ts);
            let data = match next.apply(kind, data, ts) {
                Ok(data) => data,
                Err(rejection) => {
                    // A shared store may be ahead of this replica: judge on the latest.
                    match self.catch_up(mid) {
                        Ok(0) => return err(422, rejection),
                        Ok(_) => continue,
                        Err(e) => return store_failed(e),
                    }
                }
            };
            let event = Event {
                seq: next.seq,
                ts,
                kind,
                data,
            };
            match self.store.append_event(mid, &event, &next) {
                Ok(()) => {}
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(mid, why, "append conflict; catching up");
                    if let Err(e) = self.catch_up(mid) {
                        return store_failed(e);
                    }
                    continue;
                }
                Err(e) => return store_failed(e),
            }
            let body = json!({ "seq": event.seq, "ts": ts });
            self.commit(mid, event, next);
            return ok(201, body);
        }
        err(503, "write contention: try again")
    }

    /// Records an event that is durable and broadcasts it (the state after it is `next`).
    fn commit(&mut self, mid: &str, event: Event, next: Match) {
        let Some(entry) = self.matches.get_mut(mid) else {
            return;
        };
        let state = Arc::new(next);
        let ws_text: Arc<str> = Arc::from(event_message(mid, &event));
        let broadcast = Broadcast::Event {
            mid: Arc::clone(&entry.mid),
            seq: event.seq,
            ts: event.ts,
            kind: event.kind,
            ended: state.is_ended(),
            ws_text: Arc::clone(&ws_text),
            line_fields: event_line_fields(&event).into(),
            state: Arc::clone(&state),
        };
        entry.state = state;
        entry.events.push(event);
        entry.ws_texts.push(ws_text);
        (self.sink)(broadcast);
    }

    /// Reads the events of `mid` other nodes appended after this replica and applies them;
    /// returns how many.
    fn catch_up(&mut self, mid: &str) -> Result<usize, StoreError> {
        let Some(seq) = self.matches.get(mid).map(|e| e.state.seq) else {
            return Ok(0);
        };
        let events = self.store.events_after(mid, seq)?;
        let mut applied = 0;
        for event in events {
            if self.apply_stored(mid, event) {
                applied += 1;
            }
        }
        Ok(applied)
    }

    /// Applies an event already durable in the shared store, when it is the next one of the
    /// replica; returns whether it was applied.
    fn apply_stored(&mut self, mid: &str, event: Event) -> bool {
        let Some(entry) = self.matches.get(mid) else {
            return false;
        };
        if event.seq != entry.state.seq + 1 {
            return false;
        }
        let mut next = Match::clone(&entry.state);
        if let Err(rejection) = next.apply(event.kind, &event.data, event.ts) {
            // The writer's fold accepted it; the log is the truth. Keep the numbering.
            tracing::error!(mid, seq = event.seq, %rejection, "stored event does not fold");
            next.seq = event.seq;
            next.last_ts = event.ts;
        }
        self.commit(mid, event, next);
        true
    }

    /// Applies a change another node made (see [`Request::Remote`]).
    fn remote(&mut self, remote: Remote) {
        match remote {
            Remote::Team(team) => {
                self.teams.insert(team.id.clone(), team);
            }
            Remote::Created(m) => {
                if !self.matches.contains_key(&m.id) {
                    self.matches
                        .insert(m.id.clone(), MatchEntry::new(*m, Vec::new()));
                }
            }
            Remote::Deleted(mid) => {
                if let Some(entry) = self.matches.remove(&mid) {
                    (self.sink)(Broadcast::Cancelled { mid: entry.mid });
                }
            }
            Remote::Events { mid, events } => {
                for event in events {
                    let Some(at) = self.matches.get(&mid).map(|e| e.state.seq) else {
                        return;
                    };
                    if event.seq <= at {
                        continue; // this node's own, or fetched on a conflict
                    }
                    if event.seq > at + 1 {
                        if let Err(e) = self.catch_up(&mid) {
                            tracing::warn!(mid, error = %e, "cannot fill a gap from the store");
                            return;
                        }
                    }
                    self.apply_stored(&mid, event);
                }
            }
        }
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

/// 409 for a post with `"seq": want` when the match is at `at >= want` already.
fn taken(want: u64, at: u64) -> Reply {
    Reply::Api(ApiReply {
        status: 409,
        body: json!({ "error": format!("event {want} exists: match is at {at}"), "seq": at })
            .to_string(),
    })
}

fn not_found(mid: &str) -> Reply {
    err(404, format!("match not found: {mid}"))
}

fn store_failed(e: StoreError) -> Reply {
    if let StoreError::Redis(why) = &e {
        tracing::warn!(error = %why, "redis unavailable; write refused");
        return err(503, "redis unavailable");
    }
    tracing::error!(error = %e, "store write failed; nothing acknowledged");
    Reply::Api(ApiReply {
        status: 500,
        body: crate::domain::error_body(&format!("store failure: {e}")),
    })
}
