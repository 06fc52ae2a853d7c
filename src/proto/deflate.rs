//! permessage-deflate (RFC 7692), sans-I/O: the offer parser and negotiation, whole-message
//! compression for outgoing frames, and bounded inflation of incoming messages.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover` (§7.1.1), so no connection keeps a compression window: each
//! message is compressed on its own, which is what lets a worker compress an event **once**
//! and send the same RSV1 frame to every watcher that negotiated the extension.
//!
//! * [`negotiate`] reads the `Sec-WebSocket-Extensions` offers and returns the accepted
//!   parameters ([`Agreed`]) with the response header value, or `None` (no compression).
//!   An offer with an unknown, duplicate or invalid parameter is declined (§7.1).
//! * [`MessageDeflater`] compresses whole messages into raw DEFLATE ending in a sync flush
//!   (its `00 00 ff ff` removed, §7.2.1) and writes RSV1 frames.
//! * [`Inflater`] inflates one compressed message as its frames arrive, never producing
//!   (or allocating) more than a bound: a "zip bomb" fails with [`InflateError::TooBig`]
//!   once the output passes the limit.
//!
//! The compressor uses a 32 KiB window. A peer that asks for `server_max_window_bits`
//! below 15 is declined on `/1/ws` (a watcher gets the shared compressed frame or none); on
//! `/1/echo` it is accepted and sent uncompressed messages (RSV1 clear, which §6 allows for
//! any message).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

use super::frame::{FrameHeader, OpCode};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The bytes §7.2.2 has the receiver append to a message before inflating it.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The window DEFLATE output from this server may refer back over (32 KiB).
const OUR_WINDOW_BITS: u8 = 15;

/// What the server agreed to for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The `server_max_window_bits` the client asked for (and the response repeats), if any.
    pub server_max_window_bits: Option<u8>,
}

impl Agreed {
    /// Whether messages to this peer may be compressed: our compressor's 32 KiB window must
    /// fit the window the peer allowed.
    pub fn may_compress(&self) -> bool {
        self.server_max_window_bits
            .is_none_or(|bits| bits >= OUR_WINDOW_BITS)
    }

    /// The `Sec-WebSocket-Extensions` response value.
    pub fn response_value(&self) -> String {
        let mut value =
            format!("{EXTENSION_NAME}; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            value.push_str(&format!("; server_max_window_bits={bits}"));
        }
        value
    }
}

/// Why one permessage-deflate offer was declined (§7.1: the server must decline these).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OfferError {
    /// A parameter this extension does not define.
    #[error("unknown permessage-deflate parameter {0:?}")]
    UnknownParameter(String),
    /// The same parameter twice in one offer.
    #[error("duplicate permessage-deflate parameter {0:?}")]
    DuplicateParameter(String),
    /// A value where none is allowed, none where one is required, or a window size outside
    /// 8–15.
    #[error("invalid value for permessage-deflate parameter {0:?}")]
    InvalidValue(String),
    /// The header is not a list of `token *(; param)` extensions.
    #[error("malformed Sec-WebSocket-Extensions header")]
    Malformed,
}

/// The parameters of one permessage-deflate offer (§7.1.1, §7.1.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    /// `server_no_context_takeover` was offered.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover` was offered.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N` was offered.
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits` was offered: `Some(None)` without a value.
    pub client_max_window_bits: Option<Option<u8>>,
}

/// One extension of a `Sec-WebSocket-Extensions` list: its name and raw parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Extension {
    name: String,
    params: Vec<(String, Option<String>)>,
}

/// Reads the permessage-deflate offers in the `Sec-WebSocket-Extensions` header values (in
/// order) and accepts the first valid one. Other extensions are ignored; a malformed header
/// declines everything. An offer limiting our window below 15 bits is accepted only when
/// `small_windows` (such a peer is then sent uncompressed messages); otherwise it is
/// declined like an invalid one, so the next offer may be taken.
pub fn negotiate<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    small_windows: bool,
) -> Option<Agreed> {
    for value in values {
        let Ok(extensions) = parse_extensions(value) else {
            return None;
        };
        for ext in extensions {
            if !ext.name.eq_ignore_ascii_case(EXTENSION_NAME) {
                continue;
            }
            if let Ok(offer) = parse_offer(&ext.params) {
                let agreed = Agreed {
                    server_max_window_bits: offer.server_max_window_bits,
                };
                if small_windows || agreed.may_compress() {
                    return Some(agreed);
                }
            }
        }
    }
    None
}

/// Parses the offers for permessage-deflate in one header value, each valid or not.
pub fn parse_offers(value: &[u8]) -> Result<Vec<Result<Offer, OfferError>>, OfferError> {
    Ok(parse_extensions(value)?
        .into_iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .map(|e| parse_offer(&e.params))
        .collect())
}

fn parse_offer(params: &[(String, Option<String>)]) -> Result<Offer, OfferError> {
    let mut offer = Offer::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in params {
        let name = name.as_str();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return Err(OfferError::DuplicateParameter(name.to_string()));
        }
        seen.push(name);
        let invalid = || OfferError::InvalidValue(name.to_string());
        match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => {
                value.is_none().then_some(()).ok_or_else(invalid)?;
                offer.server_no_context_takeover = true;
            }
            "client_no_context_takeover" => {
                value.is_none().then_some(()).ok_or_else(invalid)?;
                offer.client_no_context_takeover = true;
            }
            "server_max_window_bits" => {
                let bits = value.as_deref().and_then(window_bits).ok_or_else(invalid)?;
                offer.server_max_window_bits = Some(bits);
            }
            "client_max_window_bits" => {
                let bits = match value.as_deref() {
                    None => None,
                    Some(v) => Some(window_bits(v).ok_or_else(invalid)?),
                };
                offer.client_max_window_bits = Some(bits);
            }
            _ => return Err(OfferError::UnknownParameter(name.to_string())),
        }
    }
    Ok(offer)
}

/// A window size value: 1*DIGIT in 8..=15, no leading zero (§7.1.2.1).
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.len() > 2 || value.starts_with('0') {
        return None;
    }
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// `extension-list = 1#( token *( ";" token [ "=" ( token | quoted-string ) ] ) )`
/// (RFC 6455 §9.1, with RFC 7230's list and quoted-string rules).
fn parse_extensions(value: &[u8]) -> Result<Vec<Extension>, OfferError> {
    let mut cur = Cursor { buf: value, pos: 0 };
    let mut out = Vec::new();
    loop {
        cur.skip_ws();
        if cur.eat(b',') {
            continue; // empty list elements are allowed
        }
        if cur.at_end() {
            return Ok(out);
        }
        let name = cur.token().ok_or(OfferError::Malformed)?;
        let mut params = Vec::new();
        loop {
            cur.skip_ws();
            if cur.at_end() || cur.eat(b',') {
                break;
            }
            if !cur.eat(b';') {
                return Err(OfferError::Malformed);
            }
            cur.skip_ws();
            let pname = cur.token().ok_or(OfferError::Malformed)?;
            cur.skip_ws();
            let pvalue = if cur.eat(b'=') {
                cur.skip_ws();
                Some(
                    cur.quoted()
                        .or_else(|| cur.token())
                        .ok_or(OfferError::Malformed)?,
                )
            } else {
                None
            };
            params.push((pname, pvalue));
        }
        out.push(Extension { name, params });
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn skip_ws(&mut self) {
        while matches!(self.buf.get(self.pos), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.buf.get(self.pos) == Some(&byte);
        self.pos += usize::from(hit);
        hit
    }

    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        while self.buf.get(self.pos).is_some_and(|&b| is_tchar(b)) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.buf[start..self.pos]).into())
    }

    fn quoted(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut value = Vec::new();
        loop {
            match *self.buf.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    return Some(String::from_utf8_lossy(&value).into());
                }
                b'\\' => {
                    value.push(*self.buf.get(self.pos + 1)?);
                    self.pos += 2;
                }
                b => {
                    value.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Compresses whole messages (raw DEFLATE, no context kept between messages).
///
/// Each message ends with a sync flush whose `00 00 ff ff` is removed (§7.2.1), never with a
/// `BFINAL` block: a receiver may keep one inflater for the whole connection (browsers do;
/// `server_no_context_takeover` does not oblige them to reset it), and a final block would end
/// its stream after the first message. One per worker: the compressor's state is reset and
/// reused for every event.
pub struct MessageDeflater {
    compressor: Compress,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for MessageDeflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageDeflater").finish_non_exhaustive()
    }
}

impl Default for MessageDeflater {
    fn default() -> Self {
        Self::new()
    }
}

impl MessageDeflater {
    /// A compressor at the default level (6).
    pub fn new() -> Self {
        Self {
            compressor: Compress::new(Compression::default(), false),
            scratch: Vec::new(),
        }
    }

    /// The compressed form of `payload` (what follows an RSV1 header), or `None` when
    /// compression would not make it smaller (then send the plain frame).
    pub fn compress(&mut self, payload: &[u8]) -> Option<&[u8]> {
        self.compressor.reset();
        self.scratch.clear();
        self.scratch.reserve(payload.len() / 2 + 64);
        loop {
            let done = self.compressor.total_in() as usize;
            self.compressor
                .compress_vec(&payload[done..], &mut self.scratch, FlushCompress::Sync)
                .ok()?;
            let all_in = self.compressor.total_in() as usize == payload.len();
            if all_in && self.scratch.len() < self.scratch.capacity() {
                break;
            }
            self.scratch.reserve(self.scratch.capacity().max(64));
        }
        let n = self.scratch.len().checked_sub(SYNC_TAIL.len())?;
        (self.scratch[n..] == SYNC_TAIL && n < payload.len()).then(|| &self.scratch[..n])
    }

    /// A complete server frame (FIN, unmasked) of `opcode` carrying `payload` compressed,
    /// with RSV1 set; `None` when compression would not make it smaller.
    pub fn compressed_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Vec<u8>> {
        let compressed = self.compress(payload)?;
        let header = FrameHeader {
            fin: true,
            rsv: RSV1,
            opcode,
            mask: None,
            payload_len: compressed.len() as u64,
        };
        let mut out = Vec::with_capacity(header.encoded_len() + compressed.len());
        header.encode(&mut out);
        out.extend_from_slice(compressed);
        Some(out)
    }
}

/// The RSV1 bit in [`FrameHeader::rsv`]: "this message is compressed" (§6).
pub const RSV1: u8 = 0b100;

/// Why an incoming compressed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InflateError {
    /// The inflated message would exceed the limit (close 1009).
    #[error("inflated message too big")]
    TooBig,
    /// The payload is not valid DEFLATE data (close 1007).
    #[error("invalid compressed data")]
    Corrupt,
}

/// Inflates one compressed message as its payload arrives, bounded by `limit` output bytes.
pub struct Inflater {
    inner: Decompress,
    limit: usize,
    received: usize,
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("limit", &self.limit)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// A fresh inflater (no context from earlier messages) producing at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Decompress::new(false),
            limit,
            received: 0,
            ended: false,
        }
    }

    /// Compressed bytes fed so far (the tail of [`finish`](Self::finish) not counted).
    pub fn received(&self) -> usize {
        self.received
    }

    /// Inflates the next piece of the message's payload, appending to `out`. `out` never
    /// grows past `limit + 1` bytes: a message that would is refused with
    /// [`InflateError::TooBig`].
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.received += input.len();
        self.inflate(input, out)
    }

    fn inflate(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), InflateError> {
        while !self.ended {
            if out.len() == out.capacity() {
                if out.len() > self.limit {
                    return Err(InflateError::TooBig);
                }
                let want = (out.capacity() * 2).max(4096).min(self.limit + 1);
                out.reserve_exact(want - out.len());
            }
            let (in_before, out_before) = (self.inner.total_in(), out.len());
            let status = self
                .inner
                .decompress_vec(input, out, FlushDecompress::None)
                .map_err(|_| InflateError::Corrupt)?;
            let consumed = (self.inner.total_in() - in_before) as usize;
            input = &input[consumed..];
            if out.len() > self.limit {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                self.ended = true;
                break;
            }
            let room_left = out.len() < out.capacity();
            let stalled = consumed == 0 && out.len() == out_before;
            if room_left && (input.is_empty() || stalled) {
                break;
            }
        }
        Ok(())
    }

    /// Ends the message: inflates the `00 00 ff ff` tail §7.2.2 has the receiver append.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), InflateError> {
        self.inflate(&SYNC_TAIL, out)
    }
}

/// Inflates a whole compressed message payload (as received, without the tail) into a new
/// buffer of at most `limit` bytes.
pub fn inflate_message(payload: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Inflater::new(limit);
    let mut out = Vec::new();
    inflater.feed(payload, &mut out)?;
    inflater.finish(&mut out)?;
    Ok(out)
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
