//! Counters each worker keeps for `/metrics`: written by the owning worker only (relaxed
//! atomics, no contention), read by whichever worker renders the Prometheus page.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::tls::sniff::PlainClient;

/// Upper bounds (µs) of the fan-out latency histogram buckets.
pub const LATENCY_BUCKETS_US: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

/// Plain HTTP clients on a TLS port told to use https, since start (whole process: the
/// socket layer that meets them holds no worker; rare enough for one shared atomic).
static PLAIN_HTTP_ON_TLS: AtomicU64 = AtomicU64::new(0);
/// Plain line clients on a TLS port told `ERROR: TLS required`, since start.
static PLAIN_LINE_ON_TLS: AtomicU64 = AtomicU64::new(0);

/// Counts a plain client answered on a TLS port.
pub fn count_plain_on_tls(who: PlainClient) {
    let counter = match who {
        PlainClient::Http => &PLAIN_HTTP_ON_TLS,
        PlainClient::Line => &PLAIN_LINE_ON_TLS,
    };
    counter.fetch_add(1, Relaxed);
}

static KTLS_ENABLED: AtomicU64 = AtomicU64::new(0);

/// Records whether this server hands TLS watchers' sending keys to the kernel.
pub fn set_ktls_enabled(on: bool) {
    KTLS_ENABLED.store(u64::from(on), Relaxed);
}

fn render_ktls_enabled(out: &mut String) {
    let name = "matchstream_ktls_enabled";
    let _ = writeln!(
        out,
        "# HELP {name} 1 when TLS watchers' sends go through the kernel's TLS (--ktls auto and a tls ULP).\n# TYPE {name} gauge\n{name} {}",
        KTLS_ENABLED.load(Relaxed)
    );
}

fn render_plain_on_tls(out: &mut String) {
    let name = "matchstream_plain_on_tls_port_total";
    let _ = writeln!(
        out,
        "# HELP {name} Plain (non-TLS) clients on a TLS port told so in plaintext, then closed.\n# TYPE {name} counter"
    );
    for (client, counter) in [("http", &PLAIN_HTTP_ON_TLS), ("line", &PLAIN_LINE_ON_TLS)] {
        let _ = writeln!(
            out,
            "{name}{{client=\"{client}\"}} {}",
            counter.load(Relaxed)
        );
    }
}

/// Why a TLS handshake failed (the `reason` label of
/// `matchstream_tls_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsHandshakeFailure {
    /// Not finished within `--handshake-timeout-ms` (or the peer went away first).
    Timeout,
    /// Bytes that are not TLS, or a record that does not decode or authenticate.
    BadRecord,
    /// No protocol version, cipher suite or key-exchange group in common.
    NoCommonSuite,
    /// Anything else rustls refused (a bad certificate alert from the client, …).
    Other,
}

impl TlsHandshakeFailure {
    /// Every reason, in the order of their counters.
    pub const ALL: [TlsHandshakeFailure; 4] = [
        TlsHandshakeFailure::Timeout,
        TlsHandshakeFailure::BadRecord,
        TlsHandshakeFailure::NoCommonSuite,
        TlsHandshakeFailure::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            TlsHandshakeFailure::Timeout => "timeout",
            TlsHandshakeFailure::BadRecord => "bad_record",
            TlsHandshakeFailure::NoCommonSuite => "no_common_suite",
            TlsHandshakeFailure::Other => "other",
        }
    }
}

/// One worker's counters.
#[derive(Default)]
pub struct WorkerStats {
    /// Open connections of any kind.
    pub connections: AtomicU64,
    /// Open WebSocket connections.
    pub websockets: AtomicU64,
    /// Open TCP line-protocol connections.
    pub line_connections: AtomicU64,
    /// Open WebSocket connections that negotiated permessage-deflate.
    pub deflate_websockets: AtomicU64,
    /// Open Server-Sent Events streams.
    pub sse_connections: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused because `--max-connections` was reached.
    pub refused: AtomicU64,
    /// HTTP requests answered.
    pub http_requests: AtomicU64,
    /// Frames (or line blocks) queued to clients.
    pub frames_sent: AtomicU64,
    /// Bytes of the frames in `frames_sent` (written at once, or queued to be written).
    pub bytes_sent: AtomicU64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumer_closes: AtomicU64,
    /// Connections closed for a protocol error (bad frame, bad request).
    pub protocol_errors: AtomicU64,
    /// Connections dropped because the peer stopped answering pings.
    pub dead_peers: AtomicU64,
    /// Pings sent by keepalive.
    pub pings: AtomicU64,
    /// Connections closed because queued bytes made no progress for the send timeout.
    pub send_timeouts: AtomicU64,
    /// Sends that wrote only part of their bytes (the rest was requeued).
    pub short_writes: AtomicU64,
    /// `io_uring_enter` calls on the watcher-plane ring.
    pub plane_enters: AtomicU64,
    /// Times the plane ring's completion queue overflowed (its completions were flushed
    /// from the kernel's overflow list).
    pub plane_cq_overflows: AtomicU64,
    /// Completions the kernel dropped from the plane ring (its overflow list could not take
    /// them): each strands a send or a poll until the send timeout ends the record.
    pub plane_cq_dropped: AtomicU64,
    /// Broadcasts that reached at least one plane watcher.
    pub plane_broadcasts: AtomicU64,
    /// `io_uring_enter` calls made while fanning those broadcasts out.
    pub plane_broadcast_enters: AtomicU64,
    /// Events fanned out by this worker.
    pub events: AtomicU64,
    /// Connections refused because their address reached `--max-connections-per-ip`.
    pub refused_per_ip: AtomicU64,
    /// WebSockets closed because a message was not completed in time.
    pub message_timeouts: AtomicU64,
    /// Watch requests refused on the worker (over the limit, or not a match id).
    pub watches_refused: AtomicU64,
    /// Admin requests answered 429 because their address failed to log in too often.
    pub logins_rate_limited: AtomicU64,
    /// Open TLS watchers (plane records whose bytes go through a TLS session).
    pub tls_watchers: AtomicU64,
    /// TLS watchers ended by a TLS error after the handshake (a bad record, a seal error).
    pub tls_record_errors: AtomicU64,
    /// TLS watchers whose sending side went to the kernel's TLS (kTLS).
    pub ktls_watchers: AtomicU64,
    /// TLS watchers that could not go over to kTLS although it is on (the kernel refused).
    pub ktls_refused: AtomicU64,
    /// kTLS watchers closed because their client asked for our `KeyUpdate`.
    pub ktls_update_closes: AtomicU64,
    /// Watchers whose peer closed without a close handshake (a client that went away).
    pub peer_eofs: AtomicU64,
    /// Watchers ended by a failed read or send (a reset, a broken pipe).
    pub io_errors: AtomicU64,
    /// Failed TLS handshakes, by [`TlsHandshakeFailure`] (as its index).
    pub tls_handshake_failures: [AtomicU64; TlsHandshakeFailure::ALL.len()],
    /// 1 while this worker's fd table is full and it is out of the accept distribution.
    pub accept_paused: AtomicU64,
    /// Times this worker left the accept distribution because its fd table was full.
    pub accept_pauses: AtomicU64,
    /// Connections refused at once because their worker's fd table was full.
    pub refused_worker_full: AtomicU64,
    /// Public connections this worker can hold (its open-files limit less its own
    /// descriptors, the spare ones and the slots held back for `--admin-listen`).
    pub connection_slots: AtomicU64,
    /// Writes (events, teams, matches) answered 503 because too few Redis replicas
    /// confirmed them (`--redis-min-replicas`).
    pub writes_unreplicated: AtomicU64,
    /// Fan-out latency histogram (sequencer → queued on every local watcher), per bucket.
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of fan-out latencies, µs.
    pub latency_sum_us: AtomicU64,
    /// Watchers per match on this worker. Locked only when a subscription starts or ends
    /// (never per event) and when `/metrics` is rendered.
    pub watchers: Mutex<BTreeMap<Arc<str>, u64>>,
}

impl WorkerStats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Relaxed);
    }

    /// Adds `delta` (±1) to the watcher count of `mid`.
    pub fn set_watchers(&self, mid: &Arc<str>, delta: i64) {
        let mut map = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        let count = map.entry(mid.clone()).or_insert(0);
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            map.remove(mid);
        }
    }

    /// Counts a failed TLS handshake.
    pub fn tls_handshake_failed(&self, why: TlsHandshakeFailure) {
        self.tls_handshake_failures[why as usize].fetch_add(1, Relaxed);
    }

    /// Records one fan-out latency sample.
    pub fn observe_latency(&self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.latency_buckets[i].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }
}

/// A counter's name, type, help text and accessor.
type CounterDef = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WorkerStats) -> &AtomicU64,
);

/// Renders every worker's counters in the Prometheus text format.
pub fn render(workers: &[WorkerStats], extra: &str) -> String {
    let mut out = String::with_capacity(4096);
    let per_worker: [CounterDef; 38] = [
        (
            "matchstream_connections",
            "gauge",
            "Open connections",
            |s| &s.connections,
        ),
        (
            "matchstream_websockets",
            "gauge",
            "Open WebSocket connections",
            |s| &s.websockets,
        ),
        (
            "matchstream_deflate_websockets",
            "gauge",
            "Open WebSocket connections with permessage-deflate",
            |s| &s.deflate_websockets,
        ),
        (
            "matchstream_sse_connections",
            "gauge",
            "Open Server-Sent Events streams",
            |s| &s.sse_connections,
        ),
        (
            "matchstream_line_connections",
            "gauge",
            "Open TCP line connections",
            |s| &s.line_connections,
        ),
        (
            "matchstream_accepted_total",
            "counter",
            "Connections accepted",
            |s| &s.accepted,
        ),
        (
            "matchstream_refused_total",
            "counter",
            "Connections refused at max-connections",
            |s| &s.refused,
        ),
        (
            "matchstream_http_requests_total",
            "counter",
            "HTTP requests answered",
            |s| &s.http_requests,
        ),
        (
            "matchstream_frames_sent_total",
            "counter",
            "Frames queued to clients",
            |s| &s.frames_sent,
        ),
        (
            "matchstream_bytes_sent_total",
            "counter",
            "Bytes of the frames queued or written to clients",
            |s| &s.bytes_sent,
        ),
        (
            "matchstream_slow_consumer_closes_total",
            "counter",
            "Connections closed on outbound queue overflow",
            |s| &s.slow_consumer_closes,
        ),
        (
            "matchstream_protocol_errors_total",
            "counter",
            "Connections closed for a protocol error",
            |s| &s.protocol_errors,
        ),
        (
            "matchstream_dead_peers_total",
            "counter",
            "Peers dropped by keepalive",
            |s| &s.dead_peers,
        ),
        (
            "matchstream_pings_total",
            "counter",
            "Keepalive pings sent",
            |s| &s.pings,
        ),
        (
            "matchstream_send_timeouts_total",
            "counter",
            "Connections closed because queued bytes made no progress for the send timeout",
            |s| &s.send_timeouts,
        ),
        (
            "matchstream_short_writes_total",
            "counter",
            "Sends that wrote part of their bytes (the rest requeued)",
            |s| &s.short_writes,
        ),
        (
            "matchstream_plane_enters_total",
            "counter",
            "io_uring_enter calls on the watcher-plane ring",
            |s| &s.plane_enters,
        ),
        (
            "matchstream_plane_cq_overflows_total",
            "counter",
            "Times the watcher-plane ring's completion queue overflowed and was flushed",
            |s| &s.plane_cq_overflows,
        ),
        (
            "matchstream_plane_cq_dropped_total",
            "counter",
            "Completions the kernel dropped from the watcher-plane ring (a failed overflow allocation)",
            |s| &s.plane_cq_dropped,
        ),
        (
            "matchstream_plane_broadcasts_total",
            "counter",
            "Broadcasts fanned out to plane watchers",
            |s| &s.plane_broadcasts,
        ),
        (
            "matchstream_plane_broadcast_enters_total",
            "counter",
            "io_uring_enter calls made fanning those broadcasts out (one per broadcast when the ring holds every local watcher)",
            |s| &s.plane_broadcast_enters,
        ),
        (
            "matchstream_events_fanned_out_total",
            "counter",
            "Events fanned out",
            |s| &s.events,
        ),
        (
            "matchstream_refused_per_ip_total",
            "counter",
            "Connections refused at max-connections-per-ip",
            |s| &s.refused_per_ip,
        ),
        (
            "matchstream_message_timeouts_total",
            "counter",
            "WebSockets closed because a message was not completed in time",
            |s| &s.message_timeouts,
        ),
        (
            "matchstream_watches_refused_total",
            "counter",
            "Watch requests refused (over max-watches-per-connection, or not a match id)",
            |s| &s.watches_refused,
        ),
        (
            "matchstream_logins_rate_limited_total",
            "counter",
            "Admin requests answered 429 after too many failed logins from their address",
            |s| &s.logins_rate_limited,
        ),
        (
            "matchstream_tls_watchers",
            "gauge",
            "Open TLS watchers (WebSocket, SSE, line and echo over TLS)",
            |s| &s.tls_watchers,
        ),
        (
            "matchstream_tls_record_errors_total",
            "counter",
            "TLS connections ended by a bad record or a seal error after the handshake",
            |s| &s.tls_record_errors,
        ),
        (
            "matchstream_ktls_watchers_total",
            "counter",
            "TLS watchers whose sends the kernel seals (kTLS: they get the shared plaintext frame)",
            |s| &s.ktls_watchers,
        ),
        (
            "matchstream_ktls_refused_total",
            "counter",
            "TLS watchers sealed in user space because the kernel refused their kTLS keys",
            |s| &s.ktls_refused,
        ),
        (
            "matchstream_ktls_update_closes_total",
            "counter",
            "kTLS watchers closed because the client asked for a KeyUpdate (it reconnects)",
            |s| &s.ktls_update_closes,
        ),
        (
            "matchstream_peer_eofs_total",
            "counter",
            "Watchers whose client closed the connection without a close handshake",
            |s| &s.peer_eofs,
        ),
        (
            "matchstream_io_errors_total",
            "counter",
            "Watchers ended by a failed read or send (a reset, a broken pipe)",
            |s| &s.io_errors,
        ),
        (
            "matchstream_accept_paused",
            "gauge",
            "1 while the worker's fd table is full and it is out of the accept distribution",
            |s| &s.accept_paused,
        ),
        (
            "matchstream_accept_pauses_total",
            "counter",
            "Times the worker left the accept distribution with a full fd table",
            |s| &s.accept_pauses,
        ),
        (
            "matchstream_refused_worker_full_total",
            "counter",
            "Connections refused at once because their worker's fd table was full",
            |s| &s.refused_worker_full,
        ),
        (
            "matchstream_connection_slots",
            "gauge",
            "Public connections the worker can hold (open-files limit less its own descriptors)",
            |s| &s.connection_slots,
        ),
        (
            "matchstream_writes_unreplicated_total",
            "counter",
            "Writes answered 503: fewer than redis-min-replicas replicas confirmed them in time",
            |s| &s.writes_unreplicated,
        ),
    ];
    for (name, kind, help, get) in per_worker {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
        for (i, s) in workers.iter().enumerate() {
            let _ = writeln!(out, "{name}{{worker=\"{i}\"}} {}", get(s).load(Relaxed));
        }
    }
    render_latency(&mut out, workers);
    render_watchers(&mut out, workers);
    render_plain_on_tls(&mut out);
    render_ktls_enabled(&mut out);
    render_tls_handshake_failures(&mut out, workers);
    out.push_str(extra);
    out
}

/// The fan-out latency histogram, all workers summed.
fn render_latency(out: &mut String, workers: &[WorkerStats]) {
    let name = "matchstream_fanout_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from sequencing an event to queueing it on every local watcher.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0u64;
    for (i, bound) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += workers
            .iter()
            .map(|s| s.latency_buckets[i].load(Relaxed))
            .sum::<u64>();
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / 1e6
        );
    }
    cumulative += workers
        .iter()
        .map(|s| s.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed))
        .sum::<u64>();
    let sum: u64 = workers.iter().map(|s| s.latency_sum_us.load(Relaxed)).sum();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", sum as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// Watchers per match, all workers summed.
/// Failed TLS handshakes by reason, all workers summed.
fn render_tls_handshake_failures(out: &mut String, workers: &[WorkerStats]) {
    let name = "matchstream_tls_handshake_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed TLS handshakes by reason.\n# TYPE {name} counter"
    );
    for why in TlsHandshakeFailure::ALL {
        let n: u64 = workers
            .iter()
            .map(|s| s.tls_handshake_failures[why as usize].load(Relaxed))
            .sum();
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {n}", why.label());
    }
}

fn render_watchers(out: &mut String, workers: &[WorkerStats]) {
    let name = "matchstream_watchers";
    let _ = writeln!(
        out,
        "# HELP {name} Watchers per match.\n# TYPE {name} gauge"
    );
    let mut per_match: BTreeMap<Arc<str>, u64> = BTreeMap::new();
    for s in workers {
        let map = s.watchers.lock().unwrap_or_else(|e| e.into_inner());
        for (mid, n) in map.iter() {
            *per_match.entry(mid.clone()).or_insert(0) += n;
        }
    }
    for (mid, n) in per_match {
        let _ = writeln!(out, "{name}{{match=\"{mid}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_per_worker_and_a_cumulative_histogram() {
        let stats = [WorkerStats::default(), WorkerStats::default()];
        WorkerStats::add(&stats[1].connections, 3);
        stats[0].observe_latency(40);
        stats[1].observe_latency(300);
        stats[1].observe_latency(10_000_000);
        let text = render(&stats, "");
        assert!(text.contains("matchstream_connections{worker=\"1\"} 3"));
        assert!(text.contains("matchstream_fanout_latency_seconds_bucket{le=\"0.00005\"} 1"));
        assert!(text.contains("matchstream_fanout_latency_seconds_bucket{le=\"0.0005\"} 2"));
        assert!(text.contains("matchstream_fanout_latency_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("matchstream_fanout_latency_seconds_count 3"));
    }
}
