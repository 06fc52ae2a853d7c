//! What a watcher connection's record carries about its subscriptions, sized for a million
//! of them: a record is 128 bytes, and most watchers follow one match.
//!
//! The first subscription lives inside the record ([`WatchList`]); only a connection that
//! watches two or more matches allocates. A subscription names its match by a thin pointer
//! ([`MatchName`]) shared with the worker's table of that match, not a string of its own.

use std::net::IpAddr;
use std::rc::Rc;

/// A match id as subscriptions hold it: one pointer, shared by every watcher of the match on
/// a worker (a fat `Arc<str>` would not let a subscription fit in 16 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchName(Rc<Box<str>>);

impl MatchName {
    /// A name of its own for `mid` (until the match's table shares one).
    pub fn new(mid: &str) -> Self {
        MatchName(Rc::new(mid.into()))
    }

    /// The match id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subscription of one connection.
#[derive(Debug)]
pub struct Watching {
    /// The match.
    pub mid: MatchName,
    /// Slot in the match's watcher table once active; `None` while the watch is answered.
    pub slot: Option<u32>,
}

impl Watching {
    /// Whether this subscription is to match `mid`.
    pub fn is(&self, mid: &str) -> bool {
        self.mid.as_str() == mid
    }
}

/// A connection's subscriptions: the first inside the record, any more in one allocation.
/// Order is not kept (a removal may move the last one into its place).
#[derive(Debug, Default)]
pub struct WatchList {
    first: Option<Watching>,
    // Boxed on purpose: `Option<Box<Vec<_>>>` is 8 bytes where `Vec` is 24, and most watchers
    // hold one subscription, so the extra allocation is paid only by the rare second one.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<Watching>>>,
}

impl WatchList {
    /// Subscriptions held.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.as_ref().map_or(0, |m| m.len())
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// Adds a subscription.
    pub fn push(&mut self, w: Watching) {
        match &mut self.first {
            None => self.first = Some(w),
            Some(_) => self.more.get_or_insert_with(Default::default).push(w),
        }
    }

    /// The subscriptions.
    pub fn iter(&self) -> impl Iterator<Item = &Watching> {
        self.first
            .iter()
            .chain(self.more.iter().flat_map(|m| m.iter()))
    }

    /// The subscriptions, to change their slots.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Watching> {
        self.first
            .iter_mut()
            .chain(self.more.iter_mut().flat_map(|m| m.iter_mut()))
    }

    /// Keeps only the subscriptions `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Watching) -> bool) {
        if let Some(more) = &mut self.more {
            more.retain(|w| keep(w));
        }
        if self.first.as_ref().is_some_and(|w| !keep(w)) {
            self.first = None;
        }
        self.compact();
    }

    /// Takes out the first subscription `pick` says yes to.
    pub fn take(&mut self, mut pick: impl FnMut(&Watching) -> bool) -> Option<Watching> {
        let taken = match &mut self.first {
            Some(w) if pick(w) => self.first.take(),
            _ => {
                let more = self.more.as_mut()?;
                let i = more.iter().position(&mut pick)?;
                Some(more.swap_remove(i))
            }
        };
        self.compact();
        taken
    }

    /// Keeps the first place filled while any subscription is left, and frees the extra
    /// allocation once it is empty.
    fn compact(&mut self) {
        if self.first.is_none() {
            self.first = self.more.as_mut().and_then(|m| m.pop());
        }
        if self.more.as_ref().is_some_and(|m| m.is_empty()) {
            self.more = None;
        }
    }
}

/// What the worker keeps about one watcher connection: its subscriptions, and the counts
/// that bound what it may ask (`--max-watches-per-connection`). Dereferences to the list.
#[derive(Debug, Default)]
pub struct Subscriptions {
    list: WatchList,
    /// The connection's source address, for `--max-connections-per-ip` (the record carries
    /// it until it closes).
    pub peer: Option<IpAddr>,
    /// Watch requests sent to the sequencer and not answered yet.
    pub in_flight: u16,
    /// Watch requests refused on the worker so far.
    pub refused: u16,
}

impl std::ops::Deref for Subscriptions {
    type Target = WatchList;
    fn deref(&self) -> &WatchList {
        &self.list
    }
}

impl std::ops::DerefMut for Subscriptions {
    fn deref_mut(&mut self) -> &mut WatchList {
        &mut self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(mid: &str) -> Watching {
        Watching {
            mid: MatchName::new(mid),
            slot: None,
        }
    }

    fn mids(list: &WatchList) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|w| w.mid.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn one_subscription_needs_no_allocation_of_the_list() {
        let mut list = WatchList::default();
        list.push(sub("a"));
        assert!(list.more.is_none());
        assert_eq!(list.len(), 1);
        assert_eq!(std::mem::size_of::<Watching>(), 16);
        assert_eq!(std::mem::size_of::<WatchList>(), 24);
    }

    #[test]
    fn subscriptions_come_and_go_in_any_order() {
        let mut list = WatchList::default();
        for m in ["a", "b", "c", "d"] {
            list.push(sub(m));
        }
        assert_eq!(mids(&list), ["a", "b", "c", "d"]);
        assert_eq!(list.take(|w| w.is("a")).unwrap().mid.as_str(), "a");
        assert!(list.first.is_some(), "the first place is refilled");
        assert_eq!(mids(&list), ["b", "c", "d"]);
        assert!(list.take(|w| w.is("zz")).is_none());
        list.retain(|w| !w.is("c"));
        assert_eq!(mids(&list), ["b", "d"]);
        list.retain(|w| w.is("d"));
        assert_eq!(mids(&list), ["d"]);
        assert!(list.more.is_none(), "the extra room is freed");
        list.retain(|_| false);
        assert!(list.is_empty());
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn slots_are_set_through_iter_mut() {
        let mut list = WatchList::default();
        list.push(sub("a"));
        list.push(sub("b"));
        for (i, w) in list.iter_mut().enumerate() {
            w.slot = Some(i as u32);
        }
        let slots: Vec<Option<u32>> = list.iter().map(|w| w.slot).collect();
        assert_eq!(slots, [Some(0), Some(1)]);
    }

    #[test]
    fn a_record_keeps_its_subscriptions_in_48_bytes() {
        assert!(std::mem::size_of::<Subscriptions>() <= 48);
    }
}
