//! HTTP/1.0 and HTTP/1.1 request parsing (RFC 9112) on top of `httparse`.
//!
//! [`parse_request`] turns the start of a connection's buffer into one [`Request`] with its
//! whole body, or says it needs more bytes, or names the rule the client broke together with
//! the status to answer ([`HttpError::status`]). Every limit in [`HttpLimits`] is checked
//! before anything is allocated for the request, so a client cannot make the server buffer
//! more than the limits allow. Several pipelined requests in one buffer are parsed one at a
//! time: the returned length says where the next one starts.
//!
//! Bodies must carry `Content-Length`. `Transfer-Encoding` (chunked or otherwise) is refused
//! with 411 Length Required, as is a `POST`, `PUT` or `PATCH` without `Content-Length`: the
//! API only takes small JSON bodies, and refusing chunked framing outright also removes the
//! request-smuggling ambiguity of `Content-Length` plus `Transfer-Encoding`.

use thiserror::Error;

/// The limits a request must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Setting `max_request_line`: the longest request line (method, target, version), in
    /// bytes without its line ending; longer → 414 URI Too Long. Default 8 KiB.
    pub max_request_line: usize,
    /// Setting `max_head_bytes`: the largest request head (request line and all headers,
    /// through the blank line); larger → 431. Default 16 KiB.
    pub max_head_bytes: usize,
    /// Setting `max_headers`: the most header fields in one request; more → 431. Default 64.
    pub max_headers: usize,
    /// Setting `max_body_bytes`: the largest `Content-Length` accepted; larger → 413 Content
    /// Too Large. Default 64 KiB.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Why a request was refused; each variant is one rule and maps to one status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HttpError {
    /// The request line is longer than [`HttpLimits::max_request_line`] → 414.
    #[error("request line too long")]
    RequestLineTooLong,
    /// The head is larger than [`HttpLimits::max_head_bytes`] → 431.
    #[error("request header section too large")]
    HeadTooLarge,
    /// More header fields than [`HttpLimits::max_headers`] → 431.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The request line or a header is not valid HTTP/1.x syntax → 400.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// `Content-Length` appears more than once → 400.
    #[error("duplicate Content-Length")]
    DuplicateContentLength,
    /// `Content-Length` is not a plain decimal number → 400.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// The body is larger than [`HttpLimits::max_body_bytes`] → 413.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request uses `Transfer-Encoding` (e.g. chunked), which is not supported → 411.
    #[error("Transfer-Encoding is not supported; send Content-Length")]
    TransferEncodingUnsupported,
    /// A `POST`, `PUT` or `PATCH` without `Content-Length` → 411.
    #[error("Content-Length required")]
    LengthRequired,
}

impl HttpError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::RequestLineTooLong => 414,
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::Malformed(_) | Self::DuplicateContentLength | Self::InvalidContentLength => 400,
            Self::BodyTooLarge => 413,
            Self::TransferEncodingUnsupported | Self::LengthRequired => 411,
        }
    }
}

/// One parsed request, with its complete body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target as sent, e.g. `/1/match/x/history?since=3`.
    pub target: String,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The header fields in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (`Content-Length` bytes; empty when none).
    pub body: Vec<u8>,
    /// Whether the connection stays open after the response (HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl Request {
    /// The target's path, without the query string.
    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map_or(&self.target, |(path, _)| path)
    }

    /// The path's `/`-separated segments (leading slashes skipped), without allocating: what
    /// the API routes match on.
    pub fn path_segments(&self) -> PathSegments<'_> {
        PathSegments::of(self.path())
    }

    /// The raw (not percent-decoded) value of the first query parameter `name`; a parameter
    /// without `=` has the empty value.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The value of the first header field called `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// [`Request::header`] as text; `None` if absent or not UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header(name)?).ok()
    }

    /// Every value of the header fields called `name`, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// Whether a comma-separated header (`Connection`, `Upgrade`) lists `token`, in any of its
    /// fields, ASCII case-insensitive.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    }
}

/// The most path segments [`PathSegments`] tells apart.
pub const MAX_PATH_SEGMENTS: usize = 6;

/// A path split at `/` (leading slashes skipped) into at most [`MAX_PATH_SEGMENTS`] segments,
/// on the stack; a longer path's last segment holds the rest, slashes included. Every route
/// has fewer segments than that, so a longer path matches none, as it should.
#[derive(Debug, Clone, Copy)]
pub struct PathSegments<'a> {
    parts: [&'a str; MAX_PATH_SEGMENTS],
    len: usize,
}

impl<'a> PathSegments<'a> {
    /// Splits `path`.
    pub fn of(path: &'a str) -> PathSegments<'a> {
        let mut parts = [""; MAX_PATH_SEGMENTS];
        let mut len = 0;
        for (slot, part) in parts
            .iter_mut()
            .zip(path.trim_start_matches('/').splitn(MAX_PATH_SEGMENTS, '/'))
        {
            *slot = part;
            len += 1;
        }
        PathSegments { parts, len }
    }

    /// The segments, in order.
    pub fn as_slice(&self) -> &[&'a str] {
        &self.parts[..self.len]
    }
}

/// Header slots kept on the stack; more are allocated only if `max_headers` asks for more.
const STACK_HEADERS: usize = 64;

/// Parses one request from the start of `buf`.
///
/// `Ok(None)`: the head or the body is not complete yet (nothing consumed). `Ok(Some((req,
/// n)))`: the request took `buf[..n]`; a pipelined request may follow. `Err`: answer with
/// [`HttpError::status`] and close the connection.
pub fn parse_request(
    buf: &[u8],
    limits: &HttpLimits,
) -> Result<Option<(Request, usize)>, HttpError> {
    check_request_line(buf, limits.max_request_line)?;
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let Some(head) = parse_head(window, limits, Request::default())? else {
        return Ok(None);
    };
    let end = head.head_len + head.body_len;
    let Some(body) = buf.get(head.head_len..end) else {
        return Ok(None);
    };
    let mut request = head.request;
    request.body = body.to_vec();
    Ok(Some((request, end)))
}

/// A parsed request head: the request without its body, and where the body lies.
#[derive(Debug)]
struct Head {
    request: Request,
    head_len: usize,
    body_len: usize,
}

/// Parses a request head from `window` (at most `max_head_bytes` long); `Ok(None)` while
/// it is incomplete.
/// The request's text is written into `spare`'s allocations (a recycled request; see
/// [`RequestReader::recycle`]) where they are large enough.
fn parse_head(
    window: &[u8],
    limits: &HttpLimits,
    spare: Request,
) -> Result<Option<Head>, HttpError> {
    let mut stack = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots: &mut [httparse::Header<'_>] = if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut heap
    };
    let mut parsed = httparse::Request::new(slots);
    let head_len = match parsed.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(error_text(e))),
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let body_len = body_length(method, parsed.headers, limits)?;
    let keep_alive = keep_alive(version, parsed.headers);
    let mut request = spare;
    request.method.clear();
    request.method.push_str(method);
    request.target.clear();
    request.target.push_str(target);
    request.version = version;
    request.headers.truncate(parsed.headers.len());
    for (i, h) in parsed.headers.iter().enumerate() {
        match request.headers.get_mut(i) {
            Some((name, value)) => {
                name.clear();
                name.push_str(h.name);
                value.clear();
                value.extend_from_slice(h.value);
            }
            None => request.headers.push((h.name.to_owned(), h.value.to_vec())),
        }
    }
    request.body.clear();
    request.keep_alive = keep_alive;
    Ok(Some(Head {
        request,
        head_len,
        body_len,
    }))
}

/// A connection's inbound bytes during its HTTP phase, parsed incrementally.
///
/// Each read is appended with [`extend`](Self::extend); [`next_request`](Self::next_request)
/// resumes the search for the end of the head where the previous call stopped, so a head
/// that trickles in a byte at a time is scanned once, not once per read. The head is handed
/// to `httparse` only when complete (and the request line once, as soon as it is complete,
/// so garbage is refused early). A head waiting for its body is kept parsed. Pipelined
/// requests are consumed by advancing an offset; the consumed prefix is dropped only when it
/// is at least half the buffer, so the work per byte stays constant.
#[derive(Debug, Default)]
pub struct RequestReader {
    buf: Vec<u8>,
    /// Where the next request starts in `buf`.
    start: usize,
    /// How far the search for the end of the current head has looked.
    scanned: usize,
    /// Whether the current request line was found and checked.
    line_checked: bool,
    /// The current request's head, parsed, while its body arrives.
    head: Option<Head>,
    /// A served request given back ([`recycle`](Self::recycle)): the next one is parsed into
    /// its allocations, so a keep-alive connection's requests allocate nothing once warm.
    spare: Option<Request>,
}

/// The most bytes a recycled request may hold on to (a larger one is dropped instead).
const MAX_SPARE_BYTES: usize = 2048;

impl RequestReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the connection.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buffer_for_read().extend_from_slice(bytes);
    }

    /// The buffer to append the next read to (only appending is allowed). The consumed
    /// prefix is dropped first when it is at least half the buffer.
    pub fn buffer_for_read(&mut self) -> &mut Vec<u8> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        &mut self.buf
    }

    /// The bytes not consumed by a request yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Whether no unconsumed byte is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
    }

    /// The unconsumed bytes, giving up the reader (what follows a WebSocket handshake).
    pub fn into_pending(mut self) -> Vec<u8> {
        self.buf.drain(..self.start);
        self.buf
    }

    /// Gives a served request back: the next request is parsed into its allocations (unless
    /// it holds more than [`MAX_SPARE_BYTES`], which would stay pinned to the connection).
    pub fn recycle(&mut self, request: Request) {
        let held = request.headers.capacity() * std::mem::size_of::<(String, Vec<u8>)>()
            + request.method.capacity()
            + request.target.capacity()
            + request.body.capacity()
            + request
                .headers
                .iter()
                .map(|(name, value)| name.capacity() + value.capacity())
                .sum::<usize>();
        if held <= MAX_SPARE_BYTES {
            self.spare = Some(request);
        }
    }

    /// The next complete request, `Ok(None)` when more bytes are needed, or the rule the
    /// client broke (answer [`HttpError::status`] and close).
    pub fn next_request(&mut self, limits: &HttpLimits) -> Result<Option<Request>, HttpError> {
        loop {
            if let Some(head) = &self.head {
                let end = self.start + head.head_len + head.body_len;
                if self.buf.len() < end {
                    return Ok(None);
                }
                let head = self.head.take().expect("checked above");
                let mut request = head.request;
                request
                    .body
                    .extend_from_slice(&self.buf[self.start + head.head_len..end]);
                self.start = end;
                self.scanned = end;
                self.line_checked = false;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                    self.scanned = 0;
                }
                return Ok(Some(request));
            }
            let Some(end) = self.find_head_end(limits)? else {
                return Ok(None);
            };
            let spare = self.spare.take().unwrap_or_default();
            match parse_head(&self.buf[self.start..end], limits, spare)? {
                Some(head) => self.head = Some(head),
                // Blank lines before the request line; the head ends further on.
                None => continue,
            }
        }
    }

    /// Scans from where the last scan stopped for the blank line ending the head; returns
    /// the index just past it. Checks the request line and head size limits on the way.
    fn find_head_end(&mut self, limits: &HttpLimits) -> Result<Option<usize>, HttpError> {
        let buf = &self.buf;
        let mut i = self.scanned;
        while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
            let nl = i + offset;
            if !self.line_checked {
                let line = &buf[self.start..nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > limits.max_request_line {
                    return Err(HttpError::RequestLineTooLong);
                }
                check_request_line_syntax(&buf[self.start..=nl])?;
                self.line_checked = true;
            }
            let end = match (buf.get(nl + 1), buf.get(nl + 2)) {
                (Some(b'\n'), _) => Some(nl + 2),
                (Some(b'\r'), Some(b'\n')) => Some(nl + 3),
                (None, _) | (Some(b'\r'), None) => {
                    // Cannot tell yet: look at this line end again next time.
                    self.scanned = nl;
                    return self.check_head_size(limits).map(|()| None);
                }
                _ => None,
            };
            if let Some(end) = end {
                self.scanned = end;
                if end - self.start > limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                return Ok(Some(end));
            }
            i = nl + 1;
        }
        self.scanned = buf.len();
        if !self.line_checked && buf.len() - self.start > limits.max_request_line + 1 {
            return Err(HttpError::RequestLineTooLong);
        }
        self.check_head_size(limits).map(|()| None)
    }

    fn check_head_size(&self, limits: &HttpLimits) -> Result<(), HttpError> {
        if self.buf.len() - self.start >= limits.max_head_bytes {
            return Err(HttpError::HeadTooLarge);
        }
        Ok(())
    }
}

/// Refuses a first line (through its `\n`) that is not the start of a valid request, so
/// garbage is answered at once instead of after the head limit or the timeout.
fn check_request_line_syntax(line: &[u8]) -> Result<(), HttpError> {
    let mut no_headers = [httparse::EMPTY_HEADER; 0];
    match httparse::Request::new(&mut no_headers).parse(line) {
        Ok(_) => Ok(()),
        // Zero header slots: any header, or the head's end, is reached "too early".
        Err(httparse::Error::TooManyHeaders) => Ok(()),
        Err(e) => Err(HttpError::Malformed(error_text(e))),
    }
}

/// Fails once the first line is known to exceed `max` bytes (without its line ending).
fn check_request_line(buf: &[u8], max: usize) -> Result<(), HttpError> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(end) => {
            let line = &window[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                return Err(HttpError::RequestLineTooLong);
            }
            Ok(())
        }
        None if window.len() > max + 1 => Err(HttpError::RequestLineTooLong),
        None => Ok(()),
    }
}

/// The body length the headers announce, after the framing rules and the size limit.
fn body_length(
    method: &str,
    headers: &[httparse::Header<'_>],
    limits: &HttpLimits,
) -> Result<usize, HttpError> {
    let is = |h: &&httparse::Header<'_>, name: &str| h.name.eq_ignore_ascii_case(name);
    if headers.iter().any(|h| is(&h, "transfer-encoding")) {
        return Err(HttpError::TransferEncodingUnsupported);
    }
    let mut lengths = headers.iter().filter(|h| is(h, "content-length"));
    let Some(first) = lengths.next() else {
        return match method {
            "POST" | "PUT" | "PATCH" => Err(HttpError::LengthRequired),
            _ => Ok(0),
        };
    };
    if lengths.next().is_some() {
        return Err(HttpError::DuplicateContentLength);
    }
    let digits = first.value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    let len = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    if len > limits.max_body_bytes as u64 {
        return Err(HttpError::BodyTooLarge);
    }
    Ok(len as usize)
}

/// The persistence rule of RFC 9112 §9.3 for HTTP/1.`version`.
fn keep_alive(version: u8, headers: &[httparse::Header<'_>]) -> bool {
    let has = |token: &str| {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    if version >= 1 {
        !has("close")
    } else {
        has("keep-alive") && !has("close")
    }
}

/// A short description of an `httparse` error for the 400 body.
fn error_text(error: httparse::Error) -> &'static str {
    match error {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "unsupported HTTP version",
    }
}

#[cfg(test)]
#[path = "http_tests.rs"]
mod tests;
