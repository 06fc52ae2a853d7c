//! A one-shot, single-thread signal: "shutdown has begun" inside one worker.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Fires once; any number of local tasks may wait for it.
#[derive(Clone, Default)]
pub struct LocalSignal {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl LocalSignal {
    /// Fires the signal and wakes every waiter.
    pub fn fire(&self) {
        if !self.inner.fired.replace(true) {
            for w in self.inner.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        self.inner.fired.get()
    }

    /// Completes once the signal has fired.
    pub async fn wait(&self) {
        poll_fn(|cx| {
            if self.inner.fired.get() {
                Poll::Ready(())
            } else {
                let mut waiters = self.inner.waiters.borrow_mut();
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}
