//! One watcher's life after its first connect: watch over its wire, and when the connection
//! drops (and `--reconnect` allows it) connect again elsewhere and resume with `since`.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use crate::load::wire::Wire;

use super::connect::reconnect;
use super::ctx::Ctx;
use super::{line, sse, ws, Phase, Protocol};

/// How a watch ended badly.
pub(super) struct Failure {
    /// The connection dropped (EOF, reset, a close before the end): a reconnect may resume.
    pub(super) dropped: bool,
    /// What happened.
    pub(super) why: String,
}

/// A failure a reconnect may resume from.
pub(super) fn dropped(why: impl Into<String>) -> Failure {
    Failure {
        dropped: true,
        why: why.into(),
    }
}

/// A failure no reconnect can mend.
pub(super) fn failed(why: impl Into<String>) -> Failure {
    Failure {
        dropped: false,
        why: why.into(),
    }
}

/// Runs watcher `slot` (client `index`) on `stream` until it finishes or fails for good.
pub(super) async fn watcher(
    ctx: Rc<Ctx>,
    slot: usize,
    index: usize,
    mut stream: Wire,
    mut leftover: Vec<u8>,
) {
    let feed = ctx.outcomes.borrow()[slot].feed as usize;
    let mut since = None;
    loop {
        let result = match ctx.cfg.protocol {
            Protocol::Ws => ws::watch(&ctx, slot, feed, index, &mut stream, leftover, since).await,
            Protocol::Tcp => line::watch(&ctx, slot, feed, index, &stream)
                .await
                .map_err(failed),
            Protocol::Sse => sse::watch(&ctx, slot, feed, &stream, since).await,
        };
        ctx.progress.open.fetch_sub(1, Ordering::AcqRel);
        let why = match result {
            Ok(()) => return ctx.finish(slot, Phase::Finished),
            Err(f)
                if f.dropped
                    && ctx.cfg.reconnect
                    && !ctx.cfg.raw
                    && ctx.cfg.protocol == Protocol::Ws =>
            {
                f.why
            }
            Err(f) => {
                ctx.outcomes.borrow_mut()[slot].unexpected_close = true;
                ctx.fail(slot, f.why);
                return ctx.finish(slot, Phase::Watching);
            }
        };
        drop(stream);
        let dead = ctx.outcomes.borrow()[slot].server;
        match reconnect(&ctx, index, dead).await {
            Ok((target, s, rest)) => {
                let mut o = ctx.outcomes.borrow_mut();
                o[slot].reconnects += 1;
                o[slot].server = Some(target.addr);
                since = Some(o[slot].checker.last());
                drop(o);
                ctx.progress.reconnects.fetch_add(1, Ordering::AcqRel);
                ctx.progress.open.fetch_add(1, Ordering::AcqRel);
                stream = s;
                leftover = rest;
            }
            Err(e) => {
                ctx.outcomes.borrow_mut()[slot].unexpected_close = true;
                ctx.fail(slot, format!("{why}; reconnect failed: {e}"));
                return ctx.finish(slot, Phase::Watching);
            }
        }
    }
}
