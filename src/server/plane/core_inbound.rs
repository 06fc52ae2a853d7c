//! The plane's inbound side: bytes read from a record go through its WebSocket session (or
//! the line protocol), commands are handed to the application, and what the session answers
//! (pongs, close echoes) is held until the commands read before it are answered; end of
//! stream, read errors and the multishot poll's completions.

use super::*;

impl<T: Default> PlaneCore<T> {
    /// Bytes read from record `key` at `now`.
    pub fn on_data(&mut self, key: u32, data: &[u8], now: u64) {
        let Some(rec) = self.records.get_mut(key as usize) else {
            return;
        };
        if rec.phase == Phase::Dying {
            return;
        }
        let id = RecordId {
            key,
            serial: rec.serial,
        };
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
        let mut session = take_session(rec, self.config.ws_limits);
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
        for event in out {
            match event {
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
            (Flavour::Ws | Flavour::WsDeflate | Flavour::Sse, Phase::Open) => self.teardown(key),
        }
    }

    /// Reading record `key` failed (a reset).
    pub fn on_read_error(&mut self, key: u32) {
        if self.records.contains(key as usize) {
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
