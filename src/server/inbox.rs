//! A worker's inbox: messages from other threads (the sequencer, the main thread).
//!
//! The queue is a std mpsc channel; the wake-up is one byte on a Unix socket pair. The pair
//! is created *before* the worker calls `unshare(CLONE_FILES)`, so the write end has the same
//! descriptor number in every thread's table and any thread may wake the worker. A flag
//! coalesces wake-ups: only the first message after the worker drained its queue writes,
//! and on the sequencer thread that write waits for the end of the batch
//! ([`crate::sequencer::wakeups`]).

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Sending half; cheap to clone, usable from any thread.
pub struct InboxSender<T> {
    tx: mpsc::Sender<T>,
    wake: Arc<WakeSide>,
}

impl<T> Clone for InboxSender<T> {
    fn clone(&self) -> Self {
        InboxSender {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

struct WakeSide {
    writer: UnixStream,
    pending: AtomicBool,
}

impl WakeSide {
    fn wake(&self) {
        // A full socket buffer means a wake-up is already pending: ignoring it is fine.
        let _ = (&self.writer).write(&[1]);
    }
}

/// Receiving half, owned by the worker thread.
pub struct InboxReceiver<T> {
    rx: mpsc::Receiver<T>,
    wake: Arc<WakeSide>,
    reader: Option<UnixStream>,
}

/// Creates an inbox; call before the receiving worker unshares its descriptor table.
pub fn inbox<T>() -> io::Result<(InboxSender<T>, InboxReceiver<T>)> {
    let (writer, reader) = UnixStream::pair()?;
    writer.set_nonblocking(true)?;
    reader.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel();
    let wake = Arc::new(WakeSide {
        writer,
        pending: AtomicBool::new(false),
    });
    Ok((
        InboxSender {
            tx,
            wake: wake.clone(),
        },
        InboxReceiver {
            rx,
            wake,
            reader: Some(reader),
        },
    ))
}

impl<T> InboxSender<T> {
    /// Queues `msg` and wakes the worker; false when the worker is gone.
    pub fn send(&self, msg: T) -> bool {
        if self.tx.send(msg).is_err() {
            return false;
        }
        if !self.wake.pending.swap(true, Ordering::AcqRel) {
            // On the sequencer thread, during a batch: once, at the end of the batch.
            let wake = Arc::clone(&self.wake);
            let key = Arc::as_ptr(&wake) as usize;
            if !crate::sequencer::wakeups::defer(key, move || wake.wake()) {
                self.wake.wake();
            }
        }
        true
    }
}

impl<T> InboxReceiver<T> {
    /// Takes the wake-up socket, to be registered with the worker's event loop.
    pub fn take_reader(&mut self) -> Option<UnixStream> {
        self.reader.take()
    }

    /// Re-arms the wake-up flag; call after draining the wake socket, before `try_recv`.
    pub fn rearm(&self) {
        self.wake.pending.store(false, Ordering::SeqCst);
    }

    /// The next queued message, if any.
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn coalesces_wakeups_until_rearmed() {
        let (tx, mut rx) = inbox::<u32>().unwrap();
        let mut reader = rx.take_reader().unwrap();
        for i in 0..5 {
            assert!(tx.send(i));
        }
        let mut buf = [0u8; 16];
        assert_eq!(
            reader.read(&mut buf).unwrap(),
            1,
            "one wake-up byte for five messages"
        );
        rx.rearm();
        let got: Vec<u32> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        tx.send(9);
        assert_eq!(
            reader.read(&mut buf).unwrap(),
            1,
            "re-armed: the next message wakes again"
        );
    }

    #[test]
    fn send_fails_once_worker_is_gone() {
        let (tx, rx) = inbox::<u32>().unwrap();
        drop(rx);
        assert!(!tx.send(1));
    }
}
