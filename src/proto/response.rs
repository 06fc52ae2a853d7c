//! HTTP/1.1 response heads and small JSON error bodies.

use std::io::Write;

/// The standard reason phrase for `status` (empty for unknown codes).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends a complete response: status line, `Content-Type` (omitted when empty),
/// `Content-Length` (omitted for 1xx, 204 and 304, which have no body), `extra_headers`,
/// `Connection: close` when `!keep_alive`, the blank line and `body`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    out.reserve(128 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    if !content_type.is_empty() {
        let _ = write!(out, "Content-Type: {content_type}\r\n");
    }
    let bodyless = matches!(status, 100..=199 | 204 | 304);
    if !bodyless {
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
    }
    for (name, value) in extra_headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        out.extend_from_slice(body);
    }
}

/// Appends a JSON error response: body `{"error":"<message>"}`, `application/json`.
pub fn write_json_error(out: &mut Vec<u8>, status: u16, message: &str, keep_alive: bool) {
    write_json_error_with(out, status, message, &[], keep_alive);
}

/// [`write_json_error`] with extra header fields.
pub(crate) fn write_json_error_with(
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    extra_headers: &[(&str, &str)],
    keep_alive: bool,
) {
    let mut body = Vec::with_capacity(message.len() + 12);
    body.extend_from_slice(b"{\"error\":\"");
    escape_json_into(&mut body, message);
    body.extend_from_slice(b"\"}");
    write_response(
        out,
        status,
        "application/json",
        extra_headers,
        &body,
        keep_alive,
    );
}

/// Appends `s` escaped for the inside of a JSON string (RFC 8259 §7).
pub(crate) fn escape_json_into(out: &mut Vec<u8>, s: &str) {
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&s.as_bytes()[start..i]);
                let _ = write!(out, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn response_head_and_body() {
        let mut out = Vec::new();
        write_response(&mut out, 200, "text/plain", &[("X-A", "1")], b"hi", true);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhi"
        );
        out.clear();
        write_response(&mut out, 204, "", &[], b"", false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    }

    #[test]
    fn json_error_is_escaped() {
        let mut out = Vec::new();
        write_json_error(&mut out, 404, "match \"x\"\n\\ not found\u{1}", false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(value["error"], "match \"x\"\n\\ not found\u{1}");
    }

    #[test]
    fn reason_phrases_for_api_statuses() {
        for status in [
            200, 201, 400, 401, 403, 404, 405, 409, 411, 413, 414, 422, 426, 431, 503,
        ] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
    }

    proptest! {
        #[test]
        fn escaping_round_trips_through_serde_json(s in "\\PC*|[\\x00-\\x20\"\\\\]*") {
            let mut out = b"\"".to_vec();
            escape_json_into(&mut out, &s);
            out.push(b'"');
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
