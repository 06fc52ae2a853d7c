//! The seed system's plain TCP line protocol (DESIGN.md, "TCP line protocol").
//!
//! The client sends one line, `VERSION:1:CONNECT:<uid>:MATCH:<mid>\r\n` (a bare `\n` is
//! accepted too); the server answers with blocks, one per status or event:
//!
//! ```text
//! 2011-09-10 19:00:00: goal:
//! <TAB>team: tig
//! <TAB>player: 7
//! <CR><LF>
//! ```
//!
//! and `ERROR: <reason>\r\n` before closing on anything else. Timestamps are UTC, computed
//! with the civil-from-days algorithm (no time library).

use std::io::Write;
use thiserror::Error;

/// A client's request to watch a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest {
    /// The user id (counted as a visit, as in the seed).
    pub uid: String,
    /// The match id to watch.
    pub mid: String,
}

/// Why a connect line was refused; [`LineError::reason`] is what goes after `ERROR: `.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LineError {
    /// No line ending within the allowed line length.
    #[error("line too long")]
    TooLong,
    /// The line is not UTF-8 text.
    #[error("line is not UTF-8")]
    NotUtf8,
    /// The line is not `VERSION:<v>:CONNECT:<uid>:MATCH:<mid>`.
    #[error("expected VERSION:1:CONNECT:<uid>:MATCH:<mid>")]
    Malformed,
    /// The protocol version is not 1.
    #[error("unsupported version {0}")]
    UnsupportedVersion(String),
    /// The uid or the mid is empty.
    #[error("empty uid or match id")]
    EmptyField,
}

impl LineError {
    /// The reason text for the `ERROR:` line.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

/// Parses the connect line at the start of `buf`; `max_line` bounds the line without its
/// ending. `Ok(None)`: no line ending yet (nothing consumed).
pub fn parse_connect(
    buf: &[u8],
    max_line: usize,
) -> Result<Option<(ConnectRequest, usize)>, LineError> {
    let window = &buf[..buf.len().min(max_line + 2)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if window.len() > max_line + 1 {
            Err(LineError::TooLong)
        } else {
            Ok(None)
        };
    };
    let line = &window[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_line {
        return Err(LineError::TooLong);
    }
    let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let mut parts = line.split(':');
    let fields: [Option<&str>; 6] = std::array::from_fn(|_| parts.next());
    let (
        [Some("VERSION"), Some(version), Some("CONNECT"), Some(uid), Some("MATCH"), Some(mid)],
        None,
    ) = (fields, parts.next())
    else {
        return Err(LineError::Malformed);
    };
    if version != "1" {
        return Err(LineError::UnsupportedVersion(
            version.chars().take(16).collect(),
        ));
    }
    if uid.is_empty() || mid.is_empty() {
        return Err(LineError::EmptyField);
    }
    let request = ConnectRequest {
        uid: uid.to_owned(),
        mid: mid.to_owned(),
    };
    Ok(Some((request, end + 1)))
}

/// Appends one block: the header line `YYYY-MM-DD HH:MM:SS: <kind>:` (UTC, from `ts_ms`
/// milliseconds since the epoch), a `\t<key>: <value>` line per field, then a `\r\n` line.
/// Line breaks inside values are replaced by spaces so they cannot end the block early.
pub fn encode_block(out: &mut Vec<u8>, ts_ms: i64, kind: &str, fields: &[(&str, String)]) {
    write_timestamp(out, ts_ms);
    out.extend_from_slice(b": ");
    push_single_line(out, kind);
    out.extend_from_slice(b":\n");
    for (key, value) in fields {
        out.push(b'\t');
        push_single_line(out, key);
        out.extend_from_slice(b": ");
        push_single_line(out, value);
        out.push(b'\n');
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `ERROR: <reason>\r\n`.
pub fn encode_error(out: &mut Vec<u8>, reason: &str) {
    out.extend_from_slice(b"ERROR: ");
    push_single_line(out, reason);
    out.extend_from_slice(b"\r\n");
}

/// Appends `s` with `\r` and `\n` replaced by spaces.
fn push_single_line(out: &mut Vec<u8>, s: &str) {
    out.extend(
        s.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

/// Appends `YYYY-MM-DD HH:MM:SS` (UTC) for `ts_ms`.
fn write_timestamp(out: &mut Vec<u8>, ts_ms: i64) {
    let secs = ts_ms.div_euclid(1000);
    let (days, secs_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (
        secs_of_day / 3600,
        secs_of_day % 3600 / 60,
        secs_of_day % 60,
    );
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}");
}

/// The proleptic Gregorian (year, month, day) of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn connect_line() {
        let raw = b"VERSION:1:CONNECT:u1:MATCH:elp-tig-2011-09-10\r\nextra";
        let (req, n) = parse_connect(raw, 256).unwrap().unwrap();
        assert_eq!(
            (req.uid.as_str(), req.mid.as_str(), n),
            ("u1", "elp-tig-2011-09-10", 47)
        );
        let (req, n) = parse_connect(b"VERSION:1:CONNECT:u:MATCH:m\n", 256)
            .unwrap()
            .unwrap();
        assert_eq!((req.mid.as_str(), n), ("m", 28));
        assert_eq!(parse_connect(b"VERSION:1:CONNECT:u1:MAT", 256), Ok(None));
    }

    #[test]
    fn bad_lines() {
        let err = |raw: &[u8]| parse_connect(raw, 40).unwrap_err();
        assert_eq!(err(b"HELLO\r\n"), LineError::Malformed);
        assert_eq!(
            err(b"VERSION:1:CONNECT:u:MATCH:m:x\r\n"),
            LineError::Malformed
        );
        assert_eq!(
            err(b"VERSION:2:CONNECT:u:MATCH:m\r\n"),
            LineError::UnsupportedVersion("2".into())
        );
        assert_eq!(
            err(b"VERSION:1:CONNECT::MATCH:m\r\n"),
            LineError::EmptyField
        );
        assert_eq!(
            err(b"VERSION:1:CONNECT:\xff:MATCH:m\r\n"),
            LineError::NotUtf8
        );
        assert_eq!(err(&[b'a'; 42]), LineError::TooLong);
        assert_eq!(
            parse_connect(&[b'a'; 41], 40),
            Ok(None),
            "could still end in \\r\\n"
        );
        assert_eq!(
            err(b"VERSION:1:CONNECT:uuuuuuuuuuu:MATCH:mmmmm\r\n"),
            LineError::TooLong
        );
        assert_eq!(
            err(b"nope\n").reason(),
            "expected VERSION:1:CONNECT:<uid>:MATCH:<mid>"
        );
    }

    #[test]
    fn block_format() {
        let mut out = Vec::new();
        // 2011-09-10 19:00:05 UTC.
        let fields = [
            ("team", "tig".to_string()),
            ("note", "two\r\nlines".to_string()),
        ];
        encode_block(&mut out, 1_315_681_205_999, "goal", &fields);
        assert_eq!(
            out,
            b"2011-09-10 19:00:05: goal:\n\tteam: tig\n\tnote: two  lines\n\r\n".to_vec()
        );
        out.clear();
        encode_error(&mut out, "match not found: x");
        assert_eq!(out, b"ERROR: match not found: x\r\n");
    }

    #[test]
    fn dates_across_eras() {
        let stamp = |ms: i64| {
            let mut out = Vec::new();
            write_timestamp(&mut out, ms);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(stamp(0), "1970-01-01 00:00:00");
        assert_eq!(stamp(-1), "1969-12-31 23:59:59");
        assert_eq!(stamp(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(stamp(4_107_542_399_000), "2100-02-28 23:59:59");
        assert_eq!(stamp(4_107_542_400_000), "2100-03-01 00:00:00");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..80), max in 0usize..64) {
            if let Ok(Some((_, n))) = parse_connect(&buf, max) {
                prop_assert!(n <= buf.len());
            }
        }

        #[test]
        fn days_round_trip(days in -1_000_000i64..1_000_000) {
            // days_from_civil, the inverse, written independently.
            let (y, m, d) = civil_from_days(days);
            let (y2, m2) = if m <= 2 { (y - 1, i64::from(m) + 9) } else { (y, i64::from(m) - 3) };
            let era = y2.div_euclid(400);
            let yoe = y2 - era * 400;
            let doy = (153 * m2 + 2) / 5 + i64::from(d) - 1;
            let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
            prop_assert_eq!(era * 146_097 + doe - 719_468, days);
        }
    }
}
