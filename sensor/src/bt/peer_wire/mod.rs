//! The BitTorrent peer wire over TCP and uTP: the 68-byte handshake and message framing
//! (BEP 3), the BEP 10 extended handshake, ut_pex (BEP 11), the PORT message (BEP 5) and
//! ut_holepunch `connect` (BEP 55). Chunks come from [`super::stream::TcpStreams`] and
//! [`super::utp_stream::UtpStreams`] alike; sessions are keyed by [`ConnKey`], whose
//! transport keeps a TCP and a uTP connection between the same endpoints apart.
//!
//! Predictions: the learner is always the *receiver* of the message (it is the one told):
//! * ut_pex `added`/`added6` → TCP and uTP ([`PeerTransport::Udp`]) on [`Channel::Pex`], as
//!   `values` in the DHT; `dropped`/`dropped6` → a [`RetractedPeer`] on [`Channel::Pex`].
//! * extended handshake `p` → TCP on [`Channel::PeerWire`] to (sender IP, `p`), only when the
//!   sender initiated the connection (a responder's `p` is the port already connected to); and
//!   (`ipv4`/`ipv6`, `p`) whatever the direction, except link-local, Teredo and the sender's
//!   own address.
//! * PORT → UDP on [`Channel::PeerWire`] to (sender IP, DHT port).
//! * ut_holepunch `connect` → UDP on [`Channel::PeerWire`] (BEP 55 hole punching is for uTP
//!   only: there is no TCP fallback).
//!
//! Endpoints are dropped when unusable (port 0), when they are the learner (its address on the
//! connection, the `yourip` the sender reported to it, the `ipv4`/`ipv6` it announced itself:
//! real PEX messages list their receiver itself) or, for PEX, the sender itself.
//!
//! **Extension ids** (BEP 10): a message travelling A → B carries the id that *B* announced
//! in its `m` dict, so each side's `m` is kept per connection and later handshakes add to it.
//! When B's extended handshake was not seen (capture or sensor started mid-session), an
//! extended message with id 1 (the local ut_pex id of libtorrent, Transmission, BiglyBT and
//! µTorrent) is read as PEX if it parses as one; such messages are counted in `pex_fallback`.
//!
//! **Framing under loss.** Chunks come from a budgeted pre-filter: big `piece` segments are
//! dropped, so `gap` chunks are normal. Nothing large is ever buffered: every message is skipped
//! by counting its bytes except PORT (read in the fixed header) and extended messages we parse
//! (at most [`PeerWireConfig::max_message`] bytes, one per direction, under a global
//! [`PeerWireConfig::max_buffered`] budget). After a gap, or a header that breaks the framing
//! rules ([`check_header`]), the direction waits for a chunk whose start passes [`plausible_start`] and resumes
//! there. A direction's first chunk is read as a handshake if it starts like one, else as
//! messages if it starts plausibly (a connection first seen mid-session: the reassembler cannot tell whether it saw a stream's start); otherwise the direction is counted
//! in `opaque_streams` (MSE/PE ciphertext, another protocol, or a mid-message start) and
//! waits like a direction after a gap. Ciphertext does not pass [`plausible_start`] in practice
//! (it needs e.g. `00 00 00 05 04` at a chunk start, then a chain of valid headers).
//!
//! Not read: Azureus messaging (both handshakes with `reserved[0] & 0x80`, BEP 4, switch the
//! connection to Vuze's AMP framing; counted, then opaque), and plaintext handshakes that
//! follow an MSE/PE negotiation (unverified on captures).
//!
//! Bencode: one pass with no allocation, [`super::bdecode`] (depth cap, unsorted keys accepted:
//! µTorrent 3.4's extended handshakes are not key-sorted, though BEP 3 asks for sorted keys).

#[cfg(test)]
mod capture;
mod extended;
mod framing;
mod handshake;
mod pex;
mod session;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use super::channel::{self, Learnt};
use super::stream::{ConnKey, Dir, StreamChunk, StreamClass, StreamEvent};
use super::wire::Truncated;
use super::{unfit, Bounded, ChannelCounts, EntryCounts, Fairness, TableStats};
use crate::predict::{Channel, PeerTransport, PredictedPeer, RetractedPeer};
use crate::time::{self, Timestamp};

use extended::Announced;
pub use extended::{parse_ext_handshake, parse_holepunch, ExtHandshake, Holepunch};
pub use framing::{
    check_header, frame, known_id, plausible_start, Check, Frame, MAX_FRAME, RESYNC_MAX_BITFIELD,
    RESYNC_MAX_BLOCK,
};
pub use handshake::{parse_handshake, starts_like_handshake, Handshake, HANDSHAKE_LEN, PROTOCOL};
pub use pex::{parse_pex, Pex};
use session::{Limits, Step, Stream};

/// Nesting the decoder accepts: the extended handshake needs 3 (dict, `m` dict, value).
pub const MAX_DEPTH: usize = 8;
/// Endpoints read per PEX list (BEP 11 allows 50 added and 50 dropped; clients cap at 50).
pub const MAX_ENTRIES: usize = 200;
/// The ut_pex id assumed when the receiver's extended handshake was not seen.
pub const FALLBACK_PEX_ID: u8 = 1;

pub const MSG_PIECE: u8 = 7;
pub const MSG_PORT: u8 = 9;
pub const MSG_EXTENDED: u8 = 20;
/// BEP 55 message types.
pub const HOLEPUNCH_CONNECT: u8 = 1;

/// Why bytes were not read as the structure asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reject {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// Not `0x13 "BitTorrent protocol"`.
    NotHandshake,
    /// A message length its id never has, or over the maximum.
    BadLength,
    /// An id outside BEP 3/4/6/10/52 (refused only when resynchronising).
    UnknownId,
    /// A bencoded string's declared length runs past the end.
    LengthBeyondEnd,
    TrailingData,
    TooDeep,
    DuplicateKey,
    /// Not bencode.
    Syntax,
    NotDict,
    /// A PEX key whose value is not a string.
    WrongType,
    /// None of `added`, `added6`, `dropped`, `dropped6` (BEP 11 requires one).
    NoPexKeys,
    /// ut_holepunch address type other than 0 (IPv4) or 1 (IPv6).
    BadAddressType,
}

impl Reject {
    /// The reason's name in counters and metrics.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl From<Truncated> for Reject {
    fn from(_: Truncated) -> Self {
        Reject::Truncated
    }
}

super::from_bencode_fault!(Reject);

#[derive(Clone, Debug)]
pub struct PeerWireConfig {
    /// Connections tracked at once (admitted by fair shares when full: `bt::bounded`).
    pub max_connections: usize,
    /// A connection with no traffic for this long is forgotten.
    pub connection_ttl: Duration,
    /// How long a connection heard from one side only waits before a full table may drop it
    /// for a new one.
    pub answer_deadline: Duration,
    /// Longest extended message buffered across chunks; longer ones are skipped.
    pub max_message: usize,
    /// Bytes buffered over all connections at most.
    pub max_buffered: usize,
    /// Endpoints read per PEX list.
    pub max_entries: usize,
}

impl Default for PeerWireConfig {
    fn default() -> Self {
        Self {
            max_connections: 8192,
            connection_ttl: Duration::from_mins(30),
            answer_deadline: Duration::from_secs(15),
            max_message: 64 * 1024,
            max_buffered: 16 * 1024 * 1024,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Counters of the peer wire channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeerWireStats {
    /// Chunks offered and the bytes they held.
    pub chunks: u64,
    pub bytes: u64,
    /// Valid handshakes, and those advertising BEP 10, DHT (PORT) and the fast extension.
    pub handshakes: u64,
    pub handshakes_extension: u64,
    pub handshakes_dht: u64,
    pub handshakes_fast: u64,
    /// Directions that began like a handshake and then differed.
    pub bad_handshakes: u64,
    /// Directions whose first chunk was neither a handshake nor a plausible message (MSE/PE
    /// ciphertext, another protocol, or a start mid-message), and bad handshakes.
    pub opaque_streams: u64,
    /// Bytes of directions never read again (bad handshakes, Azureus messaging).
    pub opaque_bytes: u64,
    /// Connections where both handshakes asked for Azureus messaging (not read).
    pub azureus_messaging: u64,
    /// Message headers read in sync (keep-alives included).
    pub messages: u64,
    /// In-sync messages with an id outside BEP 3/4/6/10/52 (skipped by length).
    pub unknown_ids: u64,
    /// In-sync headers that broke the framing rules ([`check_header`]): sync lost there.
    pub invalid_frames: u64,
    /// Chunks announcing lost bytes.
    pub gaps: u64,
    /// Times framing resumed at a chunk start after loss (or mid-session).
    pub resyncs: u64,
    /// Chunks (and their bytes) passed over while waiting for a plausible start.
    pub unsynced_chunks: u64,
    pub unsynced_bytes: u64,
    /// Message bytes skipped by counting (pieces, bitfields, unread extensions...).
    pub skipped_bytes: u64,
    /// Extended messages we would read, skipped for being over `max_message`, or for the
    /// global `max_buffered` budget.
    pub oversized: u64,
    pub over_budget: u64,
    pub port_messages: u64,
    pub ext_handshakes: ChannelCounts,
    /// ut_pex messages by the receiver's id or, for `pex_fallback` of them, by the id-1
    /// assumption.
    pub pex: ChannelCounts,
    pub pex_fallback: u64,
    pub holepunch: ChannelCounts,
    pub holepunch_connects: u64,
    /// Extended messages of other extensions (or id-1 messages that were not PEX).
    pub unknown_extension: u64,
    /// PEX `added`/`added6` entries.
    pub entries: EntryCounts,
    /// PEX entries naming the sender itself.
    pub sender_listed: u64,
    /// PEX `dropped`/`dropped6` entries.
    pub dropped: EntryCounts,
    /// Predictions on [`Channel::Pex`] and [`Channel::PeerWire`], and retractions.
    pub predicted_pex: u64,
    pub predicted_peer_wire: u64,
    pub retracted: u64,
    /// Bytes reserved now for extended messages split across chunks.
    pub buffered_bytes: u64,
    pub connections: TableStats,
}

/// One connection (TCP or uTP): its two directions and what each sender announced; index 0 is the
/// client's bytes ([`Dir::ToServer`]).
#[derive(Debug, Default)]
struct Conn {
    streams: [Stream; 2],
    peers: [Announced; 2],
    /// When the table entry's TTL last restarted.
    touched: Timestamp,
}

fn index(dir: Dir) -> usize {
    match dir {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    }
}

/// Reads the peer wire of every tracked TCP and uTP connection; see the module docs.
#[derive(Debug)]
pub struct PeerWire {
    config: PeerWireConfig,
    conns: Bounded<ConnKey, Conn>,
    buffered: Arc<AtomicUsize>,
    stats: PeerWireStats,
}

impl PeerWire {
    pub fn new(config: PeerWireConfig) -> Self {
        Self {
            conns: Bounded::fair(
                config.max_connections,
                config.connection_ttl,
                Fairness {
                    deadline: config.answer_deadline,
                    owner: |k: &ConnKey, _| k.client.ip(),
                    // Both sides spoke (a handshake each way, or data).
                    answered: |c: &Conn| c.streams.iter().all(|s| !matches!(s, Stream::Fresh)),
                },
            ),
            config,
            buffered: Arc::new(AtomicUsize::new(0)),
            stats: PeerWireStats::default(),
        }
    }

    pub fn stats(&self) -> PeerWireStats {
        let mut s = self.stats.clone();
        s.connections = self.conns.stats();
        s.buffered_bytes = self.buffered.load(Relaxed) as u64;
        s
    }

    /// Forgets connections idle for longer than the TTL (also done lazily).
    pub fn expire(&mut self, now: Timestamp) {
        self.conns.expire(now);
    }

    /// The connection ended (FIN/RST): its state and buffers are released.
    pub fn on_close(&mut self, conn: ConnKey, ts: Timestamp) {
        self.conns.take(&conn, ts);
    }

    /// Reads one chunk of one direction. Predictions for the chunk's receiver are appended to
    /// `out`, PEX `dropped` entries to `retracted`.
    pub fn on_chunk(
        &mut self,
        chunk: &StreamChunk<'_>,
        out: &mut Vec<PredictedPeer>,
        retracted: &mut Vec<RetractedPeer>,
    ) {
        let Self {
            config,
            conns,
            buffered,
            stats,
        } = self;
        stats.chunks += 1;
        stats.bytes += chunk.data.len() as u64;
        if chunk.data.is_empty() && !chunk.gap {
            return;
        }
        let Some(conn) = lookup(conns, chunk.conn, chunk.ts, config.connection_ttl) else {
            return;
        };
        let i = index(chunk.dir);
        let Conn { streams, peers, .. } = conn;
        let [s0, s1] = streams;
        let (stream, other) = if i == 0 { (s0, s1) } else { (s1, s0) };
        let mut data = chunk.data;
        if chunk.gap {
            stats.gaps += 1;
            stream.lose();
        }
        if data.is_empty()
            || !stream.enter(data, stats)
            || !stream.handshake(other, peers, i, &mut data, stats)
        {
            return;
        }
        let limits = Limits {
            max_message: config.max_message,
            max_buffered: config.max_buffered,
            pool: buffered,
        };
        let (sender, receiver) = chunk.conn.endpoints(chunk.dir);
        let mut ctx = Ctx {
            ts: chunk.ts,
            sender,
            receiver,
            sender_is_client: chunk.dir == Dir::ToServer,
            max_entries: config.max_entries,
            out,
            retracted,
        };
        let recv_announced = peers[1 - i];
        while let Some(step) = stream.next(&mut data, &recv_announced, &limits, stats) {
            match step {
                Step::Port(port) => ctx.on_port(port, stats),
                Step::Extended { ext, body } => ctx.on_extended(peers, i, ext, body, stats),
            }
        }
    }
}

/// The live connection `key`, created if new; its TTL restarts when a quarter of it has
/// passed, so only idle connections expire.
fn lookup(
    conns: &mut Bounded<ConnKey, Conn>,
    key: ConnKey,
    now: Timestamp,
    ttl: Duration,
) -> Option<&mut Conn> {
    let refresh = time::Duration::from(ttl) / 4;
    let stale = if let Some(c) = conns.get_mut(&key, now) {
        now.saturating_since(c.touched) > refresh
    } else {
        let conn = Conn {
            touched: now,
            ..Default::default()
        };
        conns.insert(key, conn, now);
        false
    };
    if stale {
        if let Some(mut c) = conns.take(&key, now) {
            c.touched = now;
            conns.insert(key, c, now);
        }
    }
    conns.get_mut(&key, now)
}

/// What one message is read against: who sent it to whom, and where predictions go.
struct Ctx<'o> {
    ts: Timestamp,
    sender: SocketAddr,
    receiver: SocketAddr,
    sender_is_client: bool,
    max_entries: usize,
    out: &'o mut Vec<PredictedPeer>,
    retracted: &'o mut Vec<RetractedPeer>,
}

impl Ctx<'_> {
    fn predict(
        &mut self,
        peer: SocketAddr,
        transport: PeerTransport,
        channel: Channel,
        stats: &mut PeerWireStats,
    ) {
        match channel {
            Channel::Pex => stats.predicted_pex += 1,
            _ => stats.predicted_peer_wire += 1,
        }
        self.out.push(PredictedPeer {
            ts: self.ts,
            host: self.receiver.ip(),
            peer,
            transport,
            channel,
        });
    }

    /// BEP 5: the sender's DHT node, contacted over UDP.
    fn on_port(&mut self, port: u16, stats: &mut PeerWireStats) {
        stats.port_messages += 1;
        let node = SocketAddr::new(self.sender.ip(), port);
        if unfit(node, self.receiver.ip(), None).is_none() {
            self.predict(node, PeerTransport::Udp, Channel::PeerWire, stats);
        }
    }

    fn on_extended(
        &mut self,
        peers: &mut [Announced; 2],
        i: usize,
        ext: u8,
        body: &[u8],
        stats: &mut PeerWireStats,
    ) {
        let recv = peers[1 - i];
        if ext == 0 {
            self.on_ext_handshake(&mut peers[i], body, stats);
        } else if !recv.ext_seen {
            // Mid-session: id 1 is PEX only if it reads as PEX.
            match parse_pex(body) {
                Ok(pex) if ext == FALLBACK_PEX_ID => {
                    stats.pex.seen += 1;
                    stats.pex.parsed += 1;
                    stats.pex_fallback += 1;
                    self.on_pex(&pex, peers, i, stats);
                }
                _ => stats.unknown_extension += 1,
            }
        } else if Some(ext) == recv.ut_pex {
            stats.pex.seen += 1;
            match parse_pex(body) {
                Ok(pex) => {
                    stats.pex.parsed += 1;
                    self.on_pex(&pex, peers, i, stats);
                }
                Err(r) => stats.pex.reject(r.as_str()),
            }
        } else if Some(ext) == recv.ut_holepunch {
            stats.holepunch.seen += 1;
            match parse_holepunch(body) {
                Ok(h) => {
                    stats.holepunch.parsed += 1;
                    if h.msg_type == HOLEPUNCH_CONNECT {
                        stats.holepunch_connects += 1;
                        let own = peers[i].yourip;
                        if unfit(h.addr, self.receiver.ip(), own).is_none() {
                            self.predict(h.addr, PeerTransport::Udp, Channel::PeerWire, stats);
                        }
                    }
                }
                Err(r) => stats.holepunch.reject(r.as_str()),
            }
        } else {
            // The receiver's ids changed while the message was buffered.
            stats.unknown_extension += 1;
        }
    }
}

impl channel::Channel for PeerWire {
    fn name(&self) -> &'static str {
        "peer_wire"
    }

    fn stream_class(&self) -> Option<StreamClass> {
        Some(StreamClass::PeerWire)
    }

    fn on_stream(&mut self, event: &StreamEvent<'_>, out: &mut Learnt<'_>) {
        match *event {
            StreamEvent::Chunk(c) => self.on_chunk(&c, out.predictions, out.retracted),
            StreamEvent::Closed { conn, ts } => self.on_close(conn, ts),
            StreamEvent::Ended { .. } => {}
        }
    }

    fn expire(&mut self, now: Timestamp) {
        PeerWire::expire(self, now);
    }

    fn drops(&self, f: &mut dyn FnMut(&'static str, &'static str, u64)) {
        for (list, e) in [
            ("pex_added", &self.stats.entries),
            ("pex_dropped", &self.stats.dropped),
        ] {
            for (reason, n) in e.drops() {
                f(list, reason, n);
            }
        }
        f("extended", "oversized", self.stats.oversized);
        f("extended", "over_budget", self.stats.over_budget);
        for (reason, n) in self.conns.fair_stats().drops() {
            f("connections", reason, n);
        }
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("peer_wire_ext_handshake", &self.stats.ext_handshakes);
        f("pex", &self.stats.pex);
    }

    fn tables(&self, f: &mut dyn FnMut(&'static str, TableStats)) {
        f("peer_wire_connections", self.conns.stats());
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or_default()
    }

    fn summary(&self) -> Option<String> {
        let p = &self.stats;
        Some(format!(
            "peer wire: {} handshakes, {} messages, {} encrypted or opaque streams, {} PEX by fallback id",
            p.handshakes, p.messages, p.opaque_streams, p.pex_fallback
        ))
    }
}
