//! The cluster store: teams, matches and each match's event log in Redis, shared by every
//! node (`serve --redis redis://HOST:PORT/DB`).
//!
//! Keys (the per-match keys share a hash tag, so one match lives in one slot):
//!
//! * `ms:teams` — hash, team id → team JSON;
//! * `ms:matches` — set of match ids;
//! * `ms:{MID}:match` — hash: `state` (match JSON), `seq` (last event), `ts` (its time);
//! * `ms:{MID}:events` — the match's event log, a Stream whose entry ids are `SEQ-0` and
//!   whose fields are `ts`, `kind`, `data` (JSON);
//! * `ms:control` — a Stream of `team`, `create` and `delete` notices, so that every node
//!   learns of teams and matches made elsewhere;
//! * `ms:fence` — a counter written only to fence reads with `WAIT`
//!   ([`RedisLink::confirm`], with `--redis-min-replicas`).
//!
//! Each write is one Lua script, atomic in Redis. A group commit is one pipeline (one round
//! trip) of one [`APPEND_RUN`] call per match: the call carries the seq the node's replica
//! is at and appends the match's events of the batch only while the stored `seq` still
//! equals it. Otherwise it answers the stored seq, as a value distinct from success: ahead
//! of the node, [`StoreError::Conflict`] (the sequencer reads what it missed,
//! [`Store::events_after`], validates again and retries: optimistic concurrency, one total
//! order per match across nodes, the fold in Rust as the only judge); behind the node,
//! [`StoreError::Behind`] (the sequencer reloads the match, [`Store::load_match`]).
//!
//! The connection ([`RedisLink`]: a fixed URL, or the primary the Sentinels name) is opened
//! lazily and dropped on any error; every call has a timeout, so a Redis outage turns into
//! [`StoreError::Redis`] (HTTP 503) quickly instead of a stuck sequencer.
//!
//! With [`Replication::min_replicas`] `N ≥ 1` (`--redis-min-replicas`) the group commit's
//! pipeline ends with `WAIT N ms`: fewer confirmations make every appended event of the
//! batch [`StoreError::NotReplicated`] (in the primary, not acknowledged, not broadcast).
//! What this store reads from other nodes ([`Store::events_after`], [`Store::load_match`])
//! is fenced the same way ([`RedisLink::confirm`]) before the node shows it to anyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::streams::{StreamId, StreamRangeReply};
use redis::{Script, Value};

use super::redis_link::{check_acked, redis_error};
pub use super::redis_link::{RedisLink, RedisTarget, Replication, SwitchWatch};
use super::{
    Append, BatchOutcome, HistorySource, Result, Snapshot, Store, StoreError, StoredMatch,
};
use crate::domain::{Event, EventKind, Match, Team};

/// The hash of every team.
pub const TEAMS_KEY: &str = "ms:teams";
/// The set of every match id.
pub const MATCHES_KEY: &str = "ms:matches";
/// The stream of team / match creations and deletions.
pub const CONTROL_KEY: &str = "ms:control";
/// How long one Redis call may take before the write is refused.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Most entries kept in the control stream (approximate trim).
const CONTROL_MAXLEN: u64 = 100_000;

/// The hash holding match `mid`'s state.
pub fn match_key(mid: &str) -> String {
    format!("ms:{{{mid}}}:match")
}

/// The stream holding match `mid`'s events.
pub fn events_key(mid: &str) -> String {
    format!("ms:{{{mid}}}:events")
}

/// The match id of an events key, `ms:{MID}:events`.
pub fn mid_of_events_key(key: &str) -> Option<&str> {
    key.strip_prefix("ms:{")?.strip_suffix("}:events")
}

/// Where a node's stream reader starts: the control stream's last id and every match's
/// seq, as the store had them when it was loaded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadCursor {
    /// The last id of `ms:control` seen before loading (`0-0` when empty).
    pub control: String,
    /// Every loaded match with the seq its replica is at.
    pub matches: Vec<(String, u64)>,
}

/// Appends a run of events to one match if it is still at the expected seq, all or none.
/// KEYS: match hash, events stream. ARGV: expected seq, then `seq, ts, kind, data, minute`
/// for each event (`minute` empty when it has none: the entry then has no `minute` field),
/// then the state after the last one.
/// Returns `{"ok", n}` when appended, `{"missing", -1}` for an unknown match, and
/// `{"at", stored_seq}` when the match is not at the expected seq (never mistaken for
/// success, whatever the stored seq).
pub const APPEND_RUN: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'seq')
if not cur then return {'missing', -1} end
if cur ~= ARGV[1] then return {'at', tonumber(cur)} end
local n = (#ARGV - 2) / 5
for i = 0, n - 1 do
  local a = 1 + 5 * i
  if ARGV[a + 5] == '' then
    redis.call('XADD', KEYS[2], ARGV[a + 1] .. '-0', 'ts', ARGV[a + 2], 'kind', ARGV[a + 3], 'data', ARGV[a + 4])
  else
    redis.call('XADD', KEYS[2], ARGV[a + 1] .. '-0', 'ts', ARGV[a + 2], 'kind', ARGV[a + 3], 'data', ARGV[a + 4], 'minute', ARGV[a + 5])
  end
end
local last = 1 + 5 * (n - 1)
redis.call('HSET', KEYS[1], 'seq', ARGV[last + 1], 'ts', ARGV[last + 2], 'state', ARGV[#ARGV])
return {'ok', n}
"#;

/// Creates a match unless it exists. KEYS: match hash, events stream, matches set, control.
/// ARGV: mid, state JSON, control maxlen. Returns 1 when created, 0 when it existed.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'seq', '0', 'ts', '0', 'state', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'op', 'create', 'mid', ARGV[1], 'state', ARGV[2])
return 1
"#;

/// Deletes a match and its log. KEYS: match hash, events stream, matches set, control.
/// ARGV: mid, control maxlen.
const DELETE: &str = r#"
local existed = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'op', 'delete', 'mid', ARGV[1])
return existed
"#;

/// Creates or replaces a team. KEYS: teams hash, control. ARGV: id, team JSON, maxlen.
const PUT_TEAM: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'op', 'team', 'team', ARGV[2])
return 1
"#;

/// How long one call may take: 2 s, plus the `WAIT` when there is one.
fn call_timeout(replication: Replication) -> Duration {
    if replication.min_replicas == 0 {
        CALL_TIMEOUT
    } else {
        CALL_TIMEOUT + replication.wait
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// The Redis-backed [`Store`] of a cluster node.
#[derive(Debug)]
pub struct RedisStore {
    target: RedisTarget,
    replication: Replication,
    switches: SwitchWatch,
    link: RedisLink,
    cursor: Arc<Mutex<Option<ReadCursor>>>,
    append_run: Script,
}

impl RedisStore {
    /// A store on `url`; nothing is contacted until [`Store::load_all`].
    pub fn open(url: &str) -> Result<RedisStore> {
        redis::Client::open(url).map_err(redis_error)?;
        Ok(RedisStore::on(
            RedisTarget::Url(url.to_owned()),
            Replication::default(),
            SwitchWatch::default(),
        ))
    }

    /// A store on whatever primary `target` names, acknowledging an append only once
    /// `replication` is met; its links drop their connections on each failover `switches`
    /// counts. Nothing is contacted until [`Store::load_all`].
    pub fn on(target: RedisTarget, replication: Replication, switches: SwitchWatch) -> RedisStore {
        RedisStore {
            link: RedisLink::to(target.clone(), call_timeout(replication), switches.clone()),
            target,
            replication,
            switches,
            cursor: Arc::default(),
            append_run: Script::new(APPEND_RUN),
        }
    }

    /// Filled by [`Store::load_all`]: where the node's stream reader must start so that it
    /// misses nothing written after the load.
    pub fn cursor(&self) -> Arc<Mutex<Option<ReadCursor>>> {
        Arc::clone(&self.cursor)
    }
}

/// Decodes one stream entry (`SEQ-0`, fields `ts`, `kind`, `data` and, when the event has
/// one, `minute`) into an event.
pub fn decode_event(entry: &StreamId) -> Result<Event> {
    let at = || format!("stream entry {}", entry.id);
    let seq = entry
        .id
        .split_once('-')
        .and_then(|(s, _)| s.parse::<u64>().ok())
        .ok_or_else(|| corrupt(&at(), "id is not SEQ-0"))?;
    let field = |name: &str| -> Result<String> {
        entry
            .get::<String>(name)
            .ok_or_else(|| corrupt(&at(), format!("no field {name}")))
    };
    Ok(Event {
        seq,
        ts: field("ts")?.parse().map_err(|e| corrupt(&at(), e))?,
        kind: field("kind")?
            .parse::<EventKind>()
            .map_err(|e| corrupt(&at(), e))?,
        data: serde_json::from_str(&field("data")?).map_err(|e| corrupt(&at(), e))?,
        minute: entry
            .get::<String>("minute")
            .map(|m| m.parse::<u8>())
            .transpose()
            .map_err(|e| corrupt(&at(), e))?,
    })
}

fn decode_state(mid: &str, fields: &HashMap<String, String>) -> Result<Match> {
    let at = format!("match {mid}");
    let json = fields
        .get("state")
        .ok_or_else(|| corrupt(&at, "no state"))?;
    let mut state: Match = serde_json::from_str(json).map_err(|e| corrupt(&at, e))?;
    state.last_ts = fields
        .get("ts")
        .map_or(Ok(0), |t| t.parse())
        .map_err(|e| corrupt(&at, e))?;
    Ok(state)
}

fn control_args(cmd: &mut redis::ScriptInvocation<'_>) {
    cmd.arg(CONTROL_MAXLEN);
}

impl Store for RedisStore {
    fn load_all(&mut self) -> Result<Snapshot> {
        // The control stream's position first: whatever is created after it reaches the
        // reader through the stream, whatever was created before is in this snapshot.
        let last: StreamRangeReply = self.link.with(|c| {
            redis::cmd("XREVRANGE")
                .arg(CONTROL_KEY)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query(c)
        })?;
        let control = last
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        let teams_raw: HashMap<String, String> = self
            .link
            .with(|c| redis::cmd("HGETALL").arg(TEAMS_KEY).query(c))?;
        let mut teams = Vec::with_capacity(teams_raw.len());
        for (id, json) in teams_raw {
            teams.push(serde_json::from_str::<Team>(&json).map_err(|e| corrupt(&id, e))?);
        }
        teams.sort_by(|a, b| a.id.cmp(&b.id));
        let mut mids: Vec<String> = self
            .link
            .with(|c| redis::cmd("SMEMBERS").arg(MATCHES_KEY).query(c))?;
        mids.sort();
        let mut matches = Vec::with_capacity(mids.len());
        let mut positions = Vec::with_capacity(mids.len());
        for mid in mids {
            let Some(stored) = self.load_match(&mid)? else {
                continue; // deleted between SMEMBERS and here
            };
            positions.push((mid, stored.state.seq));
            matches.push(stored);
        }
        if let Err(e) = self.link.confirm(self.replication) {
            // Starting matters more: serve what the primary has, and say so.
            tracing::warn!(error = %e, "loaded what the primary has; not all of it is confirmed");
        }
        *self.cursor.lock().expect("cursor lock") = Some(ReadCursor {
            control,
            matches: positions,
        });
        Ok(Snapshot { teams, matches })
    }

    fn put_team(&mut self, team: &Team) -> Result<()> {
        let json = serde_json::to_string(team).map_err(|e| corrupt("team", e))?;
        let script = Script::new(PUT_TEAM);
        self.link.with(|c| {
            let mut call = script.key(TEAMS_KEY);
            call.key(CONTROL_KEY).arg(&team.id).arg(&json);
            control_args(&mut call);
            call.invoke::<i64>(c)
        })?;
        self.link.confirm(self.replication)
    }

    fn create_match(&mut self, m: &Match) -> Result<()> {
        let json = serde_json::to_string(m).map_err(|e| corrupt("match", e))?;
        let script = Script::new(CREATE);
        let created: i64 = self.link.with(|c| {
            let mut call = script.key(match_key(&m.id));
            call.key(events_key(&m.id))
                .key(MATCHES_KEY)
                .key(CONTROL_KEY)
                .arg(&m.id)
                .arg(&json);
            control_args(&mut call);
            call.invoke(c)
        })?;
        if created == 1 {
            self.link.confirm(self.replication)
        } else {
            Err(StoreError::Conflict(format!("match exists: {}", m.id)))
        }
    }

    fn append_event(&mut self, mid: &str, event: &Event, state: &Match) -> Result<()> {
        let outcome = self.append_batch(&[Append { mid, event, state }])?;
        outcome.into_iter().next().unwrap_or(Ok(()))
    }

    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome> {
        let runs = runs_by_match(batch);
        let mut pipe = redis::pipe();
        for run in &runs {
            let first = batch[run[0]].event.seq;
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(self.append_run.get_hash())
                .arg(2)
                .arg(match_key(batch[run[0]].mid))
                .arg(events_key(batch[run[0]].mid))
                .arg(first - 1);
            for &i in run {
                let e = batch[i].event;
                cmd.arg(e.seq)
                    .arg(e.ts)
                    .arg(e.kind.as_str())
                    .arg(e.data.to_string())
                    .arg(e.minute.map_or_else(String::new, |m| m.to_string()));
            }
            let last = batch[*run.last().expect("runs are not empty")].state;
            cmd.arg(serde_json::to_string(last).map_err(|e| corrupt("match", e))?);
            pipe.add_command(cmd);
        }
        let replication = self.replication;
        if replication.min_replicas > 0 {
            // Acknowledged = on N replicas: WAIT right behind the appends, same round trip.
            pipe.cmd("WAIT")
                .arg(replication.min_replicas)
                .arg(replication.wait.as_millis() as u64);
        }
        let script = &self.append_run;
        let mut values: Vec<Value> = self.link.with(|c| match pipe.query(c) {
            Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                script.load(c)?;
                pipe.query(c)
            }
            other => other,
        })?;
        let mut unconfirmed = None;
        if replication.min_replicas > 0 {
            let acked = values.pop().map_or(Ok(0), |v| redis::from_redis_value(&v));
            match check_acked(acked.map_err(redis_error)?, replication) {
                Ok(()) => {}
                Err(StoreError::NotReplicated { acked, wanted }) => {
                    unconfirmed = Some((acked, wanted));
                }
                Err(e) => return Err(e),
            }
        }
        let answers = values
            .iter()
            .map(redis::from_redis_value::<(String, i64)>)
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(redis_error)?;
        let mut out: Vec<Option<Result<()>>> = batch.iter().map(|_| None).collect();
        for (run, (code, stored)) in runs.iter().zip(answers) {
            let a = &batch[run[0]];
            let expected = a.event.seq - 1;
            for (k, &i) in run.iter().enumerate() {
                out[i] = Some(match code.as_str() {
                    "ok" => match unconfirmed {
                        None => Ok(()),
                        Some((acked, wanted)) => Err(StoreError::NotReplicated { acked, wanted }),
                    },
                    "missing" => Err(StoreError::NoSuchMatch(a.mid.to_owned())),
                    _ if k > 0 => Err(StoreError::Conflict(format!(
                        "an earlier event of {} failed",
                        a.mid
                    ))),
                    _ => Err(append_refused(a.mid, expected, stored)),
                });
            }
        }
        Ok(out.into_iter().map(|o| o.unwrap_or(Ok(()))).collect())
    }

    fn load_match(&mut self, mid: &str) -> Result<Option<StoredMatch>> {
        let stored = load_match(&mut self.link, mid)?;
        self.link.confirm(self.replication)?;
        Ok(stored)
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn history_source(&self) -> Option<Box<dyn HistorySource>> {
        let link = RedisLink::to(self.target.clone(), CALL_TIMEOUT, self.switches.clone());
        Some(Box::new(RedisHistory { link }))
    }

    fn delete_match(&mut self, mid: &str) -> Result<()> {
        let script = Script::new(DELETE);
        self.link.with(|c| {
            let mut call = script.key(match_key(mid));
            call.key(events_key(mid))
                .key(MATCHES_KEY)
                .key(CONTROL_KEY)
                .arg(mid);
            control_args(&mut call);
            call.invoke::<i64>(c)
        })?;
        self.link.confirm(self.replication)
    }

    fn events_after(&mut self, mid: &str, seq: u64) -> Result<Vec<Event>> {
        let log: StreamRangeReply = self.link.with(|c| {
            redis::cmd("XRANGE")
                .arg(events_key(mid))
                .arg(format!("{}-0", seq + 1))
                .arg("+")
                .query(c)
        })?;
        if !log.ids.is_empty() {
            // Only what survives a failover may reach this node's watchers.
            self.link.confirm(self.replication)?;
        }
        log.ids.iter().map(decode_event).collect()
    }
}

/// The indexes of `batch` grouped by match, each group in batch order, the groups in the
/// order of their first event.
fn runs_by_match(batch: &[Append<'_>]) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for (i, a) in batch.iter().enumerate() {
        match runs.iter_mut().find(|r| batch[r[0]].mid == a.mid) {
            Some(run) => run.push(i),
            None => runs.push(vec![i]),
        }
    }
    runs
}

/// Why [`APPEND_RUN`] refused: the store ahead of this node (a conflict: catch up) or
/// behind it (resync).
fn append_refused(mid: &str, expected: u64, stored: i64) -> StoreError {
    let stored = u64::try_from(stored).unwrap_or(0);
    if stored < expected {
        StoreError::Behind {
            mid: mid.to_owned(),
            stored,
        }
    } else {
        StoreError::Conflict(format!("match {mid} is at seq {stored}, not {expected}"))
    }
}

/// Reads one match, state and log in one transaction so that they agree.
fn load_match(link: &mut RedisLink, mid: &str) -> Result<Option<StoredMatch>> {
    let (fields, log): (HashMap<String, String>, StreamRangeReply) = link.with(|c| {
        redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(match_key(mid))
            .cmd("XRANGE")
            .arg(events_key(mid))
            .arg("-")
            .arg("+")
            .query(c)
    })?;
    if fields.is_empty() {
        return Ok(None);
    }
    let state = decode_state(mid, &fields)?;
    let events = log
        .ids
        .iter()
        .map(decode_event)
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(StoredMatch { state, events }))
}

/// Reads stored histories on a connection of its own.
struct RedisHistory {
    link: RedisLink,
}

impl HistorySource for RedisHistory {
    fn history(&mut self, mid: &str, since: u64) -> Result<Option<Vec<Event>>> {
        let exists: bool = self
            .link
            .with(|c| redis::cmd("EXISTS").arg(match_key(mid)).query(c))?;
        if !exists {
            return Ok(None);
        }
        let log: StreamRangeReply = self.link.with(|c| {
            redis::cmd("XRANGE")
                .arg(events_key(mid))
                .arg(format!("{}-0", since.saturating_add(1)))
                .arg("+")
                .query(c)
        })?;
        log.ids
            .iter()
            .map(decode_event)
            .collect::<Result<_>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value as RedisValue;

    #[test]
    fn keys_share_a_hash_tag_and_round_trip() {
        assert_eq!(match_key("a-b-2011-09-10"), "ms:{a-b-2011-09-10}:match");
        let k = events_key("a-b-2011-09-10");
        assert_eq!(k, "ms:{a-b-2011-09-10}:events");
        assert_eq!(mid_of_events_key(&k), Some("a-b-2011-09-10"));
        assert_eq!(mid_of_events_key("ms:control"), None);
    }

    #[test]
    fn stream_entries_decode_into_events() {
        let mut map = HashMap::new();
        map.insert("ts".into(), RedisValue::BulkString(b"1000".to_vec()));
        map.insert("kind".into(), RedisValue::BulkString(b"goal".to_vec()));
        map.insert(
            "data".into(),
            RedisValue::BulkString(br#"{"team":"tig"}"#.to_vec()),
        );
        let entry = StreamId {
            id: "7-0".into(),
            map,
        };
        let e = decode_event(&entry).unwrap();
        assert_eq!(
            (e.seq, e.ts, e.kind, e.data),
            (7, 1000, EventKind::Goal, serde_json::json!({"team": "tig"}))
        );
        assert_eq!(e.minute, None);
        let mut entry = entry;
        entry
            .map
            .insert("minute".into(), RedisValue::BulkString(b"67".to_vec()));
        assert_eq!(decode_event(&entry).unwrap().minute, Some(67));
        entry
            .map
            .insert("minute".into(), RedisValue::BulkString(b"x".to_vec()));
        assert!(decode_event(&entry).is_err());
        let bad = StreamId {
            id: "x".into(),
            map: HashMap::new(),
        };
        assert!(decode_event(&bad).is_err());
    }
}
