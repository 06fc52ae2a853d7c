//! Pipelined group commit, for a store whose sync is deferred ([`Store::deferred_sync`]):
//! a thread of its own (`wal-sync`) syncs batch N while the sequencer stages batch N+1.
//!
//! Each written batch is a *generation*. One sync is in flight at a time; it covers every
//! generation written before it started. Events that arrive meanwhile are validated and
//! staged (folding on the states of the batches still syncing, [`Batch::ahead`]) but not
//! written: the commit stays one large transaction. When the sync returns ([`Msg::Synced`],
//! through the sequencer's own queue) the staged batch is written and its sync requested
//! first, and only then are the generations just synced committed in order — broadcast,
//! then answered — exactly as an unpipelined batch after its fsync: so the next fsync runs
//! while this batch is broadcast and answered, and no event is broadcast, answered or
//! visible to readers before it is on disk.
//!
//! A request that is not an event, and a stop, first drains the pipeline (written and
//! synced on this thread). A failed write refuses its batch only; a failed sync refuses
//! every batch it may have covered and every later event (the disk's state is unknown:
//! restart to reload what is stored).
//!
//! [`Store::deferred_sync`]: crate::store::Store::deferred_sync

use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::thread;

use super::batch::{Batch, Staged};
use super::core::Core;
use super::{Done, Msg, Refused, Reply};
use crate::store::Syncer;

/// The batches written and waiting for their sync, and the link to the syncing thread.
pub(super) struct Pipeline {
    /// Asks the `wal-sync` thread to sync everything written up to a generation.
    requests: mpsc::Sender<u64>,
    /// Syncs on the sequencer's own thread (to drain the pipeline).
    syncer: Syncer,
    /// Written batches, oldest first, with their generation.
    written: VecDeque<(u64, Vec<Staged>)>,
    /// The generation of the next written batch.
    next_gen: u64,
    /// The generation the sync in flight covers.
    in_flight: Option<u64>,
    /// Why a sync failed: every event is refused from then on.
    failed: Option<String>,
}

impl Pipeline {
    /// Starts the `wal-sync` thread; it answers each sync with a [`Msg::Synced`] on
    /// `to_sequencer` and ends when the pipeline is dropped.
    pub(super) fn start(syncer: Syncer, to_sequencer: mpsc::Sender<Msg>) -> std::io::Result<Self> {
        let (requests, asked) = mpsc::channel::<u64>();
        let sync = Arc::clone(&syncer);
        thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                while let Ok(mut gen) = asked.recv() {
                    while let Ok(later) = asked.try_recv() {
                        gen = gen.max(later);
                    }
                    let result = sync().map_err(|e| e.to_string());
                    if to_sequencer.send(Msg::Synced { gen, result }).is_err() {
                        return;
                    }
                }
            })?;
        Ok(Pipeline {
            requests,
            syncer,
            written: VecDeque::new(),
            next_gen: 0,
            in_flight: None,
            failed: None,
        })
    }

    /// Asks for a sync of everything written, unless one is in flight (then the next).
    fn request_sync(&mut self) {
        if self.in_flight.is_none() && !self.written.is_empty() {
            let gen = self.next_gen - 1;
            self.in_flight = Some(gen);
            // The thread ends only with the pipeline.
            let _ = self.requests.send(gen);
        }
    }
}

impl Core {
    /// Writes the staged events as the next generation and asks for its sync, unless a
    /// sync is in flight: then they wait for it, staged (one large commit, not several).
    pub(super) fn write_ahead(&mut self, batch: &mut Batch) {
        let syncing = self
            .pipeline
            .as_ref()
            .is_some_and(|p| p.in_flight.is_some() && p.failed.is_none());
        if !syncing && self.write_generation(batch) {
            if let Some(p) = self.pipeline.as_mut() {
                p.request_sync();
            }
        }
    }

    /// A sync returned: writes what was staged meanwhile and asks for its sync, then
    /// commits the generations the returned sync covered.
    pub(super) fn synced(&mut self, batch: &mut Batch, gen: u64, result: Result<(), String>) {
        let Some(p) = self.pipeline.as_mut() else {
            return;
        };
        if p.in_flight == Some(gen) {
            p.in_flight = None;
        }
        if result.is_ok() {
            self.write_ahead(batch);
        }
        self.settle(batch, gen, result);
        // What is still staged: written now, or refused when the sync failed.
        self.write_ahead(batch);
    }

    /// Writes what is staged and syncs everything on this thread: then every event handed
    /// to the sequencer so far is committed (or refused).
    pub(super) fn drain(&mut self, batch: &mut Batch) {
        self.write_generation(batch);
        let Some(p) = self.pipeline.as_ref() else {
            return;
        };
        if p.written.is_empty() {
            return;
        }
        let last = p.next_gen - 1;
        let result = (p.syncer)().map_err(|e| e.to_string());
        self.settle(batch, last, result);
    }

    /// Writes the staged events (one store transaction, not yet synced) as a generation.
    /// False when nothing was written (nothing staged, or the batch was refused).
    fn write_generation(&mut self, batch: &mut Batch) -> bool {
        let Some(failed) = self.pipeline.as_ref().map(|p| p.failed.clone()) else {
            return false;
        };
        if batch.items.is_empty() {
            return false;
        }
        let items = std::mem::take(&mut batch.items);
        let outcome = match failed {
            Some(why) => Err(Refused::StoreFailed(why)),
            None => match self.store.write_batch(&Staged::appends(&items)) {
                Ok(results) => match results.into_iter().find_map(Result::err) {
                    None => Ok(()),
                    Some(e) => Err(Refused::from_store(e)),
                },
                Err(e) => Err(Refused::from_store(e)),
            },
        };
        let Some(p) = self.pipeline.as_mut() else {
            return false;
        };
        match outcome {
            Ok(()) => {
                p.written.push_back((p.next_gen, items));
                p.next_gen += 1;
                true
            }
            Err(refused) => {
                for s in items {
                    s.pending.answer(Reply::Refused(refused.clone()));
                }
                rebuild_ahead(p, batch);
                false
            }
        }
    }

    /// The generations up to `gen` were synced (`Ok`): commits them in order, broadcasts
    /// first, then answers. On `Err` every written generation is refused.
    fn settle(&mut self, batch: &mut Batch, gen: u64, result: Result<(), String>) {
        let Some(p) = self.pipeline.as_mut() else {
            return;
        };
        if let Err(why) = result {
            tracing::error!(error = %why, "WAL sync failed: events refused; restart to reload the store");
            let refused = Refused::StoreFailed(format!("sync failed: {why}"));
            p.failed = Some(why);
            for (_, items) in p.written.drain(..) {
                for s in items {
                    s.pending.answer(Reply::Refused(refused.clone()));
                }
            }
            rebuild_ahead(p, batch);
            return;
        }
        let mut durable = Vec::new();
        while p.written.front().is_some_and(|(g, _)| *g <= gen) {
            if let Some((_, items)) = p.written.pop_front() {
                durable.extend(items);
            }
        }
        let mut answers = Vec::with_capacity(durable.len());
        for s in durable {
            if batch
                .ahead
                .get(&s.mid)
                .is_some_and(|a| Arc::ptr_eq(a, &s.state))
            {
                batch.ahead.remove(&s.mid);
            }
            answers.push((
                s.pending,
                Done::Event {
                    seq: s.event.seq,
                    ts: s.event.ts,
                },
            ));
            self.commit(&s.mid, s.event, s.state);
        }
        for (pending, done) in answers {
            pending.answer(Reply::Done(done));
        }
    }
}

/// After a refusal: the states ahead are those of what is still written, then staged.
fn rebuild_ahead(p: &Pipeline, batch: &mut Batch) {
    batch.ahead.clear();
    let written = p.written.iter().flat_map(|(_, items)| items.iter());
    for s in written.chain(batch.items.iter()) {
        batch.ahead.insert(s.mid.clone(), Arc::clone(&s.state));
    }
}
