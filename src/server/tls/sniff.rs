//! What a client that fails the TLS handshake sent first, and what it is told (sans-I/O).
//!
//! A TLS port answers a client that does not speak TLS as nginx does, in plaintext and once:
//! plain HTTP gets `400` with a one-line body saying to use https, a plain line-protocol
//! `CONNECT` gets `ERROR: TLS required`. Anything else that is not a TLS ClientHello is
//! closed without a word. The bytes alone decide (a plain HTTP client on the line port is
//! still told to use https); the client must have sent at least the method and its space, or
//! `VERSION:`, in the bytes that failed the handshake.

use crate::proto::line::encode_error;
use crate::proto::response::write_json_error;

/// The body's message of the `400` a plain HTTP client gets on a TLS port.
pub const USE_HTTPS: &str = "this port speaks TLS: use https:// (or wss://)";

/// The reason a plain line client gets on a TLS port (`ERROR: TLS required`).
pub const TLS_REQUIRED: &str = "TLS required";

/// The request methods a plain HTTP client may begin with.
const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT",
];

/// The seed's line protocol starts every `CONNECT` line with this.
const LINE_PREFIX: &[u8] = b"VERSION:";

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record (a ClientHello): content type 22, version major 3.
    TlsHandshake,
    /// A plain HTTP request: a method and a space.
    PlainHttp,
    /// A plain line-protocol `CONNECT` line (`VERSION:`…).
    PlainLine,
    /// Too few bytes to tell (a prefix of one of the above).
    NeedMore,
    /// Anything else.
    Other,
}

/// Classifies the first bytes a client sent.
pub fn sniff(bytes: &[u8]) -> FirstBytes {
    match bytes {
        [] | [0x16] => FirstBytes::NeedMore,
        [0x16, 0x03, ..] => FirstBytes::TlsHandshake,
        _ if bytes.starts_with(LINE_PREFIX) => FirstBytes::PlainLine,
        _ if LINE_PREFIX.starts_with(bytes) => FirstBytes::NeedMore,
        _ => sniff_http(bytes),
    }
}

fn sniff_http(bytes: &[u8]) -> FirstBytes {
    for method in METHODS {
        match bytes.strip_prefix(method) {
            Some([b' ', ..]) => return FirstBytes::PlainHttp,
            Some([]) => return FirstBytes::NeedMore,
            _ if method.starts_with(bytes) => return FirstBytes::NeedMore,
            _ => {}
        }
    }
    FirstBytes::Other
}

/// Who a plaintext answer went to (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainClient {
    /// A plain HTTP client: told `400` "use https".
    Http,
    /// A plain line client: told `ERROR: TLS required`.
    Line,
}

/// The plaintext answer for a client whose first bytes are `bytes` and that failed the TLS
/// handshake, and who it is; `None`: close without a word.
pub fn plaintext_answer(bytes: &[u8]) -> Option<(PlainClient, Vec<u8>)> {
    let mut out = Vec::new();
    match sniff(bytes) {
        FirstBytes::PlainHttp => {
            write_json_error(&mut out, 400, USE_HTTPS, false);
            Some((PlainClient::Http, out))
        }
        FirstBytes::PlainLine => {
            encode_error(&mut out, TLS_REQUIRED);
            Some((PlainClient::Line, out))
        }
        FirstBytes::TlsHandshake | FirstBytes::NeedMore | FirstBytes::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_tls() {
        // The first bytes of a TLS 1.2/1.3 ClientHello record (legacy version 3.1).
        assert_eq!(
            sniff(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
            FirstBytes::TlsHandshake
        );
        assert_eq!(sniff(&[0x16, 0x03]), FirstBytes::TlsHandshake);
        assert_eq!(sniff(&[0x16]), FirstBytes::NeedMore);
        assert_eq!(plaintext_answer(&[0x16, 0x03, 0x03]), None);
    }

    #[test]
    fn plain_http_requests_are_recognised_by_their_method() {
        for request in [
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD /healthz HTTP/1.0\r\n",
            "POST /1/matches HTTP/1.1\r\n",
            "DELETE /1/match/x HTTP/1.1\r\n",
            "OPTIONS * HTTP/1.1\r\n",
            "GET ",
        ] {
            assert_eq!(
                sniff(request.as_bytes()),
                FirstBytes::PlainHttp,
                "{request:?}"
            );
        }
        for partial in ["G", "GE", "GET", "DELE", "V", "VERSION"] {
            assert_eq!(
                sniff(partial.as_bytes()),
                FirstBytes::NeedMore,
                "{partial:?}"
            );
        }
        for other in [
            "GETX / HTTP/1.1",
            "get / HTTP/1.1",
            "SSH-2.0-OpenSSH\r\n",
            "\0\0\0\0",
        ] {
            assert_eq!(sniff(other.as_bytes()), FirstBytes::Other, "{other:?}");
        }
    }

    #[test]
    fn a_plain_line_connect_is_recognised() {
        let line = b"VERSION:1:CONNECT:u1:MATCH:elp-tig-2011-09-10\r\n";
        assert_eq!(sniff(line), FirstBytes::PlainLine);
        assert_eq!(sniff(b"VERSION:"), FirstBytes::PlainLine);
        assert_eq!(
            plaintext_answer(line),
            Some((PlainClient::Line, b"ERROR: TLS required\r\n".to_vec()))
        );
    }

    #[test]
    fn plain_http_gets_a_400_saying_to_use_https_and_the_connection_closes() {
        let (who, answer) = plaintext_answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(who, PlainClient::Http);
        let text = String::from_utf8(answer).unwrap();
        assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert_eq!(body, format!(r#"{{"error":"{USE_HTTPS}"}}"#));
        assert!(!body.contains('\n'), "one line");
        assert_eq!(plaintext_answer(b"\x00\x01garbage"), None);
        assert_eq!(plaintext_answer(b"GE"), None);
    }
}
