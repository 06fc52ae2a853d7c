//! Outbound bytes of the plane, shared by reference count: an event is encoded once per
//! worker and the same bytes go to every watcher's socket. A frame lives until the last
//! record that queued it has had it written (or was closed).

use bytes::Bytes;
use slab::Slab;

/// A frame in a [`FrameTable`] (4 bytes, so a record's queue entries stay small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameId(u32);

impl FrameId {
    /// "No frame" (a record's empty queue head).
    pub const NONE: FrameId = FrameId(u32::MAX);

    /// Whether this is [`FrameId::NONE`].
    pub fn is_none(self) -> bool {
        self == Self::NONE
    }
}

struct Slot {
    bytes: Bytes,
    refs: u32,
}

/// The frames a worker's plane has queued or in flight.
#[derive(Default)]
pub struct FrameTable {
    slots: Slab<Slot>,
}

impl FrameTable {
    /// Adds `bytes` with one reference (the caller's).
    pub fn insert(&mut self, bytes: Bytes) -> FrameId {
        FrameId(self.slots.insert(Slot { bytes, refs: 1 }) as u32)
    }

    /// Takes one more reference to `id`.
    pub fn retain(&mut self, id: FrameId) {
        self.slots[id.0 as usize].refs += 1;
    }

    /// Drops one reference to `id`; the frame is freed with its last reference.
    pub fn release(&mut self, id: FrameId) {
        let slot = &mut self.slots[id.0 as usize];
        slot.refs -= 1;
        if slot.refs == 0 {
            self.slots.remove(id.0 as usize);
        }
    }

    /// The bytes of `id`.
    pub fn bytes(&self, id: FrameId) -> &Bytes {
        &self.slots[id.0 as usize].bytes
    }

    /// Gives back the room of frames freed since a burst (as far as the live ones allow:
    /// their ids cannot move).
    pub fn shrink(&mut self) {
        self.slots.shrink_to_fit();
    }

    /// Frames alive (queued, in flight or held by a caller).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no frame is alive.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_lives_until_its_last_reference() {
        let mut t = FrameTable::default();
        let a = t.insert(Bytes::from_static(b"abc"));
        t.retain(a);
        t.release(a);
        assert_eq!(t.bytes(a).as_ref(), b"abc");
        t.release(a);
        assert!(t.is_empty());
    }
}
