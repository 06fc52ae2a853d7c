//! The embedded store: one SQLite database (`matchstream.db`) in WAL mode under `--data-dir`.
//!
//! Durability: every write is one transaction (a batch of events is one transaction: group
//! commit) and the call returns only once it is committed with `synchronous=FULL`, so an acknowledged event survives `kill -9` of the
//! process *and* a power loss or kernel crash. In WAL mode, `synchronous=NORMAL` would also
//! survive a process crash (the committed frames sit in the OS page cache) but it syncs the
//! WAL only at checkpoints, so the last transactions before a power loss could roll back:
//! events already acknowledged (and pushed to watchers) would vanish. `FULL` fsyncs the WAL
//! at every commit, which is what "acknowledged only once durable" means.
//!
//! Checkpoints (copying the WAL back into the database file, and syncing it) can run on a
//! thread of their own ([`SqliteStore::checkpoint_in_background`]) so that no commit waits
//! for one; the writer then never checkpoints itself.
//!
//! The WAL's sync can leave the writer's thread too ([`SqliteStore::sync_wal_separately`]):
//! the writer commits with `synchronous=OFF` and the WAL file is `fdatasync`ed by the caller
//! of [`Store::deferred_sync`]'s syncer before anything written is acknowledged — the same
//! bytes on disk, in the same order relative to the acknowledgement, as `FULL` gives, while
//! the next batch is written during the sync (every other write syncs before it returns).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection};

use super::{
    Append, BatchOutcome, HistorySource, Result, Snapshot, Store, StoreError, StoredMatch, Syncer,
};
use crate::domain::{Event, EventKind, Match, Team};

/// The database file name inside the data directory.
pub const DB_FILE: &str = "matchstream.db";

/// The schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 2;

/// Migrations, index `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    "
    CREATE TABLE teams (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        division TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE matches (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        last_ts INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE events (
        mid TEXT NOT NULL,
        seq INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (mid, seq)
    ) WITHOUT ROWID;
",
    "
    ALTER TABLE events ADD COLUMN minute INTEGER;
",
];

/// How hard SQLite syncs a commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL at every commit: survives power loss (the default; see the module doc).
    Full,
    /// fsync only at checkpoints: survives a process crash, not a power loss. Benchmarks only.
    Normal,
}

/// The SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    commits: Arc<AtomicU64>,
    checkpointer: Option<Checkpointer>,
    /// The WAL file, when its sync is the caller's ([`SqliteStore::sync_wal_separately`]).
    wal: Option<Arc<std::fs::File>>,
    /// Commits of events between the writer's own checkpoints (0: never).
    restart_every: u64,
    /// Commits of events since the writer's last checkpoint.
    since_restart: u64,
}

/// How often the background checkpointer copies the WAL into the database.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Default of `--wal-restart-commits`: with background checkpoints, the writer finishes a
/// checkpoint itself after this many commits of events, so that the WAL starts over from
/// its beginning (see [`SqliteStore::restart_wal_every`]).
pub const DEFAULT_WAL_RESTART_COMMITS: u64 = 256;

/// The background checkpoint thread; stopped and joined when the store is dropped.
#[derive(Debug)]
struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// Opens (creating when needed) `data_dir/matchstream.db` with `synchronous=FULL`.
    pub fn open(data_dir: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with(data_dir, Synchronous::Full)
    }

    /// Opens with an explicit sync level.
    pub fn open_with(data_dir: &Path, sync: Synchronous) -> Result<SqliteStore> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        let level = match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", level)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn,
            path,
            commits: Arc::default(),
            checkpointer: None,
            wal: None,
            restart_every: 0,
            since_restart: 0,
        })
    }

    /// Moves checkpoints off the commit path: a thread with its own connection runs a
    /// passive checkpoint every [`CHECKPOINT_EVERY`] (it never blocks the writer), and this
    /// connection stops checkpointing by itself. The thread stops with the store.
    pub fn checkpoint_in_background(&mut self) -> Result<()> {
        if self.checkpointer.is_some() {
            return Ok(());
        }
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                while !stopping.load(Ordering::Relaxed) {
                    std::thread::park_timeout(CHECKPOINT_EVERY);
                    let done: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        });
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "background WAL checkpoint failed");
                    }
                }
            })?;
        self.checkpointer = Some(Checkpointer {
            stop,
            thread: Some(thread),
        });
        self.restart_every = DEFAULT_WAL_RESTART_COMMITS;
        Ok(())
    }

    /// Keeps the WAL from growing without end under a storm of writes (`0`: off). The
    /// background checkpointer alone never catches up while commits keep coming, and SQLite
    /// restarts the WAL from its beginning only when a write finds it wholly checkpointed:
    /// so after `commits` commits of events the writer runs a passive checkpoint itself
    /// (the WAL synced first, the database file synced after — `FULL` for that moment),
    /// which copies only what the background thread has not, and the next commit starts the
    /// WAL over. Commits then overwrite blocks the file already has: their `fdatasync` needs
    /// no file-system journal commit, and the WAL stays at about `commits` commits' size.
    pub fn restart_wal_every(&mut self, commits: u64) {
        self.restart_every = commits;
    }

    /// Counts a commit of events; every [`SqliteStore::restart_wal_every`] commits,
    /// checkpoints on this connection (see there). A failure is logged: the commit stands.
    fn maybe_restart_wal(&mut self) {
        self.since_restart += 1;
        if self.restart_every == 0 || self.since_restart < self.restart_every {
            return;
        }
        if let Err(e) = self.checkpoint_here() {
            tracing::warn!(error = %e, "WAL checkpoint by the writer failed");
        }
    }

    fn checkpoint_here(&mut self) -> Result<()> {
        self.synced()?;
        let deferred = self.wal.is_some();
        if deferred {
            self.conn.pragma_update(None, "synchronous", "FULL")?;
        }
        let busy: rusqlite::Result<i64> =
            self.conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(0));
        if deferred {
            self.conn.pragma_update(None, "synchronous", "OFF")?;
        }
        // Busy: the background checkpointer holds the lock; try again at the next commit.
        if busy? == 0 {
            self.since_restart = 0;
        }
        Ok(())
    }

    /// Takes the WAL's sync off this connection: it commits with `synchronous=OFF`, and
    /// the WAL file is synced (`fdatasync`) after every write but [`Store::write_batch`],
    /// whose batches the [`Store::deferred_sync`] syncer makes durable from another thread.
    /// Checkpoints run in the background ([`SqliteStore::checkpoint_in_background`], started
    /// here): that connection keeps `FULL`, so a checkpoint syncs the WAL before copying it
    /// and the database file before the WAL can restart.
    pub fn sync_wal_separately(&mut self) -> Result<()> {
        if self.wal.is_some() {
            return Ok(());
        }
        self.checkpoint_in_background()?;
        // A read opens (creates) the WAL file; its directory entry is made durable once.
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })?;
        let mut wal_path = self.path.clone().into_os_string();
        wal_path.push("-wal");
        let wal = std::fs::File::open(&wal_path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        wal.sync_data()?;
        self.conn.pragma_update(None, "synchronous", "OFF")?;
        self.wal = Some(Arc::new(wal));
        Ok(())
    }

    /// With [`SqliteStore::sync_wal_separately`]: syncs the WAL now (a write returns durable).
    fn synced(&self) -> Result<()> {
        if let Some(wal) = &self.wal {
            wal.sync_data()?;
        }
        Ok(())
    }

    /// Counts the transactions of events committed (each one fsync with `FULL`): shared,
    /// so a test can watch group commits from outside the sequencer thread.
    pub fn commit_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.commits)
    }
}

/// Brings the schema up to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found..SCHEMA_VERSION {
        let tx = conn.transaction()?;
        tx.execute_batch(MIGRATIONS[version as usize])?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
    Ok(())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl Store for SqliteStore {
    fn load_all(&mut self) -> Result<Snapshot> {
        let mut teams = Vec::new();
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, division FROM teams ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Team {
                id: r.get(0)?,
                name: r.get(1)?,
                division: r.get(2)?,
            })
        })?;
        for team in rows {
            teams.push(team?);
        }

        let mut matches = Vec::new();
        let mut index = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT id, state, last_ts FROM matches ORDER BY id")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let json: String = row.get(1)?;
            let mut state: Match =
                serde_json::from_str(&json).map_err(|e| corrupt(&format!("match {id}"), e))?;
            state.last_ts = row.get(2)?;
            index.insert(id, matches.len());
            matches.push(StoredMatch {
                state,
                events: Vec::new(),
            });
        }

        let mut stmt = self
            .conn
            .prepare("SELECT seq, ts, kind, data, minute, mid FROM events ORDER BY mid, seq")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let mid: String = row.get(5)?;
            let event = decode_event(&mid, row)?;
            let Some(&i) = index.get(&mid) else {
                return Err(corrupt(
                    &format!("event {mid}#{}", event.seq),
                    "belongs to no match",
                ));
            };
            matches[i].events.push(event);
        }
        Ok(Snapshot { teams, matches })
    }

    fn put_team(&mut self, team: &Team) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO teams (id, name, division) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = ?2, division = ?3",
            )?
            .execute(params![team.id, team.name, team.division])?;
        self.synced()
    }

    fn create_match(&mut self, m: &Match) -> Result<()> {
        let state = serde_json::to_string(m).map_err(|e| corrupt("match", e))?;
        self.conn
            .prepare_cached("INSERT INTO matches (id, state, last_ts) VALUES (?1, ?2, ?3)")?
            .execute(params![m.id, state, m.last_ts])?;
        self.synced()
    }

    fn append_event(&mut self, mid: &str, event: &Event, state: &Match) -> Result<()> {
        let outcome = self.append_batch(&[Append { mid, event, state }])?;
        outcome.into_iter().next().unwrap_or(Ok(()))
    }

    fn append_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome> {
        let outcome = self.write_batch(batch)?;
        self.synced()?;
        Ok(outcome)
    }

    fn deferred_sync(&self) -> Option<Syncer> {
        let wal = Arc::clone(self.wal.as_ref()?);
        Some(Arc::new(move || wal.sync_data()))
    }

    fn write_batch(&mut self, batch: &[Append<'_>]) -> Result<BatchOutcome> {
        // The state after a match's last event of the batch is the one to store.
        let mut last: Vec<(&str, &Match)> = Vec::new();
        for a in batch {
            match last.iter_mut().find(|(mid, _)| *mid == a.mid) {
                Some(slot) => slot.1 = a.state,
                None => last.push((a.mid, a.state)),
            }
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (mid, seq, ts, kind, data, minute)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for a in batch {
                let e = a.event;
                let seq = i64::try_from(e.seq).map_err(|e| corrupt("seq", e))?;
                let data = e.data.to_string();
                insert.execute(params![a.mid, seq, e.ts, e.kind.as_str(), data, e.minute])?;
            }
            let mut update =
                tx.prepare_cached("UPDATE matches SET state = ?2, last_ts = ?3 WHERE id = ?1")?;
            for (mid, state) in &last {
                let json = serde_json::to_string(state).map_err(|e| corrupt("match", e))?;
                if update.execute(params![mid, json, state.last_ts])? != 1 {
                    // Dropping `tx` rolls every insert back.
                    return Err(StoreError::NoSuchMatch((*mid).to_owned()));
                }
            }
        }
        tx.commit()?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.maybe_restart_wal();
        Ok(batch.iter().map(|_| Ok(())).collect())
    }

    fn history_source(&self) -> Option<Box<dyn HistorySource>> {
        Some(Box::new(SqliteHistory {
            path: self.path.clone(),
            conn: None,
        }))
    }

    fn delete_match(&mut self, mid: &str) -> Result<()> {
        let tx = self.conn.transaction()?;
        tx.prepare_cached("DELETE FROM events WHERE mid = ?1")?
            .execute([mid])?;
        tx.prepare_cached("DELETE FROM matches WHERE id = ?1")?
            .execute([mid])?;
        tx.commit()?;
        self.synced()
    }
}

impl SqliteStore {
    /// The current `PRAGMA synchronous` value (0 off, 1 normal, 2 full, 3 extra).
    pub fn synchronous_level(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))?)
    }
}

/// Reads stored histories on its own read-only connection (WAL: readers never wait for the
/// writer).
struct SqliteHistory {
    path: PathBuf,
    conn: Option<Connection>,
}

impl HistorySource for SqliteHistory {
    fn history(&mut self, mid: &str, since: u64) -> Result<Option<Vec<Event>>> {
        if self.conn.is_none() {
            let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
            self.conn = Some(Connection::open_with_flags(&self.path, flags)?);
        }
        let conn = self.conn.as_ref().expect("opened above");
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM matches WHERE id = ?1)")?
            .query_row([mid], |r| r.get(0))?;
        if !exists {
            return Ok(None);
        }
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let mut stmt = conn.prepare_cached(
            "SELECT seq, ts, kind, data, minute FROM events WHERE mid = ?1 AND seq > ?2 ORDER BY seq",
        )?;
        let mut rows = stmt.query(params![mid, since])?;
        let mut events = Vec::new();
        while let Some(row) = rows.next()? {
            events.push(decode_event(mid, row)?);
        }
        Ok(Some(events))
    }
}

/// Decodes an `events` row `(seq, ts, kind, data, minute, …)` of match `mid` (`minute` is
/// NULL for events stored without one, and for every event stored before schema 2).
fn decode_event(mid: &str, row: &rusqlite::Row<'_>) -> Result<Event> {
    let seq: i64 = row.get(0)?;
    let kind: String = row.get(2)?;
    let data: String = row.get(3)?;
    let at = || format!("event {mid}#{seq}");
    Ok(Event {
        seq: u64::try_from(seq).map_err(|e| corrupt(&at(), e))?,
        ts: row.get(1)?,
        kind: kind.parse::<EventKind>().map_err(|e| corrupt(&at(), e))?,
        data: serde_json::from_str(&data).map_err(|e| corrupt(&at(), e))?,
        minute: row.get(4)?,
    })
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
