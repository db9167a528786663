//! Local Service Discovery (BEP 14): `BT-SEARCH * HTTP/1.1` announces multicast on the LAN.
//!
//! An announce from host A with `Port: P` tells every BitTorrent client on A's segment that A
//! accepts peers at (A's UDP source address, P) (spec §10; libtorrent `lsd.cpp` builds
//! `tcp::endpoint(from.address(), port)`). The learner is "every host on that multicast
//! segment" (spec §0.3), not the datagram's destination, so the prediction scope has to be
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
//!   prediction (clients dial uTP first, then TCP, spec §9.3; as the DHT and tracker channels).
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
//! any destination, wider than the spec's F8 filter (groups only): clients also send
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

use super::{Bounded, ChannelCounts, TableStats};
use crate::event::{PacketEvent, Timestamp, UdpDatagram};
use crate::predict::{Channel, PeerTransport, PredictedPeer};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        match self {
            Reject::Incomplete => "incomplete",
            Reject::NotHttp => "not_http",
            Reject::Unterminated => "unterminated",
            Reject::TooManyHeaders => "too_many_headers",
            Reject::BadMethod => "bad_method",
            Reject::MissingPort => "missing_port",
            Reject::DuplicatePort => "duplicate_port",
            Reject::BadPort => "bad_port",
            Reject::NoInfohash => "no_infohash",
            Reject::UnusableSource => "unusable_source",
        }
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
        self.infohashes_hex().iter().map(|hex| {
            let mut ih = [0u8; 20];
            for (i, pair) in hex.chunks_exact(2).enumerate() {
                ih[i] = (hex_val(pair[0]) << 4) | hex_val(pair[1]);
            }
            ih
        })
    }
}

fn hex_val(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
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

/// `ip` with every bit past `prefix` cleared.
pub fn segment_of(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_v4.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep))
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_v6.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
        }
    }
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
            host_ttl: Duration::from_secs(1800),
            announce_ttl: Duration::from_secs(600),
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
    /// Members and when they were last seen (ns).
    hosts: Vec<(IpAddr, u64)>,
    /// Announced endpoints and when they were last announced (ns).
    announcers: Vec<(SocketAddr, u64)>,
    /// When the segment was last (re-)inserted in the bounded table.
    inserted: u64,
}

impl Segment {
    /// Drops members and announces past their TTL (a returning member is then new again).
    fn prune(&mut self, now: u64, host_ttl: u64, announce_ttl: u64) {
        self.hosts
            .retain(|&(_, seen)| now.saturating_sub(seen) <= host_ttl);
        self.announcers
            .retain(|&(_, seen)| now.saturating_sub(seen) <= announce_ttl);
    }
}

/// How often an active segment is re-inserted to restart its table TTL.
const REFRESH: Duration = Duration::from_secs(60);

/// Sets `key`'s time to `now` or adds it, evicting the oldest entry past `cap`. Returns
/// (added, evicted).
fn upsert<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K, now: u64, cap: usize) -> (bool, bool) {
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
    host_ttl: u64,
    announce_ttl: u64,
    stats: LsdStats,
}

impl Lsd {
    pub fn new(config: LsdConfig) -> Self {
        let ttl = config.host_ttl.max(config.announce_ttl) + REFRESH;
        Self {
            segments: Bounded::new(config.max_segments, ttl),
            host_ttl: crate::detect::ns(config.host_ttl),
            announce_ttl: crate::detect::ns(config.announce_ttl),
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
        self.stats.counts.record(result.map_err(|r| r.as_str()));
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
        seg.prune(now.0, self.host_ttl, self.announce_ttl);
        // The announcer is a member too: it learns the segment's other announces.
        self.add_member(&mut seg, src, now, out);
        let peer = SocketAddr::new(src, a.port);
        let cap = self.config.max_announcers_per_segment;
        if upsert(&mut seg.announcers, peer, now.0, cap).1 {
            self.stats.announcers_evicted += 1;
        }
        for &(host, _) in &seg.hosts {
            if host != src {
                push_both(out, now, host, peer);
                self.stats.predicted += 2;
            }
        }
        seg.inserted = now.0;
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
        let (added, evicted) = upsert(
            &mut seg.hosts,
            host,
            now.0,
            self.config.max_hosts_per_segment,
        );
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
            .find(|(h, seen)| *h == host && now.0.saturating_sub(*seen) <= ttl)
        {
            e.1 = now.0;
            if now.0.saturating_sub(seg.inserted) <= crate::detect::ns(REFRESH) {
                return;
            }
        }
        let Some(mut seg) = self.segments.take(&key, now) else {
            return;
        };
        seg.prune(now.0, self.host_ttl, self.announce_ttl);
        self.add_member(&mut seg, host, now, out);
        seg.inserted = now.0;
        self.segments.insert(key, seg, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bt::test_support::{datagram, udp_datagrams, Datagram};

    // Spec §10 LSD-R1 (REAL, nDPI `bt_search.pcap` frame 1, 192.168.0.102:6771 →
    // 239.192.152.143:6771, 119 bytes, no cookie, uppercase hex).
    const R1: &[u8] = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 61197\r\nInfohash: ED4F1085E885F98F9A69B70EE89EB988B8FD9115\r\n\r\n\r\n";
    const GROUP: &str = "239.192.152.143:6771";
    const ANNOUNCER: &str = "192.168.0.102:6771";

    fn feed(t: &mut Lsd, d: &Datagram) -> Vec<PredictedPeer> {
        let (ev, udp) = d.event();
        let mut out = Vec::new();
        if looks_like_lsd(ev.dst, udp.head) {
            t.on_udp(&ev, &udp, &mut out);
        }
        out
    }

    fn note(t: &mut Lsd, host: &str, ts_s: u64) -> Vec<PredictedPeer> {
        let mut out = Vec::new();
        t.note_host(
            host.parse().unwrap(),
            Timestamp(ts_s * 1_000_000_000),
            &mut out,
        );
        out
    }

    /// (host, peer, transport) of each prediction.
    fn triples(out: &[PredictedPeer]) -> Vec<String> {
        out.iter()
            .map(|p| {
                assert_eq!(p.channel, Channel::Lsd);
                format!("{} {} {:?}", p.host, p.peer, p.transport)
            })
            .collect()
    }

    fn announce(port: u16, ih: &str) -> Vec<u8> {
        format!(
            "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: {port}\r\nInfohash: {ih}\r\ncookie: 1a2b\r\n\r\n\r\n"
        )
        .into_bytes()
    }

    const IH: &str = "ed4f1085e885f98f9a69b70ee89eb988b8fd9115";

    fn replay(rel: &str) -> (Lsd, Vec<PredictedPeer>) {
        let mut t = Lsd::new(LsdConfig::default());
        let mut out = Vec::new();
        for d in udp_datagrams(rel) {
            out.extend(feed(&mut t, &d));
        }
        (t, out)
    }

    #[test]
    fn spec_r1_announce() {
        assert_eq!(R1.len(), 119);
        assert!(looks_like_lsd(GROUP.parse().unwrap(), R1));
        let a = parse(R1).unwrap();
        assert_eq!(a.port, 61197);
        assert_eq!(a.host, Some(&b"239.192.152.143:6771"[..]));
        assert_eq!(a.cookie, None);
        assert_eq!(
            a.infohashes_hex(),
            [&b"ED4F1085E885F98F9A69B70EE89EB988B8FD9115"[..]]
        );
        let ih: Vec<[u8; 20]> = a.infohashes().collect();
        assert_eq!(ih[0][..4], [0xed, 0x4f, 0x10, 0x85]);
        assert_eq!(ih[0][19], 0x15);
        assert_eq!(a.invalid_infohashes, 0);
    }

    // Expected numbers of the capture tests come from tshark 4.0.17:
    // `tshark -r FILE -Y 'udp.dstport==6771 && !icmp' -T fields -e ip.src -e ipv6.src -e ip.dst
    //  -e ipv6.dst | sort | uniq -c`, and the payloads read with `-e udp.payload | xxd -r -p`.

    #[test]
    fn bt_search_capture() {
        // Two identical announces (LSD-R1) to the IPv4 group, the only host of its segment:
        // nobody to predict for.
        let all = udp_datagrams("ntop-nDPI/bt_search.pcap");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].head, R1);
        let (t, out) = replay("ntop-nDPI/bt_search.pcap");
        let s = t.stats();
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!((s.to_group, s.not_to_group, s.infohashes), (2, 0, 2));
        assert_eq!((s.hosts_added, s.segments.len), (1, 1));
        assert!(out.is_empty());
    }

    #[test]
    fn mercury_and_vut_captures_with_cookies_ipv6_and_broadcast_copies() {
        // mercury bittorrent.pcap: 9 announces of 10.10.0.34 (port 53808, lowercase infohash,
        // cookie 7e16ba75): 3 to the IPv4 group, 1 to 10.10.0.63 (the broadcast of its /26), 3
        // from fe80::19e7:f29:9efa:a829 and 2 from ::1 to the IPv6 group. The loopback copies
        // name no dialable peer.
        let (t, out) = replay("cisco-mercury/bittorrent.pcap");
        let s = t.stats();
        assert_eq!((s.counts.seen, s.counts.parsed), (9, 7));
        assert_eq!(s.counts.rejected, [("unusable_source", 2)].into());
        assert_eq!((s.to_group, s.not_to_group), (6, 1));
        assert_eq!((s.hosts_added, s.segments.len), (2, 2));
        assert!(out.is_empty());
        let d = udp_datagrams("cisco-mercury/bittorrent.pcap")
            .into_iter()
            .find(|d| d.dst.port() == PORT)
            .unwrap();
        let a = parse(&d.head).unwrap();
        assert_eq!((a.port, a.cookie), (53808, Some(&b"7e16ba75"[..])));
        assert_eq!(
            a.infohashes_hex(),
            [&b"6af7c9da45ab32cfcdd83cf63477f85736547613"[..]]
        );
        // VUT-PDS small.pcap (qBittorrent): 42 announces of port 8999 over two infohashes: 15
        // to the IPv4 group and 2 to 192.168.38.255 from 192.168.38.130, 15 from
        // fe80::8629:e03c:a198:19e0 and 10 from ::1 to the IPv6 group.
        let (t, out) = replay("terezaburianova-VUT-PDS/small.pcap");
        let s = t.stats();
        assert_eq!((s.counts.seen, s.counts.parsed), (42, 32));
        assert_eq!(s.counts.rejected, [("unusable_source", 10)].into());
        assert_eq!((s.to_group, s.not_to_group, s.infohashes), (30, 2, 32));
        assert!(out.is_empty());
    }

    #[test]
    fn members_of_the_segment_learn_the_announced_port() {
        let all = udp_datagrams("ntop-nDPI/bt_search.pcap");
        let t0 = all[0].ts.0 / 1_000_000_000;
        let mut t = Lsd::new(LsdConfig::default());
        // Before any announce no segment is tracked: BitTorrent hosts are not remembered.
        assert!(note(&mut t, "192.168.0.7", t0 - 1).is_empty());
        assert_eq!(t.stats().segments.len, 0);
        assert!(feed(&mut t, &all[0]).is_empty());
        // A member seen after the announce gets it then; a host of another /24 does not.
        let late = note(&mut t, "192.168.0.7", t0 + 1);
        assert_eq!(
            triples(&late),
            [
                "192.168.0.7 192.168.0.102:61197 Tcp",
                "192.168.0.7 192.168.0.102:61197 Udp"
            ]
        );
        assert!(note(&mut t, "192.168.1.7", t0 + 1).is_empty());
        assert!(note(&mut t, "192.168.0.7", t0 + 2).is_empty(), "once");
        // The next announce predicts for every live member but the announcer.
        note(&mut t, "192.168.0.8", t0 + 3);
        let mut second = all[1].clone();
        second.ts = Timestamp((t0 + 4) * 1_000_000_000);
        let out = feed(&mut t, &second);
        assert_eq!(out.len(), 4);
        assert!(out
            .iter()
            .all(|p| p.peer.to_string() == "192.168.0.102:61197" && p.host != p.peer.ip()));
        let s = t.stats();
        assert_eq!((s.predicted, s.predicted_late), (8, 4));
        assert_eq!(s.hosts_added, 3);
    }

    #[test]
    fn two_announcers_learn_each_other() {
        let mut t = Lsd::new(LsdConfig::default());
        let a = datagram("10.1.2.3:6771", GROUP, 0, &announce(51413, IH));
        let b = datagram("10.1.2.4:40000", GROUP, 5, &announce(6881, IH));
        assert!(feed(&mut t, &a).is_empty());
        assert_eq!(
            triples(&feed(&mut t, &b)),
            [
                "10.1.2.4 10.1.2.3:51413 Tcp",
                "10.1.2.4 10.1.2.3:51413 Udp",
                "10.1.2.3 10.1.2.4:6881 Tcp",
                "10.1.2.3 10.1.2.4:6881 Udp",
            ]
        );
        // IPv6: the /64 of a link-local announcer.
        let v6 = datagram(
            "[fe80::1]:6771",
            "[ff15::efc0:988f]:6771",
            6,
            &announce(7000, IH),
        );
        assert!(feed(&mut t, &v6).is_empty());
        assert_eq!(
            triples(&note(&mut t, "fe80::2", 7))[0],
            "fe80::2 [fe80::1]:7000 Tcp"
        );
        assert!(note(&mut t, "fe80:0:0:1::2", 7).is_empty(), "another /64");
    }

    #[test]
    fn members_and_announces_expire() {
        let mut t = Lsd::new(LsdConfig::default());
        feed(
            &mut t,
            &datagram("10.1.2.3:6771", GROUP, 0, &announce(51413, IH)),
        );
        note(&mut t, "10.1.2.9", 1);
        // Past announce_ttl (600 s) a new member is not given the old announce.
        assert!(note(&mut t, "10.1.2.10", 700).is_empty());
        // Past host_ttl (1800 s) a member is not predicted for by a new announce; one seen
        // since is.
        let out = feed(
            &mut t,
            &datagram("10.1.2.3:6771", GROUP, 1_900, &announce(51413, IH)),
        );
        assert_eq!(
            triples(&out),
            [
                "10.1.2.10 10.1.2.3:51413 Tcp",
                "10.1.2.10 10.1.2.3:51413 Udp"
            ]
        );
        // A member that went stale and returns is new again: it gets the live announce.
        assert_eq!(note(&mut t, "10.1.2.9", 1_901).len(), 2);
        // An idle segment leaves the table.
        t.expire(Timestamp(10_000 * 1_000_000_000));
        assert_eq!(t.stats().segments.len, 0);
        assert_eq!(t.stats().segments.expired, 1);
    }

    #[test]
    fn state_and_work_are_bounded() {
        let mut t = Lsd::new(LsdConfig {
            max_segments: 2,
            max_hosts_per_segment: 8,
            max_announcers_per_segment: 4,
            ..Default::default()
        });
        feed(
            &mut t,
            &datagram("10.1.2.3:6771", GROUP, 0, &announce(51413, IH)),
        );
        for i in 0..100 {
            note(&mut t, &format!("10.1.2.{}", 10 + i), 1);
        }
        assert_eq!(t.stats().hosts_evicted, 100 + 1 - 8);
        // Each announce predicts for at most 8 - 1 members; each new member gets at most 4
        // announces.
        for port in 1000..1010u16 {
            let out = feed(
                &mut t,
                &datagram("10.1.2.3:6771", GROUP, 2, &announce(port, IH)),
            );
            assert!(out.len() <= 2 * 7, "{}", out.len());
        }
        assert_eq!(t.stats().announcers_evicted, 11 - 4);
        assert!(note(&mut t, "10.1.2.250", 3).len() <= 2 * 4);
        // A third segment evicts the oldest.
        for net in ["10.9.0.1:6771", "10.9.1.1:6771"] {
            feed(&mut t, &datagram(net, GROUP, 4, &announce(51413, IH)));
        }
        let s = t.stats();
        assert_eq!((s.segments.len, s.segments.evicted), (2, 1));
    }

    #[test]
    fn malformed_announces_are_rejected_with_a_reason() {
        let head = "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n";
        let ok = |extra: &str| format!("{head}{extra}\r\n\r\n");
        let ih = format!("Infohash: {IH}\r\n");
        let cases: Vec<(String, Result<u16, Reject>)> = vec![
            (ok(&format!("Port: 6881\r\n{ih}")), Ok(6881)),
            (ok(&format!("port:6881 \r\n{ih}")), Ok(6881)),
            (ok(&format!("PORT: 65534\r\n{ih}")), Ok(65534)),
            (ok(&format!("Port: 1\r\n{ih}")), Ok(1)),
            (ok(&format!("Port: 0\r\n{ih}")), Err(Reject::BadPort)),
            (ok(&format!("Port: 65535\r\n{ih}")), Err(Reject::BadPort)),
            (ok(&format!("Port: 99999\r\n{ih}")), Err(Reject::BadPort)),
            (
                ok(&format!("Port: 000006881\r\n{ih}")),
                Err(Reject::BadPort),
            ),
            (ok(&format!("Port: +6881\r\n{ih}")), Err(Reject::BadPort)),
            (ok(&format!("Port: 68a1\r\n{ih}")), Err(Reject::BadPort)),
            (
                ok(&format!("Port: 6881 6882\r\n{ih}")),
                Err(Reject::BadPort),
            ),
            (ok(&format!("Port:\r\n{ih}")), Err(Reject::BadPort)),
            (ok(&ih), Err(Reject::MissingPort)),
            (
                ok(&format!("Port: 1\r\nPort: 2\r\n{ih}")),
                Err(Reject::DuplicatePort),
            ),
            (ok("Port: 6881\r\n"), Err(Reject::NoInfohash)),
            (
                ok("Port: 6881\r\nInfohash: 0000000000000000000000000000000000000000\r\n"),
                Err(Reject::NoInfohash),
            ),
            (
                ok("Port: 6881\r\nInfohash: ed4f1085e885f98f9a69b70ee89eb988b8fd911\r\n"),
                Err(Reject::NoInfohash),
            ),
            (
                ok("Port: 6881\r\nInfohash: gd4f1085e885f98f9a69b70ee89eb988b8fd9115\r\n"),
                Err(Reject::NoInfohash),
            ),
            (
                format!("bt-search * HTTP/1.1\r\nPort: 6881\r\n{ih}\r\n"),
                Ok(6881),
            ),
            (
                format!("BT-SEARCHING * HTTP/1.1\r\nPort: 6881\r\n{ih}\r\n"),
                Err(Reject::BadMethod),
            ),
            (
                format!("BT-SEARCH * HTTP/2.0\r\nPort: 6881\r\n{ih}\r\n"),
                Err(Reject::NotHttp),
            ),
            (
                format!("BT-SEARCH *\r\nPort: 6881\r\n{ih}\r\n"),
                Err(Reject::NotHttp),
            ),
            (
                format!("BT-SEARCH * HTTP/1.1\r\nPort 6881\r\n{ih}\r\n"),
                Err(Reject::NotHttp),
            ),
            (
                format!("BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\nX: a\0b\r\n{ih}\r\n"),
                Err(Reject::NotHttp),
            ),
            (
                format!("BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\n{ih}"),
                Err(Reject::Unterminated),
            ),
            (
                format!("{head}Port: 6881\r\n{ih}{}\r\n", "X: y\r\n".repeat(40)),
                Err(Reject::TooManyHeaders),
            ),
        ];
        for (raw, want) in &cases {
            assert_eq!(parse(raw.as_bytes()).map(|a| a.port), *want, "{raw:?}");
        }
        // Several infohashes, one invalid and skipped; obs-text in a cookie is accepted.
        let mut raw = format!("{head}Port: 6881\r\n{ih}Infohash: xyz\r\nInfohash: ").into_bytes();
        raw.extend_from_slice(
            b"0123456789abcdef0123456789ABCDEF01234567\r\ncookie: \xff\xfe\r\n\r\n",
        );
        let a = parse(&raw).unwrap();
        assert_eq!((a.infohashes().count(), a.invalid_infohashes), (2, 1));
        assert_eq!(a.cookie, Some(&b"\xff\xfe"[..]));
        // The most infohashes a header array holds.
        let many = format!(
            "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n{}\r\n",
            ih.repeat(MAX_HEADERS - 1)
        );
        assert_eq!(
            parse(many.as_bytes()).unwrap().infohashes().count(),
            MAX_HEADERS - 1
        );
    }

    #[test]
    fn channel_counts_rejects_and_truncation() {
        let mut t = Lsd::new(LsdConfig::default());
        let mut d = datagram(ANNOUNCER, GROUP, 0, &R1[..60]);
        d.payload_len = R1.len() as u16;
        feed(&mut t, &d);
        feed(&mut t, &datagram(ANNOUNCER, GROUP, 0, &R1[..60]));
        feed(&mut t, &datagram("0.0.0.0:6771", GROUP, 0, R1));
        feed(
            &mut t,
            &datagram("[::1]:6771", "[ff15::efc0:988f]:6771", 0, R1),
        );
        feed(&mut t, &datagram("224.0.0.1:6771", GROUP, 0, R1));
        let s = t.stats();
        assert_eq!(s.counts.seen, 5);
        assert_eq!(
            s.counts.rejected,
            [
                ("incomplete", 1),
                ("unterminated", 1),
                ("unusable_source", 3)
            ]
            .into()
        );
        assert_eq!(s.segments.len, 0);
        for cut in 0..=R1.len() {
            let _ = parse(&R1[..cut]);
        }
    }

    #[test]
    fn precheck_and_segments() {
        let group: SocketAddr = GROUP.parse().unwrap();
        assert!(looks_like_lsd(group, b"bt-search * HTTP/1.1\r\n"));
        assert!(looks_like_lsd("192.168.38.255:6771".parse().unwrap(), R1));
        assert!(!looks_like_lsd("239.192.152.143:6772".parse().unwrap(), R1));
        assert!(!looks_like_lsd(group, b"BT-SEARC"));
        assert!(!looks_like_lsd(group, b"NOTIFY * HTTP/1.1\r\n"));
        assert!(is_group(group.ip()) && is_group("ff15::efc0:988f".parse().unwrap()));
        let seg = |ip: &str, p4, p6| segment_of(ip.parse().unwrap(), p4, p6).to_string();
        assert_eq!(seg("192.168.38.130", 24, 64), "192.168.38.0");
        assert_eq!(seg("10.10.0.34", 26, 64), "10.10.0.0");
        assert_eq!(seg("10.10.0.34", 0, 64), "0.0.0.0");
        assert_eq!(seg("10.10.0.34", 99, 64), "10.10.0.34");
        assert_eq!(seg("fe80::8629:e03c:a198:19e0", 24, 64), "fe80::");
        assert_eq!(seg("2001:db8:1:2:3::4", 24, 48), "2001:db8:1::");
        assert_eq!(seg("2001:db8::4", 24, 200), "2001:db8::4");
    }
}
