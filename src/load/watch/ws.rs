//! A watcher on WebSocket: the `watch` command (in raw mode, the subscribe message), then
//! frames: `status` and `event` messages checked and timed, pings answered, and the server's
//! close judged (1000 after `stop` is the only clean end).

use std::borrow::Cow;

use serde::Deserialize;

use super::ctx::{next_room, Ctx, READ_ROOM};
use super::session::{dropped, failed, Failure};
use crate::load::client;
use crate::load::wire::Wire;
use crate::proto::frame::OpCode;

/// The fields of a server message the harness reads (raw mode: `n` only).
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    ty: Option<&'a str>,
    seq: Option<u64>,
    #[serde(rename = "match")]
    mid: Option<String>,
    kind: Option<&'a str>,
    error: Option<String>,
    n: Option<u64>,
}

/// Watches feed `feed` as client `index` until the match's `stop` and the server's close 1000;
/// resumes after `since` when given. `buf` holds what arrived with the handshake response.
///
/// Each read is one io_uring `Recv` into the watcher's own buffer (a small room while it
/// keeps up, more while it catches up); frames are checked where they lie in it (no copy or
/// allocation per frame), every complete one of a read before the next read.
pub(super) async fn watch(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    index: usize,
    stream: &mut Wire,
    mut buf: Vec<u8>,
    since: Option<u64>,
) -> Result<(), Failure> {
    let mask = (index as u32).wrapping_mul(2_654_435_761).to_be_bytes();
    subscribe(ctx, slot, feed, index, since, stream, mask).await?;
    let mut room = READ_ROOM;
    loop {
        let mut now = ctx.now_ns();
        let mut at = 0;
        while let Some(frame) = client::frame_at(&buf[at..]).map_err(|e| failed(e.to_string()))? {
            let payload = at + frame.payload.start..at + frame.payload.end;
            at += frame.len();
            let payload = if frame.compressed {
                Cow::Owned(
                    client::inflate_payload(&buf[payload]).map_err(|e| failed(e.to_string()))?,
                )
            } else {
                Cow::Borrowed(&buf[payload])
            };
            match frame.opcode {
                OpCode::Text => on_text(ctx, slot, feed, &payload, now)?,
                OpCode::Ping => {
                    let pong = client::client_frame(OpCode::Pong, &payload, mask);
                    stream
                        .write_all(&pong)
                        .await
                        .map_err(|e| dropped(format!("send pong: {e}")))?;
                    now = ctx.now_ns();
                }
                OpCode::Close => return on_close(ctx, slot, stream, &payload, mask).await,
                _ => {}
            }
        }
        buf.drain(..at);
        if ctx.cfg.raw && ctx.stopped(slot) {
            let close = client::client_frame(OpCode::Close, &1000u16.to_be_bytes(), mask);
            let _ = stream.write_all(&close).await;
            return Ok(());
        }
        // A watcher that caught up gives back the room it took to catch up.
        if buf.is_empty() && room == READ_ROOM && buf.capacity() > 4 * READ_ROOM {
            buf = Vec::new();
        }
        match ctx.read_next(stream, &mut buf, room).await {
            Ok(0) => {
                return Err(dropped(if ctx.stopped(slot) {
                    "closed after stop without a close frame"
                } else {
                    "closed before stop"
                }))
            }
            Ok(n) => room = next_room(room, n),
            Err(e) => return Err(dropped(format!("read: {e}"))),
        }
    }
}

/// Sends the `watch` command (with `since` on a resume), or in raw mode the subscribe
/// message, if any: a raw watcher is ready as soon as it is connected.
async fn subscribe(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    index: usize,
    since: Option<u64>,
    stream: &Wire,
    mask: [u8; 4],
) -> Result<(), Failure> {
    let command = if ctx.cfg.raw {
        ctx.on_status(slot, 0);
        ctx.cfg.subscribe_message.clone()
    } else {
        let mid = &ctx.cfg.feeds[feed].id;
        let mut watch =
            serde_json::json!({"command": "watch", "mid": mid, "uid": format!("u{index}")});
        if let Some(since) = since {
            watch["since"] = since.into();
        }
        Some(watch.to_string())
    };
    if let Some(text) = command {
        stream
            .write_all(&client::client_frame(OpCode::Text, text.as_bytes(), mask))
            .await
            .map_err(|e| dropped(format!("send watch: {e}")))?;
    }
    Ok(())
}

/// Checks one text message: a status, an event (raw mode: a numbered payload, the last one
/// ending the match); an error message, or anything else, fails the watcher.
///
/// An event whose bytes equal the payload of the event this watcher expects next, already
/// checked by a full parse on this thread ([`super::known`]), is that event; anything else is
/// parsed in full.
pub(super) fn on_text(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    payload: &[u8],
    now: u64,
) -> Result<(), Failure> {
    if !ctx.cfg.raw {
        if let Some(next) = ctx.expected_next(slot) {
            let known = ctx.known.borrow().recall(feed, next, payload);
            if let Some(stop) = known {
                ctx.on_event(slot, feed, next, now);
                if stop {
                    ctx.set_stop(slot, next);
                }
                return Ok(());
            }
        }
    }
    let Ok(m) = serde_json::from_slice::<Message>(payload) else {
        return Err(failed("unparsable message"));
    };
    if ctx.cfg.raw {
        if let Some(n) = m.n {
            ctx.on_event(slot, feed, n, now);
            if n == ctx.cfg.feeds[feed].sent_ns.len() as u64 {
                ctx.set_stop(slot, n);
            }
        }
        return Ok(());
    }
    let mid = &ctx.cfg.feeds[feed].id;
    if m.ty != Some("error") && m.mid.as_ref().is_some_and(|m| m != mid) {
        return Err(failed(format!(
            "a message of match {:?} on a watch of {mid:?}",
            m.mid.unwrap_or_default()
        )));
    }
    match (m.ty, m.seq) {
        (Some("status"), Some(seq)) => ctx.on_status(slot, seq),
        (Some("event"), Some(seq)) => {
            let stop = m.kind == Some("stop");
            ctx.on_event(slot, feed, seq, now);
            if stop {
                ctx.set_stop(slot, seq);
            }
            ctx.known.borrow_mut().remember(feed, seq, payload, stop);
        }
        (Some("error"), _) => {
            return Err(failed(format!(
                "server error: {}",
                m.error.unwrap_or_default()
            )))
        }
        _ => return Err(failed("unexpected message")),
    }
    Ok(())
}

/// Answers the server's close and judges it: 1000 after `stop` is the clean end.
async fn on_close(
    ctx: &Ctx,
    slot: usize,
    stream: &Wire,
    payload: &[u8],
    mask: [u8; 4],
) -> Result<(), Failure> {
    let (code, reason) = client::close_code_and_reason(payload);
    let reply = client::client_frame(OpCode::Close, &code.to_be_bytes(), mask);
    let _ = stream.write_all(&reply).await;
    let stopped = ctx.stopped(slot);
    if stopped && code == 1000 {
        Ok(())
    } else if stopped {
        Err(dropped(format!("close {code} {reason:?} after stop")))
    } else {
        Err(dropped(format!("close {code} {reason:?} before stop")))
    }
}
