//! The plane's inbound side: bytes read from a record go through its WebSocket session (or
//! the line protocol), commands are handed to the application, and what the session answers
//! (pongs, close echoes) is held until the commands read before it are answered; end of
//! stream, read errors and the multishot poll's completions.

use super::*;

impl<T: Default> PlaneCore<T> {
    /// Bytes read from record `key` at `now` (ciphertext for a TLS record).
    pub fn on_data(&mut self, key: u32, data: &[u8], now: u64) {
        match self.records.get(key as usize) {
            Some(rec) if rec.phase != Phase::Dying && (rec.has(TLS) || self.is_ktls(key)) => {
                self.on_tls_data(key, data, now)
            }
            Some(_) => self.on_plain(key, data, now),
            None => {}
        }
    }

    /// The record's plaintext (bytes read from a plain record, opened from a TLS one, or
    /// that came with the handshake): through its WebSocket session, or the line protocol.
    pub fn on_plain(&mut self, key: u32, data: &[u8], now: u64) {
        let Some(id) = self.id_unless_dying(key) else {
            return;
        };
        let rec = &mut self.records[key as usize];
        rec.keepalive.on_activity(now);
        if rec.flavour == Flavour::Sse {
            return; // an SSE client has nothing to say: ignored
        }
        if rec.flavour == Flavour::Line {
            if rec.phase == Phase::Open {
                let mut out = Vec::new();
                encode_error(&mut out, "unexpected input after CONNECT");
                let frame = self.share(Bytes::from(out));
                self.enqueue(key, frame, now);
                self.unshare(frame);
                self.finish(id, now);
            }
            return;
        }
        if rec.has(SESSION_CLOSED) {
            return;
        }
        let mut session = take_session(rec, &self.config);
        let mut out = Vec::new();
        session.receive(data, &mut out);
        let failed = session.failed();
        let unfinished = session.is_mid_message();
        repark(rec, session);
        if rec.phase == Phase::Open && self.config.message_timeout_ms > 0 {
            match (unfinished, rec.close_at == u64::MAX) {
                (true, true) => {
                    rec.close_at = now.saturating_add(self.config.message_timeout_ms);
                    self.schedule(key);
                }
                (false, false) => rec.close_at = u64::MAX,
                _ => {}
            }
        }
        // After a command, the rest of this read waits for the command's answer.
        let mut holding = self.held.contains_key(&key);
        let flavour = self.records[key as usize].flavour;
        for event in out {
            match event {
                WsEvent::Text(text) if flavour.is_echo() => {
                    holding |= self.take_message(id, OpCode::Text, text.into_bytes())
                }
                WsEvent::Binary(payload) if flavour.is_echo() => {
                    holding |= self.take_message(id, OpCode::Binary, payload)
                }
                WsEvent::Text(text) => {
                    let rec = &mut self.records[key as usize];
                    if rec.phase == Phase::Open {
                        rec.set(TEXT_QUEUED, true);
                        self.events.push(PlaneEvent::Text { id, text });
                        holding = true;
                    }
                }
                // Watchers do not send binary (the session refuses it with 1003).
                WsEvent::Binary(_) => {}
                WsEvent::Send(bytes) if holding => {
                    self.held.entry(key).or_default().push(Held::Send(bytes))
                }
                WsEvent::Send(bytes) => self.apply_send(key, bytes, now),
                WsEvent::Closed => {
                    if failed {
                        self.counters.protocol_errors += 1;
                    }
                    match holding {
                        true => self.held.entry(key).or_default().push(Held::Closed),
                        false => self.apply_closed(id, now),
                    }
                }
            }
        }
    }

    /// An echo record's message goes to the application, which sends it back; what the
    /// session produced after it waits until then. True when it was taken.
    fn take_message(&mut self, id: RecordId, opcode: OpCode, payload: Vec<u8>) -> bool {
        let rec = &mut self.records[id.key as usize];
        if rec.phase != Phase::Open {
            return false;
        }
        rec.set(TEXT_QUEUED, true);
        let flavour = rec.flavour;
        self.events.push(PlaneEvent::Echo {
            id,
            flavour,
            opcode,
            payload,
        });
        true
    }

    /// The application has answered the commands of record `id` (nothing of theirs is in
    /// flight any more): what its session produced after them goes out now, in order.
    pub fn release(&mut self, id: RecordId, now: u64) {
        if self.live(id).is_none_or(|r| r.phase == Phase::Dying) {
            return;
        }
        let Some(held) = self.held.remove(&id.key) else {
            return;
        };
        for h in held {
            match h {
                Held::Send(bytes) => self.apply_send(id.key, bytes, now),
                Held::Closed => self.apply_closed(id, now),
            }
        }
    }

    /// Queues bytes the session produced (a pong, a close frame).
    fn apply_send(&mut self, key: u32, bytes: Vec<u8>, now: u64) {
        let frame = self.share(Bytes::from(bytes));
        self.enqueue(key, frame, now);
        self.unshare(frame);
    }

    /// The session closed: flush and end, or end a close handshake we began.
    fn apply_closed(&mut self, id: RecordId, now: u64) {
        match self.records[id.key as usize].phase {
            Phase::Open => self.finish(id, now),
            // The peer's close frame ends the handshake we began; a TLS record sends its
            // close_notify (held back while the peer could still send) before it goes.
            Phase::Lingering if self.owes_close_notify(id.key) => {
                self.records[id.key as usize].phase = Phase::Flushing;
                self.after_write(id.key, now);
            }
            Phase::Lingering => self.teardown(id.key),
            Phase::Flushing | Phase::Dying => {}
        }
    }

    /// The peer closed its sending side of record `key`.
    pub fn on_eof(&mut self, key: u32, now: u64) {
        let Some(rec) = self.records.get_mut(key as usize) else {
            return;
        };
        rec.set(READ_OPEN, false);
        if rec.has(POLL_ARMED) {
            self.io.push_back(IoOp::CancelPoll { key });
        }
        match (rec.flavour, rec.phase) {
            // The peer ended the close handshake, or its side of a lingering close.
            (_, Phase::Lingering) => self.teardown(key),
            // `printf 'VERSION:1:CONNECT:…' | nc` half-closes: keep sending events.
            (Flavour::Line, _) | (_, Phase::Flushing) | (_, Phase::Dying) => {
                self.after_write(key, now)
            }
            // The peer vanished without a close handshake.
            // An SSE client that goes away is gone.
            (_, Phase::Open) => {
                self.counters.peer_eofs += 1;
                self.teardown(key)
            }
        }
    }

    /// Reading record `key` failed (a reset).
    pub fn on_read_error(&mut self, key: u32) {
        if self.records.contains(key as usize) {
            self.counters.io_errors += 1;
            self.teardown(key);
        }
    }

    /// A completion of record `key`'s poll; `more` when the poll stays armed.
    pub fn on_poll_done(&mut self, key: u32, more: bool) {
        let Some(rec) = self.records.get_mut(key as usize) else {
            return;
        };
        if more {
            return;
        }
        rec.set(POLL_ARMED, false);
        if rec.phase == Phase::Dying {
            self.reap(key);
        } else if rec.has(READ_OPEN) {
            // The kernel ended the multishot poll (e.g. a full completion queue): re-arm.
            rec.set(POLL_ARMED, true);
            let fd = rec.fd;
            self.io.push_back(IoOp::Poll { key, fd });
        }
    }
}
