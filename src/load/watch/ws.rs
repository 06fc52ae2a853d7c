//! A watcher on WebSocket: the `watch` command (in raw mode, the subscribe message), then
//! frames: `status` and `event` messages checked and timed, pings answered, and the server's
//! close judged (1000 after `stop` is the only clean end).

use serde::Deserialize;

use super::ctx::Ctx;
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
    kind: Option<&'a str>,
    error: Option<String>,
    n: Option<u64>,
}

/// Watches feed `feed` as client `index` until the match's `stop` and the server's close 1000;
/// resumes after `since` when given. `buf` holds what arrived with the handshake response.
pub(super) async fn watch(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    index: usize,
    stream: &Wire,
    mut buf: Vec<u8>,
    since: Option<u64>,
) -> Result<(), Failure> {
    let mask = (index as u32).wrapping_mul(2_654_435_761).to_be_bytes();
    subscribe(ctx, slot, feed, index, since, stream, mask).await?;
    loop {
        let mut now = ctx.now_ns();
        while let Some((opcode, payload)) =
            client::next_raw_frame(&mut buf).map_err(|e| failed(e.to_string()))?
        {
            match opcode {
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
        if ctx.cfg.raw && ctx.stopped(slot) {
            let close = client::client_frame(OpCode::Close, &1000u16.to_be_bytes(), mask);
            let _ = stream.write_all(&close).await;
            return Ok(());
        }
        if buf.is_empty() && buf.capacity() > 4096 {
            buf = Vec::new();
        }
        match ctx.read_more(stream, &mut buf).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(dropped(if ctx.stopped(slot) {
                    "closed after stop without a close frame"
                } else {
                    "closed before stop"
                }))
            }
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
pub(super) fn on_text(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    payload: &[u8],
    now: u64,
) -> Result<(), Failure> {
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
    match (m.ty, m.seq) {
        (Some("status"), Some(seq)) => ctx.on_status(slot, seq),
        (Some("event"), Some(seq)) => {
            ctx.on_event(slot, feed, seq, now);
            if m.kind == Some("stop") {
                ctx.set_stop(slot, seq);
            }
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
