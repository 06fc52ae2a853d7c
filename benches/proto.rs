//! Micro-benchmarks of the sans-I/O protocol core, in bytes per second: frame header
//! parse/encode, payload masking (fast path against the byte reference), a 1 KiB masked
//! text message through `WsSession::receive`, the opening handshake, and permessage-deflate
//! (compressing an event or a status into an RSV1 frame once, inflating it).
//!
//! `cargo bench --bench proto` (add `-- --quick` for a short run).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use matchstream::proto::deflate::{inflate_message, MessageDeflater};
use matchstream::proto::mask::{apply_mask, apply_mask_reference};
use matchstream::proto::{
    accept_handshake, parse_request, FrameHeader, HandshakePolicy, HttpLimits, OpCode, WsEvent,
    WsLimits, WsSession,
};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn masked_text_frame(len: usize) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Text,
        mask: Some(KEY),
        payload_len: len as u64,
    };
    let mut out = Vec::new();
    header.encode(&mut out);
    let start = out.len();
    out.extend((0..len).map(|i| b'a' + (i % 26) as u8));
    apply_mask(&mut out[start..], KEY, 0);
    out
}

fn frame_header(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    let wire = masked_text_frame(1024);
    let (header, header_len) = FrameHeader::parse(&wire).unwrap().unwrap();
    group.throughput(Throughput::Bytes(header_len as u64));
    group.bench_function("parse", |b| b.iter(|| FrameHeader::parse(black_box(&wire))));
    let mut out = Vec::with_capacity(16);
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&header).encode(&mut out);
        })
    });
    group.finish();
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for len in [1024usize, 64 * 1024] {
        let mut buf = vec![0x5au8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("fast", len), &len, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), KEY, 1))
        });
        group.bench_with_input(BenchmarkId::new("reference", len), &len, |b, _| {
            b.iter(|| apply_mask_reference(black_box(&mut buf), KEY, 1))
        });
    }
    group.finish();
}

fn session(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_session");
    let wire = masked_text_frame(1024);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    let mut session = WsSession::new(WsLimits::default());
    let mut events = Vec::with_capacity(4);
    group.bench_function("receive_text_1KiB", |b| {
        b.iter(|| {
            events.clear();
            session.receive(black_box(&wire), &mut events);
            assert!(matches!(events.first(), Some(WsEvent::Text(_))));
        })
    });
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    let raw = b"GET /1/ws HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nOrigin: http://localhost:8080\r\n\r\n";
    let limits = HttpLimits::default();
    let policy = HandshakePolicy::default();
    group.throughput(Throughput::Bytes(raw.len() as u64));
    let (request, _) = parse_request(raw, &limits).unwrap().unwrap();
    group.bench_function("accept_handshake", |b| {
        b.iter(|| accept_handshake(black_box(&request), &policy).unwrap())
    });
    group.bench_function("parse_request_and_accept", |b| {
        b.iter(|| {
            let (req, _) = parse_request(black_box(raw), &limits).unwrap().unwrap();
            accept_handshake(&req, &policy).unwrap()
        })
    });
    group.finish();
}

/// A goal event as the server sends it for the sample match (player name filled in).
const GOAL_EVENT: &str = r#"{"type":"event","match":"elp-tig-2011-09-10","seq":27,"ts":1764489600123,"kind":"goal","data":{"team":"tig","player":[9,"Carlos Luna"]}}"#;

fn deflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate");
    let mut deflater = MessageDeflater::new();
    let status = format!(
        r#"{{"type":"status","match":"elp-tig-2011-09-10","seq":0,"ts":0,"state":{{"home_players":{},"visit_players":{}}}}}"#,
        serde_json::to_string(
            &(1..=11)
                .map(|n| (n, format!("Player number {n}")))
                .collect::<Vec<_>>()
        )
        .unwrap(),
        serde_json::to_string(
            &(1..=11)
                .map(|n| (n, format!("Jugador {n}")))
                .collect::<Vec<_>>()
        )
        .unwrap(),
    );
    for (name, json) in [("event", GOAL_EVENT), ("status", status.as_str())] {
        let compressed = deflater
            .compressed_frame(OpCode::Text, json.as_bytes())
            .unwrap();
        eprintln!(
            "deflate {name}: {} B JSON -> {} B RSV1 frame",
            json.len(),
            compressed.len()
        );
        group.throughput(Throughput::Bytes(json.len() as u64));
        group.bench_function(BenchmarkId::new("compress_frame", name), |b| {
            b.iter(|| deflater.compressed_frame(OpCode::Text, black_box(json.as_bytes())))
        });
        let payload = deflater.compress(json.as_bytes()).unwrap().to_vec();
        group.bench_function(BenchmarkId::new("inflate", name), |b| {
            b.iter(|| inflate_message(black_box(&payload), 1 << 16).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, frame_header, mask, session, handshake, deflate);
criterion_main!(benches);
