//! The seed's TCP line protocol: one `CONNECT` line in, the status block and then event
//! blocks out; closed after `stop`. Anything else from the client: `ERROR: <reason>` and close.

use std::rc::Rc;
use std::time::Instant;

use super::metrics::WorkerStats;
use super::plane::driver;
use super::plane::record::Flavour;
use super::stream::{read_more, ReadMore};
use super::tls::socket::Socket;
use super::watch;
use super::worker::{ConnState, Worker};
use crate::proto::line::{encode_error, parse_connect};

/// Longest `CONNECT` line accepted.
pub const MAX_CONNECT_LINE: usize = 512;

/// Serves one TCP line-protocol connection until its `CONNECT`, then hands it to the watcher
/// plane. True when it went to the plane (its connection entry is gone then).
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
    let peer = super::worker::hand_over(worker, conn);
    let id = driver::adopt(worker, stream, Flavour::Line, &[], peer);
    watch::watch(worker, id, &request.mid, None);
    driver::pump(worker);
    true
}
