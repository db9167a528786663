//! UDP tracker protocol (BEP 15, BEP 41 options): the peers an announcing host is told about.
//!
//! Responses carry no magic, so they are read only as answers to a request seen on the same
//! flow: the state machine keys transactions by (host, tracker, transaction id) and keeps the
//! connection ids each tracker issued to each host (spec §3.2). An announce response's peers
//! are predictions for the host that sent the matching announce (the response's destination):
//! it will dial them over TCP and uTP, so each peer gives a [`PeerTransport::Tcp`] and a
//! [`PeerTransport::Udp`] prediction on [`Channel::UdpTracker`].
//!
//! Quirks (spec §3.3): entries are 6 bytes over IPv4 and 18 over IPv6, by the packet's address
//! family; action 4 (opentracker's old IPv6 announce response) is accepted over IPv6; an
//! announce may reuse a connection id obtained before the capture started (libtorrent caches
//! them), so an unseen id is accepted while a known flow's id must match; port 0 and the host
//! itself are dropped.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{compact_v4, compact_v6, unfit, Bounded, ChannelCounts, EntryCounts, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};

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

fn be32(p: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(at..at + 4)?.try_into().ok()?))
}

fn be64(p: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(at..at + 8)?.try_into().ok()?))
}

fn arr20(p: &[u8], at: usize) -> Option<&[u8; 20]> {
    p.get(at..at + 20)?.try_into().ok()
}

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
    match be32(head, 8) {
        Some(ANNOUNCE) if head.len() >= ANNOUNCE_LEN => return Some(Shape::Request),
        Some(SCRAPE) if is_scrape_request_len(head.len()) => return Some(Shape::Request),
        _ => {}
    }
    match be32(head, 0) {
        Some(a) if a <= ANNOUNCE6 => Some(Shape::Response),
        _ => None,
    }
}

fn is_connect_request(head: &[u8]) -> bool {
    head.len() >= CONNECT_LEN && head[..8] == PROTOCOL_ID && be32(head, 8) == Some(CONNECT)
}

fn is_scrape_request_len(len: usize) -> bool {
    len > SCRAPE_HEADER && (len - SCRAPE_HEADER).is_multiple_of(20)
}

/// Why a datagram on a tracker flow was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        match self {
            Reject::Incomplete => "incomplete",
            Reject::NotRequest => "not_request",
            Reject::BadEvent => "bad_event",
            Reject::BadOptions => "bad_options",
            Reject::ConnectionIdMismatch => "connection_id_mismatch",
            Reject::UnmatchedTransaction => "unmatched_transaction",
            Reject::ActionMismatch => "action_mismatch",
            Reject::BadLength => "bad_length",
            Reject::Action4OverIpv4 => "action4_over_ipv4",
            Reject::UnknownAction => "unknown_action",
        }
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
            txid: be32(p, 12).ok_or(Reject::NotRequest)?,
        });
    }
    let connection_id = be64(p, 0).ok_or(Reject::NotRequest)?;
    let txid = be32(p, 12).ok_or(Reject::NotRequest)?;
    match be32(p, 8) {
        Some(ANNOUNCE) if p.len() >= ANNOUNCE_LEN => {
            let event = match be32(p, 80) {
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
            let field = |at| be32(p, at).ok_or(Reject::NotRequest);
            Ok(Request::Announce(Announce {
                connection_id,
                txid,
                info_hash: arr20(p, 16).ok_or(Reject::NotRequest)?,
                peer_id: arr20(p, 36).ok_or(Reject::NotRequest)?,
                downloaded: be64(p, 56).ok_or(Reject::NotRequest)?,
                left: be64(p, 64).ok_or(Reject::NotRequest)?,
                uploaded: be64(p, 72).ok_or(Reject::NotRequest)?,
                event,
                ip: Ipv4Addr::from(field(84)?),
                key: field(88)?,
                num_want: field(92)? as i32,
                port: u16::from_be_bytes([p[96], p[97]]),
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
    let action = be32(head, 0).ok_or(Reject::BadLength)?;
    let txid = be32(head, 4).ok_or(Reject::BadLength)?;
    let len = payload_len.max(head.len());
    match action {
        CONNECT => Ok(Response::Connect {
            txid,
            connection_id: be64(head, 8).ok_or(Reject::BadLength)?,
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
                interval: be32(head, 8).ok_or(Reject::BadLength)?,
                leechers: be32(head, 12).ok_or(Reject::BadLength)?,
                seeders: be32(head, 16).ok_or(Reject::BadLength)?,
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
    /// Peers read per announce response.
    pub max_entries: usize,
}

impl Default for UdpTrackerConfig {
    fn default() -> Self {
        Self {
            max_pending: 65_536,
            pending_ttl: Duration::from_secs(60),
            max_flows: 65_536,
            flow_ttl: Duration::from_secs(3600),
            connection_id_ttl: Duration::from_secs(120),
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
    ids: [Option<(u64, u64)>; 2],
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
            pending: Bounded::new(config.max_pending, config.pending_ttl),
            flows: Bounded::new(config.max_flows, config.flow_ttl),
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
            && be32(head, 0).is_some_and(|a| a <= ANNOUNCE6)
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
        self.stats.counts.record(result.map_err(|r| r.as_str()));
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
                self.check_connection_id(&flow, connection_id, ev.ts)?
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
        let ttl = crate::detect::ns(self.config.connection_id_ttl);
        for id in &mut flow.ids {
            if id.is_some_and(|(_, ts)| ev.ts.0.saturating_sub(ts) > ttl) {
                *id = None;
            }
        }
        self.flows.insert(flow_key, flow, ev.ts);
        self.pending
            .insert((ev.src, ev.dst, req.txid()), kind, ev.ts);
        Ok(())
    }

    fn check_connection_id(&mut self, flow: &Flow, id: u64, now: Timestamp) -> Result<(), Reject> {
        let ttl = crate::detect::ns(self.config.connection_id_ttl);
        let mut live = flow
            .ids
            .iter()
            .flatten()
            .filter(|(_, ts)| now.0.saturating_sub(*ts) <= ttl)
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
        let txid = be32(udp.head, 4).ok_or(Reject::BadLength)?;
        let kind = self
            .pending
            .take(&(ev.dst, ev.src, txid), ev.ts)
            .ok_or(Reject::UnmatchedTransaction)?;
        let resp = parse_response(udp.head, usize::from(udp.payload_len), ev.src.is_ipv6())?;
        match (kind, resp) {
            (_, Response::Error { .. }) => self.stats.errors += 1,
            (Kind::Connect, Response::Connect { connection_id, .. }) => {
                self.stats.connect_responses += 1;
                if let Some(flow) = self.flows.get_mut(&(ev.dst, ev.src), ev.ts) {
                    flow.ids = [Some((connection_id, ev.ts.0)), flow.ids[0]];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bt::test_support::{datagram, udp_datagrams, unhex, Datagram};

    // Spec §3.4 UDP-D1..D7 (derived from BEP 15 with libtorrent's test-tracker values).
    const D1: &str = "00000417271019800000000012345678";
    const D2: &str = "0000000012345678000000000000000a";
    const D3: &str = "000000000000000a0000000112345679
        e4be9e4db876e3e3179778b03e906297be5c8dbe 2d4445313346302d566e705a5246385a50396976
        0000000000000000 00000000728d0000 0000000000000000
        00000002 00000000 764ca003 000000c8 f7d8";
    const D4: &str = "00000001123456790000070800000001000000017f0000020539";
    const D5: &str = "0000000112345679000007080000000100000001000000000000000000000000000000010539";
    const D6: &str = "0000000412345679000007080000000100000001000000000000000000000000000000010539";
    const D7: &str = "0000000312345679756e7265676973746572656420746f7272656e74";

    const HOST: &str = "10.0.0.201:63448";
    const TRACKER: &str = "198.51.100.1:6969";
    const HOST6: &str = "[2001:db8::10]:63448";
    const TRACKER6: &str = "[2001:db8::1]:6969";

    fn feed(t: &mut UdpTracker, d: &Datagram) -> Vec<PredictedPeer> {
        let (ev, udp) = d.event();
        let mut out = Vec::new();
        if shape(udp.head).is_some() {
            t.on_udp(&ev, &udp, &mut out);
        }
        out
    }

    fn up(ts: u64, hex: &str) -> Datagram {
        datagram(HOST, TRACKER, ts, &unhex(hex))
    }

    fn down(ts: u64, hex: &str) -> Datagram {
        datagram(TRACKER, HOST, ts, &unhex(hex))
    }

    fn peers(out: &[PredictedPeer], transport: PeerTransport) -> Vec<String> {
        out.iter()
            .filter(|p| p.transport == transport)
            .map(|p| {
                assert_eq!(p.channel, Channel::UdpTracker);
                p.peer.to_string()
            })
            .collect()
    }

    /// An announce request for `txid` with connection id 10 (D3's layout).
    fn announce(txid: u32) -> String {
        let mut a = unhex(D3);
        a[12..16].copy_from_slice(&txid.to_be_bytes());
        a.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// An announce response for `txid` listing 192.0.2.1:6881.
    fn announced(txid: u32) -> String {
        format!("00000001{txid:08x}000007080000000100000001c00002011ae1")
    }

    #[test]
    fn spec_d1_to_d4_connect_then_announce() {
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        assert_eq!(shape(&unhex(D1)), Some(Shape::ConnectRequest));
        assert!(feed(&mut t, &up(0, D1)).is_empty());
        assert!(feed(&mut t, &down(0, D2)).is_empty());
        let d3 = unhex(D3);
        let Request::Announce(a) = parse_request(&d3).unwrap() else {
            panic!()
        };
        assert_eq!(
            (a.connection_id, a.txid, a.event),
            (10, 0x1234_5679, Event::Started)
        );
        assert_eq!(a.peer_id, b"-DE13F0-VnpZRF8ZP9iv");
        assert_eq!(
            (a.left, a.num_want, a.port, a.key),
            (1_921_843_200, 200, 63448, 0x764c_a003)
        );
        assert_eq!(a.ip, Ipv4Addr::UNSPECIFIED);
        assert!(feed(&mut t, &up(1, D3)).is_empty());
        let out = feed(&mut t, &down(1, D4));
        assert_eq!(peers(&out, PeerTransport::Tcp), ["127.0.0.2:1337"]);
        assert_eq!(peers(&out, PeerTransport::Udp), ["127.0.0.2:1337"]);
        assert!(out.iter().all(|p| p.host.to_string() == "10.0.0.201"));
        let s = t.stats();
        assert_eq!((s.connect_requests, s.connect_responses), (1, 1));
        assert_eq!((s.announce_requests, s.announce_responses), (1, 1));
        assert_eq!((s.connection_id_verified, s.predicted), (1, 2));
        assert_eq!((s.counts.seen, s.counts.parsed), (4, 4));
        let d4 = unhex(D4);
        let Response::Announce(r) = parse_response(&d4, 26, false).unwrap() else {
            panic!()
        };
        assert_eq!(
            (r.interval, r.leechers, r.seeders, r.entries),
            (1800, 1, 1, 1)
        );
    }

    #[test]
    fn spec_d5_d6_ipv6_entries_and_action_4() {
        for resp in [D5, D6] {
            let mut t = UdpTracker::new(UdpTrackerConfig::default());
            feed(&mut t, &datagram(HOST6, TRACKER6, 0, &unhex(D3)));
            let out = feed(&mut t, &datagram(TRACKER6, HOST6, 0, &unhex(resp)));
            assert_eq!(peers(&out, PeerTransport::Tcp), ["[::1]:1337"]);
            assert_eq!(out[0].host.to_string(), "2001:db8::10");
            assert_eq!(t.stats().connection_id_unseen, 1);
        }
        // Action 4 has no IPv4 layout.
        assert_eq!(
            parse_response(&unhex(D6), 38, false),
            Err(Reject::Action4OverIpv4)
        );
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        feed(&mut t, &up(0, D3));
        assert!(feed(&mut t, &down(0, D6)).is_empty());
        assert_eq!(t.stats().counts.rejected.get("action4_over_ipv4"), Some(&1));
    }

    #[test]
    fn spec_d7_error_predicts_nothing() {
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        feed(&mut t, &up(0, D3));
        assert!(feed(&mut t, &down(0, D7)).is_empty());
        assert_eq!(
            parse_response(&unhex(D7), 28, false),
            Ok(Response::Error {
                txid: 0x1234_5679,
                message: b"unregistered torrent"
            })
        );
        assert_eq!(t.stats().errors, 1);
    }

    #[test]
    fn real_exchange_with_bep41_options_and_a_port_0_self_entry() {
        // Spec UDP-R1..R4: VUT-PDS small.pcap frames 242, 267, 269, 291.
        let flow: Vec<Datagram> = udp_datagrams("terezaburianova-VUT-PDS/small.pcap")
            .into_iter()
            .filter(|d| d.src.port() == 1337 || d.dst.port() == 1337)
            .take(4)
            .collect();
        assert_eq!(flow[0].head, unhex("000004172710198000000000905495a3"));
        assert_eq!(flow[1].head, unhex("00000000905495a3d27dca4a8b03beb5"));
        let Request::Announce(a) = parse_request(&flow[2].head).unwrap() else {
            panic!()
        };
        assert_eq!(flow[2].head.len(), 109);
        assert_eq!(
            (a.connection_id, a.txid, a.port),
            (0xd27d_ca4a_8b03_beb5, 0x28d5_3cbb, 0)
        );
        assert_eq!(a.url_data().collect::<Vec<_>>(), [&b"/announce"[..]]);
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        let mut out = Vec::new();
        for d in &flow {
            out.extend(feed(&mut t, d));
        }
        assert_eq!(
            peers(&out, PeerTransport::Tcp),
            [
                "185.203.56.27:55887",
                "140.211.167.14:25000",
                "136.158.35.251:51413",
                "109.247.154.151:49681",
                "107.134.245.177:51413",
                "76.182.68.238:8999"
            ]
        );
        let s = t.stats();
        assert_eq!((s.peers.decoded, s.peers.unusable), (7, 1));
        assert_eq!((s.announce_options, s.connection_id_verified), (1, 1));
    }

    #[test]
    fn real_scrape_exchange() {
        // small_torrent frames 183 (scrape request, one info_hash) and 189 (its response).
        let all = udp_datagrams("goncalo-rodrigues-360BitScoping/small_torrent.pcap");
        let req = all
            .iter()
            .find(|d| d.head.len() == 36 && d.head[8..12] == [0, 0, 0, 2]);
        let Request::Scrape(s) = parse_request(&req.unwrap().head).unwrap() else {
            panic!()
        };
        assert_eq!(s.info_hashes.len(), 20);
        let resp = all
            .iter()
            .find(|d| d.head.len() == 20 && d.head[..4] == [0, 0, 0, 2]);
        let Response::Scrape { entries, .. } =
            parse_response(&resp.unwrap().head, 20, false).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries.len(), 12);
    }

    #[test]
    fn announce_without_connect_is_accepted_mid_session() {
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        feed(&mut t, &up(0, &announce(7)));
        let out = feed(&mut t, &down(0, &announced(7)));
        assert_eq!(peers(&out, PeerTransport::Tcp), ["192.0.2.1:6881"]);
        assert_eq!(t.stats().connection_id_unseen, 1);
    }

    #[test]
    fn connection_ids_must_match_the_trackers() {
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        feed(&mut t, &up(0, D1));
        feed(&mut t, &down(0, D2)); // connection id 10
        let mut other = unhex(&announce(8));
        other[7] = 11;
        feed(&mut t, &datagram(HOST, TRACKER, 1, &other));
        assert!(feed(&mut t, &down(1, &announced(8))).is_empty());
        let s = t.stats();
        assert_eq!(s.counts.rejected.get("connection_id_mismatch"), Some(&1));
        assert_eq!(s.counts.rejected.get("unmatched_transaction"), Some(&1));
        // Past its lifetime the id is forgotten: a later announce is accepted as unseen.
        feed(&mut t, &datagram(HOST, TRACKER, 200, &other));
        assert_eq!(feed(&mut t, &down(200, &announced(8))).len(), 2);
        assert_eq!(t.stats().connection_id_unseen, 1);
    }

    #[test]
    fn responses_must_answer_a_pending_request() {
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        // No request on the flow: not even seen.
        assert!(feed(&mut t, &down(0, &announced(9))).is_empty());
        assert_eq!(t.stats().counts.seen, 0);
        feed(&mut t, &up(0, &announce(9)));
        // Another transaction id, another tracker, the wrong action.
        assert!(feed(&mut t, &down(0, &announced(10))).is_empty());
        assert!(feed(
            &mut t,
            &datagram("198.51.100.2:6969", HOST, 0, &unhex(&announced(9)))
        )
        .is_empty());
        feed(&mut t, &up(0, D1));
        assert!(feed(&mut t, &down(0, "0000000112345678000007080000000100000001")).is_empty());
        let s = t.stats();
        assert_eq!(s.counts.rejected.get("unmatched_transaction"), Some(&1));
        assert_eq!(s.counts.rejected.get("action_mismatch"), Some(&1));
        // The right one still matches, once.
        assert_eq!(feed(&mut t, &down(1, &announced(9))).len(), 2);
        assert!(feed(&mut t, &down(1, &announced(9))).is_empty());
        assert_eq!(
            t.stats().counts.rejected.get("unmatched_transaction"),
            Some(&2)
        );
    }

    #[test]
    fn pending_requests_expire_and_are_capped() {
        let mut t = UdpTracker::new(UdpTrackerConfig {
            max_pending: 2,
            ..Default::default()
        });
        feed(&mut t, &up(0, &announce(1)));
        assert!(feed(&mut t, &down(61, &announced(1))).is_empty());
        assert_eq!(t.stats().pending.expired, 1);
        for txid in 10..15 {
            feed(&mut t, &up(100, &announce(txid)));
        }
        assert_eq!((t.stats().pending.len, t.stats().pending.evicted), (2, 3));
        assert!(feed(&mut t, &down(100, &announced(10))).is_empty());
        assert_eq!(feed(&mut t, &down(100, &announced(14))).len(), 2);
    }

    #[test]
    fn malformed_packets_are_rejected_with_a_reason() {
        let d3 = unhex(D3);
        let mut bad_event = d3.clone();
        bad_event[83] = 7;
        assert_eq!(parse_request(&bad_event), Err(Reject::BadEvent));
        for (opts, ok) in [
            (&b""[..], true),
            (b"\x01\x01\x00garbage", true),
            (b"\x02\x03abc\x09\x01x\x00", true),
            (b"\x02\xffabc", false),
            (b"\x05", false),
        ] {
            let mut p = d3.clone();
            p.extend_from_slice(opts);
            assert_eq!(parse_request(&p).is_ok(), ok, "{opts:?}");
        }
        let mut url = d3.clone();
        url.extend_from_slice(b"\x02\x02/a\x01\x02\x03?b=\x00\x02\x01x");
        let Request::Announce(a) = parse_request(&url).unwrap() else {
            panic!()
        };
        assert_eq!(a.url_data().collect::<Vec<_>>(), [&b"/a"[..], b"?b="]);
        // Peers not a whole number of entries; lengths below the header.
        let mut d4 = unhex(D4);
        d4.push(0);
        assert_eq!(parse_response(&d4, d4.len(), false), Err(Reject::BadLength));
        assert_eq!(parse_response(&unhex(D4), 26, true), Err(Reject::BadLength));
        assert_eq!(parse_response(&d4[..12], 12, false), Err(Reject::BadLength));
        assert_eq!(parse_response(&d4[..12], 12, false), Err(Reject::BadLength));
        assert_eq!(
            parse_response(b"\0\0\0\x09\0\0\0\0", 8, false),
            Err(Reject::UnknownAction)
        );
        assert_eq!(
            parse_response(&unhex(D2)[..12], 12, false),
            Err(Reject::BadLength)
        );
        assert_eq!(parse_request(&unhex(D3)[..60]), Err(Reject::NotRequest));
    }

    #[test]
    fn every_truncation_parses_or_fails_without_panic() {
        for hex in [D1, D2, D3, D4, D5, D6, D7] {
            let v = unhex(hex);
            for cut in 0..=v.len() {
                let _ = parse_request(&v[..cut]);
                for v6 in [false, true] {
                    let _ = parse_response(&v[..cut], cut, v6);
                    let _ = parse_response(&v[..cut], v.len() + 1000, v6);
                }
                let _ = shape(&v[..cut]);
            }
        }
    }

    #[test]
    fn peers_past_the_snap_length_are_counted() {
        // An IPv6 response with 200 peers (3620 bytes) captured to 1472 bytes: 80 whole
        // entries in the head.
        let mut resp = unhex("0000000100000007000007080000000100000001");
        for i in 0..200u16 {
            resp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
            resp.extend_from_slice(&i.to_be_bytes());
            resp.extend_from_slice(&[0x1a, 0xe1]);
        }
        let mut d = datagram(TRACKER6, HOST6, 0, &resp[..1472]);
        d.payload_len = resp.len() as u16;
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        feed(&mut t, &datagram(HOST6, TRACKER6, 0, &unhex(&announce(7))));
        let out = feed(&mut t, &d);
        assert_eq!(out.len(), 160);
        let p = t.stats().peers;
        assert_eq!((p.decoded, p.beyond_snap), (80, 120));
    }

    #[test]
    fn shape_rejects_other_udp() {
        assert_eq!(shape(b""), None);
        assert_eq!(shape(b"\x41\x00\x12\x34\0\0\0\0"), None, "uTP SYN");
        assert_eq!(shape(&[0xff; 98]), None);
        assert_eq!(shape(&unhex(D3)), Some(Shape::Request));
        assert_eq!(shape(&unhex(D4)), Some(Shape::Response));
    }
}
