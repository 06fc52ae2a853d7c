//! TLS for the end-to-end tests: a CA and server certificates made by the test (rcgen), the
//! client settings trusting that CA, and the [`Wire`] trait that lets the WebSocket and line
//! clients run over a plain or a TLS socket.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use matchstream::feed::tls::{self as client_tls, TlsStream};
use rustls::ClientConfig;
use tempfile::TempDir;

use super::*;

/// A socket the test clients read and write: plain TCP or TLS over it.
pub trait Wire: Read + Write {
    /// The TCP socket underneath (for timeouts).
    fn tcp(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Wire for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// A test CA (its key kept to sign more certificates) and PEM files: `ca.pem`, and the
/// current server certificate `cert.pem` / `key.pem` for `localhost` and `127.0.0.1`.
pub struct TestPki {
    dir: TempDir,
    ca_key: rcgen::KeyPair,
    ca: rcgen::Certificate,
    /// The CA certificate (PEM) clients trust.
    pub ca_pem: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
}

impl TestPki {
    /// A fresh CA and a server certificate whose common name is `first`.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "matchstream test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = TestPki {
            ca_pem: dir.path().join("ca.pem"),
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            dir,
            ca_key,
            ca,
        };
        std::fs::write(&pki.ca_pem, pki.ca.pem()).unwrap();
        pki.issue("first");
        pki
    }

    /// Writes a new server certificate (common name `cn`, signed by the CA) and key over
    /// `cert.pem` / `key.pem`; returns the certificate's DER.
    pub fn issue(&self, cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(&self.cert, cert.pem()).unwrap();
        std::fs::write(&self.key, key.serialize_pem()).unwrap();
        cert.der().to_vec()
    }

    /// `--tls-cert CERT --tls-key KEY`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }

    /// Client settings trusting the CA.
    pub fn client(&self) -> Arc<ClientConfig> {
        client_tls::client_config(&self.ca_pem).expect("client TLS settings")
    }

    /// A directory for more files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// A TLS connection to `addr` (name `localhost`) with timeouts; the handshake is done.
pub fn tls_connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> TlsStream {
    let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let name = client_tls::server_name("localhost").unwrap();
    let mut tls = client_tls::connect(config, name, stream).expect("TLS client");
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    tls
}

/// The DER of the certificate the server at `addr` presents.
pub fn served_cert(addr: SocketAddr, config: &Arc<ClientConfig>) -> Vec<u8> {
    let tls = tls_connect(addr, config);
    tls.conn.peer_certificates().expect("a server certificate")[0].to_vec()
}
