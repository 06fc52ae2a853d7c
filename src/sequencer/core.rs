//! The sequencer thread's state and request handling (see the parent module for the order
//! and durability guarantees). Group commits of events live in `batch.rs`; changes read
//! from a shared store (catch-up, remote events, resync) in `shared.rs`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{mpsc, Arc};

use super::batch::{Batch, Posted};
use super::pipeline::Pipeline;
use super::snapshot::{team_json, Loaded};
use super::{
    check_history, Broadcast, Clock, Done, Limits, MatchSnapshot, Msg, Refused, Reply, Request,
    Sink, WatchReply,
};
use crate::domain::{error_message, event_line_fields, event_message, Event, Match, Team};
use crate::store::{Snapshot, Store, StoreError};

/// Everything the sequencer thread owns.
pub(super) struct Core {
    pub(super) store: Box<dyn Store>,
    sink: Sink,
    pub(super) clock: Clock,
    pub(super) limits: Limits,
    teams: BTreeMap<String, Team>,
    /// Every match as last published.
    pub(super) matches: BTreeMap<String, Arc<MatchSnapshot>>,
    /// Ended matches whose history is in memory, the longest ended first.
    ended: VecDeque<Arc<str>>,
    /// Whether a history let go can be read back from the store.
    can_let_go: bool,
    /// With a store whose sync is deferred: the batches written and syncing.
    pub(super) pipeline: Option<Pipeline>,
}

impl Core {
    /// Rebuilds memory from a store snapshot (refusing a history with gaps) and publishes
    /// it ([`Broadcast::Loaded`]).
    pub(super) fn new(
        store: Box<dyn Store>,
        snap: Snapshot,
        sink: Sink,
        clock: Clock,
        limits: Limits,
        to_self: mpsc::Sender<Msg>,
    ) -> Result<Core, StoreError> {
        let teams: BTreeMap<String, Team> =
            snap.teams.into_iter().map(|t| (t.id.clone(), t)).collect();
        let mut matches = BTreeMap::new();
        let mut ended = VecDeque::new();
        for stored in snap.matches {
            check_history(&stored.state, &stored.events)?;
            let snapshot = MatchSnapshot::loaded(stored.state, &stored.events);
            if snapshot.state.is_ended() {
                ended.push_back(Arc::clone(&snapshot.mid));
            }
            matches.insert(snapshot.state.id.clone(), Arc::new(snapshot));
        }
        let can_let_go = store.history_source().is_some();
        let pipeline = match store.deferred_sync() {
            Some(syncer) => Some(Pipeline::start(syncer, to_self)?),
            None => None,
        };
        let mut core = Core {
            store,
            sink,
            clock,
            limits,
            teams,
            matches,
            ended,
            can_let_go,
            pipeline,
        };
        core.let_go_of_ended_histories(false);
        let loaded = Loaded {
            teams: core
                .teams
                .values()
                .map(|t| (Arc::from(t.id.as_str()), team_json(t)))
                .collect(),
            matches: core.matches.values().cloned().collect(),
        };
        (core.sink)(Broadcast::Loaded(Arc::new(loaded)));
        Ok(core)
    }

    /// Serves messages until told to stop or until every handle is gone: takes what is
    /// queued (at most [`Limits::max_batch`]), stages the events, handles anything else
    /// alone after committing the events staged before it.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut batch = Batch::default();
        while let Ok(first) = rx.recv() {
            let stop = super::wakeups::batch(|| self.take_batch(&rx, first, &mut batch));
            if let Some(done) = stop {
                // Dropping the core closes the store before the caller is released.
                drop(self);
                if let Some(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
        self.flush(&mut batch);
    }

    /// Handles `first` and what else is queued (at most [`Limits::max_batch`]), then commits
    /// the staged events (with a [`Pipeline`]: writes them and leaves their sync in
    /// flight). Returns the stop message when told to stop.
    fn take_batch(
        &mut self,
        rx: &mpsc::Receiver<Msg>,
        first: Msg,
        batch: &mut Batch,
    ) -> Option<Option<mpsc::Sender<()>>> {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next {
            taken += 1;
            match msg {
                Msg::Request(
                    Request::PostEvent {
                        mid,
                        kind,
                        data,
                        minute,
                        expect_seq,
                    },
                    pending,
                ) => self.stage(
                    batch,
                    mid,
                    Posted { kind, data, minute },
                    expect_seq,
                    pending,
                ),
                Msg::Request(request, pending) => {
                    self.flush(batch);
                    let answer = self.handle(request);
                    pending.answer(answer);
                }
                Msg::Stop(done) => {
                    self.flush(batch);
                    return Some(done);
                }
                Msg::Synced { gen, result } => self.synced(batch, gen, result),
            }
            next = if taken < self.limits.max_batch {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if self.pipeline.is_some() {
            self.write_ahead(batch);
        } else {
            self.flush(batch);
        }
        None
    }

    fn handle(&mut self, request: Request) -> Reply {
        let result = match request {
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
                minute,
                expect_seq,
            } => self.post_event(&mid, &Posted { kind, data, minute }, expect_seq),
            Request::DeleteMatch { mid } => self.delete_match(&mid),
            Request::Watch { mid, since } => return Reply::Watch(self.watch(&mid, since)),
            Request::Remote(remote) => {
                self.remote(remote);
                Ok(Done::Applied)
            }
        };
        match result {
            Ok(done) => Reply::Done(done),
            Err(refused) => Reply::Refused(refused),
        }
    }

    /// Hands `broadcast` to every worker.
    pub(super) fn publish(&self, broadcast: Broadcast) {
        (self.sink)(broadcast);
    }

    fn put_team(&mut self, team: Team) -> Result<Done, Refused> {
        crate::domain::validate_team_id(&team.id)?;
        self.store.put_team(&team).map_err(Refused::from_store)?;
        let created = !self.teams.contains_key(&team.id);
        self.learn_team(team.clone());
        Ok(Done::Team { team, created })
    }

    /// Publishes a team (stored by this node or another).
    pub(super) fn learn_team(&mut self, team: Team) {
        self.publish(Broadcast::Team {
            id: Arc::from(team.id.as_str()),
            json: team_json(&team),
        });
        self.teams.insert(team.id.clone(), team);
    }

    fn create_match(
        &mut self,
        home: &str,
        visit: &str,
        start_date: &str,
        stadium: &str,
    ) -> Result<Done, Refused> {
        let team = |id: &str| {
            self.teams
                .get(id)
                .ok_or_else(|| Refused::UnknownTeam(id.to_owned()))
        };
        let (home, visit) = (team(home)?, team(visit)?);
        let m = Match::new(home, visit, start_date, stadium)?;
        if self.matches.contains_key(&m.id) {
            return Err(Refused::MatchExists(m.id));
        }
        match self.store.create_match(&m) {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(Refused::MatchExists(m.id)),
            Err(e) => return Err(Refused::from_store(e)),
        }
        let id = m.id.clone();
        self.learn_match(m, &[]);
        Ok(Done::MatchCreated { id })
    }

    /// Publishes a match (created, or reloaded from a shared store) with its history.
    pub(super) fn learn_match(&mut self, m: Match, events: &[Event]) {
        let snapshot = Arc::new(MatchSnapshot::loaded(m, events));
        if snapshot.state.is_ended() {
            self.ended.push_back(Arc::clone(&snapshot.mid));
        }
        self.matches
            .insert(snapshot.state.id.clone(), Arc::clone(&snapshot));
        self.publish(Broadcast::Match(snapshot));
        self.let_go_of_ended_histories(true);
    }

    /// Records an event that is durable and broadcasts it (the state after it is `next`).
    pub(super) fn commit(&mut self, mid: &str, event: Event, next: Arc<Match>) {
        let Some(entry) = self.matches.get(mid) else {
            return;
        };
        let was_ended = entry.state.is_ended();
        let ws_text: Arc<str> = Arc::from(event_message(mid, &event));
        let history = entry.history.as_ref().map(|h| h.push(Arc::clone(&ws_text)));
        let state = next;
        let snapshot = Arc::new(MatchSnapshot::new(
            Arc::clone(&entry.mid),
            Arc::clone(&state),
            history,
        ));
        let broadcast = Broadcast::Event {
            mid: Arc::clone(&entry.mid),
            seq: event.seq,
            ts: event.ts,
            kind: event.kind,
            ended: state.is_ended(),
            ws_text,
            line_fields: event_line_fields(&event).into(),
            state: Arc::clone(&state),
            snapshot: Arc::clone(&snapshot),
        };
        let ends = state.is_ended() && !was_ended;
        if ends {
            self.ended.push_back(Arc::clone(&snapshot.mid));
        }
        if let Some(slot) = self.matches.get_mut(mid) {
            *slot = snapshot;
        }
        self.publish(broadcast);
        if ends {
            self.let_go_of_ended_histories(true);
        }
    }

    /// Keeps the history of at most [`Limits::ended_history_matches`] ended matches in
    /// memory: lets go of the ones that ended longest ago (when the store can read them
    /// back) and, when `publish`, tells the workers.
    fn let_go_of_ended_histories(&mut self, publish: bool) {
        if !self.can_let_go {
            self.ended.clear();
            return;
        }
        while self.ended.len() > self.limits.ended_history_matches {
            let Some(mid) = self.ended.pop_front() else {
                return;
            };
            let Some(slot) = self.matches.get_mut(&*mid) else {
                continue;
            };
            if slot.history.is_none() || !slot.state.is_ended() {
                continue;
            }
            *slot = Arc::new(slot.without_history());
            let snapshot = Arc::clone(slot);
            if publish {
                self.publish(Broadcast::Match(snapshot));
            }
        }
    }

    fn delete_match(&mut self, mid: &str) -> Result<Done, Refused> {
        if !self.matches.contains_key(mid) {
            return Err(Refused::UnknownMatch(mid.to_owned()));
        }
        self.store.delete_match(mid).map_err(Refused::from_store)?;
        self.forget_match(mid);
        Ok(Done::MatchDeleted { id: mid.to_owned() })
    }

    /// Forgets a deleted match and tells the workers (its watchers are closed).
    pub(super) fn forget_match(&mut self, mid: &str) {
        if let Some(entry) = self.matches.remove(mid) {
            self.publish(Broadcast::Cancelled {
                mid: Arc::clone(&entry.mid),
            });
        }
    }

    fn watch(&self, mid: &str, since: Option<u64>) -> WatchReply {
        match self.matches.get(mid) {
            Some(snapshot) => WatchReply::Found(snapshot.watch_start(since)),
            None => WatchReply::NotFound {
                error: error_message(&Refused::UnknownMatch(mid.to_owned()).to_string()),
            },
        }
    }
}
