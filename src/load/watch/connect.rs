//! Getting a watcher onto a server: the load thread's connectors (at the ramp rate, a bounded
//! number of handshakes at a time), the choice of server (round-robin, or `GET /1/checkin`)
//! and the reconnect of a dropped watcher, with backoff and jitter.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::ctx::Ctx;
use super::session::watcher;
use super::{source_for, Endpoint, Phase, Protocol};
use crate::load::client;
use crate::load::wire::Wire;

/// How long a dropped watcher keeps trying to reconnect before it counts as failed.
pub const RECONNECT_GIVE_UP: Duration = Duration::from_secs(60);
/// Bound on one reconnect attempt's connect + handshake (+ checkin).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the next client of the thread, connects it, and hands it to a watcher task.
pub(super) async fn connector(ctx: Rc<Ctx>, next: Rc<Cell<usize>>, started: Instant) {
    loop {
        let slot = next.get();
        if slot >= ctx.indices.len() || ctx.progress.stop.load(Ordering::Acquire) {
            return;
        }
        next.set(slot + 1);
        if let Some(rate) = ctx.cfg.rate_per_thread {
            let due = started + Duration::from_secs_f64(slot as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                monoio::time::sleep(wait).await;
            }
        }
        let index = ctx.indices[slot];
        let source = source_for(index, ctx.cfg.sources);
        let target = match pick_target(&ctx, index, None, 0).await {
            Ok(t) => t,
            Err(e) => {
                ctx.progress.connect_failed.fetch_add(1, Ordering::AcqRel);
                ctx.fail(slot, format!("checkin: {e}"));
                ctx.finish(slot, Phase::ConnectFailed);
                continue;
            }
        };
        let stream = match client::connect_from(source, target.addr).await {
            Ok(s) => s,
            Err(e) => {
                ctx.progress.connect_failed.fetch_add(1, Ordering::AcqRel);
                ctx.fail(
                    slot,
                    format!("connect: {}", explain_connect_error(&e, source)),
                );
                ctx.finish(slot, Phase::ConnectFailed);
                continue;
            }
        };
        let stream = match Wire::open(stream, ctx.cfg.tls.as_ref()).await {
            Ok(s) => s,
            Err(e) => {
                ctx.progress.handshake_failed.fetch_add(1, Ordering::AcqRel);
                ctx.fail(slot, format!("TLS handshake: {e}"));
                ctx.finish(slot, Phase::HandshakeFailed);
                continue;
            }
        };
        let leftover = if ctx.cfg.protocol == Protocol::Ws {
            let scratch = RefCell::new(vec![0u8; 2048]);
            match client::handshake_with(
                &stream,
                &target.host,
                &ctx.cfg.path,
                &scratch,
                ctx.cfg.offer(),
            )
            .await
            {
                Ok(rest) => rest,
                Err(e) => {
                    ctx.progress.handshake_failed.fetch_add(1, Ordering::AcqRel);
                    ctx.fail(slot, format!("handshake: {e}"));
                    ctx.finish(slot, Phase::HandshakeFailed);
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        ctx.progress.connected.fetch_add(1, Ordering::AcqRel);
        ctx.progress.open.fetch_add(1, Ordering::AcqRel);
        {
            let mut o = ctx.outcomes.borrow_mut();
            o[slot].phase = Phase::Watching;
            o[slot].first_server = Some(target.addr);
            o[slot].server = Some(target.addr);
        }
        monoio::spawn(watcher(ctx.clone(), slot, index, stream, leftover));
    }
}

/// Says which harness limit a connect error points at.
fn explain_connect_error(e: &io::Error, source: IpAddr) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            format!("{e} (harness out of file descriptors: raise ulimit -n or --threads)")
        }
        Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => {
            format!("{e} (harness out of ports from {source}: more --sources)")
        }
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => format!("{e} (kernel out of memory)"),
        _ => e.to_string(),
    }
}

/// The server for watcher `index`: round-robin over the targets (skipping `dead`, spread by
/// `index` and `attempt`), or what `GET /1/checkin` on one of them names.
async fn pick_target(
    ctx: &Ctx,
    index: usize,
    dead: Option<SocketAddr>,
    attempt: u32,
) -> io::Result<Endpoint> {
    let targets = &ctx.cfg.targets;
    let alive: Vec<&Endpoint> = targets.iter().filter(|t| Some(t.addr) != dead).collect();
    let pool = if alive.is_empty() {
        targets.iter().collect()
    } else {
        alive
    };
    let k = (index + attempt as usize) % pool.len();
    if let Some(http) = &ctx.cfg.checkin {
        let ask = &http[(index + attempt as usize) % http.len()];
        let source = source_for(index, ctx.cfg.sources);
        let named = checkin(source, ask, ctx.cfg.tls.as_ref()).await?;
        // A node that just died is named until its registration expires: go round-robin.
        if Some(named.addr) != dead {
            return Ok(named);
        }
    }
    Ok(pool[k].clone())
}

/// `GET /1/checkin` on `server`: the `ws` URL it names.
async fn checkin(
    source: IpAddr,
    server: &Endpoint,
    ctx_tls: Option<&crate::load::wire::TlsClient>,
) -> io::Result<Endpoint> {
    let stream = client::connect_from(source, server.addr).await?;
    let stream = Wire::open(stream, ctx_tls).await?;
    let request = format!(
        "GET /1/checkin HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        server.host
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    let scratch = RefCell::new(vec![0u8; 4096]);
    while stream.recv_some(&scratch, &mut buf).await? > 0 && buf.len() < 16384 {}
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let ws = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("ws")?.as_str().map(str::to_string))
        .ok_or_else(|| io::Error::other(format!("no ws URL from {}", server.host)))?;
    let host = ws
        .trim_start_matches("ws://")
        .trim_start_matches("wss://")
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let (addr, host) = crate::load::server_addr(&host)?;
    Ok(Endpoint { addr, host })
}

/// Connects a dropped watcher again (another server first), with backoff and jitter, for at
/// most [`RECONNECT_GIVE_UP`].
pub(super) async fn reconnect(
    ctx: &Ctx,
    index: usize,
    dead: Option<SocketAddr>,
) -> Result<(Endpoint, Wire, Vec<u8>), String> {
    let deadline = Instant::now() + RECONNECT_GIVE_UP;
    let seed = crate::load::seed(index as u64);
    let source = source_for(index, ctx.cfg.sources);
    let mut last = String::from("stopped");
    for attempt in 0u32.. {
        if ctx.progress.stop.load(Ordering::Acquire) || Instant::now() >= deadline {
            break;
        }
        monoio::time::sleep(crate::load::backoff(attempt, seed)).await;
        let attempt_fut = async {
            let target = pick_target(ctx, index, dead, attempt)
                .await
                .map_err(|e| format!("checkin: {e}"))?;
            let stream = client::connect_from(source, target.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", target.addr))?;
            let stream = Wire::open(stream, ctx.cfg.tls.as_ref())
                .await
                .map_err(|e| format!("TLS handshake {}: {e}", target.addr))?;
            let scratch = RefCell::new(vec![0u8; 2048]);
            let rest = client::handshake_with(
                &stream,
                &target.host,
                &ctx.cfg.path,
                &scratch,
                ctx.cfg.offer(),
            )
            .await
            .map_err(|e| format!("handshake {}: {e}", target.addr))?;
            Ok::<_, String>((target, stream, rest))
        };
        match monoio::time::timeout(ATTEMPT_TIMEOUT, attempt_fut).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("attempt timed out after {ATTEMPT_TIMEOUT:?}"),
        }
    }
    Err(last)
}
