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

/// One complete server frame found at the front of a buffer, without copying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAt {
    /// What the frame carries.
    pub opcode: OpCode,
    /// Whether the payload is compressed (RSV1, permessage-deflate).
    pub compressed: bool,
    /// Where the payload lies in the buffer.
    pub payload: std::ops::Range<usize>,
}

impl FrameAt {
    /// The bytes the frame takes in the buffer (header and payload).
    pub fn len(&self) -> usize {
        self.payload.end
    }

    /// Whether the frame takes no bytes (never: a header is at least two).
    pub fn is_empty(&self) -> bool {
        self.payload.end == 0
    }
}

/// The complete frame at the front of `buf`, if there is one (`None`: need more bytes).
pub fn frame_at(buf: &[u8]) -> io::Result<Option<FrameAt>> {
    let (header, used) = match FrameHeader::parse_with(buf, RSV1) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(e) => return Err(io::Error::other(format!("bad frame from server: {e}"))),
    };
    let end = usize::try_from(header.payload_len)
        .ok()
        .and_then(|len| used.checked_add(len))
        .ok_or_else(|| io::Error::other("bad frame from server: payload too large"))?;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(FrameAt {
        opcode: header.opcode,
        compressed: header.rsv & RSV1 != 0,
        payload: used..end,
    }))
}

/// The payload of a compressed frame, inflated (permessage-deflate).
pub fn inflate_payload(compressed: &[u8]) -> io::Result<Vec<u8>> {
    inflate_message(compressed, MAX_INFLATED)
        .map_err(|e| io::Error::other(format!("bad compressed frame from server: {e}")))
}

/// Takes one complete frame off the front of `buf`, if there is one: its opcode and payload
/// (inflated when the server compressed it: RSV1, permessage-deflate).
pub fn next_raw_frame(buf: &mut Vec<u8>) -> io::Result<Option<(OpCode, Vec<u8>)>> {
    let Some(frame) = frame_at(buf)? else {
        return Ok(None);
    };
    let bytes = &buf[frame.payload.clone()];
    let payload = if frame.compressed {
        inflate_payload(bytes)?
    } else {
        bytes.to_vec()
    };
    buf.drain(..frame.len());
    Ok(Some((frame.opcode, payload)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{encode_close, encode_frame};

    #[test]
    fn frames_are_found_in_place_and_a_partial_one_waits() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, OpCode::Text, b"{\"seq\":1}");
        let first = wire.len();
        encode_frame(&mut wire, OpCode::Text, &[b'x'; 300]);
        encode_close(&mut wire, 1000, "");
        let a = frame_at(&wire).unwrap().unwrap();
        assert_eq!((a.opcode, a.compressed), (OpCode::Text, false));
        assert_eq!(&wire[a.payload.clone()], b"{\"seq\":1}");
        assert_eq!(a.len(), first);
        let b = frame_at(&wire[first..]).unwrap().unwrap();
        assert_eq!(b.payload.len(), 300);
        let c = frame_at(&wire[first + b.len()..]).unwrap().unwrap();
        assert_eq!(c.opcode, OpCode::Close);
        // Every strict prefix of a frame is "need more", never an error or a short frame.
        for cut in 0..first {
            assert_eq!(frame_at(&wire[..cut]).unwrap(), None, "cut {cut}");
        }
        for cut in 0..b.len() {
            assert_eq!(
                frame_at(&wire[first..first + cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn the_owned_reader_still_takes_frames_off_the_front() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, OpCode::Text, b"one");
        encode_frame(&mut wire, OpCode::Ping, b"p");
        wire.push(0x81);
        assert_eq!(
            next_frame(&mut wire).unwrap(),
            Some(ServerFrame::Text(b"one".to_vec()))
        );
        assert_eq!(
            next_frame(&mut wire).unwrap(),
            Some(ServerFrame::Ping(b"p".to_vec()))
        );
        assert_eq!(next_frame(&mut wire).unwrap(), None);
        assert_eq!(wire, [0x81]);
    }

    #[test]
    fn a_masked_or_reserved_frame_from_the_server_is_an_error() {
        assert!(frame_at(&[0x81 | 0x20, 0x00]).is_err());
    }

    proptest::proptest! {
        /// Whatever the server sends, a found frame lies inside the bytes given, and taking
        /// frames off the front agrees with the in-place reader.
        #[test]
        fn any_bytes_give_frames_inside_the_buffer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut at = 0;
            let mut owned = bytes.clone();
            while let Ok(Some(frame)) = frame_at(&bytes[at..]) {
                proptest::prop_assert!(frame.payload.start <= frame.payload.end);
                proptest::prop_assert!(at + frame.len() <= bytes.len());
                let taken = next_raw_frame(&mut owned);
                if !frame.compressed {
                    let (opcode, payload) = taken.unwrap().unwrap();
                    proptest::prop_assert_eq!(opcode, frame.opcode);
                    proptest::prop_assert_eq!(&payload[..], &bytes[at + frame.payload.start..at + frame.payload.end]);
                    proptest::prop_assert_eq!(&owned[..], &bytes[at + frame.len()..]);
                } else if taken.is_err() {
                    break;
                }
                at += frame.len();
                if frame.is_empty() {
                    break;
                }
            }
        }
    }
}
