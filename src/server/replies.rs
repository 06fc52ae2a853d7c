//! Answers that arrive later through the worker's inbox (from the sequencer), awaited by
//! the connection task that asked.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

use std::cell::Cell;
use std::collections::HashMap;

enum Slot<T> {
    Waiting(Option<Waker>),
    Ready(T),
}

/// A table of outstanding requests, keyed by ticket. Tickets are never reused, so a late
/// answer for an abandoned ticket cannot reach a newer request.
pub struct ReplyTable<T> {
    slots: RefCell<HashMap<u64, Slot<T>>>,
    next: Cell<u64>,
}

impl<T> Default for ReplyTable<T> {
    fn default() -> Self {
        ReplyTable {
            slots: RefCell::new(HashMap::new()),
            next: Cell::new(0),
        }
    }
}

impl<T> ReplyTable<T> {
    /// Opens a ticket for an answer to come.
    pub fn open(&self) -> u64 {
        let ticket = self.next.get();
        self.next.set(ticket + 1);
        self.slots.borrow_mut().insert(ticket, Slot::Waiting(None));
        ticket
    }

    /// Closes a ticket nobody will wait on (the request could not be sent).
    pub fn close(&self, ticket: u64) {
        self.slots.borrow_mut().remove(&ticket);
    }

    /// Delivers the answer for `ticket` and wakes its waiter; unknown tickets are ignored.
    pub fn fulfil(&self, ticket: u64, value: T) {
        let mut slots = self.slots.borrow_mut();
        if let Some(slot) = slots.get_mut(&ticket) {
            if let Slot::Waiting(Some(w)) = std::mem::replace(slot, Slot::Ready(value)) {
                w.wake();
            }
        }
    }

    /// Waits for the answer to `ticket` and closes the ticket.
    pub async fn wait(&self, ticket: u64) -> T {
        let guard = TicketGuard {
            table: self,
            ticket,
            done: false,
        };
        let value = poll_fn(|cx| {
            let mut slots = self.slots.borrow_mut();
            match slots.get_mut(&ticket) {
                Some(Slot::Ready(_)) => match slots.remove(&ticket) {
                    Some(Slot::Ready(v)) => Poll::Ready(v),
                    _ => unreachable!("checked just above"),
                },
                Some(Slot::Waiting(w)) => {
                    *w = Some(cx.waker().clone());
                    Poll::Pending
                }
                None => unreachable!("a ticket is only closed by its waiter"),
            }
        })
        .await;
        let mut guard = guard;
        guard.done = true;
        value
    }
}

/// Closes a ticket whose waiter went away (the connection dropped) before the answer came.
struct TicketGuard<'a, T> {
    table: &'a ReplyTable<T>,
    ticket: u64,
    done: bool,
}

impl<T> Drop for TicketGuard<'_, T> {
    fn drop(&mut self) {
        if !self.done {
            let mut slots = self.table.slots.borrow_mut();
            slots.remove(&self.ticket);
        }
    }
}
