//! WebSocket frame headers (RFC 6455 §5.2): parsing client frames, encoding server frames.
//!
//! [`FrameHeader::parse`] reads only the header (2 to 14 bytes) and never allocates; the
//! payload that follows is the caller's to slice, unmask and check. Everything the header
//! alone can break — RSV bits, reserved opcodes, the top bit of a 64-bit length, control
//! frames that are long or fragmented — is rejected as soon as the first two bytes (or the
//! extended length) are there. Server frames are encoded unmasked with the shortest length
//! form; incoming non-minimal length forms are accepted, as the RFC asks of a receiver.

use super::close;
use super::error::ProtocolError;

/// The largest payload a control frame (close, ping, pong) may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The largest frame header: 2 bytes, 8 of extended length, 4 of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// What a frame carries (§5.2, §11.8); the reserved values are parse errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: the next fragment of a text or binary message.
    Continuation,
    /// 0x1: the first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: the first (or only) frame of a binary message.
    Binary,
    /// 0x8: the close handshake.
    Close,
    /// 0x9: a ping; the peer answers with a pong carrying the same payload.
    Ping,
    /// 0xA: a pong (an answer, or an unsolicited heartbeat).
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of a frame's first byte.
    pub fn from_u8(bits: u8) -> Result<Self, ProtocolError> {
        Ok(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed (or to-be-encoded) frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Whether this is the final fragment of its message.
    pub fin: bool,
    /// The three RSV bits (RSV1 is `0b100`, set on a permessage-deflate compressed
    /// message's first frame); 0 unless an extension was negotiated.
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key; clients must mask, servers must not.
    pub mask: Option<[u8; 4]>,
    /// The number of payload bytes that follow the header.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Parses a frame header from the start of `buf`; every RSV bit must be clear.
    ///
    /// `Ok(None)` means more bytes are needed (nothing consumed); `Ok(Some((header, n)))`
    /// means the header took the first `n` bytes and the payload starts at `buf[n]`.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        Self::parse_with(buf, 0)
    }

    /// Like [`parse`](Self::parse), but the RSV bits in `allowed_rsv` (a negotiated
    /// extension's, e.g. RSV1 for permessage-deflate) may be set; which frames may carry
    /// them is the session's rule.
    pub fn parse_with(
        buf: &[u8],
        allowed_rsv: u8,
    ) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x07;
        if rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }
        let (payload_len, mut pos) = match len7 {
            126 => {
                let Some(bytes) = buf.get(2..4) else {
                    return Ok(None);
                };
                (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                let len = u64::from_be_bytes(word);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBitSet);
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let mask = if masked {
            let Some(bytes) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        };
        Ok(Some((header, pos)))
    }

    /// Appends the header's bytes to `out`, with the shortest length form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let b0 = u8::from(self.fin) << 7 | (self.rsv & 0x07) << 4 | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.push(b0);
        match self.payload_len {
            len @ 0..=125 => out.push(mask_bit | len as u8),
            len @ 126..=0xffff => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        if let Some(key) = self.mask {
            out.extend_from_slice(&key);
        }
    }

    /// The number of bytes [`FrameHeader::encode`] writes for this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }
}

/// Appends one complete server frame (FIN set, unmasked) carrying `payload`.
///
/// Callers keep control payloads within [`MAX_CONTROL_PAYLOAD`]; [`encode_close`] and the
/// session's ping and pong do.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    out.reserve(header.encoded_len() + payload.len());
    header.encode(out);
    out.extend_from_slice(payload);
}

/// Appends a server close frame with `code` and `reason`.
///
/// The reason is cut (at a character boundary) to the 123 bytes a control frame leaves
/// after the code.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let reason = truncate_utf8(reason, MAX_CONTROL_PAYLOAD - 2);
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
    encode_frame(out, OpCode::Close, &payload[..2 + reason.len()]);
}

/// Parses a received close frame's payload into its code and reason.
///
/// An empty payload is a close without a status (`Ok(None)`); one byte is too short; the
/// code must be one a peer may send ([`close::is_valid_received_code`]); the reason must be
/// valid UTF-8.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(u16, &str)>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::CloseFrameTooShort),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close::is_valid_received_code(code) {
                return Err(ProtocolError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// The longest prefix of `s` that fits in `max` bytes and ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_ok(buf: &[u8]) -> (FrameHeader, usize) {
        FrameHeader::parse(buf).unwrap().unwrap()
    }

    #[test]
    fn rfc_examples() {
        // §5.7: a single-frame unmasked text message "Hello".
        let (h, n) = parse_ok(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(
            (h.fin, h.opcode, h.mask, h.payload_len, n),
            (true, OpCode::Text, None, 5, 2)
        );
        // A masked "Hello".
        let (h, n) = parse_ok(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f]);
        assert_eq!(
            (h.mask, h.payload_len, n),
            (Some([0x37, 0xfa, 0x21, 0x3d]), 5, 6)
        );
        // A fragmented text message's first frame, and a 256-byte binary (16-bit length).
        let (h, _) = parse_ok(&[0x01, 0x03]);
        assert!(!h.fin);
        let (h, n) = parse_ok(&[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!((h.opcode, h.payload_len, n), (OpCode::Binary, 256, 4));
        // 64 KiB binary (64-bit length).
        let (h, n) = parse_ok(&[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!((h.payload_len, n), (65536, 10));
    }

    #[test]
    fn incomplete_headers_need_more() {
        let full = [0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for len in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..len]), Ok(None), "len {len}");
        }
        assert_eq!(parse_ok(&full).1, 14);
    }

    #[test]
    fn non_minimal_lengths_are_accepted() {
        assert_eq!(parse_ok(&[0x82, 0x7e, 0x00, 0x05]).0.payload_len, 5);
        assert_eq!(
            parse_ok(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0, 5])
                .0
                .payload_len,
            5
        );
    }

    #[test]
    fn header_rule_violations() {
        use ProtocolError::*;
        assert_eq!(FrameHeader::parse(&[0xc1, 0x00]), Err(ReservedBits));
        assert_eq!(FrameHeader::parse(&[0x91, 0x00]), Err(ReservedBits));
        // With permessage-deflate, RSV1 parses; RSV2 and RSV3 still do not.
        assert_eq!(
            FrameHeader::parse_with(&[0xc1, 0x00], 0b100).map(|h| h.map(|(h, _)| h.rsv)),
            Ok(Some(0b100))
        );
        assert_eq!(
            FrameHeader::parse_with(&[0xe1, 0x00], 0b100),
            Err(ReservedBits)
        );
        for op in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0x00]),
                Err(ReservedOpcode(op))
            );
        }
        assert_eq!(
            FrameHeader::parse(&[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Err(LengthTopBitSet)
        );
        // Control frames: > 125 bytes (known from the first two bytes), or not FIN.
        assert_eq!(FrameHeader::parse(&[0x89, 0x7e]), Err(ControlFrameTooLong));
        assert_eq!(
            FrameHeader::parse(&[0x09, 0x00]),
            Err(FragmentedControlFrame)
        );
        assert!(
            FrameHeader::parse(&[0x89, 0xfd]).unwrap().is_none(),
            "masked: key needed"
        );
    }

    #[test]
    fn encode_frame_uses_shortest_form() {
        for (len, header_len) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Binary, &payload);
            assert_eq!(out.len(), header_len + len);
            let (h, n) = parse_ok(&out);
            assert_eq!(
                (h.fin, h.mask, h.payload_len as usize, n),
                (true, None, len, header_len)
            );
        }
    }

    #[test]
    fn close_frames() {
        let mut out = Vec::new();
        encode_close(&mut out, close::NORMAL, "bye");
        assert_eq!(out, [0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e']);
        out.clear();
        encode_close(&mut out, close::GOING_AWAY, &"é".repeat(100));
        let (h, n) = parse_ok(&out);
        assert_eq!(
            h.payload_len, 124,
            "cut to 123 bytes at a char boundary, plus the code"
        );
        assert!(parse_close_payload(&out[n..]).is_ok());
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
        assert_eq!(
            parse_close_payload(&[3]),
            Err(ProtocolError::CloseFrameTooShort)
        );
        assert_eq!(parse_close_payload(&[0x03, 0xe8]), Ok(Some((1000, ""))));
        assert_eq!(
            parse_close_payload(&[0x03, 0xed]),
            Err(ProtocolError::InvalidCloseCode(1005))
        );
        assert_eq!(
            parse_close_payload(&[0x03, 0xe8, 0xff]),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    fn arb_opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    fn arb_len() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..=125, 126u64..=0xffff, 0x1_0000u64..=(u64::MAX >> 1)]
    }

    proptest! {
        #[test]
        fn encode_parse_identity(
            fin in any::<bool>(),
            opcode in arb_opcode(),
            mask in proptest::option::of(any::<[u8; 4]>()),
            len in arb_len(),
        ) {
            let (fin, len) = if opcode.is_control() { (true, len % 126) } else { (fin, len) };
            let header = FrameHeader { fin, rsv: 0, opcode, mask, payload_len: len };
            let mut out = Vec::new();
            header.encode(&mut out);
            prop_assert_eq!(out.len(), header.encoded_len());
            out.extend_from_slice(b"payload");
            prop_assert_eq!(FrameHeader::parse(&out), Ok(Some((header, header.encoded_len()))));
        }

        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..32)) {
            if let Ok(Some((_, n))) = FrameHeader::parse(&buf) {
                prop_assert!(n <= buf.len() && n <= MAX_HEADER_LEN);
            }
        }
    }
}
