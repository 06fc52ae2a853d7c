//! Cluster mode (`serve --redis …`): the threads a node runs next to its sequencer.
//!
//! * The **stream reader** ([`spawn_reader`]) has its own Redis connection and blocks in
//!   `XREAD` over the control stream and the event stream of every match the node knows.
//!   Whatever it reads becomes a [`Request::Remote`] for the sequencer, through the same
//!   channel as the workers' requests, so events written by other nodes are broadcast in
//!   sequencer order (the watch invariant holds) and each event crosses the network once
//!   per node, whatever the number of watchers. When Redis goes away it retries with a
//!   backoff and resumes from the last ids it read: no gap (with Sentinel, on whichever
//!   primary they name then). With `--redis-min-replicas N` it hands entries on only after
//!   the fence ([`RedisLink::confirm`]) says `N` replicas hold them: a watcher never sees an
//!   event a fail-over could take back.
//! * The **registry** ([`spawn_registry`]) announces the node (`SET ms:node:{id} … PX ttl`,
//!   refreshed every third of the TTL) with its WebSocket URL, TCP port and connection
//!   count, and reads the other live nodes into [`Peers`], from which `/1/checkin` picks
//!   one. A node that dies drops out when its key expires.
//!
//! Neither thread runs on a worker's event loop; workers only read [`Peers`].

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::Commands;
use serde::{Deserialize, Serialize};

use crate::domain::{Match, Team};
use crate::sequencer::{Remote, Request, SequencerHandle};
use crate::store::redis::{
    decode_event, events_key, mid_of_events_key, ReadCursor, RedisLink, RedisTarget, Replication,
    SwitchWatch, CONTROL_KEY,
};
use crate::store::StoreError;

/// The set of node ids that registered.
pub const NODES_KEY: &str = "ms:nodes";
/// How long the reader blocks in one `XREAD`, ms.
const BLOCK_MS: usize = 1_000;
/// Most entries one `XREAD` returns per stream.
const READ_COUNT: usize = 1_000;
/// Longest pause between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A node's registry key.
pub fn node_key(id: &str) -> String {
    format!("ms:node:{id}")
}

/// The cluster settings of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Where the Redis primary is: `--redis URL`, or `--redis-sentinel` and
    /// `--redis-master-name`.
    pub redis: RedisTarget,
    /// `--redis-min-replicas` and `--redis-wait-ms`.
    pub replication: Replication,
    /// This node's name in the registry.
    pub node_id: String,
    /// `ws://HOST:PORT` where watchers reach this node (`/1/ws` is appended); derived from
    /// the bound address when unset.
    pub advertise: Option<String>,
    /// The TCP line port announced to watchers; the bound one when unset.
    pub advertise_tcp_port: Option<u16>,
    /// How long a node's registration lives without a refresh.
    pub node_ttl: Duration,
}

/// One live node as announced in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Its WebSocket URL (`ws://HOST:PORT/1/ws`).
    pub ws: String,
    /// Its TCP line port.
    pub port: u16,
    /// Its open connections when it last announced itself.
    pub connections: usize,
}

/// The live nodes as last read from the registry (this node first). Workers read it on
/// `/1/checkin` only; the registry thread replaces it every refresh.
#[derive(Debug, Default)]
pub struct Peers {
    nodes: Mutex<Arc<Vec<NodeInfo>>>,
}

impl Peers {
    /// The live nodes.
    pub fn nodes(&self) -> Arc<Vec<NodeInfo>> {
        Arc::clone(&self.nodes.lock().expect("peers lock"))
    }

    fn set(&self, nodes: Vec<NodeInfo>) {
        *self.nodes.lock().expect("peers lock") = Arc::new(nodes);
    }

    /// Picks a node for a new watcher: the less loaded of two chosen at random (the
    /// "power of two choices": close to least-loaded, without sending every watcher that
    /// checks in between two refreshes to the same node).
    pub fn choose(&self) -> Option<NodeInfo> {
        let nodes = self.nodes();
        match nodes.len() {
            0 => None,
            1 => Some(nodes[0].clone()),
            n => {
                let mut rng = rand::thread_rng();
                let a = &nodes[rng.gen_range(0..n)];
                let b = &nodes[rng.gen_range(0..n)];
                Some(if b.connections < a.connections { b } else { a }.clone())
            }
        }
    }
}

/// Stops the cluster threads (at shutdown).
pub type StopFlag = Arc<AtomicBool>;

/// Starts the stream reader at `cursor` (see the module doc). With `replication`, entries
/// are handed on only once the fence ([`RedisLink::confirm`]) says they are on enough
/// replicas; until then the reader reads them again from the same ids.
pub fn spawn_reader(
    target: &RedisTarget,
    replication: Replication,
    switches: SwitchWatch,
    cursor: ReadCursor,
    sequencer: SequencerHandle,
    stop: StopFlag,
) -> io::Result<()> {
    let timeout = Duration::from_millis(BLOCK_MS as u64 + 2_000) + replication.wait;
    let mut link = RedisLink::to(target.clone(), timeout, switches);
    let mut reader = Reader {
        replication,
        control: cursor.control,
        streams: cursor
            .matches
            .into_iter()
            .map(|(mid, seq)| (mid, format!("{seq}-0")))
            .collect(),
        sequencer,
    };
    std::thread::Builder::new()
        .name("redis-reader".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(20);
            let mut down = false;
            while !stop.load(Ordering::Relaxed) {
                match reader.read_once(&mut link) {
                    Ok(()) => {
                        if down {
                            tracing::info!("redis reachable again; stream reader resumed");
                            down = false;
                        }
                        backoff = Duration::from_millis(20);
                    }
                    Err(e) => {
                        if !down {
                            tracing::warn!(error = %e, "stream reader lost redis; retrying");
                            down = true;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        })?;
    Ok(())
}

/// The reader's position: the control stream's last id and each match stream's.
struct Reader {
    replication: Replication,
    control: String,
    streams: BTreeMap<String, String>,
    sequencer: SequencerHandle,
}

impl Reader {
    fn read_once(&mut self, link: &mut RedisLink) -> Result<(), StoreError> {
        let mut keys = Vec::with_capacity(self.streams.len() + 1);
        let mut ids = Vec::with_capacity(self.streams.len() + 1);
        keys.push(CONTROL_KEY.to_owned());
        ids.push(self.control.clone());
        for (mid, id) in &self.streams {
            keys.push(events_key(mid));
            ids.push(id.clone());
        }
        let options = StreamReadOptions::default()
            .block(BLOCK_MS)
            .count(READ_COUNT);
        let reply: Option<StreamReadReply> =
            link.with(|c| c.xread_options(&keys, &ids, &options))?;
        let Some(reply) = reply else {
            return Ok(());
        };
        if reply.keys.iter().any(|k| !k.ids.is_empty()) {
            link.confirm(self.replication)?;
        }
        // Redis answers the streams in the order asked: the control stream first.
        for key in reply.keys {
            if key.key == CONTROL_KEY {
                for entry in &key.ids {
                    self.control = entry.id.clone();
                    self.on_control(entry);
                }
            } else if let Some(mid) = mid_of_events_key(&key.key) {
                self.on_events(mid, &key.ids);
            }
        }
        Ok(())
    }

    fn on_control(&mut self, entry: &StreamId) {
        let op = entry.get::<String>("op").unwrap_or_default();
        let remote = match op.as_str() {
            "team" => entry
                .get::<String>("team")
                .and_then(|json| serde_json::from_str::<Team>(&json).ok())
                .map(Remote::Team),
            "create" => entry
                .get::<String>("state")
                .and_then(|json| serde_json::from_str::<Match>(&json).ok())
                .map(|m| {
                    // A (re)created match's log starts over.
                    self.streams.insert(m.id.clone(), "0-0".into());
                    Remote::Created(Box::new(m))
                }),
            "delete" => entry.get::<String>("mid").map(|mid| {
                self.streams.remove(&mid);
                Remote::Deleted(mid)
            }),
            _ => None,
        };
        match remote {
            Some(remote) => self.submit(remote),
            None => tracing::warn!(id = entry.id, op, "unreadable control entry skipped"),
        }
    }

    fn on_events(&mut self, mid: &str, entries: &[StreamId]) {
        let Some(last) = entries.last() else {
            return;
        };
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            match decode_event(entry) {
                Ok(e) => events.push(e),
                Err(e) => tracing::error!(mid, error = %e, "unreadable event skipped"),
            }
        }
        if let Some(id) = self.streams.get_mut(mid) {
            id.clone_from(&last.id);
        }
        self.submit(Remote::Events {
            mid: mid.to_owned(),
            events,
        });
    }

    fn submit(&self, remote: Remote) {
        self.sequencer
            .submit(Request::Remote(remote), Box::new(|_reply| {}));
    }
}

/// Starts the registry thread: announces `me` (with the live connection count) every third
/// of the TTL and keeps `peers` up to date.
pub fn spawn_registry(
    target: &RedisTarget,
    switches: SwitchWatch,
    me: NodeInfo,
    ttl: Duration,
    connections: Box<dyn Fn() -> usize + Send>,
    peers: Arc<Peers>,
    stop: StopFlag,
) -> io::Result<()> {
    let mut link = RedisLink::to(target.clone(), Duration::from_secs(1), switches);
    peers.set(vec![me.clone()]);
    std::thread::Builder::new()
        .name("redis-registry".into())
        .spawn(move || {
            let period = (ttl / 3).max(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                let mut now = me.clone();
                now.connections = connections();
                match announce(&mut link, &now, ttl) {
                    Ok(nodes) => peers.set(nodes),
                    Err(e) => {
                        tracing::debug!(error = %e, "registry refresh failed");
                        peers.set(vec![now]);
                    }
                }
                std::thread::sleep(period);
            }
            let _ = link.with(|c| {
                redis::pipe()
                    .del(node_key(&me.id))
                    .srem(NODES_KEY, &me.id)
                    .query::<()>(c)
            });
        })?;
    Ok(())
}

/// Writes this node's entry and reads every live one (this node first); forgets dead ids.
fn announce(
    link: &mut RedisLink,
    me: &NodeInfo,
    ttl: Duration,
) -> Result<Vec<NodeInfo>, StoreError> {
    let json = serde_json::to_string(me).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let ids: Vec<String> = link.with(|c| {
        let (ids,): (Vec<String>,) = redis::pipe()
            .cmd("SET")
            .arg(node_key(&me.id))
            .arg(&json)
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .ignore()
            .sadd(NODES_KEY, &me.id)
            .ignore()
            .smembers(NODES_KEY)
            .query(c)?;
        Ok(ids)
    })?;
    let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
    let values: Vec<Option<String>> = if keys.is_empty() {
        Vec::new()
    } else {
        link.with(|c| redis::cmd("MGET").arg(&keys).query(c))?
    };
    let mut nodes = vec![me.clone()];
    let mut dead = Vec::new();
    for (id, value) in ids.iter().zip(values) {
        match value.and_then(|v| serde_json::from_str::<NodeInfo>(&v).ok()) {
            Some(node) if node.id != me.id => nodes.push(node),
            Some(_) => {}
            None => dead.push(id.clone()),
        }
    }
    if !dead.is_empty() {
        link.with(|c| c.srem::<_, _, ()>(NODES_KEY, &dead))?;
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, connections: usize) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            ws: format!("ws://{id}/1/ws"),
            port: 9999,
            connections,
        }
    }

    #[test]
    fn choose_prefers_the_less_loaded_and_reaches_every_node() {
        let peers = Peers::default();
        assert_eq!(peers.choose(), None);
        peers.set(vec![node("a", 0), node("b", 0), node("c", 0)]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(peers.choose().unwrap().id);
        }
        assert_eq!(seen.len(), 3, "every idle node gets watchers");
        peers.set(vec![node("a", 1000), node("b", 0)]);
        let b = (0..400)
            .filter(|_| peers.choose().unwrap().id == "b")
            .count();
        assert!(b > 250, "the idle node wins most draws: {b}/400");
    }
}
