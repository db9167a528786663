//! Port/Peer Ratio (PPR): the paper's second test. A BitTorrent host contacts each peer on the
//! one port that peer listens on, and peers pick their ports at random, so it fails on about as
//! many distinct ports as distinct peers. A horizontal scan fails on one port across many peers,
//! a vertical scan on many ports of one peer.
//!
//! **Which attempts count.** For each source: the attempts the scan detector counts for it
//! (Bro's `check_scan` adds to `distinct_peers` failed attempts, S0, REJ, RSTOS0, SH and UDP
//! requests under `--udp-scan`, and established connections on services outside
//! `Hot::allow_services`), minus those prediction removed when it is on, from the first such
//! attempt until the source has been idle for `window` (15 min, as Bro's `&read_expire`). The
//! gate thus judges exactly what the detector's notice was about.
//!
//! **Scan shape.** The engine keeps a second tracker over *every* counted attempt, predicted
//! ones included, and asks [`PprSample::scan_shaped`]: a sweep of one port (or a few) over many
//! hosts, or of many ports of one host, is a scan whatever coordination announced, so neither
//! prediction nor this gate may hide it.
//!
//! **Classic** (the paper): a notice is suppressed when `lo ≤ ports / peers ≤ hi`
//! (0.75 and 1.0 by default), where `ports` and `peers` are the distinct destination ports and
//! addresses of the counted attempts.
//!
//! **Hardened**: a block scan (N hosts × the same N ports) has ports/peers = 1 and passes the
//! classic test. The hardened test also requires the attempts to pair peers and ports nearly
//! one to one, `pairs / peers ≤ max_pairs_per_peer` (1.25 by default; a block scan has N), and
//! the ports to be mostly ephemeral, `ports ≥ 1024 / ports ≥ min_high_port_share` (0.9 by
//! default; scans aim at service ports).
//!
//! **BitTorrent evidence** (beyond the paper; on by default): the gate applies only to sources
//! that coordination traffic has given peers to. Gnutella clients fail on as many ports as peers
//! too, and nothing about them is BitTorrent.
//!
//! State is bounded: at most `max_sources` sources and at most `max_bytes` of estimated memory
//! ([`PprTracker::SOURCE_BYTES`] per source, [`PprTracker::PAIR_BYTES`] per distinct pair
//! beyond a source's first), the least recently used source evicted first (a linked hash map,
//! O(1) per touch and per eviction); and at most `max_pairs` distinct pairs per source (beyond that the
//! sets stop growing and the source is marked saturated, which the hardened test treats as a
//! scan).

/// Maps and sets keyed by addresses and ports off the wire (an attacker picks them): foldhash
/// with a per-process random seed, fast and keyed.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
use crate::detect::LinkedHashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::event::Timestamp;
use crate::time;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PprMode {
    /// The paper's ratio test.
    Classic,
    /// Ratio, one-to-one pairing and ephemeral ports (resists block scans).
    Hardened,
}

#[derive(Clone, Debug)]
pub struct PprConfig {
    pub mode: PprMode,
    /// Apply the gate only to sources with BitTorrent evidence (live predictions). Other P2P
    /// protocols (Gnutella) have the same port/peer shape; without this they would be
    /// suppressed too, though nothing explains their failures.
    pub require_bittorrent: bool,
    pub lo: f64,
    pub hi: f64,
    pub max_pairs_per_peer: f64,
    pub min_high_port_share: f64,
    pub window: Duration,
    pub max_sources: usize,
    /// Memory budget of the tracker (see the module docs).
    pub max_bytes: usize,
    pub max_pairs: usize,
}

impl Default for PprConfig {
    fn default() -> Self {
        Self {
            mode: PprMode::Hardened,
            require_bittorrent: true,
            lo: 0.75,
            hi: 1.0,
            max_pairs_per_peer: 1.25,
            min_high_port_share: 0.9,
            window: Duration::from_mins(15),
            max_sources: 200_000,
            max_bytes: 64 << 20,
            max_pairs: 65_536,
        }
    }
}

/// The counts a verdict is based on.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PprSample {
    pub peers: u64,
    pub ports: u64,
    pub pairs: u64,
    pub high_ports: u64,
    pub saturated: bool,
    /// Distinct peers tried on the most tried port (a horizontal sweep: nearly all of them).
    pub top_port_peers: u64,
    /// Most distinct ports tried on one peer (a vertical sweep: many).
    pub max_peer_ports: u64,
    /// Most distinct peers that failed on one service port (below 1024), and on one other port
    /// outside BitTorrent's default listen ports: a sweep, however many decoys surround it.
    pub top_failed_service_peers: u64,
    pub top_failed_other_peers: u64,
}

/// Fewest peers tried on one port that make a horizontal sweep (with most peers on that port).
const SWEEP_MIN_PEERS: u64 = 5;
/// Fewest distinct peers failing on one service port (below 1024) that make a sweep whatever
/// else the source tried: BitTorrent peers rarely listen there, and a host's trackers on 80/443
/// answer (only failed attempts count).
const SWEEP_MIN_SERVICE_FAILURES: u64 = 10;
/// The same on any other port outside BitTorrent's default listen ports: NATed peers pick
/// their ports at random, so twenty failures on one port are a sweep, not a swarm.
const SWEEP_MIN_OTHER_FAILURES: u64 = 20;

/// The listen ports clients use unless told otherwise (libtorrent and Deluge 6881–6889, aria2
/// up to 6999, Transmission 51413): many peers of a swarm can share them.
fn is_bittorrent_default_port(port: u16) -> bool {
    (6881..=6999).contains(&port) || port == 51413
}

/// Fewest ports tried on one peer that make a vertical sweep: `scan.bro`'s
/// `possible_port_scan_thresh`, where Bro starts watching a source's ports per destination.
const SWEEP_MIN_PORTS: u64 = 20;

impl PprSample {
    /// Whether the attempts have a scan's shape, whatever coordination announced: most peers
    /// tried on one port (a horizontal sweep, of one port or of a few ports at once: every
    /// peer is tried on each), many peers failing on one port however many others surround
    /// them, or many ports of one peer (a vertical sweep). A swarm's peers
    /// listen on ports of their own choosing, so a BitTorrent host tries each peer on its one
    /// port, and few peers share a port.
    pub fn scan_shaped(&self) -> bool {
        let horizontal =
            self.top_port_peers >= SWEEP_MIN_PEERS && self.top_port_peers * 5 >= self.peers * 4;
        // Decoys can dilute a share, not a count.
        let undiluted = self.top_failed_service_peers >= SWEEP_MIN_SERVICE_FAILURES
            || self.top_failed_other_peers >= SWEEP_MIN_OTHER_FAILURES;
        horizontal || undiluted || self.max_peer_ports >= SWEEP_MIN_PORTS
    }

    pub fn ratio(&self) -> f64 {
        if self.peers == 0 {
            0.0
        } else {
            self.ports as f64 / self.peers as f64
        }
    }
}

/// One source's attempts in the window. Public, with private fields, only so that the state
/// file (`crate::state`) can save and restore it whole.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Source {
    peers: HashSet<IpAddr>,
    ports: HashSet<u16>,
    pairs: HashSet<(IpAddr, u16)>,
    /// Distinct peers per port and distinct ports per peer, with their maxima: every pair is
    /// new when counted, so both only grow until the source is reset.
    port_peers: HashMap<u16, u32>,
    peer_ports: HashMap<IpAddr, u32>,
    /// Distinct ports ≥ 1024 (kept as ports arrive, so a sample costs no scan of the set).
    high_ports: u64,
    top_port_peers: u32,
    max_peer_ports: u32,
    /// Distinct peers per port among failed attempts (a pair counts on its first attempt).
    failed_port_peers: HashMap<u16, u32>,
    top_failed_service_peers: u32,
    top_failed_other_peers: u32,
    saturated: bool,
    last: Timestamp,
}

impl Source {
    fn add(&mut self, dst: IpAddr, port: u16, failed: bool) {
        if !self.pairs.insert((dst, port)) {
            return;
        }
        if failed && !is_bittorrent_default_port(port) {
            let on_port = self.failed_port_peers.entry(port).or_default();
            *on_port += 1;
            let top = if port < 1024 {
                &mut self.top_failed_service_peers
            } else {
                &mut self.top_failed_other_peers
            };
            *top = (*top).max(*on_port);
        }
        self.peers.insert(dst);
        if self.ports.insert(port) && port >= 1024 {
            self.high_ports += 1;
        }
        let on_port = self.port_peers.entry(port).or_default();
        *on_port += 1;
        self.top_port_peers = self.top_port_peers.max(*on_port);
        let of_peer = self.peer_ports.entry(dst).or_default();
        *of_peer += 1;
        self.max_peer_ports = self.max_peer_ports.max(*of_peer);
    }
}

#[derive(Debug)]
pub struct PprTracker {
    config: PprConfig,
    /// Least recently recorded first (see [`crate::detect::LinkedHashMap`] for why a linked
    /// map).
    sources: LinkedHashMap<IpAddr, Source>,
    /// Distinct pairs over all sources (for the memory estimate).
    pairs: usize,
    /// `config.window` in packet time.
    window: time::Duration,
    now: Timestamp,
    pub evictions: u64,
}

impl PprTracker {
    /// Bytes of one source with one pair: its linked map node and slot pointer (half full), six
    /// sets and maps of one element each, allocator overhead. Measured: 884 B per source at 1 M
    /// sources (881 at 600,000; `bench --flood entry ppr_sources N`), 1,265 B before the linked
    /// map, whose half-empty slots held the whole `Source`.
    pub const SOURCE_BYTES: usize = 950;
    /// Estimated bytes per further distinct pair (one entry in up to six sets and maps, at
    /// worst just past a doubling).
    pub const PAIR_BYTES: usize = 210;

    pub fn new(config: PprConfig) -> Self {
        Self {
            window: config.window.into(),
            config,
            sources: LinkedHashMap::default(),
            pairs: 0,
            now: Timestamp::ZERO,
            evictions: 0,
        }
    }

    /// Estimated bytes held (see [`PprTracker::SOURCE_BYTES`]).
    pub fn bytes(&self) -> usize {
        self.sources.len() * Self::SOURCE_BYTES
            + self.pairs.saturating_sub(self.sources.len()) * Self::PAIR_BYTES
    }

    /// Evicts least recently recorded sources, `keep` excepted, until one more (with `extra`
    /// more bytes) fits under both caps.
    fn make_room(&mut self, extra: usize, keep: Option<IpAddr>) {
        while !self.sources.is_empty()
            && (self.sources.len() >= self.config.max_sources.max(1)
                || self.bytes() + extra > self.config.max_bytes)
        {
            // `keep` was recorded last, so it is at the front only when alone.
            if keep.is_some() && self.sources.len() == 1 {
                break; // the budget holds this one source alone
            }
            let Some((_, s)) = self.sources.pop_front() else {
                break;
            };
            self.pairs -= s.pairs.len();
            self.evictions += 1;
        }
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn config(&self) -> &PprConfig {
        &self.config
    }

    /// Counts one attempt of `src` to `dst:port`, failed or established.
    pub fn record(&mut self, ts: Timestamp, src: IpAddr, dst: IpAddr, port: u16, failed: bool) {
        self.now = self.now.max(ts);
        let existing = self.sources.get(&src).map(|s| {
            let grows = !s.pairs.contains(&(dst, port)) && s.pairs.len() < self.config.max_pairs;
            (s.last.expired(self.window, self.now), grows)
        });
        match existing {
            None => {
                self.make_room(Self::SOURCE_BYTES, None);
                self.sources.insert(src, Source::default());
            }
            Some((true, _)) => {
                // Idle past the window: starts afresh.
                let s = self.sources.get_mut(&src).expect("present");
                self.pairs -= s.pairs.len();
                *s = Source::default();
            }
            Some((false, true)) if self.bytes() + Self::PAIR_BYTES > self.config.max_bytes => {
                // Touch it first so that it is not the one evicted.
                self.sources.to_back(&src);
                self.make_room(Self::PAIR_BYTES, Some(src));
            }
            Some(_) => {}
        }
        // Now the most recently recorded.
        let Some(s) = self.sources.to_back(&src) else {
            return;
        };
        s.last = self.now;
        if s.pairs.len() >= self.config.max_pairs {
            s.saturated = true;
            return;
        }
        let before = s.pairs.len();
        s.add(dst, port, failed);
        self.pairs += s.pairs.len() - before;
    }

    /// The current counts of `src` (zero if it has none in the window).
    pub fn sample(&self, src: IpAddr) -> PprSample {
        match self.sources.get(&src) {
            Some(s) if !s.last.expired(self.window, self.now) => PprSample {
                peers: s.peers.len() as u64,
                ports: s.ports.len() as u64,
                pairs: s.pairs.len() as u64,
                high_ports: s.high_ports,
                saturated: s.saturated,
                top_port_peers: u64::from(s.top_port_peers),
                max_peer_ports: u64::from(s.max_peer_ports),
                top_failed_service_peers: u64::from(s.top_failed_service_peers),
                top_failed_other_peers: u64::from(s.top_failed_other_peers),
            },
            _ => PprSample::default(),
        }
    }

    /// Whether a notice about `src` is to be suppressed as peer-to-peer behaviour.
    pub fn looks_p2p(&self, src: IpAddr) -> (bool, PprSample) {
        let s = self.sample(src);
        (self.verdict(&s), s)
    }

    pub fn verdict(&self, s: &PprSample) -> bool {
        let c = &self.config;
        if s.peers == 0 {
            return false;
        }
        let ratio = s.ratio();
        let classic = c.lo <= ratio && ratio <= c.hi;
        match c.mode {
            PprMode::Classic => classic,
            PprMode::Hardened => {
                classic
                    && !s.saturated
                    && s.pairs as f64 / s.peers as f64 <= c.max_pairs_per_peer
                    && s.high_ports as f64 / s.ports as f64 >= c.min_high_port_share
            }
        }
    }

    /// Drops sources idle for longer than the window.
    pub fn expire(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        let (window, now) = (self.window, self.now);
        let pairs = &mut self.pairs;
        self.sources.retain(|_, s| {
            let keep = !s.last.expired(window, now);
            if !keep {
                *pairs -= s.pairs.len();
            }
            keep
        });
    }

    /// The tracker's clock and every source, least recently recorded first, for the state
    /// file (`crate::state`).
    pub fn export(&self) -> (Timestamp, Vec<(IpAddr, &Source)>) {
        (
            self.now,
            self.sources.iter().map(|(ip, s)| (*ip, s)).collect(),
        )
    }

    /// Puts back what [`PprTracker::export`] gave, in its order (so the LRU order is kept),
    /// under this tracker's caps.
    pub fn restore(&mut self, now: Timestamp, sources: impl IntoIterator<Item = (IpAddr, Source)>) {
        self.now = self.now.max(now);
        for (ip, s) in sources {
            if self.sources.contains_key(&ip) {
                continue;
            }
            let extra = Self::SOURCE_BYTES + s.pairs.len().saturating_sub(1) * Self::PAIR_BYTES;
            self.make_room(extra, None);
            self.pairs += s.pairs.len();
            self.sources.insert(ip, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tracker(mode: PprMode) -> PprTracker {
        PprTracker::new(PprConfig {
            mode,
            ..PprConfig::default()
        })
    }

    const SRC: &str = "192.0.2.10";

    fn feed(t: &mut PprTracker, attempts: impl IntoIterator<Item = (String, u16)>) {
        for (i, (dst, port)) in attempts.into_iter().enumerate() {
            t.record(
                Timestamp::from_nanos(i as u64 * 1_000_000),
                ip(SRC),
                ip(&dst),
                port,
                true,
            );
        }
    }

    /// A BitTorrent-like host: each peer on its own random high port.
    fn bittorrent(n: u32) -> Vec<(String, u16)> {
        (0..n)
            .map(|i| {
                (
                    format!("203.0.113.{}", i % 250),
                    20_000 + ((i * 7919) % 40_000) as u16,
                )
            })
            .collect()
    }

    #[test]
    fn bittorrent_passes_both_variants() {
        for mode in [PprMode::Classic, PprMode::Hardened] {
            let mut t = tracker(mode);
            feed(&mut t, bittorrent(60));
            let (p2p, s) = t.looks_p2p(ip(SRC));
            assert!(p2p, "{mode:?} {s:?}");
            assert_eq!((s.peers, s.ports, s.pairs), (60, 60, 60));
        }
    }

    #[test]
    fn horizontal_and_vertical_scans_fail_both() {
        for mode in [PprMode::Classic, PprMode::Hardened] {
            let mut t = tracker(mode);
            feed(&mut t, (1..=60).map(|i| (format!("198.51.100.{i}"), 23)));
            assert!(!t.looks_p2p(ip(SRC)).0, "horizontal, {mode:?}");
            let mut t = tracker(mode);
            feed(&mut t, (1..=1000).map(|p| ("198.51.100.7".to_string(), p)));
            assert!(!t.looks_p2p(ip(SRC)).0, "vertical, {mode:?}");
        }
    }

    #[test]
    fn block_scan_fools_classic_but_not_hardened() {
        let block: Vec<_> = (1..=30u16)
            .flat_map(|h| {
                [
                    22u16, 23, 80, 443, 445, 3389, 8080, 21, 25, 110, 139, 143, 993, 995, 1433,
                    3306, 5432, 5900, 6379, 8443, 9200, 27017, 111, 135, 161, 389, 636, 873, 2049,
                    11211,
                ]
                .map(move |p| (format!("198.51.100.{h}"), p))
            })
            .collect();
        let mut classic = tracker(PprMode::Classic);
        feed(&mut classic, block.clone());
        let (p2p, s) = classic.looks_p2p(ip(SRC));
        assert_eq!((s.peers, s.ports, s.pairs), (30, 30, 900));
        assert!(p2p, "the classic ratio is exactly 1");
        let mut hardened = tracker(PprMode::Hardened);
        feed(&mut hardened, block);
        assert!(!hardened.looks_p2p(ip(SRC)).0);
        // Even with high ports, N × N pairing is not one-to-one.
        let mut hardened = tracker(PprMode::Hardened);
        feed(
            &mut hardened,
            (1..=30u16)
                .flat_map(|h| (0..30u16).map(move |p| (format!("198.51.100.{h}"), 40_000 + p))),
        );
        assert!(!hardened.looks_p2p(ip(SRC)).0);
    }

    #[test]
    fn window_expires_and_state_is_bounded() {
        let mut t = PprTracker::new(PprConfig {
            max_sources: 5,
            max_pairs: 10,
            ..PprConfig::default()
        });
        feed(&mut t, bittorrent(20));
        let s = t.sample(ip(SRC));
        assert!(s.saturated && s.pairs == 10);
        assert!(
            !t.verdict(&s),
            "a saturated source is not given the benefit of the doubt"
        );
        t.expire(Timestamp::from_secs(2_000));
        assert_eq!(t.sample(ip(SRC)), PprSample::default());
        for h in 0..10 {
            t.record(
                Timestamp::from_secs(3_000),
                ip(&format!("192.0.2.{h}")),
                ip("203.0.113.1"),
                7000,
                true,
            );
        }
        assert_eq!(t.sources.len(), 5);
        assert_eq!(t.evictions, 5);
    }

    /// The least recently recorded source goes first, also when the others were created
    /// earlier; and the memory budget caps sources and pairs together.
    #[test]
    fn eviction_is_least_recently_used_and_memory_bounded() {
        let mut t = PprTracker::new(PprConfig {
            max_sources: 3,
            ..PprConfig::default()
        });
        let at = |s| Timestamp::from_secs(s);
        for (i, h) in ["192.0.2.1", "192.0.2.2", "192.0.2.3"].iter().enumerate() {
            t.record(at(i as u64), ip(h), ip("203.0.113.1"), 7000, true);
        }
        t.record(at(4), ip("192.0.2.1"), ip("203.0.113.2"), 7001, true);
        t.record(at(5), ip("192.0.2.4"), ip("203.0.113.1"), 7000, true);
        assert_eq!(t.sample(ip("192.0.2.2")).peers, 0, "least recently used");
        assert_eq!(t.sample(ip("192.0.2.1")).peers, 2);
        assert_eq!(t.evictions, 1);
        t.record(at(6), ip("192.0.2.5"), ip("203.0.113.1"), 7000, true);
        assert_eq!(t.sample(ip("192.0.2.3")).peers, 0);
        assert_eq!(t.len(), 3);

        let budget = 10 * PprTracker::SOURCE_BYTES;
        let mut t = PprTracker::new(PprConfig {
            max_bytes: budget,
            ..PprConfig::default()
        });
        for h in 0..100u8 {
            t.record(
                at(1),
                ip(&format!("192.0.2.{h}")),
                ip("203.0.113.1"),
                7000,
                true,
            );
        }
        assert_eq!((t.len(), t.evictions), (10, 90));
        // One source growing pushes the others out, never itself: to as many pairs as leave
        // room for just one other source.
        let grown = (budget - 2 * PprTracker::SOURCE_BYTES) / PprTracker::PAIR_BYTES + 1;
        for p in 0..u16::try_from(grown).unwrap() {
            t.record(at(2), ip("192.0.2.99"), ip("203.0.113.1"), 7000 + p, true);
        }
        assert!(t.bytes() <= budget, "{}", t.bytes());
        assert_eq!(t.sample(ip("192.0.2.99")).ports, grown as u64);
        assert_eq!(t.len(), 2);
        t.expire(at(10_000));
        assert_eq!((t.len(), t.bytes()), (0, 0));
    }
}
