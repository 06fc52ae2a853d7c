//! The seed's TCP line protocol: one `CONNECT` line in, status and event blocks out.

use std::rc::Rc;
use std::time::Instant;

use monoio::net::TcpStream;

use super::stream::{read_more, write_all, ReadMore};
use super::worker::{ConnState, Worker};
use crate::proto::line::{encode_error, parse_connect};

/// Longest `CONNECT` line accepted.
pub const MAX_CONNECT_LINE: usize = 512;

/// Serves one TCP line-protocol connection.
pub async fn serve(worker: &Rc<Worker>, stream: TcpStream, state: &Rc<ConnState>) {
    let deadline = Instant::now() + worker.shared.config.handshake_timeout;
    let mut inbuf = Vec::new();
    let request = loop {
        match parse_connect(&inbuf, MAX_CONNECT_LINE) {
            Ok(Some((request, _))) => break request,
            Ok(None) => {}
            Err(e) => {
                let mut out = Vec::new();
                encode_error(&mut out, &e.to_string());
                let _ = write_all(&stream, &out).await;
                return;
            }
        }
        match read_more(worker, &stream, state, deadline, &mut inbuf).await {
            ReadMore::Data(_) => {}
            ReadMore::Closed | ReadMore::TimedOut => return,
        }
    };
    let mut out = Vec::new();
    encode_error(&mut out, &format!("match not found: {}", request.mid));
    let _ = write_all(&stream, &out).await;
}
