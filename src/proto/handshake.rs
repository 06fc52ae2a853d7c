//! The server side of the WebSocket opening handshake (RFC 6455 §4.2).
//!
//! [`accept_handshake`] is a pure function from a parsed [`Request`] to the bytes of the
//! `101 Switching Protocols` response, or to a [`HandshakeError`] that knows its status and
//! writes its own error response. The one extension is permessage-deflate (RFC 7692), when
//! [`HandshakePolicy::permessage_deflate`] allows it and the client offers it
//! ([`super::deflate::negotiate`]); no subprotocol is ever negotiated.

use super::deflate::{self, Agreed};
use super::http::Request;
use super::response::write_json_error_with;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};
use thiserror::Error;

/// The GUID every server appends to the client's key (§1.3).
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`:
/// base64(SHA-1(key ‖ GUID)).
pub fn accept_key(client_key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(client_key);
    sha.update(WEBSOCKET_GUID);
    STANDARD.encode(sha.finalize())
}

/// Whether the request asks for a WebSocket upgrade (its `Upgrade` header lists the token
/// `websocket`, case-insensitive). Such a request goes to [`accept_handshake`].
pub fn is_upgrade_request(req: &Request) -> bool {
    req.has_token("upgrade", "websocket")
}

/// Which handshakes the server accepts beyond the RFC's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakePolicy {
    /// Setting `allowed_origins`: the `Origin` values (compared ASCII case-insensitively)
    /// allowed to open a WebSocket; `None` (the default) allows any. A request without
    /// `Origin` (a non-browser client) is always allowed: the check exists to stop other
    /// sites' pages, and browsers always send it.
    pub allowed_origins: Option<Vec<String>>,
    /// Setting `permessage_deflate`: whether a permessage-deflate offer is accepted (the
    /// server answers `server_no_context_takeover; client_no_context_takeover`). The server
    /// turns it on; `Default` leaves it off.
    pub permessage_deflate: bool,
    /// Setting `deflate_small_windows`: accept a permessage-deflate offer that limits the
    /// server's window below 15 bits (then send it uncompressed messages); when false such
    /// an offer is declined.
    pub deflate_small_windows: bool,
}

/// An accepted handshake: the `101` bytes and what was negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The complete `101 Switching Protocols` response.
    pub response: Vec<u8>,
    /// permessage-deflate, when offered and allowed.
    pub deflate: Option<Agreed>,
}

/// Why a handshake was refused; each variant is one rule of §4.2.1 and maps to a status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HandshakeError {
    /// The method is not `GET` → 405.
    #[error("WebSocket handshake must use GET")]
    MethodNotGet,
    /// The request is HTTP/1.0; the handshake needs HTTP/1.1 → 400.
    #[error("WebSocket handshake needs HTTP/1.1")]
    NotHttp11,
    /// No `Host` header → 400.
    #[error("missing Host header")]
    MissingHost,
    /// `Upgrade` does not list `websocket` → 400.
    #[error("missing Upgrade: websocket")]
    MissingUpgrade,
    /// `Connection` does not list `Upgrade` → 400.
    #[error("missing Connection: Upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` is absent or not the base64 of exactly 16 bytes → 400.
    #[error("missing or invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// `Sec-WebSocket-Version` is absent or not 13 → 426 with `Sec-WebSocket-Version: 13`.
    #[error("unsupported WebSocket version; use 13")]
    UnsupportedVersion,
    /// The `Origin` is not in [`HandshakePolicy::allowed_origins`] → 403.
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::MethodNotGet => 405,
            Self::UnsupportedVersion => 426,
            Self::OriginNotAllowed => 403,
            _ => 400,
        }
    }

    /// Appends the error response: a JSON error body, `Connection: close`, plus `Allow: GET`
    /// for 405 and `Sec-WebSocket-Version: 13` for 426.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let extra: &[(&str, &str)] = match self {
            Self::MethodNotGet => &[("Allow", "GET")],
            Self::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        };
        write_json_error_with(out, self.status(), &self.to_string(), extra, false);
    }
}

/// Checks an upgrade request and returns the complete `101 Switching Protocols` response
/// (see [`accept_handshake_with`] for what was negotiated).
pub fn accept_handshake(
    req: &Request,
    policy: &HandshakePolicy,
) -> Result<Vec<u8>, HandshakeError> {
    accept_handshake_with(req, policy).map(|accepted| accepted.response)
}

/// Checks an upgrade request, negotiates permessage-deflate (when the policy allows it) and
/// returns the `101` with what was agreed.
pub fn accept_handshake_with(
    req: &Request,
    policy: &HandshakePolicy,
) -> Result<Accepted, HandshakeError> {
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotGet);
    }
    if req.version < 1 {
        return Err(HandshakeError::NotHttp11);
    }
    if req.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !is_upgrade_request(req) {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !req.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = req.header("sec-websocket-key").map(<[u8]>::trim_ascii);
    let key = key.filter(|key| matches!(STANDARD.decode(key), Ok(raw) if raw.len() == 16));
    let key = key.ok_or(HandshakeError::InvalidKey)?;
    if req.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    if let (Some(allowed), Some(origin)) = (&policy.allowed_origins, req.header("origin")) {
        if !allowed
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()))
        {
            return Err(HandshakeError::OriginNotAllowed);
        }
    }
    let agreed = if policy.permessage_deflate {
        deflate::negotiate(
            req.header_values("sec-websocket-extensions"),
            policy.deflate_small_windows,
        )
    } else {
        None
    };
    let mut out = Vec::with_capacity(220);
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept_key(key).as_bytes());
    if let Some(agreed) = &agreed {
        out.extend_from_slice(b"\r\nSec-WebSocket-Extensions: ");
        out.extend_from_slice(agreed.response_value().as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
    Ok(Accepted {
        response: out,
        deflate: agreed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{parse_request, HttpLimits};

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(head: &str) -> Request {
        let raw = format!("{head}\r\n\r\n");
        parse_request(raw.as_bytes(), &HttpLimits::default())
            .unwrap()
            .unwrap()
            .0
    }

    fn upgrade(extra: &str) -> Request {
        request(&format!(
            "GET /1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13{extra}"
        ))
    }

    #[test]
    fn rfc_example_key() {
        assert_eq!(
            accept_key(RFC_KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_valid_request() {
        let out = accept_handshake(&upgrade(""), &HandshakePolicy::default()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let req = request(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c, WebSocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13"
        ));
        assert!(is_upgrade_request(&req));
        assert!(accept_handshake(&req, &HandshakePolicy::default()).is_ok());
        assert!(!is_upgrade_request(&request(
            "GET / HTTP/1.1\r\nUpgrade: websockets"
        )));
    }

    #[test]
    fn each_rule_has_its_status() {
        let policy = HandshakePolicy::default();
        let check = |req: Request| accept_handshake(&req, &policy).unwrap_err();
        let key = format!("Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13");
        let e = check(request(&format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n{key}"
        )));
        assert_eq!((e.clone(), e.status()), (HandshakeError::MethodNotGet, 405));
        let e = check(request(&format!(
            "GET / HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n{key}"
        )));
        assert_eq!(e, HandshakeError::NotHttp11);
        let e = check(request(&format!(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n{key}"
        )));
        assert_eq!(e, HandshakeError::MissingHost);
        let e = check(request(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n{key}"
        )));
        assert_eq!(e, HandshakeError::MissingUpgrade);
        let e = check(request(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{key}"
        )));
        assert_eq!(e, HandshakeError::MissingConnectionUpgrade);
        for bad_key in [
            "",
            "AAAA",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZXg=",
            "!!!",
        ] {
            let req = request(&format!(
                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {bad_key}\r\nSec-WebSocket-Version: 13"
            ));
            assert_eq!(check(req), HandshakeError::InvalidKey, "{bad_key:?}");
        }
        let e = check(request(&format!(
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 8"
        )));
        assert_eq!(
            (e.clone(), e.status()),
            (HandshakeError::UnsupportedVersion, 426)
        );
        let mut out = Vec::new();
        e.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("{\"error\":\"unsupported WebSocket version; use 13\"}"));
    }

    #[test]
    fn permessage_deflate_is_negotiated_when_allowed() {
        let offer =
            upgrade("\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits");
        let off = accept_handshake_with(&offer, &HandshakePolicy::default()).unwrap();
        assert_eq!(off.deflate, None);
        assert!(!String::from_utf8(off.response)
            .unwrap()
            .contains("Extensions"));
        let policy = HandshakePolicy {
            permessage_deflate: true,
            ..HandshakePolicy::default()
        };
        let on = accept_handshake_with(&offer, &policy).unwrap();
        assert!(on.deflate.is_some_and(|a| a.may_compress()));
        assert_eq!(
            String::from_utf8(on.response).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n\r\n"
        );
        // No offer, or only an invalid one: a plain 101.
        let plain = accept_handshake_with(&upgrade(""), &policy).unwrap();
        assert_eq!(plain.deflate, None);
        let bad = upgrade("\r\nSec-WebSocket-Extensions: permessage-deflate; bogus");
        assert_eq!(accept_handshake_with(&bad, &policy).unwrap().deflate, None);
    }

    #[test]
    fn origin_policy() {
        let policy = HandshakePolicy {
            allowed_origins: Some(vec!["https://matchstream.example".into()]),
            ..HandshakePolicy::default()
        };
        let ok = upgrade("\r\nOrigin: https://MatchStream.example");
        assert!(accept_handshake(&ok, &policy).is_ok());
        let bad = upgrade("\r\nOrigin: https://evil.example");
        let e = accept_handshake(&bad, &policy).unwrap_err();
        assert_eq!((e.status(), e), (403, HandshakeError::OriginNotAllowed));
        assert!(
            accept_handshake(&upgrade(""), &policy).is_ok(),
            "no Origin: not a browser"
        );
        assert!(accept_handshake(&bad, &HandshakePolicy::default()).is_ok());
    }
}
