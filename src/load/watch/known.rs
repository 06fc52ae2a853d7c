//! Event payloads a load thread has already checked with a full JSON parse, by feed and event
//! number. The server encodes each event once and every watcher gets the same bytes, so a
//! later frame whose bytes equal the checked payload of the event the watcher expects next *is*
//! that event: it is verified by one byte comparison instead of a second parse. A frame that
//! differs in any byte (another number, a repeat, a different encoding) takes the full parse.
//!
//! No I/O and no clock: a table filled and read by the watchers of one thread.

use std::collections::HashMap;

/// The most payloads remembered per feed: bounds the memory a server that sends wild numbers
/// can make the harness hold (beyond it, every frame is parsed in full).
const MAX_PER_FEED: usize = 1 << 16;
/// The longest payload remembered (larger events are parsed in full every time).
const MAX_PAYLOAD: usize = 64 << 10;

/// One checked event: its exact bytes and whether it is the match's `stop`.
#[derive(Debug)]
struct Checked {
    bytes: Box<[u8]>,
    stop: bool,
}

/// The checked event payloads of each feed (index = the feed's place in the run).
#[derive(Debug, Default)]
pub(super) struct KnownEvents {
    feeds: Vec<HashMap<u64, Checked>>,
}

impl KnownEvents {
    /// An empty table for `feeds` feeds.
    pub(super) fn new(feeds: usize) -> KnownEvents {
        KnownEvents {
            feeds: (0..feeds).map(|_| HashMap::new()).collect(),
        }
    }

    /// When `payload` is exactly the checked payload of event `seq` of `feed`: whether that
    /// event is the match's `stop`. `None` when it differs or was never checked.
    pub(super) fn recall(&self, feed: usize, seq: u64, payload: &[u8]) -> Option<bool> {
        let checked = self.feeds.get(feed)?.get(&seq)?;
        (*checked.bytes == *payload).then_some(checked.stop)
    }

    /// Remembers `payload`, fully parsed as event `seq` of `feed` (`stop`: the match's last),
    /// unless that number already has a payload or the table is full.
    pub(super) fn remember(&mut self, feed: usize, seq: u64, payload: &[u8], stop: bool) {
        let Some(table) = self.feeds.get_mut(feed) else {
            return;
        };
        if table.len() >= MAX_PER_FEED || payload.len() > MAX_PAYLOAD {
            return;
        }
        table.entry(seq).or_insert_with(|| Checked {
            bytes: payload.into(),
            stop,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOAL: &[u8] = br#"{"type":"event","match":"m","seq":3,"kind":"goal","data":{}}"#;

    #[test]
    fn only_the_same_bytes_for_the_same_number_are_recalled() {
        let mut k = KnownEvents::new(2);
        assert_eq!(k.recall(0, 3, GOAL), None);
        k.remember(0, 3, GOAL, false);
        assert_eq!(k.recall(0, 3, GOAL), Some(false));
        // Another number, another feed, one byte changed, a prefix: not recalled.
        assert_eq!(k.recall(0, 4, GOAL), None);
        assert_eq!(k.recall(1, 3, GOAL), None);
        let mut changed = GOAL.to_vec();
        changed[30] = b'4';
        assert_eq!(k.recall(0, 3, &changed), None);
        assert_eq!(k.recall(0, 3, &GOAL[..GOAL.len() - 1]), None);
    }

    #[test]
    fn the_first_checked_payload_of_a_number_stays() {
        let mut k = KnownEvents::new(1);
        k.remember(0, 9, b"first", true);
        k.remember(0, 9, b"second", false);
        assert_eq!(k.recall(0, 9, b"first"), Some(true));
        assert_eq!(k.recall(0, 9, b"second"), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut k = KnownEvents::new(1);
        for seq in 0..(MAX_PER_FEED as u64 + 10) {
            k.remember(0, seq, b"x", false);
        }
        assert_eq!(k.feeds[0].len(), MAX_PER_FEED);
        k.remember(0, 1 << 40, b"x", false);
        assert_eq!(k.recall(0, 1 << 40, b"x"), None);
        assert_eq!(k.recall(5, 0, b"x"), None);
        k.remember(5, 0, b"x", false);
        let big = vec![b' '; MAX_PAYLOAD + 1];
        let mut k = KnownEvents::new(1);
        k.remember(0, 1, &big, false);
        assert_eq!(k.recall(0, 1, &big), None);
    }
}
