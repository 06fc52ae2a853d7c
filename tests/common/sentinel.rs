//! A highly available Redis for the failover tests, all real `redis-server` processes on
//! loopback: a primary (`appendonly yes`), replicas of it, and three Sentinels
//! (`redis-server FILE.conf --sentinel`, quorum 2, `down-after-milliseconds` 1000) watching
//! it as master `ms`. Each process can be SIGKILLed and started again on its port and
//! directory; all are killed on drop. Every wait is bounded.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Server, WAIT};

/// The master name the Sentinels monitor.
pub const MASTER: &str = "ms";

/// One `redis-server` process (data instance or Sentinel).
pub struct Proc {
    /// Its port on 127.0.0.1.
    pub port: u16,
    args: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The command line of a data instance on `port` (`appendonly yes`; a full sync starts at
/// once instead of after the default 5 s wait for more replicas), a replica of `primary`.
fn data_args(port: u16, primary: Option<u16>) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
        ".",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(p) = primary {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), p.to_string()]);
    }
    args
}

impl Proc {
    /// Starts `redis-server make_args(port)` in `dir` on a free port; tries another port
    /// when the one picked turns out to be taken (tests run in parallel).
    fn start(dir: PathBuf, make_args: impl Fn(u16) -> Vec<String>) -> Proc {
        std::fs::create_dir_all(&dir).expect("dir");
        let deadline = Instant::now() + WAIT;
        loop {
            let port = free_port();
            let mut p = Proc {
                port,
                args: make_args(port),
                dir: dir.clone(),
                child: None,
            };
            if p.try_spawn(Instant::now() + Duration::from_secs(3)) {
                return p;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
        }
    }

    /// Spawns the process; `true` once it answers on its port (and it is this process
    /// answering, not another test's), `false` (killed again) when not by `until`.
    fn try_spawn(&mut self, until: Instant) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("log");
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run tests/install.sh (apt-get install redis-server)");
        let me = format!("process_id:{}", child.id());
        self.child = Some(child);
        while Instant::now() < until && !self.exited() {
            if self
                .query::<String>(&["INFO", "server"])
                .is_ok_and(|i| i.lines().any(|l| l.trim() == me))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// A replica of the instance on `primary` (`appendonly yes`), kept in `dir`.
    pub fn replica_of(primary: u16, dir: PathBuf) -> Proc {
        let replica = Proc::start(dir, |port| data_args(port, Some(primary)));
        replica.wait_in_sync();
        replica
    }

    /// Waits (≤ 10 s) until this replica is in sync with its primary.
    pub fn wait_in_sync(&self) {
        super::wait_until(WAIT, "replica in sync", || {
            self.query::<String>(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("master_link_status:up"))
        });
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs one command (500 ms timeouts).
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://{}", self.addr()))?;
        let mut conn = client.get_connection_with_timeout(Duration::from_millis(500))?;
        conn.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut c = redis::cmd(cmd[0]);
        for a in &cmd[1..] {
            c.arg(*a);
        }
        c.query(&mut conn)
    }

    /// SIGKILL, no flush.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again with the same arguments, port and directory (≤ 10 s).
    pub fn start_again(&mut self) {
        self.kill9();
        let deadline = Instant::now() + WAIT;
        while !self.try_spawn(deadline) {
            assert!(
                Instant::now() < deadline,
                "redis-server {} did not start again",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A primary, its replicas and three Sentinels.
pub struct RedisHa {
    /// The instances, the initial primary first.
    pub data: Vec<Proc>,
    /// The three Sentinels.
    pub sentinels: Vec<Proc>,
    _dir: TempDir,
}

impl RedisHa {
    /// Starts a primary with `replicas` replicas and three Sentinels; returns once every
    /// replica is in sync and every Sentinel knows the replicas and the other Sentinels.
    pub fn start(replicas: usize) -> RedisHa {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut data: Vec<Proc> = Vec::new();
        for i in 0..=replicas {
            let primary = data.first().map(|p: &Proc| p.port);
            let ddir = dir.path().join(format!("data{i}"));
            data.push(Proc::start(ddir, |port| data_args(port, primary)));
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let sdir = dir.path().join(format!("sentinel{i}"));
            let conf = sdir.join("sentinel.conf");
            let primary = data[0].port;
            let make_args = |port: u16| {
                // Written afresh per attempt: Sentinel rewrites its file as it learns.
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir .\n\
                         sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
                         sentinel down-after-milliseconds {MASTER} 1000\n\
                         sentinel failover-timeout {MASTER} 4000\n\
                         sentinel parallel-syncs {MASTER} 1\n"
                    ),
                )
                .expect("sentinel.conf");
                vec![conf.display().to_string(), "--sentinel".into()]
            };
            sentinels.push(Proc::start(sdir.clone(), make_args));
        }
        let ha = RedisHa {
            data,
            sentinels,
            _dir: dir,
        };
        ha.wait_settled(replicas);
        ha
    }

    /// Waits (≤ 30 s) until the replicas are in sync and each Sentinel sees them and the two
    /// other Sentinels: a failover can then happen.
    fn wait_settled(&self, replicas: usize) {
        super::wait_until(Duration::from_secs(30), "sentinels settled", || {
            self.sentinels.iter().all(|s| {
                let info: redis::RedisResult<Vec<String>> =
                    s.query(&["SENTINEL", "MASTER", MASTER]);
                info.is_ok_and(|kv| {
                    let get = |k: &str| {
                        kv.chunks(2)
                            .find(|p| p[0] == k)
                            .map(|p| p[1].clone())
                            .unwrap_or_default()
                    };
                    get("num-slaves") == replicas.to_string() && get("num-other-sentinels") == "2"
                })
            }) && self.data[1..].iter().all(|r| {
                r.query::<String>(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("master_link_status:up"))
            })
        });
    }

    /// `--redis-sentinel` for the nodes: every Sentinel, in order.
    pub fn sentinel_list(&self) -> String {
        let addrs: Vec<String> = self.sentinels.iter().map(Proc::addr).collect();
        addrs.join(",")
    }

    /// The port of the primary as the first Sentinel that answers names it.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            s.query::<Option<(String, u16)>>(&["SENTINEL", "get-master-addr-by-name", MASTER])
                .ok()
                .flatten()
                .map(|(_, port)| port)
        })
    }

    /// The data instance on `port`.
    pub fn data_on(&mut self, port: u16) -> &mut Proc {
        self.data
            .iter_mut()
            .find(|p| p.port == port)
            .expect("a data instance on that port")
    }
}

impl Server {
    /// A cluster node `name` that finds its primary through `ha`'s Sentinels and
    /// acknowledges events once `min_replicas` replicas have them.
    pub fn start_ha_node(ha: &RedisHa, name: &str, min_replicas: usize) -> Server {
        Server::start(&[
            "--redis-sentinel",
            &ha.sentinel_list(),
            "--redis-master-name",
            MASTER,
            "--redis-min-replicas",
            &min_replicas.to_string(),
            "--redis-wait-ms",
            "1000",
            "--node-id",
            name,
            "--node-ttl-ms",
            "1500",
        ])
    }
}
