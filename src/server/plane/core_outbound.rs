//! The plane's outbound side: a record's queue (a head frame being written and a backlog
//! that exists only while the socket is behind), one SEND in flight per record, a backlog
//! joined into one SEND when the record fell behind, and the completions of those SENDs.

use super::*;

/// Most bytes one coalesced SEND of a record that is behind carries.
const COALESCE_BYTES: usize = 64 * 1024;

impl<T: Default> PlaneCore<T> {
    /// Queues `frame` (bytes exactly as they go on the wire: plaintext, or a TLS record's
    /// ciphertext) on record `key` without checks, and starts a send if none is in flight.
    pub(super) fn enqueue_wire(&mut self, key: u32, frame: FrameId, now: u64) {
        let len = self.frames.bytes(frame).len() as u32;
        self.frames.retain(frame);
        let rec = &mut self.records[key as usize];
        let was_empty = rec.queued == 0 && rec.head.is_none();
        rec.queued = rec.queued.saturating_add(len);
        if rec.head.is_none() {
            rec.head = frame;
            rec.head_sent = 0;
        } else {
            rec.backlog
                .get_or_insert_with(Default::default)
                .push_back(frame);
        }
        if was_empty {
            rec.progress_at = now;
        }
        self.start_send(key);
        if was_empty && self.config.send_timeout_ms > 0 {
            self.schedule(key);
        }
    }

    pub(super) fn start_send(&mut self, key: u32) {
        let rec = &self.records[key as usize];
        if rec.has(SENDING) || rec.head.is_none() || rec.phase == Phase::Dying {
            return;
        }
        if rec.backlog.is_some() {
            self.coalesce(key);
        }
        let rec = &mut self.records[key as usize];
        rec.set(SENDING, true);
        self.io.push_back(IoOp::Send {
            key,
            fd: rec.fd,
            frame: rec.head,
            offset: rec.head_sent,
        });
    }

    /// A record that is behind sends its backlog in one SEND, not one per frame: the unsent
    /// rest of its head and the frames after it (up to [`COALESCE_BYTES`]) are joined into
    /// one frame of its own. Only a record that fell behind pays the copy.
    fn coalesce(&mut self, key: u32) {
        let Self {
            records, frames, ..
        } = self;
        let rec = &mut records[key as usize];
        let Some(backlog) = rec.backlog.as_mut() else {
            return;
        };
        let head = frames.bytes(rec.head);
        let mut joined = Vec::with_capacity(COALESCE_BYTES.min(rec.queued as usize));
        joined.extend_from_slice(&head[rec.head_sent as usize..]);
        frames.release(rec.head);
        while let Some(&next) = backlog.front() {
            let bytes = frames.bytes(next);
            if joined.len() + bytes.len() > COALESCE_BYTES {
                break;
            }
            joined.extend_from_slice(bytes);
            frames.release(next);
            backlog.pop_front();
        }
        if backlog.is_empty() {
            rec.backlog = None;
        }
        rec.head = frames.insert(Bytes::from(joined));
        rec.head_sent = 0;
    }

    /// A send of record `key` completed with `result` (bytes written, or `-errno`).
    pub fn on_send_done(&mut self, key: u32, result: i32, now: u64) {
        let Some(rec) = self.records.get_mut(key as usize) else {
            return;
        };
        rec.set(SENDING, false);
        if rec.phase == Phase::Dying {
            self.drop_queue(key);
            return self.reap(key);
        }
        if result <= 0 {
            self.counters.io_errors += 1;
            return self.teardown(key);
        }
        let written = result as u32;
        rec.head_sent += written;
        rec.queued -= written.min(rec.queued);
        rec.progress_at = now;
        let head_len = self.frames.bytes(rec.head).len() as u32;
        if rec.head_sent >= head_len {
            let done = rec.head;
            rec.head = match rec.backlog.as_mut().and_then(|b| b.pop_front()) {
                Some(next) => next,
                None => {
                    rec.backlog = None;
                    FrameId::NONE
                }
            };
            rec.head_sent = 0;
            self.frames.release(done);
            if self.config.sends_defer_pings {
                rec.keepalive.on_sent(now);
            }
        } else {
            self.counters.short_writes += 1;
        }
        self.start_send(key);
        self.after_write(key, now);
    }
}
