//! An in-memory [`Store`]: no durability, for tests and throwaway runs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Result, Snapshot, Store, StoreError, StoredMatch};
use crate::domain::{Event, Match, Team};

/// Keeps everything in memory. A clone of [`MemoryStore::failure_switch`] makes every write
/// fail while it is set, to test how callers handle store errors.
#[derive(Debug, Default)]
pub struct MemoryStore {
    teams: BTreeMap<String, Team>,
    matches: BTreeMap<String, StoredMatch>,
    failing: Arc<AtomicBool>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// A switch shared with the store: while it holds `true`, every write returns
    /// [`StoreError::Unavailable`] and changes nothing.
    pub fn failure_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.failing)
    }

    fn check(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }
}

impl Store for MemoryStore {
    fn load_all(&mut self) -> Result<Snapshot> {
        Ok(Snapshot {
            teams: self.teams.values().cloned().collect(),
            matches: self.matches.values().cloned().collect(),
        })
    }

    fn put_team(&mut self, team: &Team) -> Result<()> {
        self.check()?;
        self.teams.insert(team.id.clone(), team.clone());
        Ok(())
    }

    fn create_match(&mut self, m: &Match) -> Result<()> {
        self.check()?;
        let stored = StoredMatch {
            state: m.clone(),
            events: Vec::new(),
        };
        self.matches.insert(m.id.clone(), stored);
        Ok(())
    }

    fn append_event(&mut self, mid: &str, event: &Event, state: &Match) -> Result<()> {
        self.check()?;
        let stored = self
            .matches
            .get_mut(mid)
            .ok_or_else(|| StoreError::NoSuchMatch(mid.to_owned()))?;
        stored.events.push(event.clone());
        stored.state = state.clone();
        Ok(())
    }

    fn delete_match(&mut self, mid: &str) -> Result<()> {
        self.check()?;
        self.matches.remove(mid);
        Ok(())
    }
}
