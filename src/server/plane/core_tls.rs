//! TLS records of the plane: a record whose socket speaks TLS keeps its session (keys, IVs,
//! sequence numbers, at most one partial record) in a side table, and is otherwise a record
//! like any other. Every frame queued on it — a broadcast's shared plaintext frame, a status,
//! a pong, a close frame — is sealed into its own ciphertext as it is queued, so that the
//! sequence numbers follow the order the bytes go out in; what it reads is opened before its
//! WebSocket, line or SSE logic sees it. Its end sends a `close_notify` after everything
//! else, then the FIN of the lingering close.
//!
//! A kTLS record (the kernel seals what it sends, see [`crate::server::tls::ktls`]) is a plain
//! record to the sending side: it has no `TLS` flag, so it is queued the broadcast's shared
//! plaintext frame like any other. Its session stays in the side table for what it reads,
//! and its closing alert goes out as a record of its own type once its queue is written.

use super::*;

impl<T: Default> PlaneCore<T> {
    /// Takes over socket `fd` whose TLS handshake (and HTTP upgrade or `CONNECT`) is done:
    /// the record speaks through `session`, and ciphertext the session still holds goes
    /// out first.
    pub fn adopt_tls(
        &mut self,
        fd: i32,
        flavour: Flavour,
        now: u64,
        mut session: TlsSession,
    ) -> RecordId {
        let id = self.adopt(fd, flavour, now);
        let pending = session.take_pending();
        self.records[id.key as usize].set(TLS, true);
        self.tls.insert(id.key, Box::new(session));
        if !pending.is_empty() {
            self.enqueue_cipher(id.key, pending, now);
        }
        id
    }

    /// Takes over socket `fd` whose sending side the kernel's TLS now seals (kTLS): a plain
    /// record to the sending side, whose `session` opens what it reads.
    pub fn adopt_ktls(
        &mut self,
        fd: i32,
        flavour: Flavour,
        now: u64,
        session: TlsSession,
    ) -> RecordId {
        debug_assert!(session.tx_in_kernel() && session.pending().is_empty());
        let id = self.adopt(fd, flavour, now);
        self.tls.insert(id.key, Box::new(session));
        id
    }

    /// Whether record `key` is a kTLS record (a session, but sent to as a plain record).
    pub(super) fn is_ktls(&self, key: u32) -> bool {
        !self.tls.is_empty() && !self.records[key as usize].has(TLS) && self.tls.contains_key(&key)
    }

    /// Queues ciphertext made for record `key` alone (it is never shared with another).
    fn enqueue_cipher(&mut self, key: u32, cipher: Vec<u8>, now: u64) {
        let frame = self.share(Bytes::from(cipher));
        self.enqueue_wire(key, frame, now);
        self.unshare(frame);
    }

    /// TLS records alive (a leak check for tests).
    pub fn tls_records(&self) -> usize {
        self.tls.len()
    }

    /// Queues `frame` on record `key`: as it is for a plain record, sealed into the
    /// record's own ciphertext for a TLS one (a failed seal ends the record).
    pub(super) fn enqueue(&mut self, key: u32, frame: FrameId, now: u64) {
        let rec = &self.records[key as usize];
        if rec.has(TLS_NOTIFIED) {
            // Nothing follows our close_notify (RFC 8446 §6.1): a late pong, say, is dropped.
            return;
        }
        if !rec.has(TLS) {
            // A plain record, or a kTLS one: the kernel seals the shared frame.
            return self.enqueue_wire(key, frame, now);
        }
        let sealed = match self.tls.get_mut(&key) {
            Some(session) => session.seal(self.frames.bytes(frame)),
            None => Err(rustls::Error::General("no TLS session".into())),
        };
        match sealed {
            Ok(cipher) => {
                self.enqueue_cipher(key, cipher, now);
            }
            Err(e) => {
                tracing::debug!(key, "TLS seal failed: {e}");
                self.counters.tls_errors += 1;
                self.teardown(key);
            }
        }
    }

    /// Queues record `key`'s `close_notify` if it is a TLS record that has not sent it yet;
    /// true when something was queued.
    pub(super) fn queue_close_notify(&mut self, key: u32, now: u64) -> bool {
        if self.owes_close_notify(key) && self.is_ktls(key) {
            // Everything queued is written: the alert follows it straight away.
            let rec = &mut self.records[key as usize];
            rec.set(TLS_NOTIFIED, true);
            let fd = rec.fd;
            if let Some(alert) = self.tls.get(&key).and_then(|s| s.kernel_alert()) {
                self.io.push_back(IoOp::SendAlert { fd, alert });
            }
            return false;
        }
        let rec = &mut self.records[key as usize];
        if !rec.has(TLS) || rec.has(TLS_NOTIFIED) {
            return false;
        }
        rec.set(TLS_NOTIFIED, true);
        let Some(session) = self.tls.get_mut(&key) else {
            return false;
        };
        let alert = session.seal_close_notify();
        if alert.is_empty() {
            return false;
        }
        self.enqueue_cipher(key, alert, now);
        true
    }

    /// Ends TLS record `key` after a TLS error: its fatal alert (if it has one to send) goes
    /// out after what is queued, then the lingering close; nothing else is sealed for it.
    fn fail_tls(&mut self, key: u32, alert: Vec<u8>, now: u64) {
        let Some(id) = self.id_unless_dying(key) else {
            return;
        };
        let ktls = self.is_ktls(key);
        let rec = &mut self.records[key as usize];
        // No close frame or close_notify can follow a fatal alert.
        rec.set(SESSION_CLOSED, true);
        if ktls {
            // Its fatal alert goes out (as the kernel's record) once the queue is written.
            return self.finish(id, now);
        }
        rec.set(TLS_NOTIFIED, true);
        if !alert.is_empty() {
            self.enqueue_cipher(key, alert, now);
        }
        self.finish(id, now);
    }

    /// Whether record `key` still owes its peer a `close_notify`.
    pub(super) fn owes_close_notify(&self, key: u32) -> bool {
        let rec = &self.records[key as usize];
        !rec.has(TLS_NOTIFIED) && (rec.has(TLS) || self.is_ktls(key))
    }

    /// Opens what a TLS record read: its plaintext goes to the record's protocol, a
    /// `close_notify` ends the peer's side as a FIN would, and a TLS error (a bad record, an
    /// unexpected message) ends the record.
    pub(super) fn on_tls_data(&mut self, key: u32, data: &[u8], now: u64) {
        let Some(session) = self.tls.get_mut(&key) else {
            return;
        };
        let mut plain = Vec::new();
        let received = session.receive(data, &mut plain);
        let peer_closed = session.peer_closed();
        let update_owed = session.update_owed();
        let alert = match received {
            Err(_) => session.take_fatal_alert(),
            Ok(()) => Vec::new(),
        };
        // What opening answered (our KeyUpdate when the peer asked for one) goes out
        // before anything sealed after it.
        let answer = match received {
            Ok(()) => session.take_pending(),
            Err(_) => Vec::new(),
        };
        if !answer.is_empty() {
            self.enqueue_cipher(key, answer, now);
        }
        if !plain.is_empty() {
            self.on_plain(key, &plain, now);
        }
        match received {
            Err(e) => {
                tracing::debug!(key, "TLS record refused: {e}");
                self.counters.tls_errors += 1;
                self.fail_tls(key, alert, now);
            }
            Ok(()) if peer_closed => self.on_eof(key, now),
            Ok(()) if update_owed && self.records[key as usize].phase == Phase::Open => {
                // The kernel's key is not renewed here: end cleanly, the client reconnects.
                tracing::debug!(key, "kTLS record asked for a KeyUpdate: closing");
                self.counters.ktls_update_closes += 1;
                if let Some(id) = self.id_unless_dying(key) {
                    self.finish(id, now);
                }
            }
            Ok(()) => {}
        }
    }
}
