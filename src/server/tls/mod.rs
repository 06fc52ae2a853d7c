//! TLS for both listeners (`--tls-cert PEM --tls-key PEM`): HTTPS/WSS on `--listen`, the line
//! protocol over TLS on `--tcp-listen`.
//!
//! - [`session`] is the sans-I/O record layer of one connection (rustls's unbuffered API):
//!   ciphertext in → plaintext for the unchanged protocol handlers, and their plaintext →
//!   ciphertext out. An idle connection holds no buffer.
//! - [`records`] takes over a TLS 1.3 connection once its handshake is done, from the traffic
//!   secrets (what kTLS would be given): ~130 bytes per connection instead of rustls's state.
//! - [`socket`] is the thin I/O shell a connection's task reads and writes through until its
//!   handshake and HTTP phase are over: a plain socket, or one with a [`session::TlsSession`].
//! - [`sniff`] tells a plain client on a TLS port apart (plain HTTP, a plain line `CONNECT`)
//!   and words its plaintext answer (`400` "use https", `ERROR: TLS required`).
//! - [`Certs`] holds the certificate of the moment; `SIGHUP` reloads it from the same files
//!   ([`Certs::reload`]): new handshakes use the new one, open connections keep theirs, and a
//!   bad new file keeps the old certificate.
//! - [`ktls`] hands a TLS 1.3 watcher's sending side to the kernel (`--ktls auto`, where the
//!   kernel has the `tls` ULP): the plane then sends it the shared plaintext frame.
//! - [`tickets`] seals session tickets with keys kept in the data directory, so a client
//!   that reconnects after a restart resumes.
//!
//! After its handshake a TLS watcher is a record of the watcher plane like any other: its
//! session moves there (`Socket::into_parts`) and seals each frame the record queues.

pub mod key_schedule;
pub mod ktls;
pub mod records;
pub mod secret_capture;
pub mod session;
pub mod sniff;
pub mod socket;
pub mod tickets;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ProducesTickets;
use rustls::ServerConfig;

use super::metrics::TlsHandshakeFailure;

/// Where the certificate chain and its private key are read from (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The private key of the leaf (`--tls-key`): PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
}

/// The TLS settings of the moment, shared by every worker; replaced whole on reload.
pub struct Certs {
    files: TlsFiles,
    tickets: Arc<dyn ProducesTickets>,
    current: RwLock<Arc<ServerConfig>>,
}

impl Certs {
    /// Loads the certificate and key, and the session-ticket keys kept in `data_dir` (made
    /// there on first start); the error names the file at fault and why.
    pub fn load(files: TlsFiles, data_dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("--data-dir {}: {e}", data_dir.display()))?;
        let tickets: Arc<dyn ProducesTickets> =
            Arc::new(tickets::PersistentTickets::open(data_dir)?);
        let config = server_config(&files, Some(tickets.clone()))?;
        Ok(Certs {
            files,
            tickets,
            current: RwLock::new(config),
        })
    }

    /// The settings a new connection's handshake uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("TLS settings lock").clone()
    }

    /// Reads the files again and, if they hold a usable certificate and key, makes them the
    /// ones new handshakes use; otherwise keeps the old ones and says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files, Some(self.tickets.clone()))?;
        *self.current.write().expect("TLS settings lock") = config;
        Ok(())
    }

    /// The files the settings come from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// Builds the rustls server settings from the PEM files: TLS 1.3 and 1.2 with the `ring`
/// provider, ALPN `http/1.1` (clients that offer no ALPN, e.g. line-protocol clients, are
/// served too), no client certificates, no early data, secret extraction on (for
/// [`records`]); session tickets sealed by `tickets` (none without).
pub fn server_config(
    files: &TlsFiles,
    tickets: Option<Arc<dyn ProducesTickets>>,
) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "--tls-key {}: no PRIVATE KEY in the file",
            files.key.display()
        ),
        e => format!("--tls-key {}: {e}", files.key.display()),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "--tls-cert {} / --tls-key {}: {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless session tickets (see `tickets`): a reconnect storm after a restart or a
    // network blip resumes instead of paying a full handshake per watcher.
    if let Some(tickets) = tickets {
        config.ticketer = tickets;
    }
    // TLS 1.3 connections continue on `records::Records` after the handshake, which needs
    // the traffic secrets for `KeyUpdate`s as well as the keys.
    config.enable_secret_extraction = true;
    config.key_log = Arc::new(secret_capture::CaptureTrafficSecrets);
    Ok(Arc::new(config))
}

/// Why a handshake failed, for `/metrics`: the rustls error behind a failed read.
pub fn handshake_failure(e: &std::io::Error) -> TlsHandshakeFailure {
    let rustls_error = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::PeerIncompatible(_)) => TlsHandshakeFailure::NoCommonSuite,
        Some(
            rustls::Error::InvalidMessage(_)
            | rustls::Error::DecryptError
            | rustls::Error::InappropriateMessage { .. }
            | rustls::Error::InappropriateHandshakeMessage { .. }
            | rustls::Error::PeerMisbehaved(_),
        ) => TlsHandshakeFailure::BadRecord,
        _ => TlsHandshakeFailure::Other,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--tls-cert {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE in the file",
            path.display()
        ));
    }
    Ok(certs)
}
