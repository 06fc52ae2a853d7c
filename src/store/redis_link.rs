//! Where a node finds its Redis primary, and one connection to it that follows a failover.
//!
//! A [`RedisTarget`] is either a fixed URL (`--redis`) or a set of Sentinels and a master
//! name (`--redis-sentinel HOST:PORT,… --redis-master-name NAME`). With Sentinels, every
//! (re)connection asks each of them `SENTINEL MASTER NAME`, skips the answers that call the
//! master down or in a fail-over, tries the addresses newest configuration epoch first (a
//! Sentinel that has not heard of the last fail-over yet still names the old primary, which
//! may still be up and believe it is one) and checks with `ROLE` that the instance really
//! is a primary. Every step has a timeout, so a dead or frozen Sentinel or primary costs at
//! most that.
//!
//! A [`RedisLink`] opens its connection lazily and drops it after any error (a refused or
//! lost connection, a timeout, `READONLY` from a demoted primary…), so the next call
//! discovers the primary again. It also drops it when a Sentinel announced a failover
//! (`+switch-master`, counted by [`SwitchWatch`]), before any error shows.
//!
//! With `--redis-min-replicas N`, [`RedisLink::confirm`] is the *fence* that tells whether
//! what this connection has written **or read** is on `N` replicas: it writes one key and
//! `WAIT`s for it; the replication stream is ordered, so everything the primary held before
//! that write is on those replicas too.
//!
//! (The `redis` crate's own `sentinel` module was not used: its discovery connects to the
//! Sentinels and to the named primary without a timeout.)

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::{Client, Connection, RedisResult, Value};

use super::{Result, StoreError};

/// The key [`RedisLink::confirm`] writes to fence what came before it.
pub const FENCE_KEY: &str = "ms:fence";

/// How a node reaches its Redis primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One fixed address, `redis://HOST:PORT/DB` (`--redis`).
    Url(String),
    /// Whatever primary the Sentinels name for `master` (`--redis-sentinel`).
    Sentinel {
        /// The Sentinels, `HOST:PORT` each, asked in this order.
        sentinels: Vec<String>,
        /// The master name the Sentinels monitor (`--redis-master-name`).
        master: String,
    },
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisTarget::Url(url) => f.write_str(url),
            RedisTarget::Sentinel { sentinels, master } => {
                write!(f, "sentinel {} master {master}", sentinels.join(","))
            }
        }
    }
}

/// How many replicas must hold an event before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Replication {
    /// `WAIT` for this many replicas after each append (`--redis-min-replicas`); 0 = none.
    pub min_replicas: usize,
    /// How long `WAIT` waits for them (`--redis-wait-ms`).
    pub wait: Duration,
}

/// Counts the failovers the Sentinels announced (`+switch-master`); links compare it with
/// the count they connected at. Cloning shares the count.
#[derive(Debug, Clone, Default)]
pub struct SwitchWatch(Arc<AtomicU64>);

impl SwitchWatch {
    /// The failovers announced so far.
    pub fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Records one more.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl RedisTarget {
    /// Parses `--redis-sentinel HOST:PORT[,HOST:PORT…]` for master `master`.
    pub fn sentinel(list: &str, master: &str) -> std::result::Result<RedisTarget, String> {
        let sentinels: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if sentinels.is_empty() {
            return Err("--redis-sentinel needs at least one HOST:PORT".into());
        }
        if let Some(bad) = sentinels.iter().find(|s| {
            s.rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        }) {
            return Err(format!("--redis-sentinel: {bad:?} is not HOST:PORT"));
        }
        if master.is_empty() {
            return Err("--redis-sentinel needs --redis-master-name".into());
        }
        Ok(RedisTarget::Sentinel {
            sentinels,
            master: master.to_owned(),
        })
    }

    /// Opens a connection to the primary (read and write timeouts set to `timeout`).
    pub fn connect(&self, timeout: Duration) -> RedisResult<Connection> {
        match self {
            RedisTarget::Url(url) => open(url, timeout),
            RedisTarget::Sentinel { sentinels, master } => {
                let mut last = None;
                let mut views = Vec::with_capacity(sentinels.len());
                for sentinel in sentinels {
                    match master_view(sentinel, master, timeout) {
                        Ok(view) => views.push(view),
                        Err(e) => {
                            tracing::debug!(sentinel, error = %e, "no primary from this sentinel");
                            last = Some(e);
                        }
                    }
                }
                for (host, port) in newest_first(views) {
                    match primary_at(&host, port, master, timeout) {
                        Ok(conn) => return Ok(conn),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| no_primary(master, "no sentinel given")))
            }
        }
    }
}

/// What one Sentinel says of the master: its configuration epoch and address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MasterView {
    epoch: u64,
    host: String,
    port: u16,
}

/// The addresses named, newest configuration first (a Sentinel that saw the last fail-over
/// has a higher epoch than one still naming the old primary), each once.
fn newest_first(mut views: Vec<MasterView>) -> Vec<(String, u16)> {
    views.sort_by_key(|v| std::cmp::Reverse(v.epoch));
    let mut out: Vec<(String, u16)> = Vec::with_capacity(views.len());
    for v in views {
        if !out.iter().any(|(h, p)| *h == v.host && *p == v.port) {
            out.push((v.host, v.port));
        }
    }
    out
}

/// Asks one Sentinel `SENTINEL MASTER name`; refuses a master it sees down or in the middle
/// of a fail-over (no write should start on an instance about to be demoted).
fn master_view(sentinel: &str, master: &str, timeout: Duration) -> RedisResult<MasterView> {
    let mut s = open(&format!("redis://{sentinel}"), timeout)?;
    let info: std::collections::HashMap<String, String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(master)
        .query(&mut s)?;
    let flags = info.get("flags").map_or("", String::as_str);
    if ["s_down", "o_down", "failover_in_progress"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return Err(no_primary(master, &format!("the sentinel says {flags}")));
    }
    let host = info.get("ip").cloned();
    let port = info.get("port").and_then(|p| p.parse().ok());
    let (Some(host), Some(port)) = (host, port) else {
        return Err(no_primary(master, "no address from the sentinel"));
    };
    let epoch = info
        .get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    Ok(MasterView { epoch, host, port })
}

/// Connects to `host:port` and checks with `ROLE` that it is a primary.
fn primary_at(host: &str, port: u16, master: &str, timeout: Duration) -> RedisResult<Connection> {
    let mut conn = open(&format!("redis://{host}:{port}/0"), timeout)?;
    let role: Vec<Value> = redis::cmd("ROLE").query(&mut conn)?;
    match role.first() {
        Some(Value::BulkString(r)) if r == b"master" => Ok(conn),
        _ => Err(no_primary(
            master,
            &format!("{host}:{port} is not a primary"),
        )),
    }
}

fn open(url: &str, timeout: Duration) -> RedisResult<Connection> {
    let conn = Client::open(url)?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

fn no_primary(master: &str, why: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::IoError,
        "no live primary",
        format!("{master}: {why}"),
    ))
}

/// A Redis connection that reconnects on demand and forgets itself after any error or an
/// announced failover.
pub struct RedisLink {
    target: RedisTarget,
    conn: Option<Connection>,
    timeout: Duration,
    switches: SwitchWatch,
    connected_at: u64,
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLink")
            .field("target", &self.target)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl RedisLink {
    /// A link to `target` whose every call times out after `timeout`; connects on first use.
    pub fn to(target: RedisTarget, timeout: Duration, switches: SwitchWatch) -> RedisLink {
        RedisLink {
            target,
            conn: None,
            timeout,
            switches,
            connected_at: 0,
        }
    }

    /// Runs `f` on the connection (opening it first when needed); drops the connection when
    /// `f` fails, so the next call starts on a fresh one (and finds the primary again).
    pub fn with<T>(&mut self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T> {
        let switches = self.switches.count();
        if self.connected_at != switches {
            self.conn = None;
        }
        if self.conn.is_none() {
            let conn = self.target.connect(self.timeout).map_err(redis_error)?;
            self.conn = Some(conn);
            self.connected_at = switches;
        }
        let conn = self.conn.as_mut().expect("connected above");
        let result = f(conn);
        if result.is_err() {
            self.conn = None;
        }
        result.map_err(redis_error)
    }

    /// The fence: `Ok` once everything the primary held before this call is on
    /// `replication.min_replicas` replicas (at once when that is 0), else
    /// [`StoreError::NotReplicated`].
    pub fn confirm(&mut self, replication: Replication) -> Result<()> {
        if replication.min_replicas == 0 {
            return Ok(());
        }
        let acked: (i64, i64) = self.with(|c| {
            redis::pipe()
                .cmd("INCR")
                .arg(FENCE_KEY)
                .cmd("WAIT")
                .arg(replication.min_replicas)
                .arg(replication.wait.as_millis() as u64)
                .query(c)
        })?;
        check_acked(acked.1, replication)
    }
}

/// `Ok` when `acked` replicas are enough for `replication`.
pub fn check_acked(acked: i64, replication: Replication) -> Result<()> {
    let acked = usize::try_from(acked).unwrap_or(0);
    if acked >= replication.min_replicas {
        Ok(())
    } else {
        Err(StoreError::NotReplicated {
            acked,
            wanted: replication.min_replicas,
        })
    }
}

/// A Redis failure as a store error (HTTP 503).
pub fn redis_error(e: redis::RedisError) -> StoreError {
    StoreError::Redis(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_lists_parse_and_bad_ones_say_why() {
        assert_eq!(
            RedisTarget::sentinel("127.0.0.1:26379, h2:26380", "ms").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["127.0.0.1:26379".into(), "h2:26380".into()],
                master: "ms".into()
            }
        );
        assert!(RedisTarget::sentinel("", "ms").is_err());
        assert!(RedisTarget::sentinel("h1", "ms")
            .unwrap_err()
            .contains("h1"));
        assert!(RedisTarget::sentinel("h1:x", "ms").is_err());
        assert!(RedisTarget::sentinel("h1:1", "").is_err());
    }

    #[test]
    fn the_newest_configuration_is_tried_first_each_address_once() {
        let view = |epoch, port| MasterView {
            epoch,
            host: "127.0.0.1".into(),
            port,
        };
        assert_eq!(
            newest_first(vec![
                view(1, 6379),
                view(2, 6380),
                view(1, 6379),
                view(2, 6380)
            ]),
            vec![("127.0.0.1".into(), 6380), ("127.0.0.1".into(), 6379)]
        );
        assert!(newest_first(Vec::new()).is_empty());
    }

    #[test]
    fn fewer_replicas_than_wanted_is_not_replicated() {
        let want = |n| Replication {
            min_replicas: n,
            wait: Duration::from_millis(10),
        };
        assert!(check_acked(0, want(0)).is_ok());
        assert!(check_acked(2, want(1)).is_ok());
        assert!(matches!(
            check_acked(0, want(1)),
            Err(StoreError::NotReplicated {
                acked: 0,
                wanted: 1
            })
        ));
    }

    #[test]
    fn a_sentinel_nobody_listens_on_is_a_connection_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let target = RedisTarget::sentinel(&format!("127.0.0.1:{port}"), "ms").unwrap();
        assert!(target.connect(Duration::from_millis(200)).is_err());
    }
}
