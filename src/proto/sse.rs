//! Server-Sent Events (the WHATWG `text/event-stream` format), sans-I/O: encoding the
//! messages a worker sends (once per event, shared by every SSE watcher), reading where a
//! client resumes (`Last-Event-ID` or `?since=`), and a parser of the stream for clients
//! (the load harness and the tests).
//!
//! A message is `event: <type>\n`, `id: <seq>\n`, one `data: <line>\n` per line of the
//! payload (the JSON messages here have none), and an empty line. A comment line (`: …`) is
//! a keepalive that clients ignore.

use thiserror::Error;

/// The `Content-Type` of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream";

/// How long (ms) a browser's `EventSource` waits before reconnecting (sent once, at start).
pub const RETRY_MS: u64 = 1000;

/// Appends one message: `event`, `id` (when given) and `data` (split into `data:` lines).
pub fn encode_message(out: &mut Vec<u8>, event: &str, id: Option<u64>, data: &str) {
    out.reserve(event.len() + data.len() + 32);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.to_string().as_bytes());
        out.push(b'\n');
    }
    for line in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.strip_suffix('\r').unwrap_or(line).as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends a comment line (a keepalive clients ignore).
pub fn encode_comment(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b": ");
    out.extend_from_slice(text.replace(['\r', '\n'], " ").as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// The head of a `200` event-stream response plus the `retry:` line. The body runs until the
/// server closes the connection (`Connection: close`, no length, no chunking).
pub fn response_head() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nCache-Control: no-cache\r\n\
         Connection: close\r\nX-Accel-Buffering: no\r\n\r\nretry: {RETRY_MS}\n\n"
    )
    .into_bytes()
}

/// Whether an `Accept` header (absent = anything) allows an event stream.
pub fn accepts_event_stream(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    String::from_utf8_lossy(accept).split(',').any(|range| {
        let media = range.split(';').next().unwrap_or("").trim();
        ["text/event-stream", "text/*", "*/*"]
            .iter()
            .any(|m| media.eq_ignore_ascii_case(m))
    })
}

/// Why a resume point was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResumeError {
    /// `Last-Event-ID` is not an event number.
    #[error("Last-Event-ID must be an event number")]
    BadLastEventId,
    /// `since` is not an event number.
    #[error("since must be a number")]
    BadSince,
}

/// Where a stream resumes: after `Last-Event-ID` (what a reconnecting `EventSource` sends;
/// it wins over the URL's `?since=`), else after `since`; `None` = from the status only.
/// An empty `Last-Event-ID` means none.
pub fn resume_after(
    last_event_id: Option<&[u8]>,
    since: Option<&str>,
) -> Result<Option<u64>, ResumeError> {
    if let Some(id) = last_event_id
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty())
    {
        return parse_number(id)
            .map(Some)
            .ok_or(ResumeError::BadLastEventId);
    }
    match since {
        None => Ok(None),
        Some(s) => parse_number(s.as_bytes())
            .map(Some)
            .ok_or(ResumeError::BadSince),
    }
}

fn parse_number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One message read from an event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event:` type (`message` when none was given).
    pub event: String,
    /// The last `id:` seen in this message, if any.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// The most bytes of one unfinished line an [`SseParser`] keeps.
pub const MAX_LINE: usize = 1 << 20;

/// Why a stream could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SseError {
    /// A line longer than [`MAX_LINE`].
    #[error("event-stream line too long")]
    LineTooLong,
    /// A line that is not UTF-8.
    #[error("event-stream line not UTF-8")]
    NotUtf8,
}

/// An incremental event-stream parser (the WHATWG rules for the fields used here: `event`,
/// `id`, `data`, `retry`; comments ignored; lines end in `\n`, `\r\n` or `\r`).
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    event: String,
    id: Option<String>,
    data: Option<String>,
    comments: u64,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Comment lines (keepalives) seen so far.
    pub fn comments(&self) -> u64 {
        self.comments
    }

    /// Feeds the next bytes; complete messages are appended to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<SseMessage>) -> Result<(), SseError> {
        if self.after_cr {
            self.after_cr = false;
            if let [b'\n', rest @ ..] = input {
                input = rest;
            }
        }
        while let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            if self.line.len() + end > MAX_LINE {
                return Err(SseError::LineTooLong);
            }
            self.line.extend_from_slice(&input[..end]);
            let cr = input[end] == b'\r';
            input = &input[end + 1..];
            if cr {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line(&line, out)?;
        }
        if self.line.len() + input.len() > MAX_LINE {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(input);
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseMessage>) -> Result<(), SseError> {
        let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                out.push(SseMessage {
                    event: match std::mem::take(&mut self.event) {
                        e if e.is_empty() => "message".to_string(),
                        e => e,
                    },
                    id: self.id.take(),
                    data,
                });
            }
            self.event.clear();
            self.id = None;
            return Ok(());
        }
        if line.starts_with(':') {
            self.comments += 1;
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            _ => {} // retry and unknown fields
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
