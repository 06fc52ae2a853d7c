//! A watcher on Server-Sent Events: `GET /1/match/{id}/events` (with `Last-Event-ID` on a
//! resume), then `status` and `event` messages whose `data` is the WebSocket JSON, checked
//! like the WebSocket's; the `id` must be the message's seq. The stream ending right after
//! `stop` is the clean end.

use super::ctx::Ctx;
use super::session::{dropped, failed, Failure};
use super::ws::on_text;
use crate::load::wire::Wire;
use crate::proto::sse::{SseMessage, SseParser};

/// The longest response head accepted.
const MAX_HEAD: usize = 16 << 10;

/// Watches feed `feed` over SSE until the match's `stop` and the end of the stream.
pub(super) async fn watch(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    stream: &Wire,
    since: Option<u64>,
) -> Result<(), Failure> {
    let mid = &ctx.cfg.feeds[feed].id;
    let host = ctx
        .cfg
        .targets
        .first()
        .map_or("localhost", |t| t.host.as_str());
    let resume = since.map_or(String::new(), |s| format!("Last-Event-ID: {s}\r\n"));
    let request = format!(
        "GET /1/match/{mid}/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\
         {resume}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| dropped(format!("send request: {e}")))?;
    let mut buf = Vec::new();
    let body_start = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(failed("response head too large"));
        }
        match ctx.read_more(stream, &mut buf).await {
            Ok(true) => {}
            Ok(false) => return Err(dropped("closed before the response head")),
            Err(e) => return Err(dropped(format!("read: {e}"))),
        }
    };
    if !buf.starts_with(b"HTTP/1.1 200") {
        let line = String::from_utf8_lossy(&buf[..buf.len().min(60)]).into_owned();
        return Err(failed(format!("refused: {line}")));
    }
    buf.drain(..body_start);
    let mut parser = SseParser::new();
    let mut messages = Vec::new();
    loop {
        let now = ctx.now_ns();
        parser
            .feed(&buf, &mut messages)
            .map_err(|e| failed(e.to_string()))?;
        buf.clear();
        for message in messages.drain(..) {
            check(ctx, slot, feed, &message, now)?;
        }
        match ctx.read_more(stream, &mut buf).await {
            Ok(true) => {}
            Ok(false) if ctx.stopped(slot) => return Ok(()),
            Ok(false) => return Err(dropped("stream ended before stop")),
            Err(e) => return Err(dropped(format!("read: {e}"))),
        }
    }
}

/// Checks one message: its JSON as a WebSocket message would be, and its `id` against the
/// seq inside (an event's is its seq; a status's is its seq, or the resume point when
/// history follows it).
fn check(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    message: &SseMessage,
    now: u64,
) -> Result<(), Failure> {
    if !matches!(message.event.as_str(), "status" | "event" | "error") {
        return Err(failed(format!("unexpected event type {:?}", message.event)));
    }
    let seq = serde_json::from_str::<serde_json::Value>(&message.data)
        .ok()
        .and_then(|v| v.get("seq")?.as_u64());
    let id = message.id.as_deref().and_then(|i| i.parse::<u64>().ok());
    let id_ok = match message.event.as_str() {
        "event" => id.is_some() && id == seq,
        "status" => id.is_some() && id <= seq,
        _ => true,
    };
    if !id_ok {
        return Err(failed(format!(
            "id {:?} is not the message's seq {seq:?}",
            message.id
        )));
    }
    on_text(ctx, slot, feed, message.data.as_bytes(), now)
}
