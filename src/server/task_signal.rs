//! How a worker reaches a connection that is still in its monoio task (its TLS handshake,
//! its HTTP requests, its line `CONNECT`): a wake-up and a request to close, which the task
//! sees wherever it waits ([`super::stream::read_more`]). After that phase a connection is a
//! plane record, which the worker drives itself.

use std::cell::{Cell, RefCell};
use std::task::Waker;

/// A connection task's wake-up and close request.
#[derive(Default)]
pub struct TaskSignal {
    kicked: Cell<bool>,
    closing: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl TaskSignal {
    /// Asks the task to end its connection (the worker is shutting down) and wakes it.
    pub fn close_now(&self) {
        self.closing.set(true);
        self.kicked.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Whether the task was asked to close.
    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Whether the task was woken since it last asked (and forgets it).
    pub fn take_kick(&self) -> bool {
        self.kicked.replace(false)
    }

    /// The waker of the task's current wait.
    pub fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_request_is_a_kick_once_and_stays_a_close() {
        let signal = TaskSignal::default();
        assert!(!signal.take_kick() && !signal.is_closing());
        signal.close_now();
        assert!(signal.take_kick());
        assert!(!signal.take_kick(), "taken");
        assert!(signal.is_closing());
    }
}
