//! Listens to the Sentinels for `+switch-master` (a failover done) and counts it in a
//! [`SwitchWatch`], so that every [`super::redis_link::RedisLink`] of the node drops its
//! connection to the old primary before its next call instead of waiting for an error.
//!
//! One thread, subscribed to one Sentinel at a time; when that Sentinel goes away it moves
//! to the next (and counts a switch, since it may have missed one while unsubscribed).
//! Errors and timeouts still trigger a rediscovery on their own: this only makes it sooner.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;

use super::redis_link::{RedisTarget, SwitchWatch};

/// The Sentinel channel announcing a new primary.
pub const SWITCH_CHANNEL: &str = "+switch-master";
/// How often the thread looks at its stop flag while subscribed.
const POLL: Duration = Duration::from_millis(500);

/// Starts the watcher thread for a Sentinel `target` (nothing to watch for a plain URL).
pub fn spawn_switch_watch(
    target: &RedisTarget,
    switches: SwitchWatch,
    stop: Arc<AtomicBool>,
) -> io::Result<()> {
    let RedisTarget::Sentinel { sentinels, master } = target.clone() else {
        return Ok(());
    };
    std::thread::Builder::new()
        .name("redis-sentinel-watch".into())
        .spawn(move || {
            let mut subscribed_before = false;
            for sentinel in sentinels.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if subscribed_before {
                    switches.bump();
                }
                match listen(sentinel, &master, &switches, &stop, &mut subscribed_before) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(sentinel, error = %e, "sentinel subscription lost");
                        std::thread::sleep(POLL);
                    }
                }
            }
        })?;
    Ok(())
}

/// Subscribes on one Sentinel until `stop` (`Ok`) or an error.
fn listen(
    sentinel: &str,
    master: &str,
    switches: &SwitchWatch,
    stop: &AtomicBool,
    subscribed: &mut bool,
) -> RedisResult<()> {
    let client = redis::Client::open(format!("redis://{sentinel}"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
    let mut pubsub = conn.as_pubsub();
    pubsub.subscribe(SWITCH_CHANNEL)?;
    pubsub.set_read_timeout(Some(POLL))?;
    *subscribed = true;
    while !stop.load(Ordering::Relaxed) {
        let msg = match pubsub.get_message() {
            Ok(msg) => msg,
            Err(e) if e.is_timeout() => continue,
            Err(e) => return Err(e),
        };
        // "<master name> <old ip> <old port> <new ip> <new port>"
        let payload: String = msg.get_payload().unwrap_or_default();
        if payload.split(' ').next() == Some(master) {
            tracing::info!(sentinel, payload, "sentinel announced a new primary");
            switches.bump();
        }
    }
    Ok(())
}
