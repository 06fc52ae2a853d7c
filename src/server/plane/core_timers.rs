//! The plane's timers: each record's next deadline (keepalive, send timeout, close handshake,
//! an unfinished message) kept in the one [`DeadlineWheel`](super::super::wheel::DeadlineWheel),
//! and what happens when one falls due.

use super::*;

impl<T: Default> PlaneCore<T> {
    /// Record `key`'s next deadline: keepalive, send timeout, close handshake.
    fn deadline(&self, key: u32) -> Option<u64> {
        let rec = &self.records[key as usize];
        let keepalive = (rec.flavour != Flavour::Line && rec.phase == Phase::Open)
            .then(|| self.config.keepalive.deadline(&rec.keepalive));
        let send = (self.config.send_timeout_ms > 0 && rec.queued > 0)
            .then(|| rec.progress_at.saturating_add(self.config.send_timeout_ms));
        let close = (rec.phase == Phase::Lingering).then_some(rec.close_at);
        let message =
            (rec.phase == Phase::Open && rec.close_at != u64::MAX).then_some(rec.close_at);
        [keepalive, send, close, message]
            .into_iter()
            .flatten()
            .min()
    }

    /// Makes sure record `key` has a wheel entry no later than its next deadline.
    pub(super) fn schedule(&mut self, key: u32) {
        let Some(at) = self.deadline(key) else {
            return;
        };
        let tick = at.div_ceil(self.wheel.tick_ms());
        let rec = &self.records[key as usize];
        if rec.timer != NO_TIMER && rec.timer <= tick {
            return;
        }
        let serial = rec.serial;
        let fired_at = self.wheel.insert(at, (key, serial));
        self.records[key as usize].timer = fired_at;
    }

    /// Runs every deadline due at `now`: pings, dead peers, send timeouts, lingering closes.
    pub fn poll_timers(&mut self, now: u64) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.expire(now, &mut fired);
        for (tick, (key, serial)) in fired.drain(..) {
            let Some(rec) = self.records.get_mut(key as usize) else {
                continue;
            };
            if rec.serial != serial || rec.timer != tick {
                continue; // a stale entry: a newer one is live
            }
            rec.timer = NO_TIMER;
            self.on_timer(key, now);
            if self
                .records
                .get(key as usize)
                .is_some_and(|r| r.serial == serial)
            {
                self.schedule(key);
            }
        }
        self.fired = fired;
    }

    fn on_timer(&mut self, key: u32, now: u64) {
        let rec = &mut self.records[key as usize];
        match rec.phase {
            Phase::Dying => return,
            Phase::Lingering if now >= rec.close_at => return self.teardown(key),
            _ => {}
        }
        let timeout = self.config.send_timeout_ms;
        if timeout > 0 && rec.queued > 0 && now >= rec.progress_at.saturating_add(timeout) {
            self.counters.send_timeouts += 1;
            return self.teardown(key);
        }
        if rec.flavour == Flavour::Line || rec.phase != Phase::Open {
            return;
        }
        if rec.flavour == Flavour::Sse {
            // An SSE client never talks: a comment each ping interval keeps the stream (and
            // any proxy) alive; a dead peer shows as a failed or stuck send.
            if let KeepaliveAction::SendPing = self.config.keepalive.poll(&mut rec.keepalive, now) {
                rec.keepalive.on_activity(now);
                let id = RecordId {
                    key,
                    serial: rec.serial,
                };
                let mut comment = Vec::with_capacity(16);
                crate::proto::sse::encode_comment(&mut comment, "keepalive");
                let _ = self.send(id, Bytes::from(comment), now);
            }
            return;
        }
        if now >= rec.close_at {
            // A message begun and not finished in time.
            rec.close_at = u64::MAX;
            self.counters.message_timeouts += 1;
            let id = RecordId {
                key,
                serial: rec.serial,
            };
            return self.close(id, 1008, "message not completed in time", now);
        }
        match self.config.keepalive.poll(&mut rec.keepalive, now) {
            KeepaliveAction::Wait { .. } => {}
            KeepaliveAction::Dead => {
                self.counters.dead_peers += 1;
                self.teardown(key);
            }
            KeepaliveAction::SendPing => {
                let mut session = take_session(rec, &self.config);
                let ping = session.ping(b"");
                repark(rec, session);
                self.counters.pings += 1;
                let id = RecordId {
                    key,
                    serial: rec.serial,
                };
                let _ = self.send(id, Bytes::from(ping), now);
            }
        }
    }

    /// When [`poll_timers`](Self::poll_timers) next has something to do (ms).
    pub fn next_timer(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }
}
