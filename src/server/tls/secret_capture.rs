//! Keeps a TLS 1.3 handshake's application traffic secrets for the record layer that takes
//! over after it: rustls hands over keys and IVs (`dangerous_extract_secrets`), but a
//! `KeyUpdate` needs the secrets they were made from. rustls tells them to its [`KeyLog`]
//! (`CLIENT_TRAFFIC_SECRET_0`, `SERVER_TRAFFIC_SECRET_0`) while it processes the client's
//! first flight; this log keeps them in a per-thread slot, and the session that was being
//! processed on that thread takes them right after ([`take`]).
//!
//! A handshake runs on its worker's thread and one connection's processing is a synchronous
//! call, so whatever the slot holds after it belongs to that connection. The keys and IVs
//! made from the secrets are checked against the ones rustls hands over
//! (`records::Records::from_handshake`), so a mix-up could only close a connection, never
//! use wrong keys.

use std::cell::RefCell;

use rustls::KeyLog;

const CLIENT: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER: &str = "SERVER_TRAFFIC_SECRET_0";

/// The two application traffic secrets of one TLS 1.3 handshake, as bytes.
#[derive(Default)]
pub struct Captured {
    /// `client_application_traffic_secret_0`.
    pub client: Vec<u8>,
    /// `server_application_traffic_secret_0`.
    pub server: Vec<u8>,
}

impl Drop for Captured {
    fn drop(&mut self) {
        super::key_schedule::wipe(&mut self.client);
        super::key_schedule::wipe(&mut self.server);
    }
}

thread_local! {
    static SLOT: RefCell<Captured> = RefCell::new(Captured::default());
}

/// The [`KeyLog`] a server configuration uses to keep the application traffic secrets.
#[derive(Debug)]
pub struct CaptureTrafficSecrets;

impl KeyLog for CaptureTrafficSecrets {
    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        SLOT.with(|slot| {
            let mut slot = slot.borrow_mut();
            let field = match label {
                CLIENT => &mut slot.client,
                SERVER => &mut slot.server,
                _ => return,
            };
            super::key_schedule::wipe(field);
            field.clear();
            field.extend_from_slice(secret);
        });
    }

    fn will_log(&self, label: &str) -> bool {
        label == CLIENT || label == SERVER
    }
}

/// Empties this thread's slot (before a connection's processing starts).
pub fn clear() {
    SLOT.with(|slot| *slot.borrow_mut() = Captured::default());
}

/// The secrets logged on this thread since [`clear`], once both are there.
pub fn take() -> Option<Captured> {
    SLOT.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.client.is_empty() || slot.server.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut *slot))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_secrets_are_taken_once_and_other_labels_ignored() {
        let log = CaptureTrafficSecrets;
        clear();
        assert!(log.will_log(CLIENT) && log.will_log(SERVER));
        assert!(!log.will_log("EXPORTER_SECRET"));
        log.log(CLIENT, &[0; 32], &[1; 32]);
        assert!(take().is_none(), "not before both are there");
        log.log("CLIENT_HANDSHAKE_TRAFFIC_SECRET", &[0; 32], &[7; 32]);
        log.log(SERVER, &[0; 32], &[2; 32]);
        let both = take().unwrap();
        assert_eq!((both.client[0], both.server[0]), (1, 2));
        assert!(take().is_none(), "taken");
    }
}
