//! Deferred wake-ups. While the sequencer thread handles one batch, a receiver it sends to
//! (a worker's inbox) may put off waking its thread until the batch is done: one wake-up
//! per receiver per batch instead of one per message, so a group commit of N events costs
//! each worker one system call, not 2N.

use std::cell::RefCell;

type Wake = Box<dyn FnOnce()>;

thread_local! {
    /// `Some` while a batch runs on this thread: the wake-ups put off, keyed by receiver.
    static DEFERRED: RefCell<Option<Vec<(usize, Wake)>>> = const { RefCell::new(None) };
}

/// Puts off `wake` (for the receiver `key`) until the end of the batch running on this
/// thread; the first one per key is kept. Returns false, and keeps nothing, when no batch
/// runs here: then the caller wakes at once.
pub fn defer(key: usize, wake: impl FnOnce() + 'static) -> bool {
    DEFERRED.with(|d| match &mut *d.borrow_mut() {
        Some(list) => {
            if !list.iter().any(|(k, _)| *k == key) {
                list.push((key, Box::new(wake)));
            }
            true
        }
        None => false,
    })
}

/// Runs `f` as one batch: the wake-ups deferred meanwhile run when it returns.
pub(crate) fn batch<R>(f: impl FnOnce() -> R) -> R {
    let outer = DEFERRED.with(|d| d.borrow_mut().replace(Vec::new()));
    let result = f();
    let wakes = DEFERRED.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer));
    for (_, wake) in wakes.unwrap_or_default() {
        wake();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn wakes_once_per_receiver_at_the_end_of_a_batch() {
        let woken = Rc::new(Cell::new(0));
        assert!(!defer(1, || {}), "no batch: wake at once");
        batch(|| {
            for key in [1, 2, 1, 1, 2] {
                let w = Rc::clone(&woken);
                assert!(defer(key, move || w.set(w.get() + 1)));
            }
            assert_eq!(woken.get(), 0, "nothing woken during the batch");
        });
        assert_eq!(woken.get(), 2);
        assert!(!defer(1, || {}));
    }
}
