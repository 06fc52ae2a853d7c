//! Admin authentication: where the token comes from, and how often an address may fail.
//!
//! The token is given with `--admin-token`, or read once from `--admin-token-file`; when
//! neither is set a random one is generated and written to `DATA_DIR/admin-token` with mode
//! 0600 — only that path is logged, never the token (a journal is not a secret store).
//!
//! Every admin request (`PUT /1/team/…`, `POST /1/matches`, `POST /1/match/…/events`,
//! `DELETE /1/match/…`) passes [`LoginLimiter`] first: each source address has a bucket of
//! `--max-failed-logins-per-minute` failures that refills evenly over a minute; an empty
//! bucket answers 429 with `Retry-After` without looking at the token, so guessing is
//! bounded per address whatever the guesser's speed.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::proto::http::Request;

/// Name of the generated token's file inside the data directory.
pub const TOKEN_FILE_NAME: &str = "admin-token";

/// Shards of the limiter's table.
const SHARDS: usize = 16;

/// Addresses one shard tracks at most; past it, addresses whose bucket refilled are
/// forgotten first, then the oldest.
const MAX_TRACKED_PER_SHARD: usize = 4096;

/// Reads the token from `path`: the file's content without surrounding whitespace; an
/// empty file is an error.
pub fn read_token_file(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("--admin-token-file {}: {e}", path.display()),
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("--admin-token-file {}: the file is empty", path.display()),
        ));
    }
    Ok(token.to_owned())
}

/// Writes `token` to `DATA_DIR/admin-token`, readable by the owner only (a previous file is
/// replaced, never followed through a link); returns the path.
pub fn write_generated_token(data_dir: &Path, token: &str) -> io::Result<PathBuf> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(TOKEN_FILE_NAME);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(path)
}

/// Whether `request` is one of the admin writes (the routes that need the bearer token).
pub fn is_admin_request(request: &Request) -> bool {
    let segments = request.path_segments();
    matches!(
        (request.method.as_str(), segments.as_slice()),
        ("PUT", ["1", "team", _])
            | ("POST", ["1", "matches"])
            | ("POST", ["1", "match", _, "events"])
            | ("DELETE", ["1", "match", _])
    )
}

/// One address's failure allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed (fractional: it refills continuously).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// Failed-login budgets per source address, shared by every worker.
pub struct LoginLimiter {
    per_minute: u32,
    shards: Vec<Mutex<HashMap<IpAddr, Bucket>>>,
    hasher: std::collections::hash_map::RandomState,
}

impl LoginLimiter {
    /// A limiter allowing `per_minute` failures per address (0 = no limit).
    pub fn new(per_minute: u32) -> Self {
        LoginLimiter {
            per_minute,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let rate = f64::from(self.per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(f64::from(self.per_minute));
        bucket.at = now;
    }

    /// `Some(retry_after)` when `ip` has no failure left and must wait before trying again.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.per_minute == 0 {
            return None;
        }
        let mut shard = self.shard(&ip);
        let bucket = shard.get_mut(&ip)?;
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            return None;
        }
        let rate = f64::from(self.per_minute) / 60.0;
        Some(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
    }

    /// Records a failed login from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        if self.per_minute == 0 {
            return;
        }
        let full = f64::from(self.per_minute);
        let mut shard = self.shard(&ip);
        if shard.len() >= MAX_TRACKED_PER_SHARD && !shard.contains_key(&ip) {
            self.forget_some(&mut shard, now);
        }
        let bucket = shard.entry(ip).or_insert(Bucket {
            tokens: full,
            at: now,
        });
        self.refill(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Makes room in a full shard: addresses whose bucket refilled, else the oldest.
    fn forget_some(&self, shard: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let refill = Duration::from_secs(60);
        shard.retain(|_, b| now.saturating_duration_since(b.at) < refill);
        if shard.len() >= MAX_TRACKED_PER_SHARD {
            // Forget the oldest quarter at once, so this scan runs once per many inserts.
            let mut ages: Vec<Instant> = shard.values().map(|b| b.at).collect();
            let cut = ages.len() / 4;
            let (_, &mut threshold, _) = ages.select_nth_unstable(cut);
            shard.retain(|_, b| b.at > threshold);
            if shard.len() >= MAX_TRACKED_PER_SHARD {
                // All equally old: drop a quarter arbitrarily.
                let drop: Vec<IpAddr> = shard.keys().take(cut.max(1)).copied().collect();
                for ip in drop {
                    shard.remove(&ip);
                }
            }
        }
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// What the admin gate decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not an admin request, or the token is right: route it.
    Pass,
    /// Missing or wrong token → 401 (counted as a failure).
    Unauthorized,
    /// Too many failures from this address → 429 with `Retry-After` (whole seconds).
    TooManyFailures {
        /// Seconds until one more attempt is allowed.
        retry_after_secs: u64,
    },
}

/// Checks an admin request from `ip` against the token and the failure budget.
pub fn check(
    limiter: &LoginLimiter,
    request: &Request,
    token: &str,
    ip: IpAddr,
    now: Instant,
) -> Gate {
    if !is_admin_request(request) {
        return Gate::Pass;
    }
    if let Some(wait) = limiter.blocked(ip, now) {
        return Gate::TooManyFailures {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
        };
    }
    if super::api::authorized(request, token) {
        Gate::Pass
    } else {
        limiter.failed(ip, now);
        Gate::Unauthorized
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{parse_request, HttpLimits};
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

    fn request(raw: &str) -> Request {
        parse_request(raw.as_bytes(), &HttpLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn post(token: &str) -> Request {
        request(&format!(
            "POST /1/matches HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn only_the_admin_writes_are_gated() {
        assert!(is_admin_request(&post("x")));
        assert!(is_admin_request(&request(
            "DELETE /1/match/a-b-2020-01-01 HTTP/1.1\r\n\r\n"
        )));
        assert!(is_admin_request(&request(
            "PUT /1/team/elp HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )));
        assert!(is_admin_request(&request(
            "POST /1/match/a-b-2020-01-01/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )));
        assert!(!is_admin_request(&request(
            "GET /1/matches HTTP/1.1\r\n\r\n"
        )));
        assert!(!is_admin_request(&request(
            "POST /1/checkin HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
        )));
    }

    #[test]
    fn failures_past_the_budget_get_429_until_the_bucket_refills() {
        let limiter = LoginLimiter::new(3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                check(&limiter, &post("bad"), "good", A, t0),
                Gate::Unauthorized
            );
        }
        let gate = check(&limiter, &post("good"), "good", A, t0);
        assert_eq!(
            gate,
            Gate::TooManyFailures {
                retry_after_secs: 20
            },
            "even the right token waits"
        );
        assert_eq!(
            check(&limiter, &post("bad"), "good", B, t0),
            Gate::Unauthorized,
            "B has its own budget"
        );
        let later = t0 + Duration::from_secs(20);
        assert_eq!(check(&limiter, &post("good"), "good", A, later), Gate::Pass);
        assert_eq!(
            check(&limiter, &post("bad"), "good", A, later),
            Gate::Unauthorized
        );
        assert!(matches!(
            check(&limiter, &post("bad"), "good", A, later),
            Gate::TooManyFailures { .. }
        ));
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = LoginLimiter::new(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                check(&limiter, &post("bad"), "good", A, t0),
                Gate::Unauthorized
            );
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_table_stays_bounded_under_many_addresses() {
        let limiter = LoginLimiter::new(5);
        let t0 = Instant::now();
        for i in 0..(SHARDS * MAX_TRACKED_PER_SHARD + 5000) as u32 {
            limiter.failed(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(limiter.tracked() <= SHARDS * MAX_TRACKED_PER_SHARD);
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_generated_token(&dir.path().join("data"), "s3cret").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_token_file(&path).unwrap(), "s3cret");
        // A second start replaces it.
        write_generated_token(&dir.path().join("data"), "other").unwrap();
        assert_eq!(read_token_file(&path).unwrap(), "other");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_token_file(&empty).is_err());
        assert!(read_token_file(&dir.path().join("missing")).is_err());
    }
}
