//! What an idle TLS connection costs the server in heap: a counting allocator measures the
//! bytes the server side's [`TlsSession`] still holds after a TLS 1.3 handshake and a few
//! messages (the client side, a rustls client in the same process, is not counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use matchstream::server::tls::session::TlsSession;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.with(Cell::get) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with the server side's allocations counted.
fn server<T>(f: impl FnOnce() -> T) -> T {
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    out
}

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
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("c.pem"), leaf.pem()).unwrap();
    std::fs::write(files.path().join("k.pem"), key.serialize_pem()).unwrap();
    // The server's own settings, as `--tls-cert` / `--tls-key` build them.
    let server = matchstream::server::tls::server_config(
        &matchstream::server::tls::TlsFiles {
            cert: files.path().join("c.pem"),
            key: files.path().join("k.pem"),
        },
        None,
    )
    .unwrap();
    let _ = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    (server, Arc::new(client))
}

/// Moves bytes both ways until both sides are quiet.
fn pump(session: &mut TlsSession, client: &mut ClientConnection) -> Vec<u8> {
    let mut plain = Vec::new();
    for _ in 0..20 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server(|| session.receive(&wire, &mut plain)).unwrap();
        let out = session.pending().to_vec();
        server(|| session.consume(out.len()));
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
fn an_idle_tls_session_holds_a_bounded_amount_of_heap() {
    let (server_config, client_config) = configs();
    let mut worst = 0;
    for round in 0..3 {
        LIVE.store(0, Ordering::Relaxed);
        let mut session = server(|| Box::new(TlsSession::new(server_config.clone()).unwrap()));
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = ClientConnection::new(client_config.clone(), name).unwrap();
        client
            .writer()
            .write_all(b"GET /1/ws HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(
            pump(&mut session, &mut client),
            b"GET /1/ws HTTP/1.1\r\n\r\n"
        );
        for _ in 0..3 {
            server(|| session.encrypt(&[b"{\"type\":\"event\"}"], 1 << 16)).unwrap();
            let out = session.pending().to_vec();
            server(|| session.consume(out.len()));
            let mut cursor = &out[..];
            client.read_tls(&mut cursor).unwrap();
            client.process_new_packets().unwrap();
            let mut got = Vec::new();
            let _ = client.reader().read_to_end(&mut got);
        }
        assert_eq!(session.buffered_capacity(), 0);
        let live = LIVE.load(Ordering::Relaxed);
        eprintln!("round {round}: an idle TLS session holds {live} bytes of heap (the session box included)");
        worst = worst.max(live);
        server(|| drop(session));
    }
    // The figure is reported by `cargo nextest run --test tls_memory --no-capture`. A TLS 1.3
    // connection on `records::Records` holds ~400 bytes (the session and its share of the
    // session-ticket cache); on rustls's state it was ~3.5 KB, and a kept buffer is 16 KiB.
    assert!(worst < 1024, "idle TLS session: {worst} bytes");
}
