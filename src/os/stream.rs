//! Whole-buffer reads and writes on a monoio `TcpStream`: readiness from io_uring, the bytes
//! moved by non-blocking [`sys`] calls.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use super::sys::{self, Transfer};

/// Writes all of `bytes`, waiting for write readiness as needed.
pub async fn write_all(stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        match sys::send_nonblocking(stream.as_raw_fd(), &[&bytes[done..]])? {
            Transfer::Done(n) => done += n,
            Transfer::WouldBlock => stream.writable(false).await?,
        }
    }
    Ok(())
}

/// Reads what `stream` has into `scratch` and appends it to `buf`, waiting for readiness when
/// nothing is there yet; `Ok(0)` means the peer closed.
///
/// `scratch` is borrowed only for the non-blocking `recv`, never across the wait, so the
/// tasks of one thread can share one buffer.
pub async fn recv_some(
    stream: &TcpStream,
    scratch: &RefCell<Vec<u8>>,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    loop {
        let got = {
            let mut scratch = scratch.borrow_mut();
            match sys::recv_nonblocking(stream.as_raw_fd(), &mut scratch)? {
                Transfer::Done(n) => {
                    buf.extend_from_slice(&scratch[..n]);
                    Some(n)
                }
                Transfer::WouldBlock => None,
            }
        };
        match got {
            Some(n) => return Ok(n),
            None => stream.readable(false).await?,
        }
    }
}
