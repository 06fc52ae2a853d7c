//! One timer structure for every record of a worker's plane: a hashed wheel of deadlines.
//!
//! Each record has at most one live entry (its earliest deadline, rounded up to a tick). An
//! entry is never moved or removed: when activity postpones a deadline, the old entry fires,
//! the owner sees that nothing is due yet and schedules the new deadline. So keepalive costs
//! O(1) per record per idle period and nothing per tick, instead of a sweep over every
//! connection. Deadlines past the wheel's horizon are parked in its last slot and
//! re-scheduled when they fire.

/// A scheduled entry: the record's key and serial (a reused key does not match).
pub type Entry = (u32, u32);

/// Deadlines in ticks of `tick_ms`, over a horizon of `slots` ticks.
pub struct DeadlineWheel {
    tick_ms: u64,
    slots: Vec<Vec<Entry>>,
    /// The next tick to expire.
    current: u64,
    len: usize,
}

impl DeadlineWheel {
    /// A wheel of `slots` ticks of `tick_ms` milliseconds, starting at time `now`.
    pub fn new(tick_ms: u64, slots: usize, now: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        Self {
            tick_ms,
            slots: (0..slots.max(2)).map(|_| Vec::new()).collect(),
            current: now / tick_ms,
            len: 0,
        }
    }

    /// Schedules `entry` at `deadline_ms` (rounded up to the next tick, never in the past);
    /// returns the tick it fires at.
    pub fn insert(&mut self, deadline_ms: u64, entry: Entry) -> u64 {
        let horizon = self.current + self.slots.len() as u64 - 1;
        let tick = deadline_ms
            .div_ceil(self.tick_ms)
            .clamp(self.current, horizon);
        let n = self.slots.len() as u64;
        self.slots[(tick % n) as usize].push(entry);
        self.len += 1;
        tick
    }

    /// Moves the entries of every tick up to `now` into `out`, each with its tick.
    pub fn expire(&mut self, now: u64, out: &mut Vec<(u64, Entry)>) {
        let until = now / self.tick_ms;
        let n = self.slots.len() as u64;
        while self.current <= until && self.len > 0 {
            let slot = &mut self.slots[(self.current % n) as usize];
            self.len -= slot.len();
            let tick = self.current;
            // Taken, not drained: a burst (a broadcast's send deadlines, a wave of pings)
            // must not pin its room in a slot for good; 1,024 slots each keeping the room of
            // the largest burst they ever held would cost far more than the records.
            out.extend(std::mem::take(slot).into_iter().map(|e| (tick, e)));
            self.current += 1;
        }
        self.current = self.current.max(until + 1);
    }

    /// When the earliest entry fires (ms), if any.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots.len() as u64;
        (self.current..self.current + n)
            .find(|t| !self.slots[(t % n) as usize].is_empty())
            .map(|t| t * self.tick_ms)
    }

    /// Entries scheduled (live or stale).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick length (ms).
    pub fn tick_ms(&self) -> u64 {
        self.tick_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fire_at_their_tick_and_not_before() {
        let mut w = DeadlineWheel::new(10, 8, 1000);
        assert_eq!(w.insert(1015, (1, 0)), 102);
        assert_eq!(w.insert(1000, (2, 0)), 100);
        assert_eq!(w.next_deadline(), Some(1000));
        let mut out = Vec::new();
        w.expire(1019, &mut out);
        assert_eq!(out, vec![(100, (2, 0))]);
        out.clear();
        w.expire(1020, &mut out);
        assert_eq!(out, vec![(102, (1, 0))]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn far_deadlines_wait_at_the_horizon_and_past_ones_fire_next() {
        let mut w = DeadlineWheel::new(10, 4, 0);
        assert_eq!(w.insert(1_000_000, (1, 0)), 3, "clamped to the horizon");
        let mut out = Vec::new();
        w.expire(500, &mut out);
        assert_eq!(out, vec![(3, (1, 0))]);
        assert_eq!(w.insert(0, (2, 0)), 51, "never in the past");
        out.clear();
        w.expire(510, &mut out);
        assert_eq!(out, vec![(51, (2, 0))]);
    }
}
