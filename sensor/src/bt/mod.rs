//! BitTorrent coordination traffic, read to predict the connections each host will attempt:
//! one module per channel, each implementing [`Channel`] and listed once in [`registry`]. UDP
//! channels read single datagrams; the TCP channels (HTTP tracker, peer wire) read the streams
//! [`stream::TcpStreams`] rebuilds from the payloads of the flows the pre-filter marked, and
//! the peer wire also the uTP streams [`utp_stream::UtpStreams`] rebuilds from uTP DATA
//! packets.
//!
//! Parsers are pure functions over borrowed bytes; each channel's state (transactions awaiting
//! their response, LSD segments and their BitTorrent hosts, peer-wire connections) lives in
//! bounded, expiring tables.
//!
//! **Which channel reads a datagram.** Every forwarded UDP datagram goes through the channels'
//! shape checks in registry order (KRPC, BEP 15, uTP, LSD, Vuze DHT), a few byte comparisons
//! each, and the first that claims it reads it; non-BitTorrent UDP costs only the checks. The
//! shapes are nearly disjoint: KRPC opens with `d`, an LSD announce with `BT-SEARCH` (`B`),
//! BEP 15 responses with a 0 byte, none of which a uTP header (first byte `0x01`..`0x41`, BEP 29)
//! has. A uTP packet whose `timestamp_difference` (bytes 8–11) happens to read as BEP 15 action
//! 1 or 2 at a request's length goes to the tracker channel, which rejects it; a uTP SYN
//! (difference 0) never has a request's shape, so every SYN reaches the uTP channel. Vuze DHT
//! requests open with an MSB-set byte and carry action 1024..1039 at offset 8 (BEP 15 requests:
//! 0..3); its replies open `00 00 04 xx` with xx a reply action, which no BEP 15 response
//! (`00 00 00 0x`), connect request (`00 00 04 17`), KRPC, LSD or uTP header matches.
//!
//! Whichever channel claims it, a datagram with the uTP shape ([`utp::looks_like_utp`]) also
//! goes to the uTP stream reader, whose peer-wire streams reach the peer-wire channel like
//! TCP's.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::event::{PacketEvent, TcpSegment, UdpDatagram};
use crate::predict::{PredictedPeer, RetractedPeer};
use crate::time::Timestamp;

mod bdecode;
mod bounded;
pub mod channel;
pub mod dht;
pub mod http_tracker;
pub mod lsd;
pub mod peer_wire;
pub mod stream;
pub mod udp_tracker;
pub mod utp;
pub mod utp_stream;
pub mod vuze_dht;
pub mod wire;

pub use bounded::FairStats;
pub(crate) use bounded::{Bounded, Fairness};
pub use channel::{Channel, Learnt, Sender};

/// Tunables of every channel.
#[derive(Clone, Debug, Default)]
pub struct CoordinationConfig {
    pub dht: dht::DhtConfig,
    pub udp_tracker: udp_tracker::UdpTrackerConfig,
    pub utp: utp::UtpConfig,
    pub lsd: lsd::LsdConfig,
    pub vuze_dht: vuze_dht::VuzeDhtConfig,
    pub streams: stream::StreamConfig,
    pub utp_streams: utp_stream::UtpStreamConfig,
    pub http_tracker: http_tracker::HttpTrackerConfig,
    pub peer_wire: peer_wire::PeerWireConfig,
}

/// Every coordination channel, in the order their shape checks are tried. Adding a channel is
/// one module and one line here.
pub fn registry(config: &CoordinationConfig) -> Vec<Box<dyn Channel>> {
    vec![
        Box::new(dht::DhtTracker::new(config.dht.clone())),
        Box::new(udp_tracker::UdpTracker::new(config.udp_tracker.clone())),
        Box::new(utp::Utp::new(config.utp.clone())),
        Box::new(lsd::Lsd::new(config.lsd.clone())),
        Box::new(vuze_dht::VuzeDht::new(config.vuze_dht.clone())),
        Box::new(http_tracker::HttpTracker::new(config.http_tracker.clone())),
        Box::new(peer_wire::PeerWire::new(config.peer_wire.clone())),
    ]
}

/// The coordination channels of every host seen, and the TCP and uTP stream reassembly that
/// feeds the stream channels.
#[derive(Debug)]
pub struct Coordination {
    channels: Vec<Box<dyn Channel>>,
    streams: stream::TcpStreams,
    utp_streams: utp_stream::UtpStreams,
    udp_datagrams: u64,
    /// What channels learnt while [`Coordination::expire`] closed streams, handed out with
    /// the next message.
    deferred: Vec<PredictedPeer>,
    deferred_retracted: Vec<RetractedPeer>,
}

/// Hands a stream event to the channel that reads streams of `class`.
fn route(
    channels: &mut [Box<dyn Channel>],
    class: stream::StreamClass,
    event: &stream::StreamEvent<'_>,
    learnt: &mut Learnt<'_>,
) {
    if let Some(c) = channels
        .iter_mut()
        .find(|c| c.stream_class() == Some(class))
    {
        c.on_stream(event, learnt);
    }
}

impl Default for Coordination {
    fn default() -> Self {
        Self::new(&CoordinationConfig::default())
    }
}

impl Coordination {
    pub fn new(config: &CoordinationConfig) -> Self {
        Self {
            channels: registry(config),
            streams: stream::TcpStreams::new(config.streams.clone()),
            utp_streams: utp_stream::UtpStreams::new(config.utp_streams.clone()),
            udp_datagrams: 0,
            deferred: Vec::new(),
            deferred_retracted: Vec::new(),
        }
    }

    /// Reads one UDP datagram: the first channel that claims it, and, for a datagram with the
    /// uTP shape, the uTP stream reader, whose peer-wire streams go to the peer-wire channel.
    /// Predictions are appended to `out`; PEX `dropped` entries (ut_pex over uTP) to
    /// `retracted`.
    pub fn on_udp(
        &mut self,
        ev: &PacketEvent<'_>,
        udp: &UdpDatagram<'_>,
        out: &mut Vec<PredictedPeer>,
        retracted: &mut Vec<RetractedPeer>,
    ) {
        self.udp_datagrams += 1;
        out.append(&mut self.deferred);
        retracted.append(&mut self.deferred_retracted);
        let Self {
            channels,
            utp_streams,
            ..
        } = self;
        let mut learnt = Learnt {
            predictions: out,
            retracted,
        };
        if let Some(reader) = channels.iter_mut().find(|c| c.claims(ev, udp)) {
            if reader.on_udp(ev, udp, &mut learnt) == Sender::BitTorrent {
                // The sender showed itself a BitTorrent client: a member of its LAN segment
                // for LSD (BEP 14), whichever channel told.
                for c in channels.iter_mut() {
                    c.on_bittorrent_host(ev.src.ip(), ev.ts, &mut learnt);
                }
            }
        }
        if utp::looks_like_utp(udp.head) {
            utp_streams.on_datagram(ev.src, ev.dst, ev.ts, udp, |event| {
                route(channels, stream::StreamClass::PeerWire, &event, &mut learnt);
            });
        }
    }

    /// Reads one forwarded TCP segment: payloads of the flows the pre-filter marked (HTTP
    /// tracker, peer wire), and FIN/RST ending them. Predictions are appended to `out`; PEX
    /// `dropped` entries to `retracted`.
    pub fn on_tcp(
        &mut self,
        ev: &PacketEvent<'_>,
        seg: &TcpSegment<'_>,
        out: &mut Vec<PredictedPeer>,
        retracted: &mut Vec<RetractedPeer>,
    ) {
        out.append(&mut self.deferred);
        retracted.append(&mut self.deferred_retracted);
        if seg.head.is_empty() && !(seg.flags.fin() || seg.flags.rst()) {
            return;
        }
        let Self {
            streams, channels, ..
        } = self;
        let mut learnt = Learnt {
            predictions: out,
            retracted,
        };
        streams.on_segment(ev, seg, |class, event| {
            route(channels, class, &event, &mut learnt);
        });
    }

    /// Drops state that has outlived its TTL (also done lazily as messages arrive). uTP
    /// connections that expire are closed for the peer wire.
    pub fn expire(&mut self, now: Timestamp) {
        self.streams.expire(now);
        let Self {
            channels,
            utp_streams,
            deferred,
            deferred_retracted,
            ..
        } = self;
        let mut learnt = Learnt {
            predictions: deferred,
            retracted: deferred_retracted,
        };
        utp_streams.expire(now, |event| {
            route(channels, stream::StreamClass::PeerWire, &event, &mut learnt);
        });
        for c in channels.iter_mut() {
            c.expire(now);
        }
    }

    /// The registered channels, in registry order.
    pub fn channels(&self) -> impl Iterator<Item = &dyn Channel> {
        self.channels.iter().map(AsRef::as_ref)
    }

    /// One channel, for its own statistics (`coordination.channel::<dht::DhtTracker>()`).
    pub fn channel<C: Channel>(&self) -> Option<&C> {
        self.channels().find_map(|c| c.downcast_ref::<C>())
    }

    /// Messages seen, parsed and rejected, under every counted name of every channel.
    pub fn counts(&self) -> Vec<(&'static str, ChannelCounts)> {
        let mut out = Vec::new();
        for c in self.channels() {
            c.counts(&mut |name, counts| out.push((name, counts.clone())));
        }
        out
    }

    /// Everything the channels read but did not use: (channel, list, reason, count).
    pub fn drops(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for c in self.channels() {
            let channel = c.name();
            c.drops(&mut |list, reason, n| out.push((channel, list, reason, n)));
        }
        // The stream readers' tables, by fair shares (`bounded`).
        let utp = self.utp_streams.stats();
        for (channel, list, fair) in [
            ("tcp_streams", "connections", self.streams.stats().fair),
            ("utp_streams", "connections", utp.conns_fair),
            ("utp_streams", "syns", utp.syns_fair),
        ] {
            for (reason, n) in fair.drops() {
                out.push((channel, list, reason, n));
            }
        }
        out
    }

    /// The bounded tables: the stream reassemblers', then every channel's.
    pub fn tables(&self) -> Vec<(&'static str, TableStats)> {
        let mut out = vec![("tcp_streams", self.streams.stats().conns)];
        out.extend(self.utp_streams.tables());
        for c in self.channels() {
            c.tables(&mut |name, stats| out.push((name, stats)));
        }
        out
    }

    /// The stream reassembler's counters.
    pub fn stream_stats(&self) -> stream::StreamStats {
        self.streams.stats()
    }

    /// The uTP stream reader's counters.
    pub fn utp_stream_stats(&self) -> utp_stream::UtpStreamStats {
        self.utp_streams.stats()
    }

    /// UDP datagrams offered to [`Coordination::on_udp`].
    pub fn udp_datagrams(&self) -> u64 {
        self.udp_datagrams
    }

    /// Every counter of every channel, by channel name (`peers --stats --json`).
    pub fn stats_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("udp_datagrams".into(), self.udp_datagrams.into());
        m.insert(
            "streams".into(),
            serde_json::to_value(self.streams.stats()).unwrap_or_default(),
        );
        m.insert(
            "utp_streams".into(),
            serde_json::to_value(self.utp_streams.stats()).unwrap_or_default(),
        );
        for c in self.channels() {
            m.insert(c.name().into(), c.stats_json());
        }
        serde_json::Value::Object(m)
    }

    /// The one-line summaries of `sensor peers --stats`: the stream reassemblers', then those
    /// of the channels that have one.
    pub fn summaries(&self) -> Vec<String> {
        [self.streams.summary(), self.utp_streams.summary()]
            .into_iter()
            .chain(self.channels().filter_map(Channel::summary))
            .collect()
    }
}

/// What every channel counts: datagrams that passed its shape check (`seen`), those that parsed
/// into a message it could use (`parsed`), and the rest by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChannelCounts {
    pub seen: u64,
    pub parsed: u64,
    pub rejected: BTreeMap<&'static str, u64>,
}

impl ChannelCounts {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub(crate) fn reject(&mut self, reason: &'static str) {
        *self.rejected.entry(reason).or_default() += 1;
    }

    /// Counts the outcome of one datagram that was `seen`: parsed, or rejected for a reason.
    pub(crate) fn record(&mut self, result: Result<(), &'static str>) {
        match result {
            Ok(()) => self.parsed += 1,
            Err(reason) => self.reject(reason),
        }
    }
}

/// What happened to the endpoints a message listed: how many were decoded and why the others
/// did not become predictions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EntryCounts {
    /// Entries decoded (before the filters below).
    pub decoded: u64,
    /// Entries of a length no format has, or trailing bytes after the last whole entry.
    pub malformed: u64,
    /// Port 0 or an unspecified address: nothing can be contacted there.
    pub unusable: u64,
    /// The learner itself (its address as seen, or as the peer reported it).
    pub own_address: u64,
    /// Left unread past the per-message cap.
    pub capped: u64,
    /// Past the captured head of the datagram (the snap length cut them off).
    pub beyond_snap: u64,
}

impl EntryCounts {
    /// The entries that did not become predictions, by reason (for [`Channel::drops`]).
    pub fn drops(&self) -> [(&'static str, u64); 5] {
        [
            ("malformed", self.malformed),
            ("unusable", self.unusable),
            ("own_address", self.own_address),
            ("capped", self.capped),
            ("beyond_snap", self.beyond_snap),
        ]
    }

    pub(crate) fn add(&mut self, o: &EntryCounts) {
        self.decoded += o.decoded;
        self.malformed += o.malformed;
        self.unusable += o.unusable;
        self.own_address += o.own_address;
        self.capped += o.capped;
        self.beyond_snap += o.beyond_snap;
    }
}

/// Occupancy and losses of a bounded state table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableStats {
    pub len: u64,
    /// Dropped to make room (the oldest first).
    pub evicted: u64,
    /// Dropped because they outlived the TTL.
    pub expired: u64,
    /// Of `evicted`, those whose pending evidence was reported before the entry was dropped
    /// (`connections`: unanswered SYNs reported as failed attempts, `evicted_as_failed`).
    pub evicted_reported: u64,
}

/// Why a bencoded value did not decode, in the reasons every channel reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BencodeFault {
    /// The data ends before the last value does.
    Truncated,
    TrailingData,
    /// A string's declared length runs past the end of the data.
    LengthBeyondEnd,
    TooDeep,
    DuplicateKey,
    /// Not bencode (bad integer, bad byte, non-string key...).
    Syntax,
}

/// Decodes `data` as one bencoded value into a tree (`torrust-tracker-contrib-bencode`):
/// nesting capped at `max_depth`, keys accepted in any order (real KRPC and extension dicts are
/// not always sorted: libtorrent and uTorrent emit them in insertion order despite BEP 3),
/// duplicate keys and trailing bytes rejected. The channels read bencode in one pass with
/// [`bdecode`]; this independent decoder, and the channels' former readings over its tree, are
/// the reference the tests hold that pass to, fault class by fault class.
#[cfg(test)]
pub(crate) fn decode_bencode(
    data: &[u8],
    max_depth: usize,
) -> Result<bencode::BencodeRef<'_>, BencodeFault> {
    use bencode::BencodeParseError as E;
    let opts = bencode::BDecodeOpt::new(max_depth, false, true);
    bencode::BencodeRef::decode(data, opts).map_err(|e| match e {
        E::BytesEmpty { pos } if pos >= data.len() => BencodeFault::Truncated,
        E::BytesEmpty { .. } => BencodeFault::TrailingData,
        // An integer or length still being written when the data ends is a truncation; a
        // missing delimiter anywhere else (e.g. a non-string key) is not bencode.
        E::InvalidIntNoDelimiter { pos } => {
            let rest = data.get(pos..).unwrap_or_default();
            if rest.iter().all(|b| b.is_ascii_digit() || *b == b'-') {
                BencodeFault::Truncated
            } else {
                BencodeFault::Syntax
            }
        }
        E::InvalidLengthOverflow { .. } => BencodeFault::LengthBeyondEnd,
        E::InvalidRecursionExceeded { .. } => BencodeFault::TooDeep,
        E::InvalidKeyDuplicates { .. } => BencodeFault::DuplicateKey,
        _ => BencodeFault::Syntax,
    })
}

/// Each channel's `Reject` carries the bencode faults under the same names.
macro_rules! from_bencode_fault {
    ($reject:ty) => {
        impl From<super::BencodeFault> for $reject {
            fn from(f: super::BencodeFault) -> Self {
                match f {
                    super::BencodeFault::Truncated => Self::Truncated,
                    super::BencodeFault::TrailingData => Self::TrailingData,
                    super::BencodeFault::LengthBeyondEnd => Self::LengthBeyondEnd,
                    super::BencodeFault::TooDeep => Self::TooDeep,
                    super::BencodeFault::DuplicateKey => Self::DuplicateKey,
                    super::BencodeFault::Syntax => Self::Syntax,
                }
            }
        }
    };
}
pub(crate) use from_bencode_fault;

/// Why an endpoint a message listed is no prediction, if it is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unfit {
    Unusable,
    OwnAddress,
}

/// Entries no host can be expected to contact: port 0 or an unspecified address (nothing
/// listens there), and the learner itself (trackers and DHT nodes echo the asker back). `own` is the learner's address as another
/// host reported it (BEP 42 `ip`), when the message carried one.
pub(crate) fn unfit(peer: SocketAddr, learner: IpAddr, own: Option<IpAddr>) -> Option<Unfit> {
    if peer.port() == 0 || peer.ip().is_unspecified() {
        Some(Unfit::Unusable)
    } else if peer.ip() == learner || Some(peer.ip()) == own {
        Some(Unfit::OwnAddress)
    } else {
        None
    }
}

impl EntryCounts {
    pub(crate) fn count_unfit(&mut self, why: Unfit) {
        match why {
            Unfit::Unusable => self.unusable += 1,
            Unfit::OwnAddress => self.own_address += 1,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Datagrams for the channel tests: built from bytes, or read from the corpus captures (only
    //! from tests inside `corpus` modules, see [`crate::test_support`]).
    use std::net::SocketAddr;

    use crate::capture::pcap::prefilter_file;
    use crate::event::{PacketEvent, Transport, UdpDatagram};
    use crate::time::Timestamp;

    pub use crate::test_support::unhex;

    /// One forwarded UDP datagram, owned so tests can index them by frame.
    #[derive(Clone, Debug)]
    pub struct Datagram {
        pub ts: Timestamp,
        pub src: SocketAddr,
        pub dst: SocketAddr,
        pub payload_len: u16,
        pub head: Vec<u8>,
    }

    impl Datagram {
        pub fn event(&self) -> (PacketEvent<'_>, UdpDatagram<'_>) {
            let udp = UdpDatagram {
                payload_len: self.payload_len,
                head: &self.head,
            };
            let ev = PacketEvent {
                ts: self.ts,
                src: self.src,
                dst: self.dst,
                vlan_depth: 0,
                transport: Transport::Udp(udp),
            };
            (ev, udp)
        }
    }

    /// The UDP datagrams of a corpus capture, as the pre-filter forwards them.
    pub fn udp_datagrams(rel: &str) -> Vec<Datagram> {
        let mut out = Vec::new();
        // Every datagram (the full UDP policy): these tests are about the readers.
        let full = crate::capture::pcap::FilterConfig {
            snaplen: 1472,
            udp_policy: sensor_ebpf::udp_policy::FULL,
        };
        prefilter_file(&crate::test_support::corpus(rel), full, |ev| {
            if let Transport::Udp(u) = ev.transport {
                out.push(Datagram {
                    ts: ev.ts,
                    src: ev.src,
                    dst: ev.dst,
                    payload_len: u.payload_len,
                    head: u.head.to_vec(),
                });
            }
        })
        .unwrap();
        out
    }

    /// Runs `agree` on `data`, each of its prefixes, and `rounds` mutations of it (which mostly
    /// keep it bencode but change types, lengths and keys): a channel's one-pass reading and
    /// its reference reading must agree on each.
    pub fn differential(
        data: &[u8],
        rng: &mut XorShift,
        rounds: usize,
        mut agree: impl FnMut(&[u8]),
    ) {
        agree(data);
        for cut in 0..data.len() {
            agree(&data[..cut]);
        }
        for _ in 0..rounds {
            agree(&mutate(data, rng));
        }
    }

    /// A few bytes of state, enough to mutate inputs reproducibly (differential tests).
    pub struct XorShift(pub u64);

    impl XorShift {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        pub fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap()
        }
    }

    /// Bytes bencode gives a meaning to, so that mutations reach every fault class.
    const ALPHABET: &[u8] = b"0123456789ilde:-+x";

    /// `data` with one to three bytes replaced, inserted or removed.
    pub fn mutate(data: &[u8], rng: &mut XorShift) -> Vec<u8> {
        let mut m = data.to_vec();
        for _ in 0..=rng.below(3) {
            let at = rng.below(m.len() + 1);
            let b = ALPHABET[rng.below(ALPHABET.len())];
            match rng.below(3) {
                0 if at < m.len() => m[at] = b,
                1 => m.insert(at, b),
                _ if at < m.len() => {
                    m.remove(at);
                }
                _ => m.push(b),
            }
        }
        m
    }

    /// A datagram built from bytes (spec vectors).
    pub fn datagram(src: &str, dst: &str, ts_s: u64, bytes: &[u8]) -> Datagram {
        Datagram {
            ts: Timestamp::from_secs(ts_s),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            payload_len: u16::try_from(bytes.len()).expect("a datagram fits in 64 KiB"),
            head: bytes.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests;
