//! The per-connection WebSocket state machine, server role (RFC 6455 §5–§7).
//!
//! [`WsSession::receive`] takes whatever bytes a read produced and appends [`WsEvent`]s: whole
//! messages for the application, bytes the runtime must write (pongs, close frames), and
//! [`WsEvent::Closed`] when the connection should be dropped once those bytes are written.
//! The session never does I/O and never reads a clock (keepalive lives in
//! [`super::keepalive`]).
//!
//! Memory: a data frame's payload is unmasked straight into the message being assembled as
//! it arrives, so only an unfinished frame header or control frame (at most 139 bytes) is
//! ever copied aside, and an idle session between messages owns no heap buffer at all.
//! Text is checked incrementally so invalid UTF-8 fails the connection (1007) as soon as it
//! arrives, even in the middle of a frame.
//!
//! With permessage-deflate negotiated ([`WsSession::enable_deflate`]), a message whose first
//! frame has RSV1 set is inflated as its payload arrives ([`Inflater`]), bounded by
//! `max_message_bytes` of output (and of compressed input): past it, close 1009. RSV1 on a
//! control or continuation frame is a protocol error (1002), corrupt data is 1007.

use super::deflate::{InflateError, Inflater, RSV1};
use super::error::ProtocolError;
use super::frame::{
    encode_close, encode_frame, parse_close_payload, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD,
    MAX_HEADER_LEN,
};
use super::mask::apply_mask;
use super::utf8::Utf8Validator;
use std::mem;

/// The most bytes ever kept between reads: a whole control frame, header included.
const MAX_TAIL: usize = MAX_HEADER_LEN + MAX_CONTROL_PAYLOAD;

/// Size limits and policy for one WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsLimits {
    /// Setting `max_frame_bytes`: the largest payload one frame may announce; bigger → close
    /// 1009. Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Setting `max_message_bytes`: the largest total payload of one (possibly fragmented)
    /// message; bigger → close 1009. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Setting `accept_binary`: whether binary messages are delivered; when false a binary
    /// message is answered with close 1003 (unsupported data). Default false.
    pub accept_binary: bool,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            max_message_bytes: 64 * 1024,
            accept_binary: false,
        }
    }
}

/// What [`WsSession::receive`] asks of the application and the runtime, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete, valid text message.
    Text(String),
    /// A complete binary message (only when [`WsLimits::accept_binary`]).
    Binary(Vec<u8>),
    /// Bytes the runtime must write to the peer: a pong, a close echo, an error close.
    Send(Vec<u8>),
    /// The connection is finished: write every earlier `Send`, then close the socket.
    Closed,
}

/// An idle session in one byte (see [`WsSession::park`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// Messages flow both ways.
    Open,
    /// Our close frame was sent; the peer's is awaited.
    Closing,
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    Closing,
    /// Done; input is ignored.
    Closed,
}

/// The type of the message being assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Text,
    Binary,
}

/// A data frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct DataFrame {
    /// Payload bytes not yet received.
    remaining: usize,
    /// The frame's masking key.
    mask: [u8; 4],
    /// Payload bytes already received, modulo 4 (the mask offset).
    offset: u8,
    /// Whether the frame ends its message.
    fin: bool,
}

/// One server-side WebSocket connection's protocol state.
#[derive(Debug)]
pub struct WsSession {
    limits: WsLimits,
    /// An unfinished frame header or control frame (empty, with no capacity, when none).
    tail: Vec<u8>,
    /// The unmasked payload of the message being assembled (no capacity between messages).
    message: Vec<u8>,
    /// The data frame whose payload is arriving, if any.
    frame: Option<DataFrame>,
    /// The type of the message in progress; `None` between messages.
    kind: Option<MessageKind>,
    /// Fail-fast UTF-8 state for a text message in progress.
    utf8: Utf8Validator,
    phase: Phase,
    /// The session ended because the peer broke a protocol rule.
    failed: bool,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The inflater of the compressed message being assembled (`None` between messages).
    inflater: Option<Box<Inflater>>,
}

impl WsSession {
    /// Whether the session ended because the peer broke a protocol rule (the close code
    /// sent was 1002, 1003, 1007 or 1009).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// A session for a connection whose handshake has just completed.
    pub fn new(limits: WsLimits) -> Self {
        Self {
            limits,
            tail: Vec::new(),
            message: Vec::new(),
            frame: None,
            kind: None,
            utf8: Utf8Validator::new(),
            phase: Phase::Open,
            failed: false,
            deflate: false,
            inflater: None,
        }
    }

    /// Accepts compressed messages (RSV1) from now on: permessage-deflate was negotiated.
    pub fn enable_deflate(&mut self) {
        self.deflate = true;
    }

    /// Whether permessage-deflate was negotiated on this connection.
    pub fn deflate_enabled(&self) -> bool {
        self.deflate
    }

    /// Consumes all of `input` (the next bytes read from the peer) and appends the events it
    /// produces to `events`. Input after the session is closed is ignored.
    pub fn receive(&mut self, mut input: &[u8], events: &mut Vec<WsEvent>) {
        if self.phase == Phase::Closed {
            return;
        }
        if !self.tail.is_empty() {
            // Complete the unfinished frame start with just enough input, then go on with the
            // rest of the input in place (no copy of payload bytes).
            let old = self.tail.len();
            let take = input.len().min(MAX_TAIL - old);
            let mut tail = mem::take(&mut self.tail);
            tail.extend_from_slice(&input[..take]);
            let used = self.process(&tail, events);
            if used < old {
                // Still unfinished: then all of the input fit in the tail.
                debug_assert_eq!(take, input.len());
                if self.phase != Phase::Closed {
                    self.tail = tail;
                }
                return;
            }
            input = &input[used - old..];
        }
        let used = self.process(input, events);
        if used < input.len() && self.phase != Phase::Closed {
            self.tail = input[used..].to_vec();
        }
    }

    /// Starts a server-initiated close: returns the close frame to write, or `None` if a close
    /// was already sent or the session is closed. The session then waits for the peer's close
    /// and reports [`WsEvent::Closed`]; messages arriving meanwhile are dropped.
    pub fn close(&mut self, code: u16, reason: &str) -> Option<Vec<u8>> {
        if self.phase != Phase::Open {
            return None;
        }
        self.phase = Phase::Closing;
        let mut out = Vec::with_capacity(4 + reason.len().min(MAX_CONTROL_PAYLOAD));
        encode_close(&mut out, code, reason);
        Some(out)
    }

    /// A ping frame to write (keepalive); the payload is cut to 125 bytes.
    pub fn ping(&mut self, payload: &[u8]) -> Vec<u8> {
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        let mut out = Vec::with_capacity(2 + payload.len());
        encode_frame(&mut out, OpCode::Ping, payload);
        out
    }

    /// Whether a close frame was sent (or the session is closed): send no more messages.
    pub fn is_closing(&self) -> bool {
        self.phase != Phase::Open
    }

    /// Whether the session is finished and the connection should be dropped.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// The session reduced to one byte, when it holds nothing else: no partial frame or
    /// message, and not closed. A watcher's session is idle almost all the time, so its
    /// owner keeps this byte and rebuilds the session with [`WsSession::unpark`] when bytes
    /// arrive or a ping or close is due. `None` while a frame or message is unfinished.
    /// Whether permessage-deflate was negotiated is not in the byte: the owner knows it and
    /// calls [`WsSession::enable_deflate`] again after unparking.
    pub fn park(&self) -> Option<Parked> {
        let idle = self.tail.is_empty()
            && self.message.capacity() == 0
            && self.frame.is_none()
            && self.kind.is_none()
            && self.inflater.is_none();
        match self.phase {
            Phase::Open if idle => Some(Parked::Open),
            Phase::Closing if idle => Some(Parked::Closing),
            _ => None,
        }
    }

    /// Rebuilds a session from [`WsSession::park`]'s byte and the connection's limits.
    pub fn unpark(limits: WsLimits, parked: Parked) -> Self {
        let mut session = Self::new(limits);
        if parked == Parked::Closing {
            session.phase = Phase::Closing;
        }
        session
    }

    /// Whether a message (or a frame) has begun and is not complete yet. The runtime bounds
    /// how long that may last (`--ws-message-timeout-ms`); the session has no clock.
    pub fn is_mid_message(&self) -> bool {
        self.kind.is_some() || self.frame.is_some() || !self.tail.is_empty()
    }

    /// The heap bytes this session holds (partial frame and message buffers); 0 when idle.
    pub fn buffered_capacity(&self) -> usize {
        self.tail.capacity() + self.message.capacity()
    }

    /// Runs frames from `buf`; returns how many bytes were consumed. Stops early only at an
    /// unfinished header or control frame (which the caller keeps), or when closed.
    fn process(&mut self, buf: &[u8], events: &mut Vec<WsEvent>) -> usize {
        let mut pos = 0;
        while self.phase != Phase::Closed {
            if let Some(frame) = self.frame {
                let n = frame.remaining.min(buf.len() - pos);
                if let Err(e) = self.take_payload(frame, &buf[pos..pos + n], events) {
                    self.fail(e, events);
                    break;
                }
                pos += n;
                if pos == buf.len() && self.frame.is_some() {
                    break;
                }
                continue;
            }
            let allowed_rsv = if self.deflate { RSV1 } else { 0 };
            let step =
                FrameHeader::parse_with(&buf[pos..], allowed_rsv).and_then(|parsed| match parsed {
                    None => Ok(None),
                    Some((header, n)) => Ok(self
                        .start_frame(header, &buf[pos + n..], events)?
                        .map(|payload| n + payload)),
                });
            match step {
                Ok(Some(used)) => pos += used,
                Ok(None) => return pos,
                Err(e) => {
                    self.fail(e, events);
                    break;
                }
            }
        }
        if self.phase == Phase::Closed {
            buf.len()
        } else {
            pos
        }
    }

    /// Handles a parsed header whose payload starts at `rest`. Returns the payload bytes
    /// consumed (a control frame is handled whole), or `None` if a control frame's payload is
    /// not all there yet.
    fn start_frame(
        &mut self,
        header: FrameHeader,
        rest: &[u8],
        events: &mut Vec<WsEvent>,
    ) -> Result<Option<usize>, ProtocolError> {
        let mask = header.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        let compressed = header.rsv & RSV1 != 0;
        if compressed && matches!(header.opcode, OpCode::Continuation)
            || header.opcode.is_control() && header.rsv != 0
        {
            // RSV1 marks a message, on its first frame only (RFC 7692 §6).
            return Err(ProtocolError::ReservedBits);
        }
        if header.opcode.is_control() {
            let len = header.payload_len as usize; // ≤ 125, checked by the parser
            if rest.len() < len {
                return Ok(None);
            }
            let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
            payload[..len].copy_from_slice(&rest[..len]);
            apply_mask(&mut payload[..len], mask, 0);
            self.on_control(header.opcode, &payload[..len], events)?;
            return Ok(Some(len));
        }
        let kind = match (header.opcode, self.kind) {
            (OpCode::Continuation, Some(kind)) => kind,
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (_, Some(_)) => return Err(ProtocolError::ExpectedContinuation),
            (OpCode::Binary, None) if !self.limits.accept_binary => {
                return Err(ProtocolError::BinaryNotAccepted)
            }
            (OpCode::Binary, None) => MessageKind::Binary,
            (_, None) => MessageKind::Text,
        };
        if header.payload_len > self.limits.max_frame_bytes as u64 {
            return Err(ProtocolError::FrameTooBig);
        }
        let len = header.payload_len as usize;
        let max = self.limits.max_message_bytes;
        if compressed {
            self.inflater = Some(Box::new(Inflater::new(max)));
        }
        let received = match &self.inflater {
            Some(inflater) => inflater.received(),
            None => self.message.len(),
        };
        if received + len > max {
            return Err(ProtocolError::MessageTooBig);
        }
        self.kind = Some(kind);
        self.frame = Some(DataFrame {
            remaining: len,
            mask,
            offset: 0,
            fin: header.fin,
        });
        Ok(Some(0))
    }

    /// Unmasks the next `chunk` of the current data frame into the message; finishes the
    /// frame (and the message, on FIN) when its payload is complete.
    fn take_payload(
        &mut self,
        mut frame: DataFrame,
        chunk: &[u8],
        events: &mut Vec<WsEvent>,
    ) -> Result<(), ProtocolError> {
        let start = self.message.len();
        let ends_message = frame.remaining == chunk.len() && frame.fin;
        if let Some(inflater) = self.inflater.as_deref_mut() {
            inflate_masked(inflater, chunk, frame.mask, frame.offset, &mut self.message)?;
            if ends_message {
                inflater.finish(&mut self.message).map_err(inflate_error)?;
            }
        } else {
            self.message.extend_from_slice(chunk);
            apply_mask(
                &mut self.message[start..],
                frame.mask,
                usize::from(frame.offset),
            );
        }
        frame.remaining -= chunk.len();
        frame.offset = ((usize::from(frame.offset) + chunk.len()) % 4) as u8;
        // The final piece is checked with the whole message below; earlier pieces are fed to
        // the incremental validator so that bad text fails before the message ends.
        if self.kind == Some(MessageKind::Text) && !ends_message {
            self.utf8.feed(&self.message[start..])?;
        }
        if frame.remaining > 0 {
            self.frame = Some(frame);
            return Ok(());
        }
        self.frame = None;
        if ends_message {
            self.finish_message(events)?;
        }
        Ok(())
    }

    /// Delivers the assembled message and returns to the between-messages state.
    fn finish_message(&mut self, events: &mut Vec<WsEvent>) -> Result<(), ProtocolError> {
        let data = mem::take(&mut self.message);
        let kind = self.kind.take();
        self.inflater = None;
        self.utf8 = Utf8Validator::new();
        let event = match kind {
            Some(MessageKind::Text) => {
                WsEvent::Text(String::from_utf8(data).map_err(|_| ProtocolError::InvalidUtf8)?)
            }
            _ => WsEvent::Binary(data),
        };
        if self.phase == Phase::Open {
            events.push(event);
        }
        Ok(())
    }

    /// Handles a whole, unmasked control frame.
    fn on_control(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        events: &mut Vec<WsEvent>,
    ) -> Result<(), ProtocolError> {
        match opcode {
            OpCode::Ping if self.phase == Phase::Open => {
                let mut pong = Vec::with_capacity(2 + payload.len());
                encode_frame(&mut pong, OpCode::Pong, payload);
                events.push(WsEvent::Send(pong));
            }
            OpCode::Close => {
                let status = parse_close_payload(payload)?;
                if self.phase == Phase::Open {
                    let mut echo = Vec::with_capacity(4);
                    match status {
                        Some((code, _reason)) => encode_close(&mut echo, code, ""),
                        None => encode_frame(&mut echo, OpCode::Close, &[]),
                    }
                    events.push(WsEvent::Send(echo));
                }
                self.shut(events);
            }
            _ => {} // pongs, and pings while closing
        }
        Ok(())
    }

    /// Fails the connection: a close frame with the error's code (unless one was already
    /// sent), then `Closed`.
    fn fail(&mut self, error: ProtocolError, events: &mut Vec<WsEvent>) {
        self.failed = true;
        if self.phase == Phase::Open {
            let mut out = Vec::with_capacity(32);
            encode_close(&mut out, error.close_code(), &error.to_string());
            events.push(WsEvent::Send(out));
        }
        self.shut(events);
    }

    /// Enters the closed state, frees the buffers and reports `Closed`.
    fn shut(&mut self, events: &mut Vec<WsEvent>) {
        self.phase = Phase::Closed;
        self.tail = Vec::new();
        self.message = Vec::new();
        self.frame = None;
        self.kind = None;
        self.inflater = None;
        events.push(WsEvent::Closed);
    }
}

/// Unmasks `chunk` (masked with `mask` from `offset`) piece by piece on the stack and feeds
/// it to `inflater`, appending the output to `out`.
fn inflate_masked(
    inflater: &mut Inflater,
    chunk: &[u8],
    mask: [u8; 4],
    offset: u8,
    out: &mut Vec<u8>,
) -> Result<(), ProtocolError> {
    let mut piece = [0u8; 4096];
    let mut offset = usize::from(offset);
    for part in chunk.chunks(piece.len()) {
        let piece = &mut piece[..part.len()];
        piece.copy_from_slice(part);
        apply_mask(piece, mask, offset);
        offset = (offset + part.len()) % 4;
        inflater.feed(piece, out).map_err(inflate_error)?;
    }
    Ok(())
}

fn inflate_error(e: InflateError) -> ProtocolError {
    match e {
        InflateError::TooBig => ProtocolError::MessageTooBig,
        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
    }
}

#[cfg(test)]
#[path = "session_deflate_tests.rs"]
mod deflate_tests;
#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
