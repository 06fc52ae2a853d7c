//! What a node reads from a shared (cluster) store: the events other nodes appended
//! (caught up on a conflict, or pushed by the stream reader as [`Remote`] changes), and a
//! match reloaded whole when the store turns out to be behind this node.

use super::core::Core;
use super::{check_history, Remote};
use crate::domain::{Event, Match};
use crate::store::StoreError;

impl Core {
    /// Reads the events of `mid` other nodes appended after this replica and applies them;
    /// returns how many.
    pub(super) fn catch_up(&mut self, mid: &str) -> Result<usize, StoreError> {
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
        self.commit(mid, event, std::sync::Arc::new(next));
        true
    }

    /// Reloads match `mid` from the store, which is behind this node's replica (or no
    /// longer has the match): watchers of the old replica are closed as cancelled (they
    /// reconnect and resume from the stored log), readers see the stored match.
    pub(super) fn resync(&mut self, mid: &str) -> Result<(), StoreError> {
        let stored = self.store.load_match(mid)?;
        self.forget_match(mid);
        if let Some(stored) = stored {
            check_history(&stored.state, &stored.events)?;
            self.learn_match(stored.state, &stored.events);
        }
        Ok(())
    }

    /// Applies a change another node made (see [`super::Request::Remote`]).
    pub(super) fn remote(&mut self, remote: Remote) {
        match remote {
            Remote::Team(team) => self.learn_team(team),
            Remote::Created(m) => {
                if !self.matches.contains_key(&m.id) {
                    self.learn_match(*m, &[]);
                }
            }
            Remote::Deleted(mid) => self.forget_match(&mid),
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
}
