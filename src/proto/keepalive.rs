//! The keepalive rule on a caller-supplied clock: ping a connection after a silence, drop it
//! when the ping goes unanswered.
//!
//! Nothing here reads the time: every call takes `now` in milliseconds from whatever clock
//! the runtime uses, and the answer says what to do and until when to wait, so the rule is
//! tested on fake time. The runtime keeps the deadlines: the watcher plane in its one timer
//! wheel — not one timer per connection.

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

/// The keepalive rule shared by every connection of a worker: ping after `ping_after_ms` of
/// silence, give up `dead_after_ms` after an unanswered ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepalivePolicy {
    /// Silence (ms) before a ping is sent.
    pub ping_after_ms: u64,
    /// Time (ms) after the ping before the peer is declared dead.
    pub dead_after_ms: u64,
}

/// One connection's keepalive state in 16 bytes (the policy is kept once, elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveState {
    last_activity: u64,
    /// When the unanswered ping was sent; `u64::MAX` when none is outstanding.
    ping_sent_at: u64,
}

const NO_PING: u64 = u64::MAX;

impl KeepaliveState {
    /// A connection that counts as active at `now`.
    pub fn new(now: u64) -> Self {
        Self {
            last_activity: now,
            ping_sent_at: NO_PING,
        }
    }

    /// Records that bytes arrived at `now` (this also answers an outstanding ping).
    pub fn on_activity(&mut self, now: u64) {
        self.last_activity = self.last_activity.max(now);
        self.ping_sent_at = NO_PING;
    }

    /// Records that bytes we sent were taken at `now`: the connection is not idle, so no
    /// ping is due yet. An outstanding ping stays outstanding: only the peer's bytes answer it.
    pub fn on_sent(&mut self, now: u64) {
        if !self.ping_outstanding() {
            self.last_activity = self.last_activity.max(now);
        }
    }

    /// Whether a ping is outstanding.
    pub fn ping_outstanding(&self) -> bool {
        self.ping_sent_at != NO_PING
    }
}

impl KeepalivePolicy {
    /// The next deadline of `state` (ms), without changing it.
    pub fn deadline(&self, state: &KeepaliveState) -> u64 {
        if state.ping_outstanding() {
            state.ping_sent_at.saturating_add(self.dead_after_ms)
        } else {
            state.last_activity.saturating_add(self.ping_after_ms)
        }
    }

    /// What to do at `now`. [`KeepaliveAction::SendPing`] is returned once per idle period:
    /// it marks the ping as sent, and later polls wait for the dead deadline.
    pub fn poll(&self, state: &mut KeepaliveState, now: u64) -> KeepaliveAction {
        let at = self.deadline(state);
        if now < at {
            return KeepaliveAction::Wait { until: at };
        }
        if state.ping_outstanding() {
            KeepaliveAction::Dead
        } else {
            state.ping_sent_at = now;
            KeepaliveAction::SendPing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeepaliveAction::*;

    /// A policy and one connection's state, as the plane keeps them.
    struct Keepalive {
        policy: KeepalivePolicy,
        state: KeepaliveState,
    }

    impl Keepalive {
        fn new(ping_after_ms: u64, dead_after_ms: u64, now: u64) -> Self {
            let policy = KeepalivePolicy {
                ping_after_ms,
                dead_after_ms,
            };
            Keepalive {
                policy,
                state: KeepaliveState::new(now),
            }
        }

        fn on_activity(&mut self, now: u64) {
            self.state.on_activity(now);
        }

        fn poll(&mut self, now: u64) -> KeepaliveAction {
            self.policy.poll(&mut self.state, now)
        }
    }

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
}
