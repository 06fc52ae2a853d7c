//! [`ProtocolError`]: every way a peer can break RFC 6455 on an open connection.

use super::close;
use thiserror::Error;

/// A WebSocket protocol violation by the peer; each variant names the close code it earns.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// An RSV bit is set but no extension was negotiated (§5.2) → 1002.
    #[error("reserved bits set without an extension")]
    ReservedBits,
    /// The opcode is one of the reserved values 0x3–0x7 or 0xB–0xF (§5.2) → 1002.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A 64-bit payload length has its most significant bit set (§5.2) → 1002.
    #[error("64-bit payload length with the top bit set")]
    LengthTopBitSet,
    /// A control frame carries more than 125 bytes of payload (§5.5) → 1002.
    #[error("control frame payload longer than 125 bytes")]
    ControlFrameTooLong,
    /// A control frame has FIN clear: control frames cannot be fragmented (§5.5) → 1002.
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A client frame is not masked (§5.1) → 1002.
    #[error("client frame not masked")]
    UnmaskedFrame,
    /// A continuation frame arrived with no fragmented message in progress (§5.4) → 1002.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was unfinished (§5.4)
    /// → 1002.
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A close frame carries a 1-byte payload: too short for a status code (§5.5.1) → 1002.
    #[error("close frame payload of one byte")]
    CloseFrameTooShort,
    /// A close frame carries a code a peer may not send (§7.4) → 1002.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or close reason is not valid UTF-8 (§8.1) → 1007.
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A frame's payload exceeds the frame size limit → 1009.
    #[error("frame too big")]
    FrameTooBig,
    /// A message's total payload exceeds the message size limit → 1009.
    #[error("message too big")]
    MessageTooBig,
    /// A permessage-deflate message does not inflate (RFC 7692 §7.2.2) → 1007.
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A binary message arrived but the endpoint accepts only text → 1003.
    #[error("binary messages not accepted")]
    BinaryNotAccepted,
}

impl ProtocolError {
    /// The close code to send the peer for this violation.
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => close::INVALID_PAYLOAD,
            Self::FrameTooBig | Self::MessageTooBig => close::TOO_BIG,
            Self::BinaryNotAccepted => close::UNSUPPORTED_DATA,
            _ => close::PROTOCOL_ERROR,
        }
    }
}

impl From<super::utf8::InvalidUtf8> for ProtocolError {
    fn from(_: super::utf8::InvalidUtf8) -> Self {
        Self::InvalidUtf8
    }
}
