//! A watcher on the TCP line protocol: `CONNECT`, then blocks, each mapped back to an event
//! number (numbered comments carry theirs; other kinds are aligned with the script).

use std::sync::atomic::Ordering;

use super::ctx::Ctx;
use crate::load::drive::UNKNOWN;
use crate::load::verify::align_kind;
use crate::load::wire::Wire;

/// One block of the TCP line protocol: its kind and, for a numbered comment, its number.
fn parse_block(block: &[u8]) -> Result<(String, Option<u64>), String> {
    let text = String::from_utf8_lossy(block);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if let Some(reason) = header.strip_prefix("ERROR: ") {
        return Err(format!("server error: {reason}"));
    }
    // `YYYY-MM-DD HH:MM:SS: <kind>:`
    let kind = header
        .get(21..)
        .and_then(|k| k.strip_suffix(':'))
        .ok_or_else(|| format!("bad block header {header:?}"))?;
    let number = lines
        .find_map(|l| l.strip_prefix("\ttext: #"))
        .and_then(|n| n.trim().parse().ok());
    Ok((kind.to_string(), number))
}

/// Watches feed `feed` over the line protocol until the match's `stop` and the server's close.
pub(super) async fn watch(
    ctx: &Ctx,
    slot: usize,
    feed: usize,
    index: usize,
    stream: &Wire,
) -> Result<(), String> {
    let f = &ctx.cfg.feeds[feed];
    let line = format!("VERSION:1:CONNECT:u{index}:MATCH:{}\r\n", f.id);
    stream
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("send connect: {e}"))?;
    let numbered = f.kinds.iter().filter(|k| k.as_str() == "comment").count() + 2 == f.kinds.len();
    let mut buf = Vec::new();
    loop {
        let now = ctx.now_ns();
        if buf.starts_with(b"ERROR: ") && buf.ends_with(b"\r\n") {
            return Err(parse_block(&buf).err().unwrap_or_default());
        }
        while let Some(end) = buf.windows(3).position(|w| w == b"\n\r\n") {
            let block: Vec<u8> = buf.drain(..end + 3).collect();
            let (kind, number) = parse_block(&block)?;
            let base = f.base.load(Ordering::Acquire);
            if kind == "status" {
                ctx.on_status(slot, if base == UNKNOWN { 0 } else { base });
                continue;
            }
            let seq = {
                let o = ctx.outcomes.borrow();
                match number {
                    Some(k) if numbered && base != UNKNOWN => base + 1 + k,
                    _ => {
                        let start = o[slot].checker.start().unwrap_or(0);
                        align_kind(&o[slot].checker, &f.kinds, start, &kind)
                    }
                }
            };
            ctx.on_event(slot, feed, seq, now);
            if kind == "stop" {
                ctx.set_stop(slot, seq);
            }
        }
        match ctx.read_more(stream, &mut buf).await {
            Ok(true) => {}
            Ok(false) if ctx.stopped(slot) => return Ok(()),
            Ok(false) => return Err("closed before stop".into()),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_give_their_kind_and_number() {
        let b = b"2011-09-10 19:00:03: comment:\n\ttext: #12\n\r\n";
        assert_eq!(parse_block(b).unwrap(), ("comment".into(), Some(12)));
        let b = b"2011-09-10 19:00:03: goal:\n\tteam: tig\n\r\n";
        assert_eq!(parse_block(b).unwrap(), ("goal".into(), None));
        assert!(parse_block(b"ERROR: no such match\r\n")
            .unwrap_err()
            .contains("no such match"));
    }
}
