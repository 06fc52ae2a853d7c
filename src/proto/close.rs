//! Close status codes (RFC 6455 §7.4) and which of them a peer may send.

/// 1000: normal closure; the purpose of the connection is fulfilled.
pub const NORMAL: u16 = 1000;
/// 1001: the endpoint is going away (server shutdown, page navigated away).
pub const GOING_AWAY: u16 = 1001;
/// 1002: the peer broke the protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// 1003: the endpoint received a type of data it cannot accept (e.g. binary).
pub const UNSUPPORTED_DATA: u16 = 1003;
/// 1007: a message's data is inconsistent with its type (invalid UTF-8 in text).
pub const INVALID_PAYLOAD: u16 = 1007;
/// 1008: a message violates the endpoint's policy.
pub const POLICY: u16 = 1008;
/// 1009: a frame or message is too big to process.
pub const TOO_BIG: u16 = 1009;

/// Whether a peer may put `code` in a close frame it sends.
///
/// Valid: the defined codes 1000–1003 and 1007–1014 (1012 service restart, 1013 try again
/// later and 1014 bad gateway are IANA-registered), and 3000–4999 (libraries and private
/// use). Invalid: below 1000, 1004 (reserved), 1005/1006/1015 (must never be sent on the
/// wire), the unassigned 1016–2999, and 5000 and above. This is what the Autobahn
/// TestSuite expects in cases 7.7.* (valid) and 7.9.* (invalid).
pub fn is_valid_received_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autobahn_valid_codes() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn autobahn_invalid_codes() {
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_received_code(code), "{code}");
        }
    }

    #[test]
    fn constants_are_valid_to_send() {
        for code in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            UNSUPPORTED_DATA,
            INVALID_PAYLOAD,
            POLICY,
            TOO_BIG,
        ] {
            assert!(is_valid_received_code(code));
        }
    }
}
