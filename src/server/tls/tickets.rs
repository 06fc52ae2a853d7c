//! Stateless TLS session tickets whose keys outlive the process: a watcher that reconnects
//! after a restart of its node resumes its session (no signature, no certificate) instead of
//! paying a full handshake — what turns a restart's reconnect storm from a CPU spike into a
//! ripple.
//!
//! A ticket is `key name (4) ‖ nonce (12) ‖ AES-256-GCM(state)`, the key name as additional
//! data. Two keys are live: the current one seals, both open. The keys live in
//! `<data-dir>/tls-ticket-keys` (mode 0600, written whole and renamed into place); the
//! current key is retired after [`ROTATE_AFTER`] and erased after twice that, so a stolen key
//! file exposes at most two periods of resumed sessions. Several nodes behind one name may
//! share the file to resume on each other.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long a key seals tickets before the next one takes over.
pub const ROTATE_AFTER: Duration = Duration::from_secs(12 * 3600);
/// The file's name in the data directory.
pub const FILE_NAME: &str = "tls-ticket-keys";
const NAME_LEN: usize = 4;
const KEY_LEN: usize = 32;
/// One key in the file: created (seconds since the epoch, 8), name (4), key (32).
const ENTRY_LEN: usize = 8 + NAME_LEN + KEY_LEN;

/// A ticket key: its name (in every ticket it sealed) and its secret.
#[derive(Clone)]
struct TicketKey {
    created: u64,
    name: [u8; NAME_LEN],
    secret: [u8; KEY_LEN],
}

impl TicketKey {
    fn generate(rng: &SystemRandom, now: u64) -> Result<Self, String> {
        let mut key = TicketKey {
            created: now,
            name: [0; NAME_LEN],
            secret: [0; KEY_LEN],
        };
        rng.fill(&mut key.name)
            .and_then(|()| rng.fill(&mut key.secret))
            .map_err(|_| "no randomness for TLS ticket keys".to_string())?;
        Ok(key)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.secret).expect("32-byte key"))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.created.to_be_bytes());
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&self.secret);
    }

    fn decode(entry: &[u8]) -> Option<Self> {
        let entry: &[u8; ENTRY_LEN] = entry.try_into().ok()?;
        Some(TicketKey {
            created: u64::from_be_bytes(entry[..8].try_into().ok()?),
            name: entry[8..8 + NAME_LEN].try_into().ok()?,
            secret: entry[8 + NAME_LEN..].try_into().ok()?,
        })
    }
}

impl Drop for TicketKey {
    fn drop(&mut self) {
        for b in self.secret.iter_mut() {
            // SAFETY: a volatile write to a byte this value owns, so that the wipe is kept.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// The live keys: the one that seals, and the one before it (still opens).
struct KeyRing {
    current: TicketKey,
    previous: Option<TicketKey>,
}

/// Session tickets sealed with keys kept in a file (see the module doc).
pub struct PersistentTickets {
    path: PathBuf,
    rng: SystemRandom,
    keys: Mutex<KeyRing>,
}

impl std::fmt::Debug for PersistentTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentTickets")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PersistentTickets {
    /// The keys of `dir` (made, or rotated when due, and saved); the error names the file.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let path = dir.join(FILE_NAME);
        let rng = SystemRandom::new();
        let saved = match fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut keys = saved.as_deref().and_then(|bytes| {
            let mut entries = bytes.chunks_exact(ENTRY_LEN).map(TicketKey::decode);
            let current = entries.next()??;
            let previous = entries.next().flatten();
            Some(KeyRing { current, previous })
        });
        if saved.is_some() && keys.is_none() {
            tracing::warn!("{}: unreadable, new TLS ticket keys made", path.display());
        }
        let now = now_secs();
        let changed = match &mut keys {
            Some(ring) => rotate_if_due(ring, &rng, now)?,
            None => {
                keys = Some(KeyRing {
                    current: TicketKey::generate(&rng, now)?,
                    previous: None,
                });
                true
            }
        };
        let tickets = PersistentTickets {
            path,
            rng,
            keys: Mutex::new(keys.expect("made above")),
        };
        if changed {
            tickets.save()?;
        }
        Ok(tickets)
    }

    /// Writes the live keys (a temporary file renamed into place, mode 0600).
    fn save(&self) -> Result<(), String> {
        let mut bytes = Vec::with_capacity(2 * ENTRY_LEN);
        {
            let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.current.encode(&mut bytes);
            if let Some(previous) = &keys.previous {
                previous.encode(&mut bytes);
            }
        }
        let tmp = self.path.with_extension("tmp");
        let written = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        bytes.iter_mut().for_each(|b| *b = 0);
        written.map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// Rotates the keys when the current one is due (saved; a failed save is logged and
    /// the new key used in memory only).
    fn rotate(&self) {
        let changed = {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            rotate_if_due(&mut keys, &self.rng, now_secs()).unwrap_or(false)
        };
        if changed {
            if let Err(e) = self.save() {
                tracing::warn!("TLS ticket keys not saved: {e}");
            }
        }
    }
}

/// Retires the current key once it is [`ROTATE_AFTER`] old, and forgets a previous key twice
/// that old; true when anything changed.
fn rotate_if_due(keys: &mut KeyRing, rng: &SystemRandom, now: u64) -> Result<bool, String> {
    let period = ROTATE_AFTER.as_secs();
    let mut changed = false;
    if now.saturating_sub(keys.current.created) >= period {
        let next = TicketKey::generate(rng, now)?;
        keys.previous = Some(std::mem::replace(&mut keys.current, next));
        changed = true;
    }
    if keys
        .previous
        .as_ref()
        .is_some_and(|p| now.saturating_sub(p.created) >= 2 * period)
    {
        keys.previous = None;
        changed = true;
    }
    Ok(changed)
}

impl ProducesTickets for PersistentTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATE_AFTER.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.rotate();
        let key = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .clone();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let name: [u8; NAME_LEN] = cipher.get(..NAME_LEN)?.try_into().ok()?;
        let nonce: [u8; NONCE_LEN] = cipher
            .get(NAME_LEN..NAME_LEN + NONCE_LEN)?
            .try_into()
            .ok()?;
        let key = {
            let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            std::iter::once(&keys.current)
                .chain(keys.previous.as_ref())
                .find(|k| k.name == name)?
                .clone()
        };
        let mut body = cipher.get(NAME_LEN + NONCE_LEN..)?.to_vec();
        let plain = key
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name),
                &mut body,
            )
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_open_after_a_restart_and_not_with_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = PersistentTickets::open(dir.path()).unwrap();
        let ticket = first.encrypt(b"session state").unwrap();
        assert_eq!(first.decrypt(&ticket).unwrap(), b"session state");
        drop(first);
        let restarted = PersistentTickets::open(dir.path()).unwrap();
        assert_eq!(restarted.decrypt(&ticket).unwrap(), b"session state");
        let other = tempfile::tempdir().unwrap();
        let stranger = PersistentTickets::open(other.path()).unwrap();
        assert!(stranger.decrypt(&ticket).is_none());
        let mut tampered = ticket.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(restarted.decrypt(&tampered).is_none());
        assert!(restarted.decrypt(&ticket[..10]).is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_retired_key_still_opens_then_is_forgotten() {
        let rng = SystemRandom::new();
        let period = ROTATE_AFTER.as_secs();
        let mut keys = KeyRing {
            current: TicketKey::generate(&rng, 1_000).unwrap(),
            previous: None,
        };
        let first = keys.current.name;
        assert!(!rotate_if_due(&mut keys, &rng, 1_000 + period - 1).unwrap());
        assert!(rotate_if_due(&mut keys, &rng, 1_000 + period).unwrap());
        assert_eq!(keys.previous.as_ref().unwrap().name, first);
        assert!(rotate_if_due(&mut keys, &rng, 1_000 + 2 * period).unwrap());
        assert!(
            keys.previous.as_ref().is_none_or(|p| p.name != first),
            "the first key is erased after two periods"
        );
    }
}
