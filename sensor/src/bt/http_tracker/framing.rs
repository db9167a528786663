//! HTTP/1.x message framing as a tracker connection needs it (RFC 9112): request and
//! response heads (via `httparse`), where a body ends (`Content-Length`, `chunked`, or the end
//! of the connection, RFC 9112 §6.3), the streaming de-chunker (RFC 9112 §7.1) and the content
//! codings undone before a body is read (gzip RFC 1952, zlib RFC 1950, raw deflate RFC 1951).

use std::borrow::Cow;
use std::io::Read;

use super::announce::AnnounceQuery;
use super::{Reject, MAX_CODINGS, MAX_HEADERS};

pub(super) const MAX_CHUNK_LINE: usize = 1024;
/// Trailer section after the last chunk.
const MAX_TRAILER: usize = 8 * 1024;
/// Longest method token a request line may open with.
const MAX_METHOD: usize = 16;

/// Whether `data` can be the start of a request line: an upper-case method token then a space,
/// or only the beginning of one (a chunk may end inside the method).
pub(super) fn request_start(data: &[u8]) -> bool {
    let n = data
        .iter()
        .take(MAX_METHOD + 1)
        .take_while(|b| b.is_ascii_uppercase())
        .count();
    (1..=MAX_METHOD).contains(&n) && (data.get(n) == Some(&b' ') || n == data.len())
}

/// How a message body is delimited (RFC 9112 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A content coding this module undoes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Coding {
    #[default]
    Gzip,
    /// zlib-wrapped (RFC 9110) or, as some servers send it, raw deflate.
    Deflate,
}

/// The codings applied to a body, in the order they were applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Codings {
    pub(super) list: [Coding; MAX_CODINGS],
    pub(super) len: usize,
    /// An unknown coding, or more than [`MAX_CODINGS`]: the body cannot be read.
    pub unsupported: bool,
}

impl Codings {
    pub fn as_slice(&self) -> &[Coding] {
        self.list.get(..self.len).unwrap_or_default()
    }

    fn push(&mut self, c: Coding) {
        match self.list.get_mut(self.len) {
            Some(slot) => {
                *slot = c;
                self.len += 1;
            }
            None => self.unsupported = true,
        }
    }

    /// Adds one coding token (case-insensitive); `chunked` is the caller's business.
    fn push_token(&mut self, token: &[u8]) {
        let t = token.trim_ascii();
        if t.eq_ignore_ascii_case(b"gzip") || t.eq_ignore_ascii_case(b"x-gzip") {
            self.push(Coding::Gzip);
        } else if t.eq_ignore_ascii_case(b"deflate") {
            self.push(Coding::Deflate);
        } else if !(t.is_empty() || t.eq_ignore_ascii_case(b"identity")) {
            self.unsupported = true;
        }
    }
}

/// What the framing headers of a head say.
#[derive(Clone, Copy, Debug, Default)]
struct FramingHeaders {
    content_length: Option<u64>,
    /// `Transfer-Encoding` present, and whether `chunked` is its last coding.
    transfer_encoding: Option<bool>,
    /// Transfer codings other than `chunked` (applied after the content codings).
    transfer_codings: Codings,
    content_codings: Codings,
}

fn framing_headers(headers: &[httparse::Header<'_>]) -> Result<FramingHeaders, Reject> {
    let mut f = FramingHeaders::default();
    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Reject::BadLength);
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(Reject::BadLength)?;
            if f.content_length.is_some_and(|old| old != n) {
                return Err(Reject::BadLength);
            }
            f.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for t in h.value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.is_empty() {
                    continue;
                }
                if t.eq_ignore_ascii_case(b"chunked") {
                    f.transfer_encoding = Some(true);
                } else {
                    // A coding after `chunked` means the body is not chunked-framed.
                    f.transfer_encoding = Some(false);
                    f.transfer_codings.push_token(t);
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-encoding") {
            for t in h.value.split(|&b| b == b',') {
                f.content_codings.push_token(t);
            }
        }
    }
    Ok(f)
}

/// A request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Target before `?`.
    pub path: &'a str,
    /// Target after `?` (empty without one).
    pub query: &'a str,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The query has `info_hash=` and `peer_id=` parameters.
    pub announce: bool,
    /// `port=`: the client's own listen port (predicts inbound connections, not outbound).
    pub port: Option<u16>,
    /// `compact=` (advisory, BEP 23: trackers may answer with a dict list anyway, as a real
    /// tracker of the 360BitScoping captures does).
    pub compact: Option<bool>,
    /// How the request's own body is delimited: [`Framing::Empty`], a length or chunked.
    pub framing: Framing,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

/// Decodes a request head at the start of `buf`: `Ok(None)` if the head is not complete yet.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead<'_>>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooManyHeaders),
        Err(_) => return Err(Reject::NotHttp),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Reject::NotHttp);
    };
    let f = framing_headers(req.headers)?;
    let framing = match (f.transfer_encoding, f.content_length) {
        (Some(true), _) => Framing::Chunked,
        // RFC 9112 §6.1: a request whose final transfer coding is not chunked is unframeable.
        (Some(false), _) => return Err(Reject::BadFraming),
        (None, Some(0) | None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let q = AnnounceQuery::parse(query);
    Ok(Some(RequestHead {
        method,
        path,
        query,
        version,
        announce: q.announce,
        port: q.port,
        compact: q.compact,
        framing,
        len,
    }))
}

/// A response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseHead<'a> {
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    pub status: u16,
    pub reason: &'a str,
    /// The body's framing by the headers alone; see [`ResponseHead::body_framing`].
    pub framing: Framing,
    /// Content codings, then transfer codings other than `chunked`, in the order applied.
    pub codings: Codings,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

impl ResponseHead<'_> {
    /// The body's framing given the request it answers (RFC 9112 §6.3): none for a HEAD
    /// request and for 1xx, 204 and 304.
    pub fn body_framing(&self, head_request: bool) -> Framing {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            Framing::Empty
        } else {
            self.framing
        }
    }
}

/// Decodes a response head at the start of `buf`: `Ok(None)` if the head is not complete yet.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead<'_>>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooManyHeaders),
        Err(_) => return Err(Reject::NotHttp),
    };
    let (Some(version), Some(status)) = (resp.version, resp.code) else {
        return Err(Reject::NotHttp);
    };
    let f = framing_headers(resp.headers)?;
    let framing = match (f.transfer_encoding, f.content_length) {
        (Some(true), _) => Framing::Chunked,
        // RFC 9112 §6.3: a response without a length, or whose final transfer coding is not
        // chunked, ends when the server closes the connection.
        (Some(false), _) | (None, None) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let mut codings = f.content_codings;
    for &c in f.transfer_codings.as_slice() {
        codings.push(c);
    }
    codings.unsupported |= f.transfer_codings.unsupported;
    Ok(Some(ResponseHead {
        version,
        status,
        reason: resp.reason.unwrap_or_default(),
        framing,
        codings,
        len,
    }))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    /// After a chunk's data: CRLF (a bare LF is accepted); `true` once the CR was read.
    DataEnd(bool),
    /// Trailer lines after the last chunk; the length of the current line.
    Trailer(usize),
    Done,
}

/// Streaming decoder of `Transfer-Encoding: chunked` (RFC 9112 §7.1): any split of the input
/// gives the same output. Size lines are read with `httparse::parse_chunk_size`; lines and
/// trailers are capped.
#[derive(Clone, Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    line: Vec<u8>,
    trailer: usize,
}

impl Dechunker {
    /// Reads framing from `data`, passing chunk data to `sink`. Returns the bytes consumed
    /// (everything up to the end of the body) and whether the body ended.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), Reject> {
        let mut i = 0;
        while let Some(rest) = data.get(i..).filter(|r| !r.is_empty()) {
            match self.state {
                ChunkState::Size => {
                    let (part, eol) = match rest.iter().position(|&b| b == b'\n') {
                        Some(p) => (rest.get(..=p).unwrap_or(rest), true),
                        None => (rest, false),
                    };
                    if self.line.len().saturating_add(part.len()) > MAX_CHUNK_LINE {
                        return Err(Reject::BadChunk);
                    }
                    self.line.extend_from_slice(part);
                    i += part.len();
                    if eol {
                        let size = self.chunk_size()?;
                        self.line.clear();
                        self.state = if size == 0 {
                            ChunkState::Trailer(0)
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                }
                ChunkState::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    sink(rest.get(..n).unwrap_or_default());
                    i += n;
                    let left = left.saturating_sub(n as u64);
                    self.state = if left == 0 {
                        ChunkState::DataEnd(false)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(cr) => {
                    let b = rest.first().copied().unwrap_or_default();
                    i += 1;
                    self.state = match (cr, b) {
                        (false, b'\r') => ChunkState::DataEnd(true),
                        (_, b'\n') => ChunkState::Size,
                        _ => return Err(Reject::BadChunk),
                    };
                }
                ChunkState::Trailer(line) => {
                    let b = rest.first().copied().unwrap_or_default();
                    i += 1;
                    self.trailer += 1;
                    if self.trailer > MAX_TRAILER {
                        return Err(Reject::BadChunk);
                    }
                    self.state = match b {
                        b'\n' if line == 0 => ChunkState::Done,
                        b'\n' => ChunkState::Trailer(0),
                        b'\r' => ChunkState::Trailer(line),
                        _ => ChunkState::Trailer(line + 1),
                    };
                }
                ChunkState::Done => break,
            }
        }
        Ok((i, self.is_done()))
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The size on the line just read (ending in LF); at least one hex digit is required
    /// (`parse_chunk_size` reads an empty line as 0).
    fn chunk_size(&mut self) -> Result<u64, Reject> {
        if !self.line.first().is_some_and(u8::is_ascii_hexdigit) {
            return Err(Reject::BadChunk);
        }
        if !self.line.ends_with(b"\r\n") {
            self.line.pop();
            self.line.extend_from_slice(b"\r\n");
        }
        match httparse::parse_chunk_size(&self.line) {
            Ok(httparse::Status::Complete((_, size))) => Ok(size),
            _ => Err(Reject::BadChunk),
        }
    }
}

/// De-chunks a whole chunked body at the start of `data`: the content (at most `max` bytes)
/// and the bytes the body took.
pub fn dechunk(data: &[u8], max: usize) -> Result<(Vec<u8>, usize), Reject> {
    let mut d = Dechunker::default();
    let mut out = Vec::new();
    let mut over = false;
    let (used, done) = d.feed(data, |part| {
        if out.len().saturating_add(part.len()) > max {
            over = true;
        } else {
            out.extend_from_slice(part);
        }
    })?;
    if over {
        Err(Reject::BodyTooLarge)
    } else if done {
        Ok((out, used))
    } else {
        Err(Reject::Incomplete)
    }
}

/// Undoes `codings` (last applied first). The result is at most `max` bytes when any coding
/// was undone; an identity body is returned as it is.
pub fn decode_content<'a>(
    body: &'a [u8],
    codings: &Codings,
    max: usize,
) -> Result<Cow<'a, [u8]>, Reject> {
    if codings.unsupported {
        return Err(Reject::UnsupportedEncoding);
    }
    let mut data = Cow::Borrowed(body);
    for &c in codings.as_slice().iter().rev() {
        data = Cow::Owned(inflate(&data, c, max)?);
    }
    Ok(data)
}

fn inflate(data: &[u8], coding: Coding, max: usize) -> Result<Vec<u8>, Reject> {
    use flate2::read::{DeflateDecoder, GzDecoder, ZlibDecoder};
    // One byte past the cap tells an over-long body from one exactly at it.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    let mut out = Vec::new();
    let read = match coding {
        Coding::Gzip => GzDecoder::new(data).take(limit).read_to_end(&mut out),
        Coding::Deflate if is_zlib(data) => {
            ZlibDecoder::new(data).take(limit).read_to_end(&mut out)
        }
        Coding::Deflate => DeflateDecoder::new(data).take(limit).read_to_end(&mut out),
    };
    if out.len() > max {
        return Err(Reject::InflatedTooLarge);
    }
    read.map_err(|_| Reject::BadEncoding)?;
    Ok(out)
}

/// RFC 1950 header: method 8 and a check value making the first two bytes a multiple of 31.
fn is_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// A head being accumulated until its blank line.
#[derive(Debug, Default)]
pub(super) struct HeadBuf {
    pub(super) buf: Vec<u8>,
    /// Start of the line being scanned.
    line_start: usize,
    /// A non-empty line was read (blank lines before the start line are skipped, as httparse
    /// does; they also end a message in progress only once it started).
    started: bool,
}

pub(super) enum Push {
    More,
    /// The head ended; this many bytes of the input were part of it.
    Done(usize),
    TooLarge,
}

impl HeadBuf {
    /// Whether a message has begun (a partial start line counts).
    pub(super) fn in_progress(&self) -> bool {
        self.started
            || self
                .buf
                .get(self.line_start..)
                .is_some_and(|l| l.iter().any(|b| !matches!(b, b'\r' | b'\n')))
    }

    pub(super) fn push(&mut self, data: &[u8], cap: usize) -> Push {
        let old = self.buf.len();
        let take = data.len().min(cap.saturating_sub(old));
        self.buf
            .extend_from_slice(data.get(..take).unwrap_or_default());
        let mut from = old;
        while let Some(lf) = self
            .buf
            .get(from..)
            .and_then(|s| s.iter().position(|&b| b == b'\n'))
            .map(|p| from + p)
        {
            let line = self.buf.get(self.line_start..lf).unwrap_or_default();
            let blank = line.is_empty() || line == b"\r";
            if blank && self.started {
                let end = lf + 1;
                self.buf.truncate(end);
                return Push::Done(end - old);
            }
            self.started |= !blank;
            self.line_start = lf + 1;
            from = lf + 1;
        }
        if self.buf.len() >= cap {
            Push::TooLarge
        } else {
            Push::More
        }
    }
}

/// How a body is delimited, with the state of its reading.
#[derive(Debug)]
pub(super) enum Framer {
    Length(u64),
    Chunked(Dechunker),
    UntilClose,
}

impl Framer {
    pub(super) fn new(f: Framing) -> Option<Self> {
        match f {
            Framing::Empty => None,
            Framing::Length(n) => Some(Framer::Length(n)),
            Framing::Chunked => Some(Framer::Chunked(Dechunker::default())),
            Framing::UntilClose => Some(Framer::UntilClose),
        }
    }

    /// Consumes body bytes of `data`, giving the content to `sink`: (bytes used, body ended).
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(usize, bool), Reject> {
        match self {
            Framer::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                sink(data.get(..n).unwrap_or_default());
                *left = left.saturating_sub(n as u64);
                Ok((n, *left == 0))
            }
            Framer::Chunked(d) => d.feed(data, sink),
            Framer::UntilClose => {
                sink(data);
                Ok((data.len(), false))
            }
        }
    }
}
