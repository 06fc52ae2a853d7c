//! Tests of a TLS session against rustls's own client: the handshake and the hand-over to
//! the small record layer, TLS 1.2, `close_notify`, a client's `KeyUpdate` in every suite.
use super::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{Read, Write};

thread_local! {
    static TLS12: std::cell::RefCell<Option<Arc<ClientConfig>>> = const { std::cell::RefCell::new(None) };
    static ROOTS: std::cell::RefCell<Option<RootCertStore>> = const { std::cell::RefCell::new(None) };
}

/// A TLS 1.3 client offering only `suite`, trusting the CA of the last [`configs`] call.
fn client_with(suite: rustls::SupportedCipherSuite) -> Arc<ClientConfig> {
    let roots = ROOTS.with(|r| r.borrow().clone().expect("configs() first"));
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS 1.2-only client trusting the CA of the last [`configs`] call.
fn tls12_client() -> Arc<ClientConfig> {
    TLS12.with(|c| c.borrow().clone().expect("configs() first"))
}

/// A CA, and a server certificate for `localhost` signed by it.
fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.enable_secret_extraction = true;
    server.key_log = Arc::new(secret_capture::CaptureTrafficSecrets);
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let tls12 = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    TLS12.with(|c| *c.borrow_mut() = Some(Arc::new(tls12)));
    ROOTS.with(|r| *r.borrow_mut() = Some(roots.clone()));
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Moves bytes both ways until neither side has anything to say; returns the server's
/// plaintext.
fn pump(server: &mut TlsSession, client: &mut ClientConnection) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        // In small pieces: records split across reads must join up.
        for piece in wire.chunks(7) {
            server.receive(piece, &mut plain).unwrap();
        }
        let out = server.pending().to_vec();
        server.consume(out.len());
        if wire.is_empty() && out.is_empty() {
            break;
        }
        let mut cursor = &out[..];
        while !cursor.is_empty() {
            client.read_tls(&mut cursor).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    plain
}

#[test]
fn handshake_then_data_both_ways_and_an_idle_session_holds_no_buffer() {
    let (server_config, client_config) = configs();
    let mut server = TlsSession::new(server_config).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config, name).unwrap();
    assert!(server.encrypt(&[b"too early"], 100).is_err());
    client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    let plain = pump(&mut server, &mut client);
    assert!(!server.is_handshaking());
    assert!(!client.is_handshaking());
    assert!(
        server.on_records(),
        "TLS 1.3 continues on the small record layer"
    );
    assert_eq!(plain, b"GET / HTTP/1.1\r\n\r\n");
    // More from the client, after the switch, in pieces.
    client.writer().write_all(b"second request").unwrap();
    assert_eq!(pump(&mut server, &mut client), b"second request");

    let big = vec![b'x'; 40_000];
    let taken = server
        .encrypt(&[b"hello ", b"world", &big], 30_000)
        .unwrap();
    assert_eq!(taken, 30_000, "at most `max` plaintext bytes");
    let cursor = server.pending().to_vec();
    server.consume(cursor.len());
    let mut wire = &cursor[..];
    let mut got = Vec::new();
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        let _ = client.reader().read_to_end(&mut got);
    }
    assert_eq!(got.len(), 30_000);
    assert_eq!(&got[..11], b"hello world");
    assert!(got[11..].iter().all(|&b| b == b'x'));
    assert_eq!(server.buffered_capacity(), 0, "idle: no buffer held");
    eprintln!(
        "TlsSession: {} bytes inline",
        std::mem::size_of::<TlsSession>()
    );
    // One allocation of mimalloc's 160-byte class per TLS watcher, keys and secrets included.
    assert!(std::mem::size_of::<TlsSession>() <= 160);
}

#[test]
fn tls12_and_settings_without_secret_extraction_stay_on_rustls() {
    let (server_config, client_config) = configs();
    let tls12 = tls12_client();
    let mut no_extraction = (*server_config).clone();
    no_extraction.enable_secret_extraction = false;
    for (server_config, client_config) in [
        (server_config.clone(), tls12),
        (Arc::new(no_extraction), client_config.clone()),
    ] {
        let mut server = TlsSession::new(server_config).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config, name).unwrap();
        client.writer().write_all(b"ping").unwrap();
        assert_eq!(pump(&mut server, &mut client), b"ping");
        assert!(!server.is_handshaking() && !server.on_records());
        server.encrypt(&[b"pong"], 100).unwrap();
        let out = server.pending().to_vec();
        server.consume(out.len());
        let mut wire = &out[..];
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        let mut got = Vec::new();
        let _ = client.reader().read_to_end(&mut got);
        assert_eq!(got, b"pong");
    }
}

#[test]
fn a_client_that_does_not_speak_tls_is_an_error() {
    let (server_config, _) = configs();
    let mut server = TlsSession::new(server_config).unwrap();
    let mut plain = Vec::new();
    assert!(server
        .receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &mut plain)
        .is_err());
    assert!(plain.is_empty());
}

#[test]
fn close_notify_from_the_client_is_seen_and_answered() {
    let (server_config, client_config) = configs();
    let mut server = TlsSession::new(server_config).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config, name).unwrap();
    pump(&mut server, &mut client);
    client.send_close_notify();
    pump(&mut server, &mut client);
    assert!(server.peer_closed());
    server.close_notify();
    assert!(!server.pending().is_empty(), "our close_notify is queued");
}

/// What the server seals now, as the client reads it.
fn server_to_client(
    server: &mut TlsSession,
    client: &mut ClientConnection,
    data: &[u8],
) -> Vec<u8> {
    server.encrypt(&[data], data.len()).unwrap();
    let out = server.pending().to_vec();
    server.consume(out.len());
    let mut wire = &out[..];
    let mut got = Vec::new();
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        let _ = client.reader().read_to_end(&mut got);
    }
    got
}

#[test]
fn a_client_key_update_is_followed_and_answered_in_every_suite() {
    use rustls::crypto::ring::cipher_suite::*;
    let (server_config, _) = configs();
    for suite in [
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        let mut server = TlsSession::new(server_config.clone()).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_with(suite), name).unwrap();
        client.writer().write_all(b"hello").unwrap();
        assert_eq!(pump(&mut server, &mut client), b"hello");
        assert!(server.on_records(), "{suite:?}");
        for round in 0..3 {
            // rustls asks for our update too (`update_requested`).
            client.refresh_traffic_keys().unwrap();
            client.writer().write_all(b"after the update").unwrap();
            assert_eq!(
                pump(&mut server, &mut client),
                b"after the update",
                "{suite:?} round {round}"
            );
            assert_eq!(
                server_to_client(&mut server, &mut client, b"news"),
                b"news",
                "{suite:?} round {round}: our next key is the one the client expects"
            );
        }
    }
}
