//! What one watcher must have received, checked without I/O: the status first, then every
//! event after the status's `seq` exactly once and in order, up to the match's last event.
//!
//! [`SeqChecker`] classifies each arriving event number: the next one (in order), one past a
//! gap (the skipped numbers become *missing*), a missing one arriving late (*reordered*), or
//! one already seen (*duplicated*). At the end, whatever is still missing, plus every number
//! after the last one seen up to the final event, is *lost*.
//!
//! The TCP line protocol carries no numbers; [`align_kind`] places a block on the list of
//! published kinds by looking a few places ahead, so the same checker can judge it.

use crate::domain::EventKind;

/// How far past a gap [`align_kind`] looks for a block's kind before calling it a repeat.
pub const KIND_LOOKAHEAD: usize = 8;
/// Gaps up to this size list their numbers (so late arrivals count as reordered); larger
/// ones are only counted, to bound memory.
const MAX_LISTED_GAP: u64 = 4096;

/// The order check of one watcher's event numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqChecker {
    /// The status's `seq`: the watcher must see every event after it.
    start: Option<u64>,
    /// The highest event number seen so far (`start` before any).
    last: u64,
    /// Numbers skipped over by a gap and not seen since.
    missing: Vec<u64>,
    /// Numbers skipped by gaps too large to list (a bogus number): counted only.
    unlisted: u64,
    /// Events that arrived in order (or late, filling a gap).
    pub delivered: u64,
    /// Events seen a second time.
    pub duplicated: u64,
    /// Events that arrived after a later one.
    pub reordered: u64,
    /// Events that arrived before any status.
    pub before_status: u64,
}

/// What [`SeqChecker::event`] made of one event number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next number: in order.
    InOrder,
    /// Past a gap of this many numbers (now missing).
    AfterGap(u64),
    /// A missing number arriving late.
    Reordered,
    /// A number seen before.
    Duplicated,
    /// No status came first.
    BeforeStatus,
}

impl SeqChecker {
    /// Records the status message: events after `seq` are expected.
    pub fn status(&mut self, seq: u64) {
        if self.start.is_none() {
            self.start = Some(seq);
            self.last = seq;
        }
    }

    /// Whether a status has been seen.
    pub fn has_status(&self) -> bool {
        self.start.is_some()
    }

    /// The status's `seq`, if one came.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// The highest event number seen (the status's `seq` before any event).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Numbers skipped and not (yet) seen.
    pub fn missing(&self) -> &[u64] {
        &self.missing
    }

    /// Judges event number `seq`.
    pub fn event(&mut self, seq: u64) -> Verdict {
        if self.start.is_none() {
            self.before_status += 1;
            return Verdict::BeforeStatus;
        }
        if seq == self.last + 1 {
            self.last = seq;
            self.delivered += 1;
            Verdict::InOrder
        } else if seq > self.last + 1 {
            let gap = seq - self.last - 1;
            // A huge gap (a bogus number) is counted, not listed, to bound memory.
            if gap <= MAX_LISTED_GAP {
                self.missing.extend(self.last + 1..seq);
            } else {
                self.unlisted += gap;
            }
            self.last = seq;
            self.delivered += 1;
            Verdict::AfterGap(gap)
        } else if let Some(i) = self.missing.iter().position(|&m| m == seq) {
            self.missing.swap_remove(i);
            self.delivered += 1;
            self.reordered += 1;
            Verdict::Reordered
        } else {
            // Seen already, or covered by the status (`seq <= start`): a repeat.
            self.duplicated += 1;
            Verdict::Duplicated
        }
    }

    /// Events this watcher lost, given the last event number of the match: those still
    /// missing plus those after the last one seen.
    pub fn lost(&self, final_seq: u64) -> u64 {
        self.missing.len() as u64 + self.unlisted + final_seq.saturating_sub(self.last)
    }

    /// Events this watcher should have received, given the match's last event number.
    pub fn expected(&self, final_seq: u64) -> u64 {
        self.start.map_or(0, |s| final_seq.saturating_sub(s))
    }
}

/// Places a TCP-line block of kind `kind` on the published list `published` (index 0 is the
/// event numbered `base + 1`): the next place if it matches, else the first match within
/// [`KIND_LOOKAHEAD`] places ahead (a gap), else a missing place with that kind (late), else
/// the last place seen (a repeat). Returns the event number to hand to the checker.
pub fn align_kind(checker: &SeqChecker, published: &[EventKind], base: u64, kind: &str) -> u64 {
    let next = checker.last().saturating_sub(base) as usize;
    let ahead = published
        .iter()
        .enumerate()
        .skip(next)
        .take(KIND_LOOKAHEAD)
        .find(|(_, k)| k.as_str() == kind);
    if let Some((i, _)) = ahead {
        return base + i as u64 + 1;
    }
    let late = checker.missing().iter().copied().filter(|&m| {
        m > base
            && published
                .get((m - base - 1) as usize)
                .is_some_and(|k| k.as_str() == kind)
    });
    if let Some(m) = late.min() {
        return m;
    }
    checker.last().max(base + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: u64, seqs: &[u64]) -> SeqChecker {
        let mut c = SeqChecker::default();
        c.status(status);
        for &s in seqs {
            c.event(s);
        }
        c
    }

    #[test]
    fn in_order_is_clean() {
        let c = run(3, &[4, 5, 6]);
        assert_eq!((c.delivered, c.duplicated, c.reordered), (3, 0, 0));
        assert_eq!(c.lost(6), 0);
        assert_eq!(c.expected(6), 3);
    }

    #[test]
    fn a_skipped_event_is_lost() {
        let c = run(0, &[1, 2, 4, 5]);
        assert_eq!(c.lost(5), 1);
        assert_eq!(c.reordered, 0);
    }

    #[test]
    fn a_swapped_pair_is_reordered_not_lost() {
        let c = run(0, &[1, 3, 2, 4]);
        assert_eq!((c.lost(4), c.reordered, c.duplicated), (0, 1, 0));
    }

    #[test]
    fn repeats_are_duplicated() {
        let c = run(2, &[3, 3, 1, 4]);
        assert_eq!((c.duplicated, c.lost(4)), (2, 0));
    }

    #[test]
    fn the_tail_after_the_last_seen_is_lost() {
        let c = run(0, &[1, 2]);
        assert_eq!(c.lost(5), 3);
    }

    #[test]
    fn events_before_status_are_counted() {
        let mut c = SeqChecker::default();
        assert_eq!(c.event(1), Verdict::BeforeStatus);
        assert_eq!(c.before_status, 1);
        assert_eq!(c.expected(5), 0);
    }

    #[test]
    fn a_huge_gap_is_counted_without_listing_it() {
        let c = run(0, &[1, 1_000_001]);
        assert!(c.missing().is_empty());
        assert_eq!(c.lost(1_000_001), 999_999);
    }

    #[test]
    fn kinds_align_in_order_across_gaps_and_swaps() {
        use EventKind::*;
        let published = [Start, Shot, Goal, Corner, Stop];
        let place = |seqs: &[&str]| {
            let mut c = SeqChecker::default();
            c.status(10);
            for k in seqs {
                let s = align_kind(&c, &published, 10, k);
                c.event(s);
            }
            c
        };
        let clean = place(&["start", "shot", "goal", "corner", "stop"]);
        assert_eq!(
            (clean.lost(15), clean.reordered, clean.duplicated),
            (0, 0, 0)
        );
        let skipped = place(&["start", "goal", "corner", "stop"]);
        assert_eq!((skipped.lost(15), skipped.reordered), (1, 0));
        let swapped = place(&["start", "goal", "shot", "corner", "stop"]);
        assert_eq!((swapped.lost(15), swapped.reordered), (0, 1));
        let repeated = place(&["start", "shot", "shot", "goal", "corner", "stop"]);
        assert_eq!((repeated.lost(15), repeated.duplicated), (0, 1));
    }
}
