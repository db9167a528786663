//! Local Service Discovery (BEP 14): `BT-SEARCH * HTTP/1.1` announces multicast on the LAN.
//!
//! An announce from host A with `Port: P` tells every BitTorrent client on A's segment that A
//! accepts peers at (A's UDP source address, P) (BEP 14: the peer's address is the UDP source
//! address; libtorrent `lsd.cpp` builds `tcp::endpoint(from.address(), port)`). The learner is
//! every host on that multicast segment, not the datagram's destination, so the prediction scope has to be
//! chosen; a passive sensor does not know the segment's members or its netmask.
//!
//! # Prediction scope
//!
//! * **Segment** = the announcer's address masked to [`LsdConfig::prefix_v4`] (/24) or
//!   [`LsdConfig::prefix_v6`] (/64). libtorrent drops announces from outside its interface's
//!   netmask; /24 and /64 are the common LAN sizes (the captures hold /24 and /26 LANs: their
//!   broadcast copies go to 192.168.38.255 and 10.10.0.63). A narrower LAN over-approximates,
//!   a wider one misses the hosts outside the announcer's /24.
//! * **Members** = hosts of that segment seen *acting as BitTorrent clients*: LSD announcers
//!   themselves, and senders of KRPC, BEP 15 connect requests and uTP SYNs (the coordinator
//!   calls [`Lsd::note_host`]). Only a BitTorrent client acts on an announce, so a host with no
//!   such traffic is not given the announcer's port: that would excuse any LAN host's failed
//!   attempts to A:P. Each member gets a [`PeerTransport::Tcp`] and a [`PeerTransport::Udp`]
//!   prediction (clients dial uTP first, then TCP: see [`super::utp`]; as the DHT and tracker
//!   channels).
//! * **Only segments that carried an announce are tracked.** LSD is link-local, so this keeps
//!   the Internet addresses of DHT nodes and trackers out of the table: noting a host of any
//!   other segment is one hash lookup and nothing is stored.
//! * **Late members**: a host first seen after an announce gets the segment's live announces
//!   then (counted as `predicted_late`), so the order of an announce and a member's traffic
//!   does not matter. Announces repeat every 5 minutes (BEP 14), which refreshes the rest.
//!
//! State is bounded: [`LsdConfig::max_segments`] segments (oldest evicted), each with at most
//! [`LsdConfig::max_hosts_per_segment`] members and [`LsdConfig::max_announcers_per_segment`]
//! announced endpoints (oldest evicted); members expire after `host_ttl`, announces after
//! `announce_ttl`. Work per datagram is bounded by those caps.
//!
//! # Parsing
//!
//! The request head is read with `httparse` (already in the tree through hyper; zero-copy into
//! a fixed header array, no allocation, no panics, fuzzed upstream). On top of it the rules of
//! libtorrent's receiver, stricter where libtorrent is lenient: method `BT-SEARCH` (any case),
//! header names in any case, exactly one `Port` of 1–5 digits in 1..=65534 (libtorrent's
//! `strtol` would take `+12x`), at least one `Infohash` of 40 hex digits that is not all zero
//! (others are counted and skipped, as libtorrent does), head terminated by an empty line.
//! `Host` and `cookie` are kept but not required. Announces are accepted on UDP port 6771 to
//! any destination, not only to the BEP 14 groups (239.192.152.143, ff15::efc0:988f): clients also send
//! subnet-broadcast or unicast copies (VUT-PDS, a qBittorrent host, to 192.168.38.255; the
//! mercury capture to 10.10.0.63), and a receiver bound to port 6771 takes those too.
//!
//! # Risk
//!
//! An announce is unauthenticated and its source address is easy to forge on a LAN. A forged
//! one makes the segment's BitTorrent hosts predicted to contact one chosen ip:port each (at
//! most [`LsdConfig::max_announcers_per_segment`] per segment); a host that wants its own
//! attempts excused can also become a member by sending one KRPC-shaped datagram. As with uTP
//! (see `utp.rs`), the evidence is asserted by LAN hosts themselves, not by a third party.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::channel::{Learnt, Sender};
use super::{Bounded, ChannelCounts, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};
use crate::time;

pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
pub const PORT: u16 = 6771;
/// Request line start every announce has (nDPI and libprotoident match it too).
pub const METHOD: &[u8] = b"BT-SEARCH";
/// Header lines read from one announce; a 1472-byte datagram holds at most ~28 `Infohash`
/// lines, so a real announce never comes close.
pub const MAX_HEADERS: usize = 40;
pub const INFOHASH_HEX_LEN: usize = 40;

/// Cheap test before parsing: to UDP port 6771 and starts with `BT-SEARCH`.
pub fn looks_like_lsd(dst: SocketAddr, head: &[u8]) -> bool {
    dst.port() == PORT
        && head
            .get(..METHOD.len())
            .is_some_and(|m| m.eq_ignore_ascii_case(METHOD))
}

/// Whether `ip` is one of the two LSD multicast groups.
pub fn is_group(ip: IpAddr) -> bool {
    ip == IpAddr::V4(GROUP_V4) || ip == IpAddr::V6(GROUP_V6)
}

/// Why a datagram that passed [`looks_like_lsd`] was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reject {
    /// The capture holds only the head of the datagram.
    Incomplete,
    /// Not an HTTP/1.x request head (bad token, version, header syntax...).
    NotHttp,
    /// The head does not end with an empty line.
    Unterminated,
    /// More than [`MAX_HEADERS`] header lines.
    TooManyHeaders,
    BadMethod,
    MissingPort,
    DuplicatePort,
    /// `Port` not 1–5 decimal digits, or outside 1..=65534.
    BadPort,
    /// No `Infohash` of 40 hex digits (other than all zero).
    NoInfohash,
    /// Sent from an address no peer can be dialled at (unspecified, loopback, multicast).
    UnusableSource,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One decoded announce. Byte fields borrow from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce<'a> {
    /// The announcer's listen port.
    pub port: u16,
    pub host: Option<&'a [u8]>,
    pub cookie: Option<&'a [u8]>,
    /// Valid `Infohash` values (40 hex digits each), in order.
    infohashes: [&'a [u8]; MAX_HEADERS],
    n_infohashes: usize,
    /// `Infohash` lines skipped: wrong length, not hex, or all zero.
    pub invalid_infohashes: usize,
}

impl<'a> Announce<'a> {
    /// The valid infohashes as their 40 hex digits.
    pub fn infohashes_hex(&self) -> &[&'a [u8]] {
        &self.infohashes[..self.n_infohashes]
    }

    /// The valid infohashes, decoded.
    pub fn infohashes(&self) -> impl Iterator<Item = [u8; 20]> + '_ {
        self.infohashes_hex().iter().map(|digits| {
            let mut ih = [0u8; 20];
            // Only 40 hex digits are kept as valid infohashes, so this cannot fail.
            let _ = hex::decode_to_slice(digits, &mut ih);
            ih
        })
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| !c.is_ascii_whitespace());
    let end = v.iter().rposition(|c| !c.is_ascii_whitespace());
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

fn parse_port(v: &[u8]) -> Result<u16, Reject> {
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Reject::BadPort);
    }
    let n = v.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    match u16::try_from(n) {
        Ok(p) if (1..u16::MAX).contains(&p) => Ok(p),
        _ => Err(Reject::BadPort),
    }
}

fn is_infohash(v: &[u8]) -> bool {
    v.len() == INFOHASH_HEX_LEN
        && v.iter().all(u8::is_ascii_hexdigit)
        && v.iter().any(|&c| c != b'0')
}

/// Decodes an announce (the whole payload). Pure; borrows every field from `payload`.
pub fn parse(payload: &[u8]) -> Result<Announce<'_>, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(payload) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Reject::Unterminated),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooManyHeaders),
        Err(_) => return Err(Reject::NotHttp),
    }
    if !req
        .method
        .is_some_and(|m| m.as_bytes().eq_ignore_ascii_case(METHOD))
    {
        return Err(Reject::BadMethod);
    }
    let mut a = Announce {
        port: 0,
        host: None,
        cookie: None,
        infohashes: [&[]; MAX_HEADERS],
        n_infohashes: 0,
        invalid_infohashes: 0,
    };
    let mut port = None;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        if name.eq_ignore_ascii_case(b"port") {
            if port.is_some() {
                return Err(Reject::DuplicatePort);
            }
            port = Some(parse_port(value)?);
        } else if name.eq_ignore_ascii_case(b"infohash") {
            if is_infohash(value) {
                // At most MAX_HEADERS headers, so there is always room.
                if let Some(slot) = a.infohashes.get_mut(a.n_infohashes) {
                    *slot = value;
                    a.n_infohashes += 1;
                }
            } else {
                a.invalid_infohashes += 1;
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            a.host = Some(value);
        } else if name.eq_ignore_ascii_case(b"cookie") {
            a.cookie = Some(value);
        }
    }
    a.port = port.ok_or(Reject::MissingPort)?;
    if a.n_infohashes == 0 {
        return Err(Reject::NoInfohash);
    }
    Ok(a)
}

/// Whether a host at `ip` can be a learner or an announced peer.
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !a.is_unspecified() && !a.is_loopback() && !a.is_multicast() && !a.is_broadcast()
        }
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_loopback() && !a.is_multicast(),
    }
}

/// `ip` with every bit past `prefix` cleared (a prefix longer than the address keeps it all).
pub fn segment_of(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> IpAddr {
    let prefix = match ip {
        IpAddr::V4(_) => prefix_v4.min(32),
        IpAddr::V6(_) => prefix_v6.min(128),
    };
    ipnet::IpNet::new(ip, prefix).map_or(ip, |net| net.network())
}

#[derive(Clone, Debug)]
pub struct LsdConfig {
    /// Segment size: the announcer's /prefix (see the module docs).
    pub prefix_v4: u8,
    pub prefix_v6: u8,
    /// Segments with announces tracked, at most.
    pub max_segments: usize,
    /// BitTorrent hosts remembered per segment, at most (the oldest go first).
    pub max_hosts_per_segment: usize,
    /// Announced endpoints remembered per segment, at most.
    pub max_announcers_per_segment: usize,
    /// A member is forgotten this long after its last BitTorrent datagram.
    pub host_ttl: Duration,
    /// An announce predicts for members first seen up to this long after it (BEP 14: clients
    /// announce every 5 minutes).
    pub announce_ttl: Duration,
}

impl Default for LsdConfig {
    fn default() -> Self {
        Self {
            prefix_v4: 24,
            prefix_v6: 64,
            max_segments: 1024,
            max_hosts_per_segment: 256,
            max_announcers_per_segment: 64,
            host_ttl: Duration::from_mins(30),
            announce_ttl: Duration::from_mins(10),
        }
    }
}

/// Counters of the LSD channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LsdStats {
    pub counts: ChannelCounts,
    /// Announces sent to a multicast group, and copies sent elsewhere (broadcast, unicast).
    pub to_group: u64,
    pub not_to_group: u64,
    /// Valid infohashes over all announces, and `Infohash` lines skipped.
    pub infohashes: u64,
    pub invalid_infohashes: u64,
    /// Members added to segments, and dropped to make room.
    pub hosts_added: u64,
    pub hosts_evicted: u64,
    pub announcers_evicted: u64,
    /// Predictions made (TCP + uTP per member and announced endpoint).
    pub predicted: u64,
    /// Of those, made for a member first seen after the announce.
    pub predicted_late: u64,
    pub segments: TableStats,
}

#[derive(Debug, Default)]
struct Segment {
    /// Members and when they were last seen.
    hosts: Vec<(IpAddr, Timestamp)>,
    /// Announced endpoints and when they were last announced.
    announcers: Vec<(SocketAddr, Timestamp)>,
    /// When the segment was last (re-)inserted in the bounded table.
    inserted: Timestamp,
}

impl Segment {
    /// Drops members and announces past their TTL (a returning member is then new again).
    fn prune(&mut self, now: Timestamp, host_ttl: time::Duration, announce_ttl: time::Duration) {
        self.hosts.retain(|&(_, seen)| !seen.expired(host_ttl, now));
        self.announcers
            .retain(|&(_, seen)| !seen.expired(announce_ttl, now));
    }
}

/// How often an active segment is re-inserted to restart its table TTL.
const REFRESH: time::Duration = time::Duration::from_secs(60);

/// Sets `key`'s time to `now` or adds it, evicting the oldest entry past `cap`. Returns
/// (added, evicted).
fn upsert<K: PartialEq>(
    list: &mut Vec<(K, Timestamp)>,
    key: K,
    now: Timestamp,
    cap: usize,
) -> (bool, bool) {
    if let Some(e) = list.iter_mut().find(|(k, _)| *k == key) {
        e.1 = now;
        return (false, false);
    }
    let mut evicted = false;
    if list.len() >= cap.max(1) {
        if let Some(oldest) = (0..list.len()).min_by_key(|&i| list[i].1) {
            list.swap_remove(oldest);
            evicted = true;
        }
    }
    list.push((key, now));
    (true, evicted)
}

fn push_both(out: &mut Vec<PredictedPeer>, ts: Timestamp, host: IpAddr, peer: SocketAddr) {
    for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
        out.push(PredictedPeer {
            ts,
            host,
            peer,
            transport,
            channel: Channel::Lsd,
        });
    }
}

/// LSD announces and the BitTorrent hosts of the segments they were made on.
#[derive(Debug)]
pub struct Lsd {
    config: LsdConfig,
    segments: Bounded<IpAddr, Segment>,
    host_ttl: time::Duration,
    announce_ttl: time::Duration,
    stats: LsdStats,
}

impl Lsd {
    pub fn new(config: LsdConfig) -> Self {
        let ttl = config.host_ttl.max(config.announce_ttl) + Duration::from(REFRESH);
        Self {
            segments: Bounded::new(config.max_segments, ttl),
            host_ttl: config.host_ttl.into(),
            announce_ttl: config.announce_ttl.into(),
            config,
            stats: LsdStats::default(),
        }
    }

    pub fn stats(&self) -> LsdStats {
        let mut s = self.stats.clone();
        s.segments = self.segments.stats();
        s
    }

    pub fn expire(&mut self, now: Timestamp) {
        self.segments.expire(now);
    }

    fn segment_key(&self, ip: IpAddr) -> IpAddr {
        segment_of(ip, self.config.prefix_v4, self.config.prefix_v6)
    }

    /// One datagram that passed [`looks_like_lsd`].
    pub fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
    ) {
        self.stats.counts.seen += 1;
        let result = if udp.is_complete() {
            self.on_announce(ev, udp.head, out)
        } else {
            Err(Reject::Incomplete)
        };
        self.stats.counts.record(result.map_err(Reject::as_str));
    }

    fn on_announce(
        &mut self,
        ev: &PacketEvent<'_>,
        payload: &[u8],
        out: &mut Vec<PredictedPeer>,
    ) -> Result<(), Reject> {
        let a = parse(payload)?;
        let src = ev.src.ip();
        if !usable(src) {
            return Err(Reject::UnusableSource);
        }
        if is_group(ev.dst.ip()) {
            self.stats.to_group += 1;
        } else {
            self.stats.not_to_group += 1;
        }
        self.stats.infohashes += a.n_infohashes as u64;
        self.stats.invalid_infohashes += a.invalid_infohashes as u64;

        let now = ev.ts;
        let key = self.segment_key(src);
        let mut seg = self.segments.take(&key, now).unwrap_or_default();
        seg.prune(now, self.host_ttl, self.announce_ttl);
        // The announcer is a member too: it learns the segment's other announces.
        self.add_member(&mut seg, src, now, out);
        let peer = SocketAddr::new(src, a.port);
        let cap = self.config.max_announcers_per_segment;
        if upsert(&mut seg.announcers, peer, now, cap).1 {
            self.stats.announcers_evicted += 1;
        }
        for &(host, _) in &seg.hosts {
            if host != src {
                push_both(out, now, host, peer);
                self.stats.predicted += 2;
            }
        }
        seg.inserted = now;
        self.segments.insert(key, seg, now);
        Ok(())
    }

    /// Adds or refreshes a member; a new one gets the segment's live announces.
    fn add_member(
        &mut self,
        seg: &mut Segment,
        host: IpAddr,
        now: Timestamp,
        out: &mut Vec<PredictedPeer>,
    ) {
        let (added, evicted) = upsert(&mut seg.hosts, host, now, self.config.max_hosts_per_segment);
        if evicted {
            self.stats.hosts_evicted += 1;
        }
        if !added {
            return;
        }
        self.stats.hosts_added += 1;
        for &(peer, _) in &seg.announcers {
            if peer.ip() != host {
                push_both(out, now, host, peer);
                self.stats.predicted += 2;
                self.stats.predicted_late += 2;
            }
        }
    }

    /// `host` sent BitTorrent traffic: if its segment carried announces, it is a member.
    pub fn note_host(&mut self, host: IpAddr, now: Timestamp, out: &mut Vec<PredictedPeer>) {
        if !usable(host) {
            return;
        }
        let key = self.segment_key(host);
        let Some(seg) = self.segments.get_mut(&key, now) else {
            return;
        };
        // Fast path: a live member refreshes its time in place.
        let ttl = self.host_ttl;
        if let Some(e) = seg
            .hosts
            .iter_mut()
            .find(|(h, seen)| *h == host && !seen.expired(ttl, now))
        {
            e.1 = now;
            if !seg.inserted.expired(REFRESH, now) {
                return;
            }
        }
        let Some(mut seg) = self.segments.take(&key, now) else {
            return;
        };
        seg.prune(now, self.host_ttl, self.announce_ttl);
        self.add_member(&mut seg, host, now, out);
        seg.inserted = now;
        self.segments.insert(key, seg, now);
    }
}

impl super::channel::Channel for Lsd {
    fn name(&self) -> &'static str {
        "lsd"
    }

    fn claims(&self, ev: &PacketEvent<'_>, udp: &UdpDatagram<'_>) -> bool {
        looks_like_lsd(ev.dst, udp.head)
    }

    /// The announcer is recorded as a member here, not by the caller.
    fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Learnt<'_>,
    ) -> Sender {
        Lsd::on_udp(self, ev, udp, out.predictions);
        Sender::Unknown
    }

    fn on_bittorrent_host(&mut self, host: IpAddr, now: Timestamp, out: &mut Learnt<'_>) {
        self.note_host(host, now, out.predictions);
    }

    fn expire(&mut self, now: Timestamp) {
        Lsd::expire(self, now);
    }

    fn counts(&self, f: &mut dyn FnMut(&'static str, &ChannelCounts)) {
        f("lsd", &self.stats.counts);
    }

    fn tables(&self, f: &mut dyn FnMut(&'static str, TableStats)) {
        f("lsd_segments", self.segments.stats());
    }

    fn stats_json(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).expect("counters serialize")
    }
}

#[cfg(test)]
mod tests;
