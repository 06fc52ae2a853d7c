//! Fan-out: an event arrives once per worker, is encoded once per flavour (WebSocket, deflated
//! WebSocket, SSE, line) and the same bytes go to every local watcher of the match, as one
//! batch of the plane's SENDs (a TLS record seals its own copy as it queues it); `stop` and
//! cancellation end the subscriptions.

use super::*;

/// The bytes of one event, encoded once per flavour on first use.
struct EventBytes<'a> {
    ws: Bytes,
    line: Option<Bytes>,
    /// The compressed frame (`Some(None)`: compression does not make it smaller).
    deflated: Option<Option<Bytes>>,
    sse: Option<Bytes>,
    seq: u64,
    json: &'a str,
    ts: i64,
    kind: &'a str,
    line_fields: &'a [(String, String)],
}

impl EventBytes<'_> {
    /// The frame for a permessage-deflate watcher: compressed once, or the plain one when
    /// compression would not make it smaller.
    fn deflated(&mut self) -> &Bytes {
        let json = self.json;
        let compressed = self
            .deflated
            .get_or_insert_with(|| compress::frame(OpCode::Text, json.as_bytes()).map(Bytes::from));
        compressed.as_ref().unwrap_or(&self.ws)
    }

    fn sse(&mut self) -> &Bytes {
        let (seq, json) = (self.seq, self.json);
        self.sse
            .get_or_insert_with(|| crate::server::sse::message("event", seq, json))
    }

    /// The bytes for `flavour`.
    fn for_flavour(&mut self, flavour: Flavour) -> &Bytes {
        match flavour {
            // Echo records never watch a match.
            Flavour::Ws | Flavour::Echo | Flavour::EchoDeflate | Flavour::EchoInflate => &self.ws,
            Flavour::WsDeflate => self.deflated(),
            Flavour::Line => self.line(),
            Flavour::Sse => self.sse(),
        }
    }

    fn line(&mut self) -> &Bytes {
        let (ts, kind, line_fields) = (self.ts, self.kind, self.line_fields);
        self.line.get_or_insert_with(|| {
            let fields: Vec<(&str, String)> = line_fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            let mut out = Vec::with_capacity(256);
            encode_block(&mut out, ts, kind, &fields);
            Bytes::from(out)
        })
    }
}

/// Per-broadcast tallies.
#[derive(Default)]
struct Tally {
    delivered: u64,
    bytes: u64,
}

/// Fans a sequenced event (or a cancellation) out to this worker's watchers.
pub fn on_broadcast(worker: &Rc<Worker>, broadcast: Broadcast, sent_at: Instant) {
    match broadcast {
        Broadcast::Event {
            mid,
            seq,
            ts,
            kind,
            ended,
            ws_text,
            line_fields,
            state,
            ..
        } => {
            let mut bytes = EventBytes {
                ws: text_frame(&ws_text),
                line: None,
                deflated: None,
                sse: None,
                seq,
                json: &ws_text,
                ts,
                kind: kind.as_str(),
                line_fields: &line_fields,
            };
            let mut tally = Tally::default();
            let plane_watchers = {
                let mut matches = worker.watch.matches.borrow_mut();
                let Some(entry) = matches.get_mut(&mid) else {
                    return;
                };
                entry.set_state(state);
                let watchers = entry.watchers.iter();
                fan_out_plane(worker, watchers, &mut bytes, &mut tally)
            };
            if plane_watchers {
                crate::server::plane::driver::pump_broadcast(worker);
            }
            let stats = worker.stats();
            WorkerStats::add(&stats.events, 1);
            WorkerStats::add(&stats.frames_sent, tally.delivered);
            WorkerStats::add(&stats.bytes_sent, tally.bytes);
            stats.observe_latency(sent_at.elapsed().as_micros() as u64);
            if ended {
                let entry = worker.watch.matches.borrow_mut().remove(&mid);
                if let Some(entry) = entry {
                    end_subscriptions(worker, &mid, entry, "match ended");
                }
            }
        }
        Broadcast::Cancelled { mid } => {
            let entry = worker.watch.matches.borrow_mut().remove(&mid);
            if let Some(entry) = entry {
                end_subscriptions(worker, &mid, entry, "match cancelled");
            }
        }
        // Catalog changes (served by `super::reads`), nothing to fan out.
        Broadcast::Match(_) | Broadcast::Team { .. } | Broadcast::Loaded(_) => {}
    }
}

/// Queues the event on the plane's records: one shared frame per flavour, one SEND each,
/// all submitted together when the plane is pumped. True when a record got the event.
fn fan_out_plane(
    worker: &Worker,
    watchers: impl Iterator<Item = ConnRef>,
    bytes: &mut EventBytes,
    t: &mut Tally,
) -> bool {
    let now = worker.now_ms();
    let mut plane = worker.plane.borrow_mut();
    let core = &mut plane.core;
    // One shared frame per flavour, made on first use.
    let mut shared = [FrameId::NONE; Flavour::COUNT];
    let mut any = false;
    for id in watchers {
        let Some(flavour) = core.record(id).map(|r| r.flavour()) else {
            continue;
        };
        let slot = &mut shared[flavour as usize];
        if slot.is_none() {
            *slot = core.share(bytes.for_flavour(flavour).clone());
        }
        let frame = *slot;
        any = true;
        // An overflow closes the record; the plane counts it.
        let _ = core.push(id, frame, now);
        t.delivered += 1;
        t.bytes += core.frame_bytes(frame).len() as u64;
    }
    for frame in shared {
        if !frame.is_none() {
            core.unshare(frame);
        }
    }
    any
}

fn end_subscriptions(worker: &Worker, mid: &Arc<str>, entry: MatchWatchers, reason: &str) {
    for conn in entry.watchers.iter() {
        let left = with_watching(worker, conn, |watching| {
            watching.retain(|x| !x.is(mid));
            watching.len()
        });
        let Some(left) = left else {
            continue;
        };
        worker.stats().set_watchers(mid, -1);
        if left == 0 {
            end_connection(worker, conn, reason);
        }
    }
}
