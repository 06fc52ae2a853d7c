//! The history reader: one thread that reads ended matches' histories back from the store
//! when they are no longer kept in memory, so a worker's event loop never touches the disk.
//! Its queue is bounded ([`HISTORY_QUEUE`]); past it a request is refused at once.

use std::io;
use std::sync::mpsc;

use bytes::Bytes;

use crate::store::HistorySource;

/// History reads waiting for the reader thread past which a new one is refused (503).
pub const HISTORY_QUEUE: usize = 256;

/// What a read of the store answers: the history's JSON array, `None` for an unknown match,
/// or why it failed.
pub type StoredHistory = Result<Option<Bytes>, String>;

/// Called once with the answer, on the reader thread. Must not block.
pub type HistoryDone = Box<dyn FnOnce(StoredHistory) + Send>;

struct Job {
    mid: String,
    since: u64,
    done: HistoryDone,
}

/// Sends history reads to the reader thread. Cheap to clone.
#[derive(Clone)]
pub struct HistoryReader {
    tx: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryReader")
    }
}

/// Starts the reader thread on `source`; it ends when every [`HistoryReader`] is dropped.
pub fn spawn(mut source: Box<dyn HistorySource>) -> io::Result<HistoryReader> {
    let (tx, rx) = mpsc::sync_channel::<Job>(HISTORY_QUEUE);
    std::thread::Builder::new()
        .name("history-reader".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let answer = match source.history(&job.mid, job.since) {
                    Ok(Some(events)) => serde_json::to_vec(&events)
                        .map(|v| Some(Bytes::from(v)))
                        .map_err(|e| e.to_string()),
                    Ok(None) => Ok(None),
                    Err(e) => Err(e.to_string()),
                };
                (job.done)(answer);
            }
        })?;
    Ok(HistoryReader { tx })
}

impl HistoryReader {
    /// Queues a read of `mid`'s events after `since`; `done` gets the answer. Never blocks:
    /// when [`HISTORY_QUEUE`] reads are waiting, `done` is not called and this returns
    /// false.
    pub fn ask(&self, mid: &str, since: u64, done: HistoryDone) -> bool {
        let job = Job {
            mid: mid.to_owned(),
            since,
            done,
        };
        self.tx.try_send(job).is_ok()
    }
}
