//! UDP tracker protocol (BEP 15, BEP 41 options): the peers an announcing host is told about.
//!
//! Responses carry no magic, so they are read only as answers to a request seen on the same
//! flow: the state machine keys transactions by (host, tracker, transaction id) and keeps the
//! connection ids each tracker issued to each host (BEP 15 "UDP connections": an id is
//! issued by a connect response and valid on that flow). An announce response's peers
//! are predictions for the host that sent the matching announce (the response's destination):
//! it will dial them over TCP and uTP, so each peer gives a [`PeerTransport::Tcp`] and a
//! [`PeerTransport::Udp`] prediction on [`Channel::UdpTracker`].
//!
//! Quirks (BEP 15 and deployed trackers and clients): entries are 6 bytes over IPv4 and 18 over IPv6, by the packet's address
//! family; action 4 (opentracker's old IPv6 announce response, chihaya/chihaya#206) is
//! accepted over IPv6; an
//! announce may reuse a connection id obtained before the capture started (libtorrent caches
//! them), so an unseen id is accepted while a known flow's id must match; port 0 and the host
//! itself are dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::channel::{Learnt, Sender};
use super::wire::{array_at, be16_at, be32_at, be64_at, compact_v4, compact_v6};
use super::{unfit, Bounded, ChannelCounts, EntryCounts, Fairness, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};
use crate::time;

/// `protocol_id` of a connect request.
pub const PROTOCOL_ID: [u8; 8] = [0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80];
pub const CONNECT_LEN: usize = 16;
/// Announce request without BEP 41 options.
pub const ANNOUNCE_LEN: usize = 98;
pub const ANNOUNCE_RESPONSE_HEADER: usize = 20;
const SCRAPE_HEADER: usize = 16;
const SCRAPE_ENTRY: usize = 12;
/// Peers read from one announce response.
pub const MAX_ENTRIES: usize = 512;

const CONNECT: u32 = 0;
const ANNOUNCE: u32 = 1;
const SCRAPE: u32 = 2;
const ERROR: u32 = 3;
const ANNOUNCE6: u32 = 4;

/// What a datagram looks like, before any state is consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `protocol_id` and action 0: the one strong signature.
    ConnectRequest,
    /// Announce (≥ 98 bytes, action 1 at offset 8) or scrape (16 + 20n bytes, action 2).
    Request,
    /// Action 0–4 at offset 0; only meaningful on a flow with a request pending.
    Response,
}

/// Cheap test of the BEP 15 shapes and sizes.
pub fn shape(head: &[u8]) -> Option<Shape> {
    if is_connect_request(head) {
        return Some(Shape::ConnectRequest);
    }
    match be32_at(head, 8) {
        Some(ANNOUNCE) if head.len() >= ANNOUNCE_LEN => return Some(Shape::Request),
        Some(SCRAPE) if is_scrape_request_len(head.len()) => return Some(Shape::Request),
        _ => {}
    }
    match be32_at(head, 0) {
        Some(a) if a <= ANNOUNCE6 => Some(Shape::Response),
        _ => None,
    }
}

fn is_connect_request(head: &[u8]) -> bool {
    head.len() >= CONNECT_LEN
        && array_at(head, 0) == Some(&PROTOCOL_ID)
        && be32_at(head, 8) == Some(CONNECT)
}

fn is_scrape_request_len(len: usize) -> bool {
    len > SCRAPE_HEADER && (len - SCRAPE_HEADER).is_multiple_of(20)
}

/// Why a datagram on a tracker flow was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reject {
    /// The capture holds only the head of a request.
    Incomplete,
    /// Not a request layout (wrong action or size).
    NotRequest,
    /// Announce `event` outside 0–3.
    BadEvent,
    /// BEP 41 options running past the end of the packet.
    BadOptions,
    /// The flow's tracker issued connection ids and the request carries none of them.
    ConnectionIdMismatch,
    /// A response-shaped datagram from a tracker with no request pending under its id.
    UnmatchedTransaction,
    /// The response's action does not answer the pending request.
    ActionMismatch,
    /// A response size its action cannot have (e.g. announce peers not a whole number).
    BadLength,
    /// Action 4 is an IPv6 announce response; over IPv4 it has no defined layout.
    Action4OverIpv4,
    /// Response action above 4.
    UnknownAction,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    None,
    Completed,
    Started,
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce<'a> {
    pub connection_id: u64,
    pub txid: u32,
    pub info_hash: &'a [u8; 20],
    pub peer_id: &'a [u8; 20],
    pub downloaded: u64,
    pub left: u64,
    pub uploaded: u64,
    pub event: Event,
    /// 0 = the sender's address (always 32-bit, even over IPv6).
    pub ip: Ipv4Addr,
    pub key: u32,
    pub num_want: i32,
    /// The announcer's own listen port: predicts inbound connections, not outbound ones.
    pub port: u16,
    /// BEP 41 options (validated); read them with [`Announce::url_data`].
    pub options: &'a [u8],
}

impl<'a> Announce<'a> {
    /// The URLData pieces, in order (BEP 41: their concatenation is the path and query).
    pub fn url_data(&self) -> impl Iterator<Item = &'a [u8]> {
        Options(self.options).filter_map(|o| match o {
            Ok(Opt::UrlData(d)) => Some(d),
            _ => None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt<'a> {
    Nop,
    UrlData(&'a [u8]),
    Other,
}

/// BEP 41 options: 0 ends them, 1 is a one-byte NOP, every other type has a length byte.
struct Options<'a>(&'a [u8]);

impl<'a> Iterator for Options<'a> {
    type Item = Result<Opt<'a>, Reject>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, rest) = self.0.split_first()?;
        if kind == 0 {
            self.0 = &[];
            return None;
        }
        if kind == 1 {
            self.0 = rest;
            return Some(Ok(Opt::Nop));
        }
        let Some((&len, rest)) = rest.split_first() else {
            self.0 = &[];
            return Some(Err(Reject::BadOptions));
        };
        let Some(data) = rest.get(..usize::from(len)) else {
            self.0 = &[];
            return Some(Err(Reject::BadOptions));
        };
        self.0 = &rest[usize::from(len)..];
        Some(Ok(if kind == 2 {
            Opt::UrlData(data)
        } else {
            Opt::Other
        }))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scrape<'a> {
    pub connection_id: u64,
    pub txid: u32,
    /// 20 bytes per torrent.
    pub info_hashes: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Connect { txid: u32 },
    Announce(Announce<'a>),
    Scrape(Scrape<'a>),
}

impl Request<'_> {
    pub fn txid(&self) -> u32 {
        match self {
            Request::Connect { txid } => *txid,
            Request::Announce(a) => a.txid,
            Request::Scrape(s) => s.txid,
        }
    }
}

/// Decodes a client → tracker packet.
pub fn parse_request(p: &[u8]) -> Result<Request<'_>, Reject> {
    if is_connect_request(p) {
        return Ok(Request::Connect {
            txid: be32_at(p, 12).ok_or(Reject::NotRequest)?,
        });
    }
    let connection_id = be64_at(p, 0).ok_or(Reject::NotRequest)?;
    let txid = be32_at(p, 12).ok_or(Reject::NotRequest)?;
    match be32_at(p, 8) {
        Some(ANNOUNCE) if p.len() >= ANNOUNCE_LEN => {
            let event = match be32_at(p, 80) {
                Some(0) => Event::None,
                Some(1) => Event::Completed,
                Some(2) => Event::Started,
                Some(3) => Event::Stopped,
                _ => return Err(Reject::BadEvent),
            };
            let options = &p[ANNOUNCE_LEN..];
            if Options(options).any(|o| o.is_err()) {
                return Err(Reject::BadOptions);
            }
            let field = |at| be32_at(p, at).ok_or(Reject::NotRequest);
            Ok(Request::Announce(Announce {
                connection_id,
                txid,
                info_hash: array_at(p, 16).ok_or(Reject::NotRequest)?,
                peer_id: array_at(p, 36).ok_or(Reject::NotRequest)?,
                downloaded: be64_at(p, 56).ok_or(Reject::NotRequest)?,
                left: be64_at(p, 64).ok_or(Reject::NotRequest)?,
                uploaded: be64_at(p, 72).ok_or(Reject::NotRequest)?,
                event,
                ip: Ipv4Addr::from(field(84)?),
                key: field(88)?,
                num_want: array_at(p, 92)
                    .map(|b| i32::from_be_bytes(*b))
                    .ok_or(Reject::NotRequest)?,
                port: be16_at(p, 96).ok_or(Reject::NotRequest)?,
                options,
            }))
        }
        Some(SCRAPE) if is_scrape_request_len(p.len()) => Ok(Request::Scrape(Scrape {
            connection_id,
            txid,
            info_hashes: &p[SCRAPE_HEADER..],
        })),
        _ => Err(Reject::NotRequest),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceResponse<'a> {
    pub txid: u32,
    /// Action 4 (IPv6 scheme of old opentracker).
    pub action4: bool,
    pub interval: u32,
    pub leechers: u32,
    pub seeders: u32,
    /// 6 (IPv4 packet) or 18 (IPv6 packet).
    pub stride: usize,
    /// Entries the datagram holds, by its true length.
    pub entries: usize,
    /// Whole entries within the captured head.
    pub peers: &'a [u8],
}

impl AnnounceResponse<'_> {
    pub fn peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.peers
            .chunks_exact(self.stride)
            .map(|e| match <&[u8; 6]>::try_from(e) {
                Ok(c4) => compact_v4(c4),
                Err(_) => compact_v6(e.try_into().unwrap_or(&[0; 18])),
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    Connect {
        txid: u32,
        connection_id: u64,
    },
    Announce(AnnounceResponse<'a>),
    /// (seeders, completed, leechers) × n, 12 bytes each.
    Scrape {
        txid: u32,
        entries: &'a [u8],
    },
    Error {
        txid: u32,
        message: &'a [u8],
    },
}

/// Decodes a tracker → client packet: `head` is the captured payload, `payload_len` its true
/// length, `over_ipv6` the packet's address family (which sets the peer entry size).
pub fn parse_response(
    head: &[u8],
    payload_len: usize,
    over_ipv6: bool,
) -> Result<Response<'_>, Reject> {
    let action = be32_at(head, 0).ok_or(Reject::BadLength)?;
    let txid = be32_at(head, 4).ok_or(Reject::BadLength)?;
    let len = payload_len.max(head.len());
    match action {
        CONNECT => Ok(Response::Connect {
            txid,
            connection_id: be64_at(head, 8).ok_or(Reject::BadLength)?,
        }),
        ANNOUNCE | ANNOUNCE6 => {
            if action == ANNOUNCE6 && !over_ipv6 {
                return Err(Reject::Action4OverIpv4);
            }
            let stride = if over_ipv6 { 18 } else { 6 };
            // libtorrent fails a response whose peer bytes are not whole entries.
            if len < ANNOUNCE_RESPONSE_HEADER
                || !(len - ANNOUNCE_RESPONSE_HEADER).is_multiple_of(stride)
            {
                return Err(Reject::BadLength);
            }
            let body = head.get(ANNOUNCE_RESPONSE_HEADER..).unwrap_or_default();
            let whole = body.len() / stride * stride;
            Ok(Response::Announce(AnnounceResponse {
                txid,
                action4: action == ANNOUNCE6,
                interval: be32_at(head, 8).ok_or(Reject::BadLength)?,
                leechers: be32_at(head, 12).ok_or(Reject::BadLength)?,
                seeders: be32_at(head, 16).ok_or(Reject::BadLength)?,
                stride,
                entries: (len - ANNOUNCE_RESPONSE_HEADER) / stride,
                peers: &body[..whole],
            }))
        }
        SCRAPE => {
            if !(len - 8).is_multiple_of(SCRAPE_ENTRY) {
                return Err(Reject::BadLength);
            }
            Ok(Response::Scrape {
                txid,
                entries: &head[8..],
            })
        }
        ERROR => Ok(Response::Error {
            txid,
            message: &head[8..],
        }),
        _ => Err(Reject::UnknownAction),
    }
}

#[derive(Clone, Debug)]
pub struct UdpTrackerConfig {
    /// Requests awaiting a response, at most.
    pub max_pending: usize,
    /// BEP 15 clients retry after 15 s; a response later than this is not matched.
    pub pending_ttl: Duration,
    /// (host, tracker) flows remembered, at most.
    pub max_flows: usize,
    /// A flow is forgotten this long after its last request.
    pub flow_ttl: Duration,
    /// BEP 15: trackers accept a connection id for two minutes.
    pub connection_id_ttl: Duration,
    /// How long a request, or a flow never answered, waits before a full table may drop it
    /// for a new one (fair shares: see `bt::bounded`); BEP 15 clients resend after 15 s.
    pub answer_deadline: Duration,
    /// Peers read per announce response.
    pub max_entries: usize,
}

impl Default for UdpTrackerConfig {
    fn default() -> Self {
        Self {
            max_pending: 65_536,
            pending_ttl: Duration::from_mins(1),
            max_flows: 65_536,
            flow_ttl: Duration::from_hours(1),
            connection_id_ttl: Duration::from_mins(2),
            answer_deadline: Duration::from_secs(15),
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Counters of the UDP tracker channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct UdpTrackerStats {
    pub counts: ChannelCounts,
    pub connect_requests: u64,
    pub connect_responses: u64,
    pub announce_requests: u64,
    /// Announces carrying BEP 41 options.
    pub announce_options: u64,
    pub announce_responses: u64,
    pub scrape_requests: u64,
    pub scrape_responses: u64,
    pub errors: u64,
    /// Requests whose connection id the tracker was seen to issue, and those sent with an id
    /// obtained before the capture (or the id's lifetime) started.
    pub connection_id_verified: u64,
    pub connection_id_unseen: u64,
    pub peers: EntryCounts,
    /// Predictions made (TCP + uTP per peer).
    pub predicted: u64,
    pub pending: TableStats,
    pub flows: TableStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connect,
    Announce,
    Scrape,
}

/// Connection ids a tracker issued to a host: the two newest, as (id, when).
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    ids: [Option<(u64, Timestamp)>; 2],
}

/// BEP 15 state per (host, tracker) and the predictions of announce responses.
#[derive(Debug)]
pub struct UdpTracker {
    config: UdpTrackerConfig,
    /// (host, tracker, transaction id) → request kind.
    pending: Bounded<(SocketAddr, SocketAddr, u32), Kind>,
    /// (host, tracker) → connection ids.
    flows: Bounded<(SocketAddr, SocketAddr), Flow>,
    stats: UdpTrackerStats,
}

impl UdpTracker {
    pub fn new(config: UdpTrackerConfig) -> Self {
        Self {
            // Owned by the requesting host, spoofed or not.
            pending: Bounded::fair(
                config.max_pending,
                config.pending_ttl,
                Fairness {
                    deadline: config.answer_deadline,
                    owner: |k: &(SocketAddr, SocketAddr, u32), _| k.0.ip(),
                    answered: |_| false,
                },
            ),
            // A flow is answered once the tracker gave it a connection id.
            flows: Bounded::fair(
                config.max_flows,
                config.flow_ttl,
                Fairness {
                    deadline: config.answer_deadline,
                    owner: |k: &(SocketAddr, SocketAddr), _| k.0.ip(),
                    answered: |f: &Flow| f.ids[0].is_some(),
                },
            ),
            config,
            stats: UdpTrackerStats::default(),
        }
    }

    pub fn stats(&self) -> UdpTrackerStats {
        let mut s = self.stats.clone();
        s.pending = self.pending.stats();
        s.flows = self.flows.stats();
        s
    }

    pub fn expire(&mut self, now: Timestamp) {
        self.pending.expire(now);
        self.flows.expire(now);
    }

    /// One datagram that passed [`shape`]. Response-shaped datagrams count as seen only when
    /// they come from a tracker this host sent requests to.
    pub fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        let head = udp.head;
        let from_tracker = !is_connect_request(head)
            && be32_at(head, 0).is_some_and(|a| a <= ANNOUNCE6)
            && self.flows.get_mut(&(ev.dst, ev.src), ev.ts).is_some();
        let result = if from_tracker {
            self.stats.counts.seen += 1;
            self.on_response(ev, udp, out)
        } else if matches!(shape(head), Some(Shape::ConnectRequest | Shape::Request)) {
            self.stats.counts.seen += 1;
            if udp.is_complete() {
                self.on_request(ev, head)
            } else {
                Err(Reject::Incomplete)
            }
        } else {
            return;
        };
        self.stats.counts.record(result.map_err(Reject::as_str));
    }

    fn on_request(&mut self, ev: &PacketEvent<'_>, p: &[u8]) -> Result<(), Reject> {
        let req = parse_request(p)?;
        let flow_key = (ev.src, ev.dst);
        let mut flow = self
            .flows
            .get_mut(&flow_key, ev.ts)
            .copied()
            .unwrap_or_default();
        match req {
            Request::Connect { .. } => {}
            Request::Announce(Announce { connection_id, .. })
            | Request::Scrape(Scrape { connection_id, .. }) => {
                self.check_connection_id(&flow, connection_id, ev.ts)?;
            }
        }
        let kind = match req {
            Request::Connect { .. } => {
                self.stats.connect_requests += 1;
                Kind::Connect
            }
            Request::Announce(a) => {
                self.stats.announce_requests += 1;
                if !a.options.is_empty() {
                    self.stats.announce_options += 1;
                }
                Kind::Announce
            }
            Request::Scrape(_) => {
                self.stats.scrape_requests += 1;
                Kind::Scrape
            }
        };
        // Expired ids stop counting: a host past the lifetime reconnects.
        let ttl = time::Duration::from(self.config.connection_id_ttl);
        for id in &mut flow.ids {
            if id.is_some_and(|(_, issued)| issued.expired(ttl, ev.ts)) {
                *id = None;
            }
        }
        if self.flows.try_insert(flow_key, flow, ev.ts).is_ok() {
            self.pending
                .insert((ev.src, ev.dst, req.txid()), kind, ev.ts);
        }
        Ok(())
    }

    fn check_connection_id(&mut self, flow: &Flow, id: u64, now: Timestamp) -> Result<(), Reject> {
        let ttl = time::Duration::from(self.config.connection_id_ttl);
        let mut live = flow
            .ids
            .iter()
            .flatten()
            .filter(|(_, issued)| !issued.expired(ttl, now))
            .peekable();
        if live.peek().is_none() {
            self.stats.connection_id_unseen += 1;
            Ok(())
        } else if live.any(|(known, _)| *known == id) {
            self.stats.connection_id_verified += 1;
            Ok(())
        } else {
            Err(Reject::ConnectionIdMismatch)
        }
    }

    fn on_response(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) -> Result<(), Reject> {
        let txid = be32_at(udp.head, 4).ok_or(Reject::BadLength)?;
        let kind = self
            .pending
            .answer(&(ev.dst, ev.src, txid), ev.ts)
            .ok_or(Reject::UnmatchedTransaction)?;
        self.flows.vouch(ev.dst.ip(), ev.ts);
        let resp = parse_response(udp.head, usize::from(udp.payload_len), ev.src.is_ipv6())?;
        match (kind, resp) {
            (_, Response::Error { .. }) => self.stats.errors += 1,
            (Kind::Connect, Response::Connect { connection_id, .. }) => {
                self.stats.connect_responses += 1;
                if let Some(flow) = self.flows.get_mut(&(ev.dst, ev.src), ev.ts) {
                    flow.ids = [Some((connection_id, ev.ts)), flow.ids[0]];
                }
            }
            (Kind::Scrape, Response::Scrape { .. }) => self.stats.scrape_responses += 1,
            (Kind::Announce, Response::Announce(a)) => {
                self.stats.announce_responses += 1;
                self.predict(ev, &a, out);
            }
            _ => return Err(Reject::ActionMismatch),
        }
        Ok(())
    }

    fn predict(
        &mut self,
        ev: &PacketEvent<'_>,
        a: &AnnounceResponse<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        let host = ev.dst.ip();
        let in_head = a.peers.len() / a.stride;
        let take = in_head.min(self.config.max_entries);
        let n = &mut self.stats.peers;
        n.beyond_snap += (a.entries - in_head) as u64;
        n.capped += (in_head - take) as u64;
        for peer in a.peers().take(take) {
            n.decoded += 1;
            if let Some(why) = unfit(peer, host, None) {
                n.count_unfit(why);
                continue;
            }
            for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
                out.push(PredictedPeer {
                    ts: ev.ts,
                    host,
                    peer,
                    transport,
                    channel: Channel::UdpTracker,
                });
                self.stats.predicted += 1;
            }
        }
    }
}

impl super::channel::Channel for UdpTracker {
    fn name(&self) -> &'static str {
        "udp_tracker"
    }

    fn claims(&self, _ev: &PacketEvent<'_>, udp: &UdpDatagram<'_>) -> bool {
        shape(udp.head).is_some()
    }

    fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Learnt<'_>,
    ) -> Sender {
        UdpTracker::on_udp(self, ev, udp, out.predictions);
        // Only the connect request has a magic number; the other shapes are weak alone.
        if shape(udp.head) == Some(Shape::ConnectRequest) {
            Sender::BitTorrent
        } else {
            Sender::Unknown
        }
    }

    fn expire(&mut self, now: Timestamp) {
        UdpTracker::expire(self, now);
    }

    fn drops(&self, f: &mut dyn FnMut(&'static str, &'static str, u64)) {
        for (list, e) in [("peers", &self.stats.peers)] {
            for (reason, n) in e.drops() {
                f(list, reason, n);
            }
        }
        for (list, t) in [
            ("transactions", self.pending.fair_stats()),
            ("flows", self.flows.fair_stats()),
        ] {
            for (reason, n) in t.drops() {
                f(list, reason, n);
            }
        }
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("udp_tracker", &self.stats.counts);
    }

    /// Transactions and flows, as one table.
    fn tables(&self, f: &mut dyn FnMut(&'static str, TableStats)) {
        let (p, fl) = (self.pending.stats(), self.flows.stats());
        f(
            "udp_tracker_transactions",
            TableStats {
                len: p.len + fl.len,
                evicted: p.evicted + fl.evicted,
                expired: p.expired + fl.expired,
                evicted_reported: 0,
            },
        );
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).expect("counters serialize")
    }
}

#[cfg(test)]
mod tests;
