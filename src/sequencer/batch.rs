//! Group commit: events are validated as the batch folds, written in one store transaction,
//! broadcast in order, then answered.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::core::Core;
use super::{Done, Pending, Refused, Reply};
use crate::domain::{check_minute, Event, EventKind, Match};
use crate::store::{Append, StoreError};

/// What a client posts: an event before the sequencer numbers it.
#[derive(Debug, Clone)]
pub(super) struct Posted {
    /// The event kind.
    pub(super) kind: EventKind,
    /// The event data (a JSON object).
    pub(super) data: Value,
    /// The match minute the feed gave.
    pub(super) minute: Option<u8>,
}

impl Posted {
    /// Validates the event against `next` (which it changes) and numbers it at `ts`.
    fn apply(&self, next: &mut Match, ts: i64) -> Result<Event, Refused> {
        let minute = self
            .minute
            .map(check_minute)
            .transpose()
            .map_err(|e| Refused::Invalid(e.into()))?;
        let data = next.apply(self.kind, &self.data, ts)?;
        Ok(Event {
            seq: next.seq,
            ts,
            kind: self.kind,
            data,
            minute,
        })
    }
}

/// One validated event waiting for the batch's commit.
pub(super) struct Staged {
    pub(super) mid: String,
    pub(super) event: Event,
    /// The match after this event.
    pub(super) state: Arc<Match>,
    expect_seq: Option<u64>,
    pub(super) pending: Pending,
}

impl Staged {
    /// What the store appends for each of `items`, in order.
    pub(super) fn appends(items: &[Staged]) -> Vec<Append<'_>> {
        items
            .iter()
            .map(|s| Append {
                mid: &s.mid,
                event: &s.event,
                state: &s.state,
            })
            .collect()
    }

    /// The event as it was posted (to post it again).
    fn posted(&self) -> Posted {
        Posted {
            kind: self.event.kind,
            data: self.event.data.clone(),
            minute: self.event.minute,
        }
    }
}

/// The events staged since the last commit.
#[derive(Default)]
pub(super) struct Batch {
    pub(super) items: Vec<Staged>,
    /// The state after the latest event of each match that is staged, or written and not
    /// yet committed ([`super::pipeline`]): the next event of that match folds on it.
    pub(super) ahead: HashMap<String, Arc<Match>>,
}

impl Core {
    /// Validates an event against the state as the batch folds and stages it; a refusal is
    /// answered at once and stages nothing.
    pub(super) fn stage(
        &mut self,
        batch: &mut Batch,
        mid: String,
        posted: Posted,
        expect_seq: Option<u64>,
        pending: Pending,
    ) {
        let base = match batch.ahead.get(&mid) {
            Some(state) => &**state,
            None => match self.matches.get(&mid) {
                Some(snapshot) => &*snapshot.state,
                None => {
                    pending.answer(Reply::Refused(Refused::UnknownMatch(mid)));
                    return;
                }
            },
        };
        let at = base.seq;
        let mut next = base.clone();
        let ts = (self.clock)().max(next.last_ts);
        let validated = match expect_seq {
            Some(want) if at >= want => Err(Refused::Conflict { want, seq: at }),
            Some(want) if at + 1 < want => Err(Refused::NotNext { want, seq: at }),
            _ => posted.apply(&mut next, ts),
        };
        match validated {
            Ok(event) => {
                let state = Arc::new(next);
                batch.ahead.insert(mid.clone(), Arc::clone(&state));
                batch.items.push(Staged {
                    mid,
                    event,
                    state,
                    expect_seq,
                    pending,
                });
            }
            Err(Refused::Conflict { .. })
            | Err(Refused::Rejected(_))
            | Err(Refused::NotNext { .. })
                if self.store.is_shared() =>
            {
                // Another node may be ahead of this replica: judge on the latest, alone.
                self.flush(batch);
                let answer = self.post_event(&mid, &posted, expect_seq);
                pending.answer(into_reply(answer));
            }
            Err(refused) => pending.answer(Reply::Refused(refused)),
        }
    }

    /// Commits the staged events: one store transaction, then every accepted event is
    /// broadcast in order, then each is answered. On a store failure every event of the
    /// batch is refused and nothing changes. Events a shared store refused (another node
    /// appended first) are tried again one at a time, after catching up.
    pub(super) fn flush(&mut self, batch: &mut Batch) {
        if self.pipeline.is_some() {
            self.drain(batch);
            return;
        }
        if batch.items.is_empty() {
            return;
        }
        batch.ahead.clear();
        let items = std::mem::take(&mut batch.items);
        let outcome = self.store.append_batch(&Staged::appends(&items));
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                let refused = Refused::from_store(e);
                for s in items {
                    s.pending.answer(Reply::Refused(refused.clone()));
                }
                return;
            }
        };
        let mut answers = Vec::with_capacity(items.len());
        let mut retries = Vec::new();
        for (s, result) in items.into_iter().zip(outcome) {
            match result {
                Ok(()) => {
                    let done = Done::Event {
                        seq: s.event.seq,
                        ts: s.event.ts,
                    };
                    self.commit(&s.mid, s.event, s.state);
                    answers.push((s.pending, done));
                }
                Err(e) => retries.push((s, e)),
            }
        }
        for (pending, done) in answers {
            pending.answer(Reply::Done(done));
        }
        for (s, e) in retries {
            let answer = match e {
                StoreError::NoSuchMatch(mid) => Err(Refused::UnknownMatch(mid)),
                // In the store but not confirmed: not this node's to broadcast; the stream
                // reader delivers it once (and only if) it is replicated.
                e @ StoreError::NotReplicated { .. } => Err(Refused::from_store(e)),
                StoreError::Behind { mid, .. } => self
                    .resync(&mid)
                    .map_err(Refused::from_store)
                    .and_then(|()| self.post_event(&s.mid, &s.posted(), s.expect_seq)),
                _ => self.post_event(&s.mid, &s.posted(), s.expect_seq),
            };
            s.pending.answer(into_reply(answer));
        }
    }

    /// Posts one event alone, catching up with a shared store and retrying (at most
    /// [`super::MAX_ATTEMPTS`] times).
    pub(super) fn post_event(
        &mut self,
        mid: &str,
        posted: &Posted,
        expect_seq: Option<u64>,
    ) -> Result<Done, Refused> {
        for _ in 0..super::MAX_ATTEMPTS {
            let Some(entry) = self.matches.get(mid) else {
                return Err(Refused::UnknownMatch(mid.to_owned()));
            };
            let at = entry.state.seq;
            if let Some(want) = expect_seq {
                if at >= want {
                    return Err(Refused::Conflict { want, seq: at });
                }
                if at + 1 < want {
                    // A shared store may be ahead of this replica: judge on the latest.
                    match self.catch_up(mid).map_err(Refused::from_store)? {
                        0 => return Err(Refused::NotNext { want, seq: at }),
                        _ => continue,
                    }
                }
            }
            let mut next = Match::clone(&entry.state);
            let ts = (self.clock)().max(next.last_ts);
            let event = match posted.apply(&mut next, ts) {
                Ok(event) => event,
                Err(refused @ Refused::Invalid(_)) => return Err(refused),
                Err(refused) => match self.catch_up(mid).map_err(Refused::from_store)? {
                    0 => return Err(refused),
                    _ => continue,
                },
            };
            match self.store.append_event(mid, &event, &next) {
                Ok(()) => {}
                Err(StoreError::Conflict(why)) => {
                    tracing::debug!(mid, why, "append conflict; catching up");
                    self.catch_up(mid).map_err(Refused::from_store)?;
                    continue;
                }
                Err(StoreError::Behind { stored, .. }) => {
                    tracing::warn!(mid, stored, at, "the store is behind this node; resyncing");
                    self.resync(mid).map_err(Refused::from_store)?;
                    continue;
                }
                Err(StoreError::NoSuchMatch(_)) => {
                    self.resync(mid).map_err(Refused::from_store)?;
                    continue;
                }
                Err(e) => return Err(Refused::from_store(e)),
            }
            let done = Done::Event { seq: event.seq, ts };
            self.commit(mid, event, Arc::new(next));
            return Ok(done);
        }
        Err(Refused::Contention)
    }
}

fn into_reply(result: Result<Done, Refused>) -> Reply {
    match result {
        Ok(done) => Reply::Done(done),
        Err(refused) => Reply::Refused(refused),
    }
}
