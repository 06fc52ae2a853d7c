//! One load-generator client: a TCP connection from a chosen source address, the client
//! side of the WebSocket handshake, and a reader of server frames (unmasked) that hands
//! complete text messages to the caller.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};

use monoio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::load::wire::Wire;
use crate::proto::deflate::{inflate_message, RSV1};
use crate::proto::frame::{FrameHeader, OpCode};

/// The largest message a compressed server frame may inflate to.
const MAX_INFLATED: usize = 16 << 20;
use crate::proto::mask::apply_mask;

/// Connects to `server` from `source` (port chosen by the kernel at connect time, so one
/// source address serves many destinations).
pub async fn connect_from(source: IpAddr, server: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int.
    unsafe {
        let one: libc::c_int = 1;
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::new(source, 0).into())?;
    match socket.connect(&server.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: the descriptor is a connected (or connecting) TCP socket we own; ownership
    // moves into the std stream.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(socket.into_raw_fd()) };
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into the live local `err`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// The bytes of a client handshake request for `path` on `host`.
pub fn handshake_request(host: &str, path: &str, key: &str) -> Vec<u8> {
    handshake_request_with(host, path, key, None)
}

/// A client handshake request offering `extensions` (a `Sec-WebSocket-Extensions` value).
pub fn handshake_request_with(
    host: &str,
    path: &str,
    key: &str,
    extensions: Option<&str>,
) -> Vec<u8> {
    let offer = extensions.map_or(String::new(), |e| {
        format!("Sec-WebSocket-Extensions: {e}\r\n")
    });
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
    .into_bytes()
}

/// What `--deflate` watchers offer (as a browser does).
pub const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Performs the client handshake; returns bytes that arrived after the 101 response.
pub async fn handshake(
    stream: &Wire,
    host: &str,
    path: &str,
    scratch: &RefCell<Vec<u8>>,
) -> io::Result<Vec<u8>> {
    handshake_with(stream, host, path, scratch, None).await
}

/// [`handshake`] offering `extensions` (e.g. [`DEFLATE_OFFER`]).
pub async fn handshake_with(
    stream: &Wire,
    host: &str,
    path: &str,
    scratch: &RefCell<Vec<u8>>,
    extensions: Option<&str>,
) -> io::Result<Vec<u8>> {
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    stream
        .write_all(&handshake_request_with(host, path, key, extensions))
        .await?;
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = &buf[..end];
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned();
                return Err(io::Error::other(format!("handshake refused: {line}")));
            }
            let expected = crate::proto::handshake::accept_key(key.as_bytes());
            let text = String::from_utf8_lossy(head).to_ascii_lowercase();
            if !text.contains(&format!(
                "sec-websocket-accept: {}",
                expected.to_ascii_lowercase()
            )) {
                return Err(io::Error::other("handshake: wrong Sec-WebSocket-Accept"));
            }
            return Ok(buf.split_off(end + 4));
        }
        if buf.len() > 8192 {
            return Err(io::Error::other("handshake: response head too large"));
        }
        if stream.recv_some(scratch, &mut buf).await? == 0 {
            return Err(io::Error::other("handshake: connection closed"));
        }
    }
}

/// A frame received from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerFrame {
    /// A text message (servers here never fragment).
    Text(Vec<u8>),
    /// A ping to answer.
    Ping(Vec<u8>),
    /// A close frame with its code (1005 when none).
    Close(u16),
    /// Anything else (pong, binary).
    Other,
}

/// Takes one complete frame off the front of `buf`, if there is one: its opcode and payload
/// (inflated when the server compressed it: RSV1, permessage-deflate).
pub fn next_raw_frame(buf: &mut Vec<u8>) -> io::Result<Option<(OpCode, Vec<u8>)>> {
    let (header, used) = match FrameHeader::parse_with(buf, RSV1) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("bad frame from server: {e}"))),
    };
    let len = header.payload_len as usize;
    if buf.len() < used + len {
        return Ok(None);
    }
    let payload: Vec<u8> = if header.rsv & RSV1 != 0 {
        inflate_message(&buf[used..used + len], MAX_INFLATED)
            .map_err(|e| io::Error::other(format!("bad compressed frame from server: {e}")))?
    } else {
        buf[used..used + len].to_vec()
    };
    buf.drain(..used + len);
    Ok(Some((header.opcode, payload)))
}

/// The code (1005 when none) and reason of a close frame's payload.
pub fn close_code_and_reason(payload: &[u8]) -> (u16, String) {
    match payload {
        [a, b, reason @ ..] => (
            u16::from_be_bytes([*a, *b]),
            String::from_utf8_lossy(reason).into_owned(),
        ),
        _ => (1005, String::new()),
    }
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn next_frame(buf: &mut Vec<u8>) -> io::Result<Option<ServerFrame>> {
    Ok(next_raw_frame(buf)?.map(|(opcode, payload)| match opcode {
        OpCode::Text => ServerFrame::Text(payload),
        OpCode::Ping => ServerFrame::Ping(payload),
        OpCode::Close => ServerFrame::Close(close_code_and_reason(&payload).0),
        _ => ServerFrame::Other,
    }))
}

/// Encodes a masked client frame.
pub fn client_frame(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some(mask),
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    header.encode(&mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
    out
}
