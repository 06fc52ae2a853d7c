//! The seed's TCP line protocol: one `CONNECT` line in, the status block and then event
//! blocks out; closed after `stop`. Anything else from the client: `ERROR: <reason>` and close.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use super::metrics::WorkerStats;
use super::plane::driver;
use super::plane::record::Flavour;
use super::stream::{drive, read_more, Handler, ReadMore};
use super::tls::socket::Socket;
use super::watch::{self, ConnRef};
use super::worker::{ConnKind, ConnState, Worker};
use crate::proto::line::{encode_error, parse_connect};

/// Longest `CONNECT` line accepted.
pub const MAX_CONNECT_LINE: usize = 512;

/// After the `CONNECT` line the client has nothing more to say.
struct LineHandler;

impl Handler for LineHandler {
    fn on_data(&mut self, _data: &[u8], state: &ConnState) {
        let mut out = Vec::new();
        encode_error(&mut out, "unexpected input after CONNECT");
        state.outbox.push_raw_and_close(Bytes::from(out));
    }

    fn on_eof(&mut self, _state: &ConnState) -> bool {
        // `printf 'VERSION:1:CONNECT:…' | nc` half-closes: keep sending events.
        true
    }

    fn finished(&self) -> bool {
        true
    }
}

/// Serves one TCP line-protocol connection. True when the socket went to the watcher plane
/// (its connection entry is gone then).
pub async fn serve(
    worker: &Rc<Worker>,
    stream: Socket,
    conn: usize,
    state: &Rc<ConnState>,
) -> bool {
    let deadline = Instant::now() + worker.shared.config.handshake_timeout;
    let mut inbuf = Vec::new();
    let (request, used) = loop {
        match parse_connect(&inbuf, MAX_CONNECT_LINE) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => {
                WorkerStats::add(&worker.stats().protocol_errors, 1);
                let mut out = Vec::new();
                encode_error(&mut out, &e.reason());
                let _ = stream.write_all(&out).await;
                return false;
            }
        }
        match read_more(worker, &stream, state, deadline, &mut inbuf).await {
            ReadMore::Data(_) => {}
            ReadMore::Closed | ReadMore::TimedOut => return false,
        }
    };
    if inbuf.len() > used {
        let mut out = Vec::new();
        encode_error(&mut out, "unexpected input after CONNECT");
        let _ = stream.write_all(&out).await;
        return false;
    }
    drop(inbuf);
    let stream = match (worker.plane.is_some(), stream.into_plain()) {
        (true, Ok(stream)) => {
            let peer = super::worker::hand_over(worker, conn);
            let id = driver::adopt(worker, stream, Flavour::Line, &[], peer);
            watch::watch(worker, ConnRef::Plane(id), &request.mid, None);
            driver::pump(worker);
            return true;
        }
        (false, Ok(stream)) => Socket::plain(stream),
        // TLS: encrypted per connection, so a connection task.
        (_, Err(socket)) => socket,
    };
    state.kind.set(ConnKind::Line);
    if let Some(fd) = stream.direct_fd() {
        state.outbox.enable_direct_writes(fd);
    }
    WorkerStats::add(&worker.stats().line_connections, 1);
    let watcher = ConnRef::task(conn, state.serial);
    watch::watch(worker, watcher, &request.mid, None);
    drive(worker, &stream, state, &mut LineHandler).await;
    stream.close_notify();
    WorkerStats::sub(&worker.stats().line_connections, 1);
    false
}
