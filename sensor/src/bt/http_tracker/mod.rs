//! HTTP tracker announces (BEP 3, 7, 23, 24): the peers a host is told about by an
//! HTTP tracker, read from the reassembled TCP connection it opened to the tracker.
//!
//! Predictions: the learner is the HTTP client (the connection's initiator, BEP 3 announce).
//! libtorrent dials the peers of a reply over uTP first and falls back to TCP.
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
//! `deflate` with or without the zlib wrapper, via `flate2`), as libtorrent does: it sends
//! `Accept-Encoding: gzip` and inflates after de-chunking (`src/http_connection.cpp`).
//! The body must then be a bencoded dict with `peers`, `peers6` or `failure reason`.
//!
//! # Bounds
//!
//! Sessions live in a `Bounded` table (idle TTL, capped, oldest evicted). Per session: the
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

mod announce;
mod framing;
mod session;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::time::Duration;

use super::channel::{self, Learnt};
use super::stream::{ConnKey, Dir, StreamChunk, StreamClass, StreamEvent};
use super::{unfit, Bounded, ChannelCounts, EntryCounts, Fairness, TableStats};
use crate::predict::{Channel, PeerTransport, PredictedPeer};
use crate::time::Timestamp;

pub use announce::{
    looks_like_announce, parse_announce_body, AnnounceQuery, AnnounceReply, Peer, PeerCounts,
    PeersField,
};
use framing::Framer;
pub use framing::{
    dechunk, decode_content, parse_request, parse_response_head, Coding, Codings, Dechunker,
    Framing, RequestHead, ResponseHead,
};
use session::{Body, Rx, Session};

/// Nesting the bencode decoder accepts: a reply needs 3 (dict, `peers` list, peer dict).
pub const MAX_DEPTH: usize = 8;
/// Header lines per head (trackers send fewer than 15).
pub const MAX_HEADERS: usize = 64;
/// Bytes of one request or response head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Raw (still encoded) body bytes kept per announce response.
pub const MAX_BODY: usize = 256 * 1024;
/// Inflated body, libtorrent's `tracker_maximum_response_length` (`src/settings_pack.cpp`).
pub const MAX_INFLATED: usize = 1024 * 1024;
/// Peers read from one response, over `peers` and `peers6` (libtorrent asks for 200).
pub const MAX_ENTRIES: usize = 2000;
/// Requests awaiting their response on one connection (pipelining depth).
pub const MAX_PENDING: usize = 16;
/// How far [`looks_like_announce`] looks for the end of the request line.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Content and transfer codings undone per body.
pub const MAX_CODINGS: usize = 4;

/// Why a response to an announce was not used (or a pure parser failed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
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
    /// The reason's name in counters and metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

super::from_bencode_fault!(Reject);

#[derive(Clone, Debug)]
pub struct HttpTrackerConfig {
    /// Connections followed at once (admitted by fair shares when full: `bt::bounded`).
    pub max_sessions: usize,
    /// A connection idle this long is forgotten (trackers answer within seconds).
    pub session_ttl: Duration,
    /// How long a session the tracker never answered waits before a full table may drop it
    /// for a new one.
    pub answer_deadline: Duration,
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
            session_ttl: Duration::from_mins(2),
            answer_deadline: Duration::from_secs(15),
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
    /// New connections not tracked because the session table refused them (their host held
    /// its share, or the table was full: `sessions` in [`HttpTrackerStats::fair`]).
    pub sessions_refused: u64,
    /// What the session table's fair shares refused and evicted.
    pub fair: super::FairStats,
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
            sessions: Bounded::fair(
                config.max_sessions,
                config.session_ttl,
                Fairness {
                    deadline: config.answer_deadline,
                    owner: |k: &ConnKey, _| k.client.ip(),
                    answered: |s: &Session| matches!(s, Session::Http(x) if x.answered),
                },
            ),
            config,
            stats: HttpTrackerStats::default(),
        }
    }

    pub fn stats(&self) -> HttpTrackerStats {
        let mut s = self.stats.clone();
        s.sessions = self.sessions.stats();
        s.fair = self.sessions.fair_stats();
        s.sessions_refused = s.fair.host_share + s.fair.table_full;
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
            // A full table admits by fair shares (`bt::bounded`), never by evicting the oldest:
            // otherwise anyone could flush a real client's pending reply with a burst of
            // one-segment `GET /announce` requests (spoofed from as many sources as needed).
            None => {
                let s = Session::new(chunk.data);
                let not_http = matches!(s, Session::NotHttp);
                // Admitted (or refused, and counted) before anything is read from it.
                if self.sessions.try_insert(chunk.conn, s, chunk.ts).is_err() {
                    return;
                }
                self.stats.flows += 1;
                self.stats.not_http_flows += u64::from(not_http);
                match self.sessions.take(&chunk.conn, chunk.ts) {
                    Some(s) => s,
                    None => return,
                }
            }
        };
        if let Session::Http(x) = &mut s {
            match chunk.dir {
                Dir::ToServer => self.client_bytes(x, chunk),
                Dir::ToClient => self.server_bytes(x, chunk, out),
            }
        }
        // Re-inserting restarts the TTL: it measures idleness, not age. The session was just
        // taken out, so it always fits back.
        self.sessions.insert(chunk.conn, s, chunk.ts);
    }

    /// End of the connection: completes a body read until close, then forgets the session.
    pub fn on_close(&mut self, conn: ConnKey, ts: Timestamp, out: &mut Vec<PredictedPeer>) {
        let Some(Session::Http(mut s)) = self.sessions.take(&conn, ts) else {
            return;
        };
        match std::mem::replace(&mut s.rx, Rx::Desync) {
            Rx::Body(b) if matches!(b.framer, Framer::UntilClose) => {
                self.finish(&b, conn.client.ip(), ts, out);
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

    /// A complete body: decoded and predicted from if it answers an announce.
    fn finish(&mut self, b: &Body, learner: IpAddr, ts: Timestamp, out: &mut Vec<PredictedPeer>) {
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

impl channel::Channel for HttpTracker {
    fn name(&self) -> &'static str {
        "http_tracker"
    }

    fn stream_class(&self) -> Option<StreamClass> {
        Some(StreamClass::HttpTracker)
    }

    fn on_stream(&mut self, event: &StreamEvent<'_>, out: &mut Learnt<'_>) {
        match *event {
            StreamEvent::Chunk(c) => self.on_chunk(&c, out.predictions),
            // The server's FIN ends a read-until-close body; the connection's end, anything.
            StreamEvent::Ended {
                conn,
                dir: Dir::ToClient,
                ts,
            }
            | StreamEvent::Closed { conn, ts } => self.on_close(conn, ts, out.predictions),
            StreamEvent::Ended { .. } => {}
        }
    }

    fn expire(&mut self, now: Timestamp) {
        HttpTracker::expire(self, now);
    }

    fn drops(&self, f: &mut dyn FnMut(&'static str, &'static str, u64)) {
        for (list, e) in [("peers", &self.stats.entries)] {
            for (reason, n) in e.drops() {
                f(list, reason, n);
            }
        }
        f("peers", "dns_name", self.stats.dns_names);
        f(
            "requests",
            "over_pipelining_cap",
            self.stats.pending_overflow,
        );
        f("body_bytes", "over_cap", self.stats.over_cap_bytes);
        for (reason, n) in self.sessions.fair_stats().drops() {
            f("sessions", reason, n);
        }
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("http_tracker", &self.stats.counts);
    }

    fn tables(&self, f: &mut dyn FnMut(&'static str, TableStats)) {
        f("http_tracker_sessions", self.sessions.stats());
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or_default()
    }

    fn summary(&self) -> Option<String> {
        let h = &self.stats;
        Some(format!(
            "http tracker: {} announces, {} responses, {} failure replies, {} DNS-name peers skipped",
            h.announce_requests, h.responses, h.failures, h.dns_names
        ))
    }
}
