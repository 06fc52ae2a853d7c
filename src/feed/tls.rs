//! The client side of TLS for the tools (`replay`, the load harness, tests): rustls with the
//! `ring` provider, trusting only the CA certificates of a given PEM file (`--ca`), and a
//! blocking TLS stream over `std::net::TcpStream`.

use std::io;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Client settings trusting the CA certificates in the PEM file `ca` (and nothing else).
pub fn client_config(ca: &Path) -> io::Result<Arc<ClientConfig>> {
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).map_err(|e| bad(format!("--ca {}: {e}", ca.display())))?
    {
        let cert = cert.map_err(|e| bad(format!("--ca {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("--ca {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(bad(format!(
            "--ca {}: no CERTIFICATE in the file",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name a server's certificate must carry, from `HOST[:PORT]` (a DNS name or an IP
/// address; the port is ignored).
pub fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))
}

/// A blocking TLS connection over a TCP socket (the handshake runs on first use).
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Wraps a connected socket in TLS towards `name`.
pub fn connect(
    config: &Arc<ClientConfig>,
    name: ServerName<'static>,
    stream: TcpStream,
) -> io::Result<TlsStream> {
    let conn = ClientConnection::new(config.clone(), name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(StreamOwned::new(conn, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_drop_the_port() {
        assert_eq!(
            server_name("localhost:8443").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert!(matches!(
            server_name("127.0.0.1:8443").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:8443").unwrap(),
            ServerName::IpAddress(_)
        ));
    }
}
