//! Keepalive and handshake deadlines on a caller-supplied clock.
//!
//! Nothing here reads the time: every call takes `now` in milliseconds from whatever clock
//! the runtime uses, and the answer says what to do and until when to wait, so the rules
//! are tested on fake time and the runtime arms one timer per connection.

/// What the runtime should do for a connection's keepalive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepaliveAction {
    /// Nothing to do before `until` (ms); poll again then, or on activity.
    Wait {
        /// The time (ms) of the next deadline.
        until: u64,
    },
    /// The connection has been idle for `ping_after_ms`: send a ping now.
    SendPing,
    /// No byte arrived for `dead_after_ms` after the ping: drop the connection.
    Dead,
}

/// Tracks one connection's idleness: ping it when quiet, declare it dead when the ping goes
/// unanswered (any received byte counts as an answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    ping_after_ms: u64,
    dead_after_ms: u64,
    last_activity: u64,
    /// When the unanswered ping was sent, if one is outstanding.
    ping_sent_at: Option<u64>,
}

impl Keepalive {
    /// A tracker that pings after `ping_after_ms` of silence and gives up `dead_after_ms`
    /// after that ping; the connection counts as active at `now`.
    pub fn new(ping_after_ms: u64, dead_after_ms: u64, now: u64) -> Self {
        Self {
            ping_after_ms,
            dead_after_ms,
            last_activity: now,
            ping_sent_at: None,
        }
    }

    /// Records that bytes arrived at `now` (this also answers an outstanding ping).
    pub fn on_activity(&mut self, now: u64) {
        self.last_activity = self.last_activity.max(now);
        self.ping_sent_at = None;
    }

    /// What to do at `now`. [`KeepaliveAction::SendPing`] is returned once per idle period:
    /// it marks the ping as sent, and later polls wait for the dead deadline.
    pub fn poll(&mut self, now: u64) -> KeepaliveAction {
        if let Some(sent) = self.ping_sent_at {
            let dead_at = sent.saturating_add(self.dead_after_ms);
            return if now >= dead_at {
                KeepaliveAction::Dead
            } else {
                KeepaliveAction::Wait { until: dead_at }
            };
        }
        let ping_at = self.last_activity.saturating_add(self.ping_after_ms);
        if now >= ping_at {
            self.ping_sent_at = Some(now);
            KeepaliveAction::SendPing
        } else {
            KeepaliveAction::Wait { until: ping_at }
        }
    }
}

/// A fixed deadline, e.g. for a connection to finish its HTTP request or WebSocket
/// handshake (slowloris protection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: u64,
}

impl Deadline {
    /// A deadline `timeout_ms` after `now`.
    pub fn after(now: u64, timeout_ms: u64) -> Self {
        Self {
            at: now.saturating_add(timeout_ms),
        }
    }

    /// The deadline itself (ms).
    pub fn at(&self) -> u64 {
        self.at
    }

    /// Whether it has passed at `now`.
    pub fn expired(&self, now: u64) -> bool {
        now >= self.at
    }

    /// Milliseconds left at `now` (0 once expired).
    pub fn remaining(&self, now: u64) -> u64 {
        self.at.saturating_sub(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeepaliveAction::*;

    #[test]
    fn quiet_connection_is_pinged_then_declared_dead() {
        let mut k = Keepalive::new(30_000, 10_000, 1_000);
        assert_eq!(k.poll(1_000), Wait { until: 31_000 });
        assert_eq!(k.poll(30_999), Wait { until: 31_000 });
        assert_eq!(k.poll(31_000), SendPing);
        assert_eq!(
            k.poll(31_001),
            Wait { until: 41_000 },
            "the ping is sent once"
        );
        assert_eq!(k.poll(41_000), Dead);
    }

    #[test]
    fn activity_postpones_the_ping_and_answers_it() {
        let mut k = Keepalive::new(30_000, 10_000, 0);
        k.on_activity(20_000);
        assert_eq!(k.poll(30_000), Wait { until: 50_000 });
        assert_eq!(k.poll(50_000), SendPing);
        k.on_activity(55_000); // the pong (or any byte)
        assert_eq!(k.poll(60_000), Wait { until: 85_000 });
        k.on_activity(10); // a stale timestamp never moves time back
        assert_eq!(k.poll(60_000), Wait { until: 85_000 });
    }

    #[test]
    fn late_poll_still_pings_first() {
        let mut k = Keepalive::new(1_000, 500, 0);
        assert_eq!(k.poll(10_000), SendPing);
        assert_eq!(k.poll(10_499), Wait { until: 10_500 });
        assert_eq!(k.poll(10_500), Dead);
    }

    #[test]
    fn deadline() {
        let d = Deadline::after(100, 5_000);
        assert_eq!(
            (d.at(), d.remaining(100), d.expired(5_099)),
            (5_100, 5_000, false)
        );
        assert!(d.expired(5_100));
        assert_eq!(d.remaining(9_000), 0);
        assert!(!Deadline::after(u64::MAX - 1, 10).expired(u64::MAX - 1));
    }
}
