//! HTTP tracker announces (BEP 3, 7, 23, 24; spec §2): the peers a host is told about by an
//! HTTP tracker, read from the reassembled TCP connection it opened to the tracker.
//!
//! Predictions (spec §0.3, §2.4): the learner is the HTTP client (the connection's initiator).
//! Every peer of a successful announce response — `peers` as a compact string or as a list of
//! dicts, `peers6` — is a peer it will dial over TCP and uTP, so each gives a
//! [`PeerTransport::Tcp`] and a [`PeerTransport::Udp`] prediction on [`Channel::HttpTracker`].
//! The request's `port=` is the client's own listen port (inbound, no prediction); the
//! response's `external ip` is the client's own address, used only to drop it from the list.
//! Dict entries whose `ip` is a DNS name are counted and skipped (resolving them would need
//! the host's own later DNS answers).
//!
//! # Framing
//!
//! A connection is a sequence of HTTP/1.x requests (client → tracker) and responses
//! (tracker → client). Heads are read with `httparse` (zero-copy into a fixed header array, no
//! allocation, no panics). Requests are framed too (`Content-Length` or chunked bodies are
//! skipped) so that keep-alive and pipelined connections pair each response with its request,
//! in order; only responses to announce requests (query with `info_hash=` and `peer_id=`) are
//! decoded. Response bodies are framed by `Content-Length`, `Transfer-Encoding: chunked` (our
//! streaming de-chunker around `httparse::parse_chunk_size`) or the end of the connection
//! ([`HttpTracker::on_close`]); then de-chunked bodies are inflated (`gzip`, `x-gzip`,
//! `deflate` with or without the zlib wrapper, via `flate2`), as libtorrent does (spec §2.3).
//! The body must then be a bencoded dict with `peers`, `peers6` or `failure reason`.
//!
//! # Bounds
//!
//! Sessions live in a [`Bounded`] table (idle TTL, capped, oldest evicted). Per session: the
//! head being read ([`HttpTrackerConfig::max_head`]), the raw body of an announce response
//! ([`HttpTrackerConfig::max_body`]; past it the body is still framed but not kept), the
//! inflated body ([`HttpTrackerConfig::max_inflated`], libtorrent's 1 MiB limit) and the
//! outstanding requests. Bodies of other responses are skipped, never buffered.
//!
//! # Loss
//!
//! A gap in the tracker → client direction drops the response in progress (counted as a
//! rejected response) and everything up to the next chunk that starts with `HTTP/`; the
//! outstanding requests are forgotten, since the lost bytes may have answered any of them.
//! A response then read with no outstanding request is treated as an announce response when
//! the connection has carried an announce (its body must still be a tracker reply). A gap in
//! the client → tracker direction skips to the next chunk that starts with a request line.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bencode::ext::BRefAccessExt;
use bencode::{BRefAccess, BencodeRef};

use super::stream::{ConnKey, Dir, StreamChunk};
use super::{compact_v4, compact_v6, unfit, Bounded, ChannelCounts, EntryCounts, TableStats};
use crate::event::Timestamp;
use crate::predict::{Channel, PeerTransport, PredictedPeer};

/// Nesting the bencode decoder accepts: a reply needs 3 (dict, `peers` list, peer dict).
pub const MAX_DEPTH: usize = 8;
/// Header lines per head (trackers send fewer than 15).
pub const MAX_HEADERS: usize = 64;
/// Bytes of one request or response head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Raw (still encoded) body bytes kept per announce response.
pub const MAX_BODY: usize = 256 * 1024;
/// Inflated body, libtorrent's `tracker_maximum_response_length` (spec §1.1).
pub const MAX_INFLATED: usize = 1024 * 1024;
/// Peers read from one response, over `peers` and `peers6` (libtorrent asks for 200).
pub const MAX_ENTRIES: usize = 2000;
/// Requests awaiting their response on one connection (pipelining depth).
pub const MAX_PENDING: usize = 16;
/// How far [`looks_like_announce`] looks for the end of the request line.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Content and transfer codings undone per body.
pub const MAX_CODINGS: usize = 4;
/// A chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;
/// Trailer section after the last chunk.
const MAX_TRAILER: usize = 8 * 1024;
/// Longest method token a request line may open with.
const MAX_METHOD: usize = 16;

/// Why a response to an announce was not used (or a pure parser failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The head is not HTTP/1.x (httparse refused it).
    NotHttp,
    HeadTooLarge,
    TooManyHeaders,
    /// `Content-Length` not a number, or several that disagree.
    BadLength,
    /// A chunk-size line or chunk delimiter that is not HTTP.
    BadChunk,
    /// A transfer coding on a request (no framing for it).
    BadFraming,
    /// Status outside 2xx (redirects, errors): no tracker reply to read.
    HttpStatus,
    /// Bytes of the response were lost in capture.
    Gap,
    /// The connection ended before the body did.
    ClosedEarly,
    /// The input ends before the message does (pure parsers only).
    Incomplete,
    /// The raw body passed [`HttpTrackerConfig::max_body`].
    BodyTooLarge,
    /// A content coding other than gzip, x-gzip, deflate and identity, or too many.
    UnsupportedEncoding,
    /// The body does not inflate.
    BadEncoding,
    /// The inflated body passed [`HttpTrackerConfig::max_inflated`].
    InflatedTooLarge,
    /// The bencode ends before its last value does.
    Truncated,
    /// A string's declared length runs past the end of the body.
    LengthBeyondEnd,
    TrailingData,
    TooDeep,
    DuplicateKey,
    /// Not bencode.
    Syntax,
    NotDict,
    /// A dict without `peers`, `peers6` or `failure reason`.
    NotTrackerReply,
    /// A known key holds the wrong bencode type (e.g. `peers` an integer).
    WrongType,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::NotHttp => "not_http",
            Reject::HeadTooLarge => "head_too_large",
            Reject::TooManyHeaders => "too_many_headers",
            Reject::BadLength => "bad_length",
            Reject::BadChunk => "bad_chunk",
            Reject::BadFraming => "bad_framing",
            Reject::HttpStatus => "http_status",
            Reject::Gap => "gap",
            Reject::ClosedEarly => "closed_early",
            Reject::Incomplete => "incomplete",
            Reject::BodyTooLarge => "body_too_large",
            Reject::UnsupportedEncoding => "unsupported_encoding",
            Reject::BadEncoding => "bad_encoding",
            Reject::InflatedTooLarge => "inflated_too_large",
            Reject::Truncated => "truncated",
            Reject::LengthBeyondEnd => "length_beyond_end",
            Reject::TrailingData => "trailing_data",
            Reject::TooDeep => "too_deep",
            Reject::DuplicateKey => "duplicate_key",
            Reject::Syntax => "syntax",
            Reject::NotDict => "not_dict",
            Reject::NotTrackerReply => "not_tracker_reply",
            Reject::WrongType => "wrong_type",
        }
    }
}

/// Whether the first payload of a client stream is an announce-like request: `GET ` and
/// `info_hash=` on the request line. Looks at most [`MAX_REQUEST_LINE`] bytes.
pub fn looks_like_announce(head: &[u8]) -> bool {
    if !head.starts_with(b"GET ") {
        return false;
    }
    let head = head.get(..head.len().min(MAX_REQUEST_LINE)).unwrap_or(head);
    let line = match head.iter().position(|&b| b == b'\n') {
        Some(end) => head.get(..end).unwrap_or(head),
        None => head,
    };
    contains(line, b"info_hash=")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `data` can be the start of a request line: an upper-case method token then a space,
/// or only the beginning of one (a chunk may end inside the method).
fn request_start(data: &[u8]) -> bool {
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
    list: [Coding; MAX_CODINGS],
    len: usize,
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
    /// `compact=` (advisory: trackers may answer with a dict list anyway, spec HTTP-R2).
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
        (None, Some(0)) | (None, None) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (mut info_hash, mut peer_id, mut port, mut compact) = (false, false, None, None);
    for param in query.split('&') {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let has_value = param.len() > key.len();
        match key {
            "info_hash" => info_hash |= has_value,
            "peer_id" => peer_id |= has_value,
            "port" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                port = value.parse::<u16>().ok();
            }
            "compact" => compact = Some(value == "1"),
            _ => {}
        }
    }
    Ok(Some(RequestHead {
        method,
        path,
        query,
        version,
        announce: info_hash && peer_id,
        port,
        compact,
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
        (Some(false), _) => Framing::UntilClose,
        (None, Some(0)) => Framing::Empty,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
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

/// The `peers` key of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeersField<'a> {
    /// C4 entries (BEP 23).
    Compact(&'a [u8]),
    /// A list of dicts (BEP 3); the number of elements.
    List(usize),
}

/// One entry of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer<'a> {
    Addr(SocketAddr),
    /// A dict entry whose `ip` is a DNS name.
    Name {
        host: &'a [u8],
        port: u16,
    },
}

/// What [`AnnounceReply::for_each_peer`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// `decoded` counts addresses; names are counted in `dns_names` only.
    pub entries: EntryCounts,
    pub dns_names: u64,
}

/// A decoded tracker reply. Byte fields borrow from the body.
#[derive(Debug)]
pub struct AnnounceReply<'a> {
    pub failure: Option<&'a [u8]>,
    pub warning: Option<&'a [u8]>,
    pub interval: Option<i64>,
    pub peers: Option<PeersField<'a>>,
    /// C6 entries (BEP 7).
    pub peers6: Option<&'a [u8]>,
    /// BEP 24: the requester's own address as the tracker sees it (never a target).
    pub external_ip: Option<IpAddr>,
    /// Kept for the dict-list entries, which live in the decoded tree.
    root: BencodeRef<'a>,
}

super::from_bencode_fault!(Reject);

/// Decodes an announce reply body (already de-chunked and inflated). Keys may come in any
/// order; trailing ASCII whitespace is tolerated. Pure, linear in `body`, depth ≤ [`MAX_DEPTH`].
pub fn parse_announce_body(body: &[u8]) -> Result<AnnounceReply<'_>, Reject> {
    let body = body.trim_ascii_end();
    let root = super::decode_bencode(body, MAX_DEPTH)?;
    let top = root.dict().ok_or(Reject::NotDict)?;
    let string = |key: &[u8]| -> Result<Option<&[u8]>, Reject> {
        top.lookup(key)
            .map(|v| v.bytes_ext().ok_or(Reject::WrongType))
            .transpose()
    };
    let failure = string(b"failure reason")?;
    let peers6 = string(b"peers6")?;
    let peers = match top.lookup(b"peers") {
        None => None,
        Some(v) => Some(match (v.bytes_ext(), v.list()) {
            (Some(s), _) => PeersField::Compact(s),
            (None, Some(l)) => PeersField::List(l.len()),
            (None, None) => return Err(Reject::WrongType),
        }),
    };
    if failure.is_none() && peers.is_none() && peers6.is_none() {
        return Err(Reject::NotTrackerReply);
    }
    // Informational keys: a wrong type does not spoil the peers.
    let warning = top.lookup(b"warning message").and_then(|v| v.bytes_ext());
    let interval = top.lookup(b"interval").and_then(|v| v.int());
    let external_ip = top
        .lookup(b"external ip")
        .and_then(|v| v.bytes_ext())
        .and_then(ip_from_bytes);
    Ok(AnnounceReply {
        failure,
        warning,
        interval,
        peers,
        peers6,
        external_ip,
        root,
    })
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(b) {
        Some(IpAddr::V4(Ipv4Addr::from(v4)))
    } else {
        <[u8; 16]>::try_from(b)
            .ok()
            .map(|v6| IpAddr::V6(Ipv6Addr::from(v6)))
    }
}

/// A DNS name as BEP 3 allows in `ip`: letters, digits, `-`, `.`, `_`, at most 253 bytes.
fn is_hostname(b: &[u8]) -> bool {
    (1..=253).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
}

/// One dict of a `peers` list: `ip` (an address literal or a DNS name) and `port`.
fn dict_peer<'a>(e: &BencodeRef<'a>) -> Option<Peer<'a>> {
    let d = e.dict()?;
    let ip = d.lookup(b"ip")?.bytes_ext()?;
    let port = u16::try_from(d.lookup(b"port")?.int()?).ok()?;
    let text = std::str::from_utf8(ip).ok()?;
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(addr) = bare.parse::<IpAddr>() {
        Some(Peer::Addr(SocketAddr::new(addr, port)))
    } else if is_hostname(ip) {
        Some(Peer::Name { host: ip, port })
    } else {
        None
    }
}

impl<'a> AnnounceReply<'a> {
    /// Calls `f` with each entry of `peers` then `peers6`, reading at most `max` over both.
    /// Compact strings give `floor(len / stride)` entries, a remainder counts as one malformed
    /// (libtorrent would fail the whole reply; Zeek and Transmission read the whole entries).
    /// List elements that are not a dict with a usable `ip` and a `port` in 0..=65535 are
    /// malformed. The caller decides what a `failure reason` means for the entries.
    pub fn for_each_peer(&self, max: usize, mut f: impl FnMut(Peer<'a>)) -> PeerCounts {
        let mut n = PeerCounts::default();
        let mut budget = max;
        match self.peers {
            Some(PeersField::Compact(s)) => compact_entries(s, 6, &mut budget, &mut n, &mut f),
            Some(PeersField::List(total)) => {
                let list = self
                    .root
                    .dict()
                    .and_then(|d| d.lookup(b"peers"))
                    .and_then(|p| p.list());
                let take = total.min(budget);
                budget -= take;
                n.entries.capped += (total - take) as u64;
                for i in 0..take {
                    match list.and_then(|l| l.get(i)).and_then(dict_peer) {
                        Some(p) => {
                            match p {
                                Peer::Addr(_) => n.entries.decoded += 1,
                                Peer::Name { .. } => n.dns_names += 1,
                            }
                            f(p);
                        }
                        None => n.entries.malformed += 1,
                    }
                }
            }
            None => {}
        }
        if let Some(s) = self.peers6 {
            compact_entries(s, 18, &mut budget, &mut n, &mut f);
        }
        n
    }
}

/// Whole C4 (`stride` 6) or C6 (18) entries of `s`, at most `budget`; a remainder is one
/// malformed entry.
fn compact_entries<'a>(
    s: &'a [u8],
    stride: usize,
    budget: &mut usize,
    n: &mut PeerCounts,
    f: &mut impl FnMut(Peer<'a>),
) {
    if !s.len().is_multiple_of(stride) {
        n.entries.malformed += 1;
    }
    let total = s.len() / stride;
    let take = total.min(*budget);
    *budget -= take;
    n.entries.capped += (total - take) as u64;
    for e in s.chunks_exact(stride).take(take) {
        n.entries.decoded += 1;
        let addr = match <&[u8; 6]>::try_from(e) {
            Ok(c4) => compact_v4(c4),
            Err(_) => compact_v6(e.try_into().unwrap_or(&[0; 18])),
        };
        f(Peer::Addr(addr));
    }
}

#[derive(Clone, Debug)]
pub struct HttpTrackerConfig {
    /// Connections followed at once (oldest dropped first).
    pub max_sessions: usize,
    /// A connection idle this long is forgotten (trackers answer within seconds).
    pub session_ttl: Duration,
    pub max_head: usize,
    pub max_body: usize,
    pub max_inflated: usize,
    pub max_entries: usize,
    pub max_pending: usize,
}

impl Default for HttpTrackerConfig {
    fn default() -> Self {
        // Worst case about max_sessions × (2 × max_head + max_body) ≈ 100 MiB of buffers;
        // real tracker replies are a few KiB (200 dict-list peers: about 15 KiB).
        Self {
            max_sessions: 1024,
            session_ttl: Duration::from_secs(120),
            max_head: MAX_HEAD,
            max_body: 64 << 10,
            max_inflated: MAX_INFLATED,
            max_entries: MAX_ENTRIES,
            max_pending: MAX_PENDING,
        }
    }
}

/// Counters of the HTTP tracker channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpTrackerStats {
    /// Responses to announces, once their outcome is known: `parsed` when the body was a
    /// tracker reply (`failure reason` included), otherwise rejected by reason.
    pub counts: ChannelCounts,
    /// Connections whose client bytes were seen, and those that did not open with a request.
    pub flows: u64,
    pub not_http_flows: u64,
    pub requests: u64,
    pub announce_requests: u64,
    pub non_announce_requests: u64,
    /// Request heads that could not be read (the connection's requests resume at the next
    /// chunk that starts with a request line).
    pub bad_requests: u64,
    /// Response heads read, and those answering a request that was not an announce.
    pub responses: u64,
    pub non_announce_responses: u64,
    /// Responses read with no outstanding request (after a gap, or the request was missed).
    pub unmatched_responses: u64,
    /// Requests still unanswered when their connection ended.
    pub unanswered_requests: u64,
    /// Requests past the pipelining cap, not awaited.
    pub pending_overflow: u64,
    /// Replies with a `failure reason`.
    pub failures: u64,
    /// Dict entries whose `ip` is a DNS name (skipped).
    pub dns_names: u64,
    pub entries: EntryCounts,
    /// Predictions made (TCP + uTP per peer).
    pub predicted: u64,
    /// Chunks announcing lost bytes.
    pub gaps: u64,
    /// Bytes skipped while resynchronising after a gap or a framing error.
    pub desync_bytes: u64,
    /// Body bytes not kept because the response passed the raw body cap.
    pub over_cap_bytes: u64,
    /// Chunks of connections with no session (a response before any request, or after the
    /// session expired).
    pub orphan_chunks: u64,
    pub sessions: TableStats,
}

/// What a request outstanding on a connection needs of its response.
#[derive(Clone, Copy, Debug)]
struct Pending {
    announce: bool,
    /// HEAD: the response has no body whatever its headers say.
    head: bool,
}

/// A head being accumulated until its blank line.
#[derive(Debug, Default)]
struct HeadBuf {
    buf: Vec<u8>,
    /// Start of the line being scanned.
    line_start: usize,
    /// A non-empty line was read (blank lines before the start line are skipped, as httparse
    /// does; they also end a message in progress only once it started).
    started: bool,
}

enum Push {
    More,
    /// The head ended; this many bytes of the input were part of it.
    Done(usize),
    TooLarge,
}

impl HeadBuf {
    /// Whether a message has begun (a partial start line counts).
    fn in_progress(&self) -> bool {
        self.started
            || self
                .buf
                .get(self.line_start..)
                .is_some_and(|l| l.iter().any(|b| !matches!(b, b'\r' | b'\n')))
    }

    fn push(&mut self, data: &[u8], cap: usize) -> Push {
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
enum Framer {
    Length(u64),
    Chunked(Dechunker),
    UntilClose,
}

impl Framer {
    fn new(f: Framing) -> Option<Self> {
        match f {
            Framing::Empty => None,
            Framing::Length(n) => Some(Framer::Length(n)),
            Framing::Chunked => Some(Framer::Chunked(Dechunker::default())),
            Framing::UntilClose => Some(Framer::UntilClose),
        }
    }

    /// Consumes body bytes of `data`, giving the content to `sink`: (bytes used, body ended).
    fn feed(&mut self, data: &[u8], mut sink: impl FnMut(&[u8])) -> Result<(usize, bool), Reject> {
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

/// The body of a response being read.
#[derive(Debug)]
struct Body {
    framer: Framer,
    /// Raw content of an announce response (`None`: skipped).
    keep: Option<Vec<u8>>,
    over_cap: bool,
    codings: Codings,
}

#[derive(Debug)]
enum Tx {
    Head(HeadBuf),
    /// A request body, skipped.
    Body(Framer),
    /// Waiting for a chunk that starts with a request line.
    Desync,
}

#[derive(Debug)]
enum Rx {
    Head(HeadBuf),
    Body(Box<Body>),
    /// Waiting for a chunk that starts with `HTTP/`.
    Desync,
}

#[derive(Debug)]
struct Session {
    /// The client opened with a request line; otherwise the connection is ignored.
    http: bool,
    tx: Tx,
    rx: Rx,
    pending: VecDeque<Pending>,
    /// The connection carried an announce: a response with nothing outstanding is read as one.
    announce_seen: bool,
}

impl Session {
    fn new(http: bool) -> Self {
        Self {
            http,
            tx: Tx::Head(HeadBuf::default()),
            rx: Rx::Head(HeadBuf::default()),
            pending: VecDeque::new(),
            announce_seen: false,
        }
    }
}

/// HTTP tracker connections and the predictions of their announce responses.
#[derive(Debug)]
pub struct HttpTracker {
    config: HttpTrackerConfig,
    sessions: Bounded<ConnKey, Session>,
    stats: HttpTrackerStats,
}

impl HttpTracker {
    pub fn new(config: HttpTrackerConfig) -> Self {
        Self {
            sessions: Bounded::new(config.max_sessions, config.session_ttl),
            config,
            stats: HttpTrackerStats::default(),
        }
    }

    pub fn stats(&self) -> HttpTrackerStats {
        let mut s = self.stats.clone();
        s.sessions = self.sessions.stats();
        s
    }

    /// Drops connections idle longer than the TTL (also done lazily as chunks arrive). A
    /// response in progress on them is lost without being counted as seen.
    pub fn expire(&mut self, now: Timestamp) {
        self.sessions.expire(now);
    }

    /// In-order bytes of one direction of a connection the stream layer classed as HTTP.
    pub fn on_chunk(&mut self, chunk: &StreamChunk<'_>, out: &mut Vec<PredictedPeer>) {
        if chunk.data.is_empty() && !chunk.gap {
            return;
        }
        let mut s = match self.sessions.take(&chunk.conn, chunk.ts) {
            Some(s) => s,
            // Bytes lost before a new connection's first ones say nothing yet.
            None if chunk.data.is_empty() => return,
            None if chunk.dir == Dir::ToClient => {
                self.stats.orphan_chunks += 1;
                return;
            }
            None => {
                self.stats.flows += 1;
                let http = request_start(chunk.data);
                if !http {
                    self.stats.not_http_flows += 1;
                }
                Session::new(http)
            }
        };
        if s.http {
            match chunk.dir {
                Dir::ToServer => self.client_bytes(&mut s, chunk),
                Dir::ToClient => self.server_bytes(&mut s, chunk, out),
            }
        }
        // Re-inserting restarts the TTL: it measures idleness, not age.
        self.sessions.insert(chunk.conn, s, chunk.ts);
    }

    /// End of the connection: completes a body read until close, then forgets the session.
    pub fn on_close(&mut self, conn: ConnKey, ts: Timestamp, out: &mut Vec<PredictedPeer>) {
        let Some(mut s) = self.sessions.take(&conn, ts) else {
            return;
        };
        if !s.http {
            return;
        }
        match std::mem::replace(&mut s.rx, Rx::Desync) {
            Rx::Body(b) if matches!(b.framer, Framer::UntilClose) => {
                self.finish(*b, conn.client.ip(), ts, out)
            }
            Rx::Body(b) => {
                if b.keep.is_some() {
                    self.record(Err(Reject::ClosedEarly));
                }
            }
            Rx::Head(h) if h.in_progress() => self.abandon_head(&mut s, Reject::ClosedEarly),
            Rx::Head(_) | Rx::Desync => {}
        }
        self.stats.unanswered_requests += s.pending.len() as u64;
    }

    fn record(&mut self, result: Result<(), Reject>) {
        self.stats.counts.seen += 1;
        self.stats.counts.record(result.map_err(Reject::as_str));
    }

    /// The request a response answers: the oldest outstanding one or, with none, an announce
    /// if the connection carried one.
    fn answered(&mut self, s: &mut Session) -> Pending {
        s.pending.pop_front().unwrap_or_else(|| {
            self.stats.unmatched_responses += 1;
            Pending {
                announce: s.announce_seen,
                head: false,
            }
        })
    }

    /// A response whose head could not be read: it still answered a request.
    fn abandon_head(&mut self, s: &mut Session, why: Reject) {
        if self.answered(s).announce {
            self.record(Err(why));
        }
    }

    fn client_bytes(&mut self, s: &mut Session, chunk: &StreamChunk<'_>) {
        if chunk.gap {
            self.stats.gaps += 1;
            s.tx = Tx::Desync;
        }
        let mut rest = chunk.data;
        while !rest.is_empty() {
            match &mut s.tx {
                Tx::Desync => {
                    if rest.len() == chunk.data.len() && request_start(rest) {
                        s.tx = Tx::Head(HeadBuf::default());
                        continue;
                    }
                    self.stats.desync_bytes += rest.len() as u64;
                    return;
                }
                Tx::Head(h) => match h.push(rest, self.config.max_head) {
                    Push::More => return,
                    Push::TooLarge => {
                        self.bad_request(s);
                        return;
                    }
                    Push::Done(n) => {
                        rest = rest.get(n..).unwrap_or_default();
                        let parsed = match parse_request(&h.buf) {
                            Ok(Some(r)) => Some((r.announce, r.method == "HEAD", r.framing)),
                            Ok(None) | Err(_) => None,
                        };
                        let Some((announce, head, framing)) = parsed else {
                            self.bad_request(s);
                            self.stats.desync_bytes += rest.len() as u64;
                            return;
                        };
                        self.stats.requests += 1;
                        if announce {
                            self.stats.announce_requests += 1;
                            s.announce_seen = true;
                        } else {
                            self.stats.non_announce_requests += 1;
                        }
                        self.await_response(s, Pending { announce, head });
                        s.tx = match Framer::new(framing) {
                            Some(f) => Tx::Body(f),
                            None => Tx::Head(HeadBuf::default()),
                        };
                    }
                },
                Tx::Body(f) => match f.feed(rest, |_| {}) {
                    Ok((n, done)) => {
                        rest = rest.get(n..).unwrap_or_default();
                        if done {
                            s.tx = Tx::Head(HeadBuf::default());
                        }
                    }
                    Err(_) => {
                        s.tx = Tx::Desync;
                        self.stats.desync_bytes += rest.len() as u64;
                        return;
                    }
                },
            }
        }
    }

    /// An unreadable request: the server still answers it (with an error, usually), so it is
    /// awaited as a non-announce; its framing is unknown, so requests resume at a new chunk.
    fn bad_request(&mut self, s: &mut Session) {
        self.stats.bad_requests += 1;
        self.await_response(
            s,
            Pending {
                announce: false,
                head: false,
            },
        );
        s.tx = Tx::Desync;
    }

    fn await_response(&mut self, s: &mut Session, p: Pending) {
        if s.pending.len() >= self.config.max_pending {
            self.stats.pending_overflow += 1;
        } else {
            s.pending.push_back(p);
        }
    }

    fn server_bytes(
        &mut self,
        s: &mut Session,
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        let learner = chunk.conn.client.ip();
        if chunk.gap {
            self.stats.gaps += 1;
            match std::mem::replace(&mut s.rx, Rx::Desync) {
                Rx::Body(b) => {
                    if b.keep.is_some() {
                        self.record(Err(Reject::Gap));
                    }
                }
                Rx::Head(h) if h.in_progress() => self.abandon_head(s, Reject::Gap),
                Rx::Head(_) | Rx::Desync => {}
            }
            // The lost bytes may have answered any of them.
            s.pending.clear();
        }
        let mut rest = chunk.data;
        while !rest.is_empty() {
            match &mut s.rx {
                Rx::Desync => {
                    if rest.len() == chunk.data.len() && rest.starts_with(b"HTTP/") {
                        s.rx = Rx::Head(HeadBuf::default());
                        continue;
                    }
                    self.stats.desync_bytes += rest.len() as u64;
                    return;
                }
                Rx::Head(h) => match h.push(rest, self.config.max_head) {
                    Push::More => return,
                    Push::TooLarge => {
                        s.rx = Rx::Desync;
                        self.abandon_head(s, Reject::HeadTooLarge);
                        return;
                    }
                    Push::Done(n) => {
                        rest = rest.get(n..).unwrap_or_default();
                        let head = parse_response_head(&h.buf)
                            .and_then(|r| r.ok_or(Reject::NotHttp))
                            .map(|r| (r.status, r.codings, r.body_framing(false)));
                        let (status, codings, framing) = match head {
                            Ok(h) => h,
                            Err(why) => {
                                s.rx = Rx::Desync;
                                self.abandon_head(s, why);
                                self.stats.desync_bytes += rest.len() as u64;
                                return;
                            }
                        };
                        if status < 200 {
                            // Interim response: the final one follows. 101 switches protocol.
                            s.rx = if status == 101 {
                                Rx::Desync
                            } else {
                                Rx::Head(HeadBuf::default())
                            };
                            continue;
                        }
                        self.stats.responses += 1;
                        let p = self.answered(s);
                        let framing = if p.head { Framing::Empty } else { framing };
                        let mut keep = p.announce;
                        if !p.announce {
                            self.stats.non_announce_responses += 1;
                        } else if !(200..300).contains(&status) {
                            self.record(Err(Reject::HttpStatus));
                            keep = false;
                        }
                        let body = Body {
                            framer: Framer::Length(0),
                            keep: keep.then(Vec::new),
                            over_cap: false,
                            codings,
                        };
                        match Framer::new(framing) {
                            Some(framer) => s.rx = Rx::Body(Box::new(Body { framer, ..body })),
                            None => {
                                s.rx = Rx::Head(HeadBuf::default());
                                self.finish(body, learner, chunk.ts, out);
                            }
                        }
                    }
                },
                Rx::Body(b) => {
                    let max_body = self.config.max_body;
                    let Body {
                        framer,
                        keep,
                        over_cap,
                        ..
                    } = &mut **b;
                    let mut dropped = 0u64;
                    let fed = framer.feed(rest, |part| match keep {
                        Some(buf) if !*over_cap => {
                            if buf.len().saturating_add(part.len()) > max_body {
                                *over_cap = true;
                                dropped += part.len() as u64;
                            } else {
                                buf.extend_from_slice(part);
                            }
                        }
                        Some(_) => dropped += part.len() as u64,
                        None => {}
                    });
                    self.stats.over_cap_bytes += dropped;
                    match fed {
                        Ok((n, done)) => {
                            rest = rest.get(n..).unwrap_or_default();
                            if done {
                                let old =
                                    std::mem::replace(&mut s.rx, Rx::Head(HeadBuf::default()));
                                if let Rx::Body(b) = old {
                                    self.finish(*b, learner, chunk.ts, out);
                                }
                            }
                        }
                        Err(why) => {
                            if keep.is_some() {
                                self.record(Err(why));
                            }
                            s.rx = Rx::Desync;
                            self.stats.desync_bytes += rest.len() as u64;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// A complete body: decoded and predicted from if it answers an announce.
    fn finish(&mut self, b: Body, learner: IpAddr, ts: Timestamp, out: &mut Vec<PredictedPeer>) {
        let Some(raw) = &b.keep else {
            return;
        };
        let result = if b.over_cap {
            Err(Reject::BodyTooLarge)
        } else {
            self.predict(raw, &b.codings, learner, ts, out)
        };
        self.record(result);
    }

    fn predict(
        &mut self,
        raw: &[u8],
        codings: &Codings,
        learner: IpAddr,
        ts: Timestamp,
        out: &mut Vec<PredictedPeer>,
    ) -> Result<(), Reject> {
        let body = decode_content(raw, codings, self.config.max_inflated)?;
        let reply = parse_announce_body(&body)?;
        if reply.failure.is_some() {
            // BEP 3: a failure has no other keys worth reading.
            self.stats.failures += 1;
            return Ok(());
        }
        let own = reply.external_ip;
        let mut n = EntryCounts::default();
        let start = out.len();
        let counts = reply.for_each_peer(self.config.max_entries, |p| {
            let Peer::Addr(peer) = p else {
                return;
            };
            if let Some(why) = unfit(peer, learner, own) {
                return n.count_unfit(why);
            }
            for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
                out.push(PredictedPeer {
                    ts,
                    host: learner,
                    peer,
                    transport,
                    channel: Channel::HttpTracker,
                });
            }
        });
        n.add(&counts.entries);
        self.stats.entries.add(&n);
        self.stats.dns_names += counts.dns_names;
        self.stats.predicted += (out.len() - start) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bt::test_support::shared;
    use std::collections::{BTreeMap, HashMap};
    use std::io::Write;

    // ---- Captured TCP flows (the pre-filter does not hand TCP payloads to tests yet) ----

    /// One step of a connection as the stream layer would hand it over.
    #[derive(Clone, Debug)]
    enum Item {
        Chunk {
            ts: Timestamp,
            dir: Dir,
            gap: bool,
            data: Vec<u8>,
        },
        Close(Timestamp),
    }

    #[derive(Clone, Debug)]
    struct Flow {
        conn: ConnKey,
        items: Vec<Item>,
    }

    impl Flow {
        /// The client's first payload.
        fn first_request(&self) -> &[u8] {
            self.items
                .iter()
                .find_map(|i| match i {
                    Item::Chunk {
                        dir: Dir::ToServer,
                        data,
                        ..
                    } => Some(&data[..]),
                    _ => None,
                })
                .unwrap_or_default()
        }

        /// The kernel pre-filter's rule: `GET ` and `info_hash=` in the first 512 bytes.
        fn marked(&self) -> bool {
            let p = self.first_request();
            p.starts_with(b"GET ") && contains(&p[..p.len().min(512)], b"info_hash=")
        }
    }

    #[derive(Default)]
    struct Building {
        order: usize,
        ends: Option<(SocketAddr, SocketAddr)>,
        syn_sender: Option<SocketAddr>,
        next: HashMap<SocketAddr, u32>,
        /// (time, sender, bytes lost before, bytes) per payload segment.
        raw: Vec<(Timestamp, SocketAddr, bool, Vec<u8>)>,
        close: Option<Timestamp>,
    }

    impl Building {
        /// The SYN sender, else the first `GET` sender, else the first payload's sender.
        fn client(&self) -> Option<SocketAddr> {
            self.syn_sender
                .or_else(|| {
                    self.raw
                        .iter()
                        .find(|r| r.3.starts_with(b"GET "))
                        .map(|r| r.1)
                })
                .or_else(|| self.raw.first().map(|r| r.1))
        }
    }

    /// Every TCP flow of a capture: payload segments in capture order, retransmitted bytes
    /// removed by sequence number, a jump forward marked as a gap; closed after its last
    /// segment (or its first FIN/RST if later). Flows are returned in the order they started.
    fn tcp_flows(rel: &str) -> Vec<Flow> {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let mut flows: HashMap<(SocketAddr, SocketAddr), Building> = HashMap::new();
        crate::capture::pcap::read_frames(&shared(rel), |ts, frame| {
            let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                return;
            };
            let (src, dst) = match &p.net {
                Some(NetSlice::Ipv4(ip)) => (
                    IpAddr::V4(ip.header().source_addr()),
                    IpAddr::V4(ip.header().destination_addr()),
                ),
                Some(NetSlice::Ipv6(ip)) => (
                    IpAddr::V6(ip.header().source_addr()),
                    IpAddr::V6(ip.header().destination_addr()),
                ),
                _ => return,
            };
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                return;
            };
            let src = SocketAddr::new(src, tcp.source_port());
            let dst = SocketAddr::new(dst, tcp.destination_port());
            let key = if src < dst { (src, dst) } else { (dst, src) };
            let order = flows.len();
            let f = flows.entry(key).or_insert_with(|| Building {
                order,
                ends: Some(key),
                ..Default::default()
            });
            let seq = tcp.sequence_number();
            if tcp.syn() {
                if !tcp.ack() {
                    f.syn_sender = Some(src);
                }
                f.next.insert(src, seq.wrapping_add(1));
            }
            let payload = tcp.payload();
            if !payload.is_empty() {
                let (mut data, mut gap) = (payload, false);
                if let Some(&next) = f.next.get(&src) {
                    let off = i64::from(seq.wrapping_sub(next) as i32);
                    if off < 0 {
                        let dup = usize::try_from(-off).unwrap();
                        if dup >= data.len() {
                            return;
                        }
                        data = &data[dup..];
                    } else {
                        gap = off > 0;
                    }
                }
                f.next.insert(src, seq.wrapping_add(payload.len() as u32));
                f.raw.push((ts, src, gap, data.to_vec()));
            }
            if (tcp.fin() || tcp.rst()) && f.close.is_none() {
                f.close = Some(ts);
            }
        })
        .unwrap();
        let mut out: Vec<(usize, Flow)> = flows
            .into_values()
            .filter(|b| !b.raw.is_empty())
            .map(|b| {
                let (a, z) = b.ends.unwrap();
                let client = b.client().unwrap();
                let server = if client == a { z } else { a };
                let last = b.raw.iter().map(|r| r.0).max().unwrap();
                let mut items: Vec<Item> = b
                    .raw
                    .into_iter()
                    .map(|(ts, src, gap, data)| Item::Chunk {
                        ts,
                        dir: if src == client {
                            Dir::ToServer
                        } else {
                            Dir::ToClient
                        },
                        gap,
                        data,
                    })
                    .collect();
                items.push(Item::Close(b.close.map_or(last, |c| c.max(last))));
                (
                    b.order,
                    Flow {
                        conn: ConnKey { client, server },
                        items,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(o, _)| *o);
        out.into_iter().map(|(_, f)| f).collect()
    }

    fn drive(t: &mut HttpTracker, conn: ConnKey, items: &[Item]) -> Vec<PredictedPeer> {
        let mut out = Vec::new();
        for i in items {
            match i {
                Item::Chunk { ts, dir, gap, data } => t.on_chunk(
                    &StreamChunk {
                        ts: *ts,
                        conn,
                        dir: *dir,
                        gap: *gap,
                        data,
                    },
                    &mut out,
                ),
                Item::Close(ts) => t.on_close(conn, *ts, &mut out),
            }
        }
        out
    }

    fn replay(flows: &[Flow]) -> (HttpTrackerStats, Vec<PredictedPeer>) {
        let mut t = HttpTracker::new(HttpTrackerConfig::default());
        let mut out = Vec::new();
        for f in flows {
            out.extend(drive(&mut t, f.conn, &f.items));
        }
        (t.stats(), out)
    }

    fn marked_flows(rel: &str) -> Vec<Flow> {
        tcp_flows(rel).into_iter().filter(Flow::marked).collect()
    }

    /// The same flow with chunk `which` cut at every byte, then every chunk cut into single
    /// bytes, gives the same predictions and counters as the flow as captured.
    fn assert_split_invariant(conn: ConnKey, items: &[Item]) {
        let run = |items: &[Item]| {
            let mut t = HttpTracker::new(HttpTrackerConfig::default());
            let out = drive(&mut t, conn, items);
            (out, t.stats())
        };
        let whole = run(items);
        for (which, item) in items.iter().enumerate() {
            let Item::Chunk { ts, dir, gap, data } = item else {
                continue;
            };
            for cut in 0..=data.len() {
                let mut v = items[..which].to_vec();
                v.push(Item::Chunk {
                    ts: *ts,
                    dir: *dir,
                    gap: *gap,
                    data: data[..cut].to_vec(),
                });
                v.push(Item::Chunk {
                    ts: *ts,
                    dir: *dir,
                    gap: false,
                    data: data[cut..].to_vec(),
                });
                v.extend_from_slice(&items[which + 1..]);
                assert_eq!(run(&v), whole, "chunk {which} cut at {cut}");
            }
        }
        let bytes: Vec<Item> = items
            .iter()
            .flat_map(|i| match i {
                Item::Chunk { ts, dir, gap, data } => data
                    .iter()
                    .enumerate()
                    .map(|(k, b)| Item::Chunk {
                        ts: *ts,
                        dir: *dir,
                        gap: *gap && k == 0,
                        data: vec![*b],
                    })
                    .collect::<Vec<_>>(),
                Item::Close(_) => vec![i.clone()],
            })
            .collect();
        assert_eq!(run(&bytes), whole, "byte by byte");
    }

    // ---- Synthetic exchanges ----

    const CLIENT: &str = "10.0.0.201:49842";
    const SERVER: &str = "198.51.100.1:6969";
    const ANNOUNCE: &[u8] = b"GET /announce?info_hash=%e4%be%9eM%b8v%e3%e3%17%97x%b0%3e%90b%97%be%5c%8d%be&peer_id=-DE13F0-VnpZRF8ZP9iv&port=63448&compact=1 HTTP/1.1\r\nHost: tracker.example\r\nAccept-Encoding: gzip\r\n\r\n";
    const SCRAPE: &[u8] = b"GET /scrape?info_hash=%e4%be%9eM%b8v%e3%e3%17%97x%b0%3e%90b%97%be%5c%8d%be HTTP/1.1\r\nHost: tracker.example\r\n\r\n";

    // Spec §2.5.
    const S1: &[u8] = b"d5:peers12:\x01\x02\x03\x04\x30\x10\x09\x08\x07\x06\x20\x10e";
    const S3: &[u8] = b"d5:peersld7:peer id20:aaaaaaaaaaaaaaaaaaaa2:ip13:test_hostname4:porti1000eed7:peer id20:bbbbabaababababababa2:ip12:another_host4:porti1001eeee";
    const S4: &[u8] = b"d8:intervali1800e5:peers6:iiiipp6:peers618:iiiiiiiiiiiiiiiippe";
    const S5: &[u8] = b"d5:peers0:11:external ip4:\x01\x02\x03\x04e";
    const D2: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\nd8:intervali1800e5:peers12:\x01\x02\x03\r\na\r\n\x040\x10\t\x08\x07\x06 \x10e\r\n0\r\n\r\n";

    fn s2() -> Vec<u8> {
        let mut b = b"d6:peers636:".to_vec();
        b.extend_from_slice(&crate::bt::test_support::unhex(
            "20010db8000000000000000000000001 3010 20010db8000000000000000000000002 2010",
        ));
        b.push(b'e');
        b
    }

    fn conn() -> ConnKey {
        ConnKey {
            client: CLIENT.parse().unwrap(),
            server: SERVER.parse().unwrap(),
        }
    }

    fn at(s: u64) -> Timestamp {
        Timestamp(s * 1_000_000_000)
    }

    fn up(data: &[u8]) -> Item {
        Item::Chunk {
            ts: at(1),
            dir: Dir::ToServer,
            gap: false,
            data: data.to_vec(),
        }
    }

    fn down(data: &[u8]) -> Item {
        Item::Chunk {
            ts: at(2),
            dir: Dir::ToClient,
            gap: false,
            data: data.to_vec(),
        }
    }

    fn down_gap(data: &[u8]) -> Item {
        Item::Chunk {
            ts: at(2),
            dir: Dir::ToClient,
            gap: true,
            data: data.to_vec(),
        }
    }

    /// `HTTP/1.1 200` with a Content-Length and `extra` header lines.
    fn ok_with(extra: &str, body: &[u8]) -> Vec<u8> {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn ok(body: &[u8]) -> Vec<u8> {
        ok_with("", body)
    }

    fn run_with(
        config: HttpTrackerConfig,
        items: &[Item],
    ) -> (Vec<PredictedPeer>, HttpTrackerStats) {
        let mut t = HttpTracker::new(config);
        let out = drive(&mut t, conn(), items);
        (out, t.stats())
    }

    fn run(items: &[Item]) -> (Vec<PredictedPeer>, HttpTrackerStats) {
        run_with(HttpTrackerConfig::default(), items)
    }

    /// TCP predictions as `ip:port`, checking each has its uTP twin right after it, on this
    /// channel, for the client.
    fn tcp_peers(out: &[PredictedPeer], learner: &str) -> Vec<String> {
        assert_eq!(out.len() % 2, 0);
        let host: IpAddr = learner.parse().unwrap();
        out.chunks(2)
            .map(|pair| {
                assert_eq!(pair[0].transport, PeerTransport::Tcp);
                assert_eq!(pair[1].transport, PeerTransport::Udp);
                assert_eq!(pair[0].peer, pair[1].peer);
                for p in pair {
                    assert_eq!(p.channel, Channel::HttpTracker);
                    assert_eq!(p.host, host);
                }
                pair[0].peer.to_string()
            })
            .collect()
    }

    fn body_peers(body: &[u8]) -> (Vec<String>, PeerCounts) {
        let reply = parse_announce_body(body).unwrap();
        let mut v = Vec::new();
        let n = reply.for_each_peer(MAX_ENTRIES, |p| {
            v.push(match p {
                Peer::Addr(a) => a.to_string(),
                Peer::Name { host, port } => {
                    format!("{}:{port}", String::from_utf8_lossy(host))
                }
            })
        });
        (v, n)
    }

    fn rejected(s: &HttpTrackerStats) -> BTreeMap<&'static str, u64> {
        s.counts.rejected.clone()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    // ---- Pure parsers ----

    #[test]
    fn recognises_announce_requests() {
        assert!(looks_like_announce(ANNOUNCE));
        assert!(
            looks_like_announce(SCRAPE),
            "the cheap test is only a pre-filter"
        );
        assert!(!looks_like_announce(
            b"GET / HTTP/1.1\r\nX: info_hash=1\r\n\r\n"
        ));
        assert!(!looks_like_announce(
            b"POST /announce?info_hash=1&peer_id=2 HTTP/1.1\r\n"
        ));
        assert!(!looks_like_announce(b"GET "));
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
        long.extend_from_slice(b"?info_hash=1");
        assert!(!looks_like_announce(&long), "bounded scan");

        let r = parse_request(ANNOUNCE).unwrap().unwrap();
        assert_eq!((r.method, r.path, r.version), ("GET", "/announce", 1));
        assert!(r.announce);
        assert_eq!((r.port, r.compact), (Some(63448), Some(true)));
        assert_eq!((r.framing, r.len), (Framing::Empty, ANNOUNCE.len()));
        let r = parse_request(SCRAPE).unwrap().unwrap();
        assert!(!r.announce && r.path == "/scrape" && r.port.is_none());
        assert_eq!(parse_request(&ANNOUNCE[..40]), Ok(None));
        assert_eq!(
            parse_request(b"\x13BitTorrent protocol"),
            Err(Reject::NotHttp)
        );
        let post = b"POST /x?info_hash=a&peer_id=b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
        let r = parse_request(post).unwrap().unwrap();
        assert!(r.announce);
        assert_eq!(r.framing, Framing::Length(5));
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Err(Reject::BadFraming)
        );
        // `info_hash` without a value, or only inside another parameter, is no announce.
        for q in [
            "info_hash&peer_id=1",
            "xinfo_hash=1&peer_id=1",
            "info_hash=1&peer_id",
        ] {
            let req = format!("GET /a?{q} HTTP/1.1\r\n\r\n");
            assert!(
                !parse_request(req.as_bytes()).unwrap().unwrap().announce,
                "{q}"
            );
        }
    }

    #[test]
    fn response_heads_and_framing() {
        let h = parse_response_head(D2).unwrap().unwrap();
        assert_eq!((h.version, h.status, h.reason), (1, 200, "OK"));
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.codings.as_slice().is_empty());
        assert_eq!(h.body_framing(true), Framing::Empty);
        let h = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Encoding: x-gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert_eq!(h.codings.as_slice(), [Coding::Gzip]);
        let h = parse_response_head(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\nContent-Encoding: br\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.framing, h.body_framing(false)),
            (Framing::Length(10), Framing::Empty)
        );
        assert!(h.codings.unsupported);
        // Transfer-Encoding wins over Content-Length; a coding after chunked ends framing by
        // length (read until close).
        let h = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert_eq!(h.codings.as_slice(), [Coding::Gzip]);
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert_eq!(parse_response_head(bad), Err(Reject::BadLength));
        }
        assert_eq!(parse_response_head(b"HTTP/1.1 200"), Ok(None));
        assert_eq!(parse_response_head(b"d5:peers"), Err(Reject::NotHttp));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(
            parse_response_head(many.as_bytes()),
            Err(Reject::TooManyHeaders)
        );
    }

    #[test]
    fn dechunker_spec_d2_and_errors() {
        let h = parse_response_head(D2).unwrap().unwrap();
        let (body, used) = dechunk(&D2[h.len..], MAX_BODY).unwrap();
        let mut want = b"d8:intervali1800e".to_vec();
        want.extend_from_slice(&S1[1..]);
        assert_eq!(body, want);
        assert_eq!(h.len + used, D2.len());
        // Extensions, a trailer and bare LFs are accepted; the bytes after the body are not
        // consumed.
        let (body, used) = dechunk(b"3;ext=1\r\nabc\n0\nX-T: 1\r\n\r\nHTTP", 100).unwrap();
        assert_eq!((&body[..], used), (&b"abc"[..], 25));
        for (bad, why) in [
            (&b"\r\n"[..], Reject::BadChunk),
            (b"zz\r\n", Reject::BadChunk),
            (b"3\r\nabcX", Reject::BadChunk),
            (b"10000000000000000\r\n", Reject::BadChunk),
            (b"3\r\nab", Reject::Incomplete),
            (b"5\r\nabcde\r\n0\r\n\r\n", Reject::BodyTooLarge),
        ] {
            assert_eq!(dechunk(bad, 4).map(|_| ()), Err(why), "{bad:?}");
        }
        let mut long = vec![b'1'; 1];
        long.extend(std::iter::repeat_n(b' ', MAX_CHUNK_LINE));
        assert_eq!(dechunk(&long, 4).map(|_| ()), Err(Reject::BadChunk));
    }

    #[test]
    fn spec_s1_s4_compact_peers() {
        let (p, n) = body_peers(S1);
        assert_eq!(p, ["1.2.3.4:12304", "9.8.7.6:8208"]);
        assert_eq!((n.entries.decoded, n.entries.malformed), (2, 0));
        let (p, _) = body_peers(&s2());
        assert_eq!(p, ["[2001:db8::1]:12304", "[2001:db8::2]:8208"]);
        let (p, _) = body_peers(S4);
        assert_eq!(
            p,
            [
                "105.105.105.105:28784",
                "[6969:6969:6969:6969:6969:6969:6969:6969]:28784"
            ]
        );
        assert_eq!(parse_announce_body(S4).unwrap().interval, Some(1800));
        // `parse_peers6_invalid_length`: flagged, the whole entry still read.
        let mut bad = b"d6:peers619:".to_vec();
        bad.extend_from_slice(&[1; 19]);
        bad.push(b'e');
        let (p, n) = body_peers(&bad);
        assert_eq!(p, ["[101:101:101:101:101:101:101:101]:257"]);
        assert_eq!((n.entries.decoded, n.entries.malformed), (1, 1));

        // Through the tracker: TCP and uTP for the client.
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(S4))]);
        assert_eq!(
            tcp_peers(&out, "10.0.0.201"),
            [
                "105.105.105.105:28784",
                "[6969:6969:6969:6969:6969:6969:6969:6969]:28784"
            ]
        );
        assert_eq!((s.counts.seen, s.counts.parsed, s.predicted), (1, 1, 4));
        assert_eq!(s.entries.decoded, 2);
    }

    #[test]
    fn spec_s3_hostnames_are_counted_not_predicted() {
        let (p, n) = body_peers(S3);
        assert_eq!(p, ["test_hostname:1000", "another_host:1001"]);
        assert_eq!((n.dns_names, n.entries.decoded), (2, 0));
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(S3))]);
        assert!(out.is_empty());
        assert_eq!((s.counts.parsed, s.dns_names, s.entries.decoded), (1, 2, 0));
    }

    #[test]
    fn spec_s5_external_ip_is_the_learner() {
        let r = parse_announce_body(S5).unwrap();
        assert_eq!(r.external_ip, Some("1.2.3.4".parse().unwrap()));
        assert_eq!(r.peers, Some(PeersField::Compact(b"")));
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(S5))]);
        assert!(out.is_empty());
        assert_eq!((s.counts.parsed, s.entries.decoded), (1, 0));
        // With entries: the learner as the tracker sees it, the learner's own address, port 0
        // and another peer.
        let body = b"d11:external ip4:\x01\x02\x03\x045:peers24:\x01\x02\x03\x04\x1a\xe1\x0a\x00\x00\xc9\x1a\xe1\x05\x06\x07\x08\x00\x00\x05\x06\x07\x08\x1a\xe1e";
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
        assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
        let e = s.entries;
        assert_eq!((e.decoded, e.own_address, e.unusable), (4, 2, 1));
    }

    #[test]
    fn spec_d2_chunk_boundary_inside_peers() {
        let items = [up(ANNOUNCE), down(D2)];
        let (out, s) = run(&items);
        assert_eq!(
            tcp_peers(&out, "10.0.0.201"),
            ["1.2.3.4:12304", "9.8.7.6:8208"]
        );
        assert_eq!((s.counts.seen, s.counts.parsed), (1, 1));
        assert_split_invariant(conn(), &items);
    }

    // ---- Real captures (spec HTTP-R1, HTTP-R2 and more) ----

    #[test]
    fn real_r1_gzip_reply_of_an_ubuntu_tracker() {
        let flows = marked_flows("zeek-zeek/tracker.pcap");
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert_eq!(f.conn.client, "10.0.0.201:49842".parse().unwrap());
        let req = parse_request(f.first_request()).unwrap().unwrap();
        assert!(req.announce);
        assert_eq!((req.port, req.compact), (Some(63448), Some(true)));

        // The body as the spec decodes it.
        let Some(Item::Chunk { data: resp, .. }) = f.items.iter().find(|i| {
            matches!(
                i,
                Item::Chunk {
                    dir: Dir::ToClient,
                    ..
                }
            )
        }) else {
            panic!("no response")
        };
        let h = parse_response_head(resp).unwrap().unwrap();
        assert_eq!(
            (h.version, h.status, h.framing),
            (0, 200, Framing::Length(397))
        );
        let body = decode_content(&resp[h.len..], &h.codings, MAX_INFLATED).unwrap();
        assert_eq!(body.len(), 431);
        assert!(body.starts_with(b"d8:completei4499e12:crypto_flags50:"));

        let (s, out) = replay(&flows);
        let peers = tcp_peers(&out, "10.0.0.201");
        assert_eq!(peers.len(), 50);
        assert_eq!(
            peers[..3],
            [
                "177.1.173.218:51413",
                "5.39.80.148:51413",
                "24.68.62.150:51413"
            ]
        );
        assert_eq!(peers[49], "104.181.106.223:51413");
        // 47 distinct (zlib + a bencode decoder outside this crate).
        let distinct: std::collections::BTreeSet<_> = peers.iter().collect();
        assert_eq!(distinct.len(), 47);
        assert_eq!((s.counts.seen, s.counts.parsed, s.predicted), (1, 1, 100));
        assert_eq!((s.requests, s.announce_requests, s.responses), (1, 1, 1));
        assert_eq!(s.entries.decoded, 50);
        assert_split_invariant(f.conn, &f.items);
    }

    #[test]
    fn real_r2_chunked_gzip_dict_list() {
        // Marked flows (tshark): streams 13 and 37 announce, 15 scrapes; each announce is
        // answered chunked + gzip with the same two dict-list peers.
        let flows =
            marked_flows("goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap");
        assert_eq!(flows.len(), 3);
        let (s, out) = replay(&flows);
        assert_eq!(
            tcp_peers(&out, "194.210.230.86"),
            [
                "185.21.216.147:62271",
                "2.236.132.125:46251",
                "185.21.216.147:62271",
                "2.236.132.125:46251"
            ]
        );
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!((s.announce_requests, s.non_announce_requests), (2, 1));
        assert_eq!((s.responses, s.non_announce_responses), (3, 1));
        assert_eq!(
            (s.entries.decoded, s.dns_names, s.unanswered_requests),
            (4, 0, 0)
        );
        for f in &flows {
            assert_split_invariant(f.conn, &f.items);
        }
    }

    #[test]
    fn real_plain_reply_lists_the_learner_itself() {
        // tcoppi test.txt.pcap: two announces by 10.0.0.3 (port 6943), HTTP/1.0 with a length;
        // each reply lists 10.0.0.3:6943, 10.0.0.3:6917 and 10.0.0.2:52833 (tshark
        // `http.file_data`), and 10.0.0.3 connects to 10.0.0.2:52833 next (frame 11).
        let flows = marked_flows("tcoppi-BittorrentReconstituter/test.txt.pcap");
        assert_eq!(flows.len(), 2);
        let (s, out) = replay(&flows);
        assert_eq!(
            tcp_peers(&out, "10.0.0.3"),
            ["10.0.0.2:52833", "10.0.0.2:52833"]
        );
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!((s.entries.decoded, s.entries.own_address), (6, 4));
        for f in &flows {
            assert_split_invariant(f.conn, &f.items);
        }
    }

    #[test]
    fn real_libtorrent_swarms_of_the_reconstituter_captures() {
        // tshark `tcp.payload` of the responses, decoded outside this crate: codemonkey lists
        // [10.0.0.3:6992, 10.0.0.2:52833] twice; lookaway lists 10.0.0.3 four times and
        // 10.0.0.2:52833, twice, then an empty `peers`. 10.0.0.3 is the learner.
        for (rel, announces, decoded, own) in [
            ("tcoppi-BittorrentReconstituter/codemonkey.pcap", 2, 4, 2),
            ("tcoppi-BittorrentReconstituter/lookaway.pcap", 3, 10, 8),
        ] {
            let (s, out) = replay(&marked_flows(rel));
            assert_eq!(
                tcp_peers(&out, "10.0.0.3"),
                ["10.0.0.2:52833", "10.0.0.2:52833"],
                "{rel}"
            );
            assert_eq!((s.counts.seen, s.counts.parsed), (announces, announces));
            assert_eq!((s.entries.decoded, s.entries.own_address), (decoded, own));
        }
    }

    #[test]
    fn real_redirect_is_counted_not_read() {
        // nDPI bt-http.pcapng: Transmission's announce answered `307 Temporary Redirect`
        // (HTTP/1.1, no length, `Connection: close`); the server never closes in the capture.
        let flows = marked_flows("ntop-nDPI/bt-http.pcapng");
        assert_eq!(flows.len(), 1);
        let (s, out) = replay(&flows);
        assert!(out.is_empty());
        assert_eq!(s.counts.seen, 1);
        assert_eq!(rejected(&s), BTreeMap::from([("http_status", 1)]));
        assert_eq!((s.announce_requests, s.responses), (1, 1));
        assert_split_invariant(flows[0].conn, &flows[0].items);
    }

    #[test]
    fn every_tcp_flow_of_a_busy_capture() {
        // Not only the marked flows: OCSP and Windows Update over HTTP (HEAD, keep-alive, 206
        // bodies), peer-wire connections, IPv6. Only the two announces predict.
        let flows = tcp_flows("goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap");
        assert!(flows.len() > 20);
        let (s, out) = replay(&flows);
        assert_eq!(tcp_peers(&out, "194.210.230.86").len(), 4);
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert!(s.not_http_flows > 0);
        assert!(s.non_announce_responses > 1);
        assert_eq!(s.announce_requests, 2);
        for rel in [
            "tcoppi-BittorrentReconstituter/codemonkey2.pcap",
            "ntop-nDPI/bittorrent.pcap",
            "ntop-nDPI/tls_torrent.pcapng",
        ] {
            let (s, out) = replay(&tcp_flows(rel));
            assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
            assert_eq!(out.len() as u64, s.predicted, "{rel}");
        }
    }

    // ---- Connection handling ----

    #[test]
    fn keep_alive_two_responses_in_one_chunk() {
        let a = ok(S1);
        let b = ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e");
        let mut two_req = ANNOUNCE.to_vec();
        two_req.extend_from_slice(ANNOUNCE);
        let mut two_resp = a.clone();
        two_resp.extend_from_slice(&b);
        let items = [up(&two_req), down(&two_resp)];
        let (out, s) = run(&items);
        assert_eq!(
            tcp_peers(&out, "10.0.0.201"),
            ["1.2.3.4:12304", "9.8.7.6:8208", "5.6.7.8:6881"]
        );
        assert_eq!((s.requests, s.responses, s.counts.parsed), (2, 2, 2));
        assert_eq!(s.unmatched_responses, 0);
        assert_split_invariant(conn(), &items);
        // One request, response, then the next, on the same connection.
        let (out2, _) = run(&[up(ANNOUNCE), down(&a), up(ANNOUNCE), down(&b)]);
        assert_eq!(
            out2.iter().map(|p| p.peer).collect::<Vec<_>>(),
            out.iter().map(|p| p.peer).collect::<Vec<_>>()
        );
    }

    #[test]
    fn pipelined_scrape_between_announces() {
        let scrape_reply = ok(b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1e10:incompletei2eeee");
        let mut reqs = ANNOUNCE.to_vec();
        reqs.extend_from_slice(SCRAPE);
        reqs.extend_from_slice(ANNOUNCE);
        let mut resps = ok(S1);
        resps.extend_from_slice(&scrape_reply);
        resps.extend_from_slice(&ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e"));
        let items = [up(&reqs), down(&resps)];
        let (out, s) = run(&items);
        assert_eq!(
            tcp_peers(&out, "10.0.0.201"),
            ["1.2.3.4:12304", "9.8.7.6:8208", "5.6.7.8:6881"]
        );
        assert_eq!((s.announce_requests, s.non_announce_requests), (2, 1));
        assert_eq!(
            (s.counts.seen, s.counts.parsed, s.non_announce_responses),
            (2, 2, 1)
        );
        assert_split_invariant(conn(), &items);
    }

    #[test]
    fn non_announce_pair_is_framed_not_read() {
        // The scrape reply would be rejected as a tracker reply; it is never read as one.
        let scrape_reply = ok(b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1eeee");
        let (out, s) = run(&[up(SCRAPE), down(&scrape_reply)]);
        assert!(out.is_empty());
        assert_eq!(s.counts.seen, 0);
        assert_eq!((s.requests, s.non_announce_requests), (1, 1));
        assert_eq!((s.responses, s.non_announce_responses), (1, 1));
        // A body with peers is not read either when it answers something else.
        let (out, _) = run(&[up(b"GET /favicon.ico HTTP/1.1\r\n\r\n"), down(&ok(S1))]);
        assert!(out.is_empty());
    }

    #[test]
    fn gap_mid_response_drops_it_and_resyncs() {
        let first = ok(S1);
        let second = ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e");
        let mut two_req = ANNOUNCE.to_vec();
        two_req.extend_from_slice(ANNOUNCE);
        // The first response loses bytes mid-body; the chunk after the hole holds its tail,
        // which is skipped; the next chunk starts the second response.
        let (out, s) = run(&[
            up(&two_req),
            down(&first[..first.len() - 10]),
            down_gap(&first[first.len() - 4..]),
            down(&second),
        ]);
        assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
        assert_eq!(rejected(&s), BTreeMap::from([("gap", 1)]));
        assert_eq!((s.counts.seen, s.counts.parsed, s.gaps), (2, 1, 1));
        assert_eq!(s.desync_bytes, 4);
        // Outstanding requests were forgotten: the second reply is read as unmatched.
        assert_eq!(s.unmatched_responses, 1);
        // A gap whose chunk starts a response resynchronises at once.
        let (out, s) = run(&[up(&two_req), down(&first[..20]), down_gap(&second)]);
        assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
        assert_eq!((s.counts.parsed, s.counts.rejected_total()), (1, 1));
        // Without any announce on the connection, an unmatched reply is not read.
        let (out, s) = run(&[up(SCRAPE), down_gap(&second)]);
        assert!(out.is_empty());
        assert_eq!(s.counts.seen, 0);
    }

    #[test]
    fn gap_in_requests_resyncs_at_a_request_line() {
        let mut gap = up(&ANNOUNCE[30..]);
        if let Item::Chunk { gap: g, .. } = &mut gap {
            *g = true;
        }
        let mut resync = up(ANNOUNCE);
        if let Item::Chunk { gap: g, .. } = &mut resync {
            *g = true;
        }
        let (out, s) = run(&[
            up(SCRAPE),
            gap,
            resync,
            down(&ok(b"d5:filese")),
            down(&ok(S1)),
        ]);
        assert_eq!(tcp_peers(&out, "10.0.0.201").len(), 2);
        assert_eq!(
            (s.gaps, s.requests, s.desync_bytes),
            (2, 2, (ANNOUNCE.len() - 30) as u64)
        );
    }

    #[test]
    fn oversized_body_is_framed_and_counted() {
        let config = HttpTrackerConfig {
            max_body: 20,
            ..Default::default()
        };
        let mut reqs = ANNOUNCE.to_vec();
        reqs.extend_from_slice(ANNOUNCE);
        let mut resps = ok(S4);
        resps.extend_from_slice(&ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e"));
        let (out, s) = run_with(config, &[up(&reqs), down(&resps)]);
        // The next response on the connection is still found.
        assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
        assert_eq!(rejected(&s), BTreeMap::from([("body_too_large", 1)]));
        assert_eq!(s.over_cap_bytes, S4.len() as u64);
        // Inflated past the cap (a 2 MiB body of zeros, 2 KiB compressed).
        let bomb = gzip(&vec![0u8; 2 << 20]);
        assert!(bomb.len() < MAX_BODY);
        let (out, s) = run(&[
            up(ANNOUNCE),
            down(&ok_with("Content-Encoding: gzip\r\n", &bomb)),
        ]);
        assert!(out.is_empty());
        assert_eq!(rejected(&s), BTreeMap::from([("inflated_too_large", 1)]));
        // Head past its cap.
        let long = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let (_, s) = run(&[up(ANNOUNCE), down(long.as_bytes())]);
        assert_eq!(rejected(&s), BTreeMap::from([("head_too_large", 1)]));
    }

    #[test]
    fn entries_past_the_cap_are_counted() {
        let mut body = b"d5:peers15000:".to_vec();
        for i in 0..2500u32 {
            body.extend_from_slice(&(0x0b00_0000 + i).to_be_bytes());
            body.extend_from_slice(&[0x1a, 0xe1]);
        }
        body.push(b'e');
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(&body))]);
        assert_eq!(out.len(), 2 * MAX_ENTRIES);
        assert_eq!((s.entries.decoded, s.entries.capped), (2000, 500));
        assert_eq!(out[0].peer.to_string(), "11.0.0.0:6881");
    }

    #[test]
    fn malformed_bodies_are_rejected_with_a_reason() {
        for (body, why) in [
            (&b"d5:peers"[..], Reject::Truncated),
            (b"d5:peers6:abce", Reject::LengthBeyondEnd),
            (b"i3e", Reject::NotDict),
            (b"d8:intervali1800ee", Reject::NotTrackerReply),
            (b"d5:peersi3ee", Reject::WrongType),
            (b"d6:peers6i3ee", Reject::WrongType),
            (b"d14:failure reasoni1ee", Reject::WrongType),
            (b"d5:peers0:5:peers0:e", Reject::DuplicateKey),
            (b"d5:peers0:eXYZ", Reject::TrailingData),
            (b"d5:peersllllllllllleeeeeeeeeee", Reject::TooDeep),
            (b"<html>", Reject::Syntax),
            (b"", Reject::Truncated),
        ] {
            assert_eq!(parse_announce_body(body).map(|_| ()), Err(why), "{body:?}");
            let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
            assert!(out.is_empty());
            assert_eq!(rejected(&s), BTreeMap::from([(why.as_str(), 1)]));
        }
        // Unsorted keys and trailing whitespace are fine.
        let (p, _) =
            body_peers(b"d8:intervali5e5:peers6:\x05\x06\x07\x08\x1a\xe18:completei1ee\r\n");
        assert_eq!(p, ["5.6.7.8:6881"]);
        // A failure reason: parsed, no peers even if some are listed.
        let (out, s) = run(&[
            up(ANNOUNCE),
            down(&ok(
                b"d14:failure reason9:not found5:peers6:\x05\x06\x07\x08\x1a\xe1e",
            )),
        ]);
        assert!(out.is_empty());
        assert_eq!((s.counts.parsed, s.failures), (1, 1));
    }

    #[test]
    fn compact_peers_with_trailing_bytes() {
        let body = b"d5:peers13:\x01\x02\x03\x04\x30\x10\x09\x08\x07\x06\x20\x10\xffe";
        let (p, n) = body_peers(body);
        assert_eq!(p, ["1.2.3.4:12304", "9.8.7.6:8208"]);
        assert_eq!((n.entries.decoded, n.entries.malformed), (2, 1));
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
        assert_eq!(out.len(), 4);
        assert_eq!((s.entries.decoded, s.entries.malformed), (2, 1));
    }

    #[test]
    fn dict_list_entries_of_every_kind() {
        let body = b"d5:peersl\
            d2:ip7:1.2.3.44:porti6881ee\
            d2:ip11:2001:db8::14:porti6882ee\
            d2:ip13:[2001:db8::2]4:porti6883ee\
            d2:ip15:tracker.example4:porti6884ee\
            d2:ip7:1.2.3.44:porti70000ee\
            d2:ip7:1.2.3.44:porti-1ee\
            d4:porti1ee\
            d2:ipi1e4:porti1ee\
            d2:ip4:a b!4:porti1ee\
            d2:ip7:1.2.3.44:porti0ee\
            i5e\
            ee";
        let (p, n) = body_peers(body);
        assert_eq!(
            p,
            [
                "1.2.3.4:6881",
                "[2001:db8::1]:6882",
                "[2001:db8::2]:6883",
                "tracker.example:6884",
                "1.2.3.4:0"
            ]
        );
        assert_eq!(
            (n.entries.decoded, n.dns_names, n.entries.malformed),
            (4, 1, 6)
        );
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
        assert_eq!(
            tcp_peers(&out, "10.0.0.201"),
            ["1.2.3.4:6881", "[2001:db8::1]:6882", "[2001:db8::2]:6883"]
        );
        assert_eq!(
            (s.dns_names, s.entries.unusable, s.entries.malformed),
            (1, 1, 6)
        );
    }

    #[test]
    fn read_until_close_and_closed_early() {
        let mut resp = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        resp.extend_from_slice(S1);
        let items = [up(ANNOUNCE), down(&resp), Item::Close(at(3))];
        let (out, s) = run(&items[..2]);
        assert!(
            out.is_empty() && s.counts.seen == 0,
            "complete only at the close"
        );
        let (out, s) = run(&items);
        assert_eq!(tcp_peers(&out, "10.0.0.201").len(), 2);
        assert_eq!(out[0].ts, at(3));
        assert_eq!((s.counts.parsed, s.sessions.len), (1, 0));
        assert_split_invariant(conn(), &items);
        // A length not reached, a head not finished, a request unanswered.
        let full = ok(S1);
        for cut in [full.len() - 1, 10] {
            let (out, s) = run(&[up(ANNOUNCE), down(&full[..cut]), Item::Close(at(3))]);
            assert!(out.is_empty());
            assert_eq!(rejected(&s), BTreeMap::from([("closed_early", 1)]));
        }
        let (_, s) = run(&[up(ANNOUNCE), Item::Close(at(3))]);
        assert_eq!((s.unanswered_requests, s.counts.seen), (1, 0));
    }

    #[test]
    fn content_codings() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(S1).unwrap();
        let zlib = z.finish().unwrap();
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(S1).unwrap();
        let raw = d.finish().unwrap();
        let gz = gzip(S1);
        for (header, body) in [
            ("Content-Encoding: deflate\r\n", &zlib),
            ("Content-Encoding: deflate\r\n", &raw),
            ("Content-Encoding: x-gzip\r\n", &gz),
            ("Content-Encoding: identity, GZIP\r\n", &gz),
        ] {
            let (out, s) = run(&[up(ANNOUNCE), down(&ok_with(header, body))]);
            assert_eq!(tcp_peers(&out, "10.0.0.201").len(), 2, "{header}");
            assert_eq!(s.counts.parsed, 1);
        }
        // Two codings, undone last first.
        let twice = gzip(&zlib);
        let (out, _) = run(&[
            up(ANNOUNCE),
            down(&ok_with("Content-Encoding: deflate, gzip\r\n", &twice)),
        ]);
        assert_eq!(out.len(), 4);
        // gzip inside chunked, with a trailer.
        let mut chunked =
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        let (a, b) = gz.split_at(7);
        for part in [a, b] {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
        chunked.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
        let items = [up(ANNOUNCE), down(&chunked), up(ANNOUNCE), down(&ok(S1))];
        let (out, s) = run(&items);
        assert_eq!(out.len(), 8);
        assert_eq!(s.counts.parsed, 2);
        assert_split_invariant(conn(), &items);
        for (header, why) in [
            ("Content-Encoding: br\r\n", "unsupported_encoding"),
            ("Content-Encoding: gzip\r\n", "bad_encoding"),
        ] {
            let (_, s) = run(&[up(ANNOUNCE), down(&ok_with(header, S1))]);
            assert_eq!(rejected(&s), BTreeMap::from([(why, 1)]));
        }
        // Truncated gzip (no trailer).
        let (_, s) = run(&[
            up(ANNOUNCE),
            down(&ok_with("Content-Encoding: gzip\r\n", &gz[..gz.len() - 8])),
        ]);
        assert_eq!(rejected(&s), BTreeMap::from([("bad_encoding", 1)]));
    }

    #[test]
    fn interim_head_and_bodiless_responses() {
        // 100 Continue does not answer the request; HEAD's response has no body whatever its
        // length says; 204 has none either.
        let mut resps = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
        resps.extend_from_slice(&ok(S1));
        let (out, s) = run(&[up(ANNOUNCE), down(&resps)]);
        assert_eq!(out.len(), 4);
        assert_eq!(s.responses, 1);
        let mut reqs = b"HEAD /announce HTTP/1.1\r\n\r\n".to_vec();
        reqs.extend_from_slice(ANNOUNCE);
        let mut resps = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n".to_vec();
        resps.extend_from_slice(&ok(S1));
        let (out, s) = run(&[up(&reqs), down(&resps)]);
        assert_eq!(out.len(), 4);
        assert_eq!((s.responses, s.non_announce_responses), (2, 1));
        let mut reqs = ANNOUNCE.to_vec();
        reqs.extend_from_slice(ANNOUNCE);
        let mut resps = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
        resps.extend_from_slice(&ok(S1));
        let (out, s) = run(&[up(&reqs), down(&resps)]);
        assert_eq!(out.len(), 4);
        assert_eq!(rejected(&s), BTreeMap::from([("truncated", 1)]));
        // A request with a body (POST) is skipped by its length.
        let mut reqs = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ".to_vec();
        reqs.extend_from_slice(ANNOUNCE);
        let (out, s) = run(&[up(&reqs), down(&ok(b"d1:xi1ee")), down(&ok(S1))]);
        assert_eq!(out.len(), 4);
        assert_eq!((s.requests, s.announce_requests, s.bad_requests), (2, 1, 0));
    }

    #[test]
    fn not_http_flows_and_orphans_are_ignored() {
        let handshake = b"\x13BitTorrent protocol\0\0\0\0\0\x10\0\x05";
        let (out, s) = run(&[up(handshake), down(&ok(S1)), up(ANNOUNCE), down(&ok(S1))]);
        assert!(out.is_empty());
        assert_eq!((s.flows, s.not_http_flows, s.requests), (1, 1, 0));
        let (out, s) = run(&[down(&ok(S1))]);
        assert!(out.is_empty());
        assert_eq!((s.orphan_chunks, s.flows, s.sessions.len), (1, 0, 0));
        // A tracker answering garbage: rejected, and nothing read until a new `HTTP/`.
        let (_, s) = run(&[up(ANNOUNCE), down(b"SSH-2.0-OpenSSH\r\n\r\n")]);
        assert_eq!(rejected(&s), BTreeMap::from([("not_http", 1)]));
        // An unreadable request is still answered.
        let (out, s) = run(&[up(b"GET /a b c HTTP/1.1\r\n\r\n"), down(&ok(S1))]);
        assert!(out.is_empty());
        assert_eq!((s.bad_requests, s.non_announce_responses), (1, 1));
    }

    #[test]
    fn sessions_are_bounded_and_expire() {
        let mut t = HttpTracker::new(HttpTrackerConfig {
            max_sessions: 2,
            ..Default::default()
        });
        let mut out = Vec::new();
        for port in 1..=3u16 {
            let c = ConnKey {
                client: SocketAddr::new("10.0.0.201".parse().unwrap(), port),
                server: SERVER.parse().unwrap(),
            };
            t.on_chunk(
                &StreamChunk {
                    ts: at(1),
                    conn: c,
                    dir: Dir::ToServer,
                    gap: false,
                    data: ANNOUNCE,
                },
                &mut out,
            );
        }
        let s = t.stats();
        assert_eq!((s.sessions.len, s.sessions.evicted, s.flows), (2, 1, 3));
        // Activity keeps a session alive; idleness expires it.
        let c = ConnKey {
            client: SocketAddr::new("10.0.0.201".parse().unwrap(), 3),
            server: SERVER.parse().unwrap(),
        };
        t.on_chunk(
            &StreamChunk {
                ts: at(100),
                conn: c,
                dir: Dir::ToServer,
                gap: false,
                data: b"",
            },
            &mut out,
        );
        t.on_chunk(
            &StreamChunk {
                ts: at(100),
                conn: c,
                dir: Dir::ToClient,
                gap: false,
                data: b"HTTP/1.1 100 Continue\r\n\r\n",
            },
            &mut out,
        );
        t.expire(at(200));
        let s = t.stats();
        assert_eq!((s.sessions.len, s.sessions.expired), (1, 1));
        let resp = ok(S1);
        t.on_chunk(
            &StreamChunk {
                ts: at(200),
                conn: c,
                dir: Dir::ToClient,
                gap: false,
                data: &resp,
            },
            &mut out,
        );
        assert_eq!(out.len(), 4);
        t.expire(at(1000));
        assert_eq!(t.stats().sessions.len, 0);
    }

    #[test]
    fn pipelining_depth_is_capped() {
        let reqs: Vec<u8> = ANNOUNCE.repeat(MAX_PENDING + 2);
        let (_, s) = run(&[up(&reqs)]);
        assert_eq!(
            (s.requests, s.pending_overflow),
            (MAX_PENDING as u64 + 2, 2)
        );
    }

    #[test]
    fn parsers_never_panic_on_cuts_and_flips() {
        let gz = ok_with("Content-Encoding: gzip\r\n", &gzip(S3));
        let inputs: [&[u8]; 7] = [ANNOUNCE, D2, S1, S3, S4, S5, &gz];
        for v in inputs {
            for cut in 0..=v.len() {
                for w in [&v[..cut], &v[cut..]] {
                    let _ = looks_like_announce(w);
                    let _ = parse_request(w);
                    let _ = parse_response_head(w);
                    let _ = dechunk(w, 64);
                    let _ = decode_content(
                        w,
                        &Codings {
                            len: 1,
                            ..Default::default()
                        },
                        64,
                    );
                    if let Ok(r) = parse_announce_body(w) {
                        let _ = r.for_each_peer(3, |_| {});
                    }
                }
                let mut flipped = v.to_vec();
                flipped[cut.min(v.len() - 1)] ^= 0x5a;
                let (_, s) = run(&[up(ANNOUNCE), down(&flipped), Item::Close(at(3))]);
                assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
            }
        }
    }
}
