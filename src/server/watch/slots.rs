//! A match's watcher table on one worker: stable keys (a subscription remembers its slot),
//! 8 bytes a slot. `slab::Slab<RecordId>` would take 16 (its vacant entries carry a
//! `usize` beside the tag); at 100,000 watchers a worker holds tens of thousands of these.
//!
//! A vacant slot holds [`VACANT`] as its key and the next vacant slot as its serial: the
//! free list lives in the table itself, as in a slab.

use crate::server::plane::record::RecordId;

/// The key no plane record has: it marks a vacant slot.
const VACANT: u32 = u32::MAX;
/// The end of the free list.
const NONE: u32 = u32::MAX;

/// Watchers of one match, each at a stable slot.
#[derive(Debug)]
pub(super) struct WatcherSlots {
    slots: Vec<RecordId>,
    /// First vacant slot ([`NONE`]: none).
    free: u32,
    len: u32,
}

impl Default for WatcherSlots {
    fn default() -> Self {
        WatcherSlots {
            slots: Vec::new(),
            free: NONE,
            len: 0,
        }
    }
}

impl WatcherSlots {
    /// Puts `id` in a slot and returns it.
    pub(super) fn insert(&mut self, id: RecordId) -> u32 {
        debug_assert_ne!(id.key, VACANT);
        self.len += 1;
        if self.free == NONE {
            self.slots.push(id);
            return self.slots.len() as u32 - 1;
        }
        let slot = self.free;
        self.free = self.slots[slot as usize].serial;
        self.slots[slot as usize] = id;
        slot
    }

    /// Empties `slot` if it holds `id`; true when it did.
    pub(super) fn remove(&mut self, slot: u32, id: RecordId) -> bool {
        match self.slots.get_mut(slot as usize) {
            Some(held) if *held == id => {
                *held = RecordId {
                    key: VACANT,
                    serial: self.free,
                };
                self.free = slot;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// Watchers held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no watcher is held.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The watchers, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = RecordId> + '_ {
        self.slots.iter().copied().filter(|id| id.key != VACANT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(key: u32) -> RecordId {
        RecordId { key, serial: 7 }
    }

    #[test]
    fn slots_are_stable_and_reused_after_removal() {
        let mut t = WatcherSlots::default();
        let a = t.insert(id(1));
        let b = t.insert(id(2));
        let c = t.insert(id(3));
        assert_eq!((a, b, c), (0, 1, 2));
        assert!(t.remove(b, id(2)));
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![id(1), id(3)]);
        assert_eq!(t.len(), 2);
        // The vacant slot is taken before the table grows; the others keep theirs.
        assert_eq!(t.insert(id(4)), 1);
        assert_eq!(t.iter().collect::<Vec<_>>(), vec![id(1), id(4), id(3)]);
        assert_eq!(t.insert(id(5)), 3);
    }

    #[test]
    fn a_slot_is_removed_only_by_the_watcher_it_holds() {
        let mut t = WatcherSlots::default();
        let a = t.insert(id(1));
        assert!(!t.remove(a, id(9)), "someone else's slot");
        assert!(!t.remove(5, id(1)), "no such slot");
        assert!(t.remove(a, id(1)));
        assert!(!t.remove(a, id(1)), "already vacant");
        assert!(t.is_empty());
    }

    #[test]
    fn a_slot_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<RecordId>(), 8);
    }

    #[test]
    fn many_inserts_and_removals_keep_the_count_and_the_members() {
        let mut t = WatcherSlots::default();
        let mut held: Vec<(u32, RecordId)> = Vec::new();
        for round in 0..50u32 {
            for k in 0..20 {
                let rid = RecordId {
                    key: round * 100 + k,
                    serial: round,
                };
                held.push((t.insert(rid), rid));
            }
            // Remove every third one held so far.
            let mut i = 0;
            held.retain(|(slot, rid)| {
                i += 1;
                if i % 3 == 0 {
                    assert!(t.remove(*slot, *rid));
                    false
                } else {
                    true
                }
            });
            assert_eq!(t.len(), held.len());
            let mut want: Vec<RecordId> = held.iter().map(|(_, r)| *r).collect();
            let mut got: Vec<RecordId> = t.iter().collect();
            want.sort_by_key(|r| r.key);
            got.sort_by_key(|r| r.key);
            assert_eq!(got, want);
        }
    }
}
