//! Micro-benchmarks of the sans-I/O protocol core, in bytes per second: frame header
//! parse/encode, payload masking (fast path against the byte reference), a 1 KiB masked
//! text message through `WsSession::receive`, and the opening handshake.
//!
//! `cargo bench --bench proto` (add `-- --quick` for a short run).

// criterion_group!/criterion_main! generate undocumented items.
#![allow(missing_docs)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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

criterion_group!(benches, frame_header, mask, session, handshake);
criterion_main!(benches);
