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

/// A session of a fresh configuration and that configuration's default client, past the
/// handshake (the client sent "hello" through it).
fn connected() -> (TlsSession, ClientConnection) {
    let (server_config, client_config) = configs();
    connected_with(&server_config, client_config)
}

/// A session and its connected client (past the handshake) for each TLS 1.3 suite.
fn connected_in_every_suite() -> Vec<(rustls::SupportedCipherSuite, TlsSession, ClientConnection)> {
    use rustls::crypto::ring::cipher_suite::*;
    let (server_config, _) = configs();
    [
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
    ]
    .into_iter()
    .map(|suite| {
        let (server, client) = connected_with(&server_config, client_with(suite));
        (suite, server, client)
    })
    .collect()
}

/// A session of `server_config` and a client of `client` past the handshake (the client sent
/// "hello" through it).
fn connected_with(
    server_config: &Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> (TlsSession, ClientConnection) {
    let mut server = TlsSession::new(server_config.clone()).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client, name).unwrap();
    client.writer().write_all(b"hello").unwrap();
    assert_eq!(pump(&mut server, &mut client), b"hello");
    (server, client)
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
    client_reads(client, &out)
}

#[test]
fn a_client_key_update_is_followed_and_answered_in_every_suite() {
    for (suite, mut server, mut client) in connected_in_every_suite() {
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

/// What the kernel's TLS 1.3 `TLS_TX` does with `tx` (`linux/net/tls`): seals `content` of
/// `content_type` as one record with nonce `salt ‖ iv` XOR the record number; the record
/// number moves on. A stand-in for the kernel, to check what the server hands it.
pub(crate) fn kernel_seal(tx: &mut TxInfo, content: &[u8], content_type: u8) -> Vec<u8> {
    use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
    let (alg, key, mut nonce, rec_seq): (_, Vec<u8>, [u8; 12], &mut [u8; 8]) = match tx {
        TxInfo::Aes128Gcm(s) => {
            let mut n = [0; 12];
            n[..4].copy_from_slice(&s.salt);
            n[4..].copy_from_slice(&s.iv);
            (&aead::AES_128_GCM, s.key.to_vec(), n, &mut s.rec_seq)
        }
        TxInfo::Aes256Gcm(s) => {
            let mut n = [0; 12];
            n[..4].copy_from_slice(&s.salt);
            n[4..].copy_from_slice(&s.iv);
            (&aead::AES_256_GCM, s.key.to_vec(), n, &mut s.rec_seq)
        }
        TxInfo::Chacha20Poly1305(s) => (
            &aead::CHACHA20_POLY1305,
            s.key.to_vec(),
            s.iv,
            &mut s.rec_seq,
        ),
    };
    let seq = u64::from_be_bytes(*rec_seq);
    *rec_seq = (seq + 1).to_be_bytes();
    for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
        *n ^= s;
    }
    let key = LessSafeKey::new(UnboundKey::new(alg, &key).unwrap());
    let len = content.len() + 1 + 16;
    let header = [23, 3, 3, (len >> 8) as u8, len as u8];
    let mut body = content.to_vec();
    body.push(content_type);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(header),
        &mut body,
    )
    .unwrap();
    [&header[..], &body].concat()
}

/// Feeds `wire` to the client; returns the application data it reads.
pub(crate) fn client_reads(client: &mut ClientConnection, wire: &[u8]) -> Vec<u8> {
    let mut wire = wire;
    let mut got = Vec::new();
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
        let _ = client.reader().read_to_end(&mut got);
    }
    got
}

#[test]
fn the_keys_handed_to_the_kernel_seal_what_the_client_expects_in_every_suite() {
    for (suite, mut server, mut client) in connected_in_every_suite() {
        // Some records sealed here first: the kernel must carry on from their count.
        assert_eq!(server_to_client(&mut server, &mut client, b"101"), b"101");
        let mut tx = server
            .kernel_tx()
            .expect("a TLS 1.3 session can go over to kTLS");
        server.hand_tx_to_kernel();
        assert!(server.tx_in_kernel());
        assert!(server.kernel_tx().is_none(), "handed over once");
        assert!(
            server.encrypt(&[b"x"], 1).is_err(),
            "nothing is sealed here any more"
        );
        for event in [&b"goal"[..], b"card", &[b'z'; 20_000][..16_384]] {
            let wire = kernel_seal(&mut tx, event, 23);
            assert_eq!(client_reads(&mut client, &wire), event, "{suite:?}");
        }
        // Still reading what the client sends.
        client.writer().write_all(b"pong").unwrap();
        assert_eq!(pump(&mut server, &mut client), b"pong");
        // The closing alert, sent as the kernel's record of type 21.
        let alert = server.kernel_alert().expect("a close_notify");
        assert_eq!(alert, [1, 0]);
        let wire = kernel_seal(&mut tx, &alert, 21);
        client_reads(&mut client, &wire);
        let mut rest = Vec::new();
        assert_eq!(
            client.reader().read_to_end(&mut rest).unwrap(),
            0,
            "{suite:?}: the client saw a clean close_notify"
        );
    }
}

#[test]
fn a_kernel_tls_session_notes_a_requested_key_update_and_seals_nothing() {
    let (mut server, mut client) = connected();
    let _tx = server.kernel_tx().unwrap();
    server.hand_tx_to_kernel();
    assert!(!server.update_owed());
    client.refresh_traffic_keys().unwrap();
    client.writer().write_all(b"after").unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let mut plain = Vec::new();
    server.receive(&wire, &mut plain).unwrap();
    assert_eq!(plain, b"after", "the client's next key is followed");
    assert!(server.update_owed(), "our KeyUpdate is owed");
    assert!(server.pending().is_empty(), "and not sealed here");
}

#[test]
fn a_session_with_ciphertext_unsent_does_not_go_over_to_the_kernel() {
    let (mut server, _client) = connected();
    server.encrypt(&[b"HTTP/1.1 101"], 12).unwrap();
    assert!(server.kernel_tx().is_none(), "101 still unsent");
    let out = server.pending().len();
    server.consume(out);
    assert!(server.kernel_tx().is_some());
}

/// A TLS 1.3 session past its handshake whose sending side went to a (stand-in) kernel: the
/// session, its client, and the kernel's sending state for [`kernel_seal`]. For the plane's
/// tests of kTLS records.
pub(crate) fn kernel_tls_session() -> (TlsSession, ClientConnection, TxInfo) {
    let (mut server, client) = connected();
    let tx = server.kernel_tx().unwrap();
    server.hand_tx_to_kernel();
    (server, client, tx)
}

/// What `client` sends after writing `plain`, as ciphertext.
pub(crate) fn client_sends(client: &mut ClientConnection, plain: &[u8]) -> Vec<u8> {
    client.writer().write_all(plain).unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire
}

#[test]
fn sealing_a_frame_makes_exactly_the_ciphertext_the_client_reads_and_holds_nothing() {
    let (mut server, mut client) = connected();
    for len in [0, 1, 200, 16_384, 16_385, 40_000] {
        let frame: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let cipher = server.seal(&frame).unwrap();
        assert_eq!(cipher.len(), Records::sealed_len(len), "{len}");
        assert_eq!(cipher.capacity(), cipher.len(), "{len}: no spare room held");
        assert_eq!(client_reads(&mut client, &cipher), frame, "{len}");
        assert_eq!(
            server.buffered_capacity(),
            0,
            "{len}: the session keeps no buffer"
        );
    }
    server.close_notify();
    let _ = server.take_pending();
    assert!(server.seal(b"late").is_err(), "nothing after close_notify");
}
