//! A throwaway `redis-server` for the cluster tests, and cluster nodes of `matchstream serve`
//! on it. The server listens on a free loopback port, keeps an append-only file in its own
//! temporary directory (so a restart keeps the data, as a production Redis would) and is
//! killed on drop. Every wait is bounded.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{signal, Server, WAIT};

/// A running `redis-server`.
pub struct Redis {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: TempDir,
}

impl Redis {
    /// Starts `redis-server` on a free port (panics with a hint when it is not installed).
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        redis.spawn();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("log");
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "redis-server not found: run tests/install.sh (apt-get install redis-server)",
                );
            self.child = Some(child);
            if self.wait_ready(deadline) {
                return;
            }
            // The port may still be held by the previous instance: try again.
            self.kill();
            assert!(
                Instant::now() < deadline,
                "redis-server did not start; log:\n{}",
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&mut self, deadline: Instant) -> bool {
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
            }
            if self.ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Whether the server answers `PING`.
    pub fn ping(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// Stops the server (SIGTERM: it flushes its append-only file), waiting at most 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    /// A cluster node `name` on `redis` (registration TTL 1.5 s, so dead nodes leave fast).
    pub fn start_node(redis: &Redis, name: &str) -> Server {
        Server::start(&[
            "--redis",
            &redis.url(),
            "--node-id",
            name,
            "--node-ttl-ms",
            "1500",
        ])
    }

    /// Waits until this node knows match `mid` (created on any node).
    pub fn wait_for_match(&self, mid: &str) {
        let path = format!("/1/match/{mid}");
        super::wait_until(WAIT, &format!("{mid} on {}", self.http), || {
            self.public()
                .request("GET", &path, None)
                .is_ok_and(|r| r.status == 200)
        });
    }

    /// Waits until this node's replica of `mid` is at `seq`.
    pub fn wait_for_seq(&self, mid: &str, seq: u64) {
        let path = format!("/1/match/{mid}");
        super::wait_until(
            WAIT,
            &format!("{mid} at seq {seq} on {}", self.http),
            || {
                self.public().request("GET", &path, None).is_ok_and(|r| {
                    r.status == 200 && super::body_json(&r)["seq"].as_u64() == Some(seq)
                })
            },
        );
    }
}
