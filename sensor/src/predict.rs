//! The prediction table: for each host, the peers BitTorrent coordination traffic told it about,
//! and so the connections it is expected to attempt.
//!
//! A failed attempt from a host to a peer in its table is BitTorrent's doing, not a scan: the
//! engine keeps it out of the scan counters (the paper's filter). Entries live `ttl` after they
//! were last announced; each host holds at most `max_per_host` and the table at most
//! `max_total` entries and about `max_bytes` of memory (a host costs
//! [`PredictionTable::HOST_BYTES`], each of its peers [`PredictionTable::PEER_BYTES`]), oldest
//! evicted first. Every eviction and expiry is counted.
//!
//! The table is a `DashMap` so capture shards can share it: lookups are per failed attempt and
//! inserts per coordination message, both far rarer than packets.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use dashmap::DashMap;

use crate::event::Timestamp;
use crate::time;

/// Where a prediction came from: one module per coordination channel. Its name (`as_str`, the
/// metric label) and its serde name are the same snake_case string.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Channel {
    HttpTracker,
    UdpTracker,
    /// Mainline DHT `values` (peers).
    Dht,
    /// Mainline DHT `nodes` (other DHT nodes, contacted over UDP).
    DhtNodes,
    AzureusDht,
    Pex,
    /// The peer wire itself: a BEP 10 handshake's listen port `p` (and `ipv4`/`ipv6`), or a
    /// PORT message's DHT port.
    PeerWire,
    /// uTP SYN and other BitTorrent UDP signatures.
    Utp,
    Lsd,
    /// Injected by tests and tools.
    Synthetic,
}

impl Channel {
    /// Whether the prediction comes from the host's own traffic (a uTP SYN it sent) or from
    /// its LAN (an LSD announce anyone on the segment can forge), rather than from a third
    /// party answering it (tracker, DHT, PEX). A scanner can produce such predictions for
    /// itself, so they count only for hosts that also have third-party predictions.
    pub fn self_announced(self) -> bool {
        matches!(self, Channel::Utp | Channel::Lsd)
    }

    /// Whether a prediction from this channel shows its host to be a BitTorrent client: a third
    /// party listed *peers* to it. DHT `nodes` do not: any host that sends one `find_node` to a
    /// bootstrap node gets them back, so they would give a scanner cover for free.
    pub fn peer_evidence(self) -> bool {
        !self.self_announced() && self != Channel::DhtNodes
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the host is expected to contact the peer.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum PeerTransport {
    Tcp,
    Udp,
}

impl PeerTransport {
    /// `tcp` or `udp`, as `predictions.log` writes it (and serde).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One prediction: `host` is expected to contact `peer` over `transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PredictedPeer {
    pub ts: Timestamp,
    pub host: IpAddr,
    pub peer: SocketAddr,
    pub transport: PeerTransport,
    pub channel: Channel,
}

/// A prediction withdrawn by its channel (a PEX `dropped` entry): `host` was told `peer` is
/// gone. Only a prediction that `channel` made is removed; another channel's stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetractedPeer {
    pub ts: Timestamp,
    pub host: IpAddr,
    pub peer: SocketAddr,
    pub channel: Channel,
}

#[derive(Clone, Debug)]
pub struct PredictionConfig {
    /// How long an announced peer stays predicted after its last announcement.
    pub ttl: Duration,
    pub max_per_host: usize,
    pub max_total: usize,
    /// Memory budget: hosts at [`PredictionTable::HOST_BYTES`] and peers at
    /// [`PredictionTable::PEER_BYTES`] each.
    pub max_bytes: usize,
}

impl Default for PredictionConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_mins(30),
            max_per_host: 20_000,
            max_total: 500_000,
            max_bytes: 96 << 20,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    first_seen: Timestamp,
    last_seen: Timestamp,
    channel: Channel,
    /// Another channel announced the peer too (a third party after the first, or the host
    /// itself before a third party took the credit): a retraction by `channel` leaves the
    /// prediction standing.
    confirmed: bool,
}

type PeerKey = (SocketAddr, PeerTransport);

#[derive(Debug, Default)]
struct HostPeers {
    peers: HashMap<PeerKey, Entry>,
    /// Entries that show the host a BitTorrent client (see [`Channel::peer_evidence`]).
    third_party: usize,
    /// Insertion order with the `last_seen` at insertion; stale pairs are skipped lazily.
    order: VecDeque<(PeerKey, Timestamp)>,
}

impl HostPeers {
    /// Drops the oldest live entry; false if none is left.
    fn forget(&mut self, channel: Channel) {
        if channel.peer_evidence() {
            self.third_party = self.third_party.saturating_sub(1);
        }
    }

    fn evict_oldest(&mut self) -> bool {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.peers.get(&key).is_some_and(|e| e.last_seen == stamp) {
                if let Some(e) = self.peers.remove(&key) {
                    self.forget(e.channel);
                }
                return true;
            }
        }
        false
    }
}

/// Counters of the table, for metrics and reports.
#[derive(Debug, Default)]
pub struct PredictionStats {
    pub inserted: AtomicU64,
    pub refreshed: AtomicU64,
    pub removed: AtomicU64,
    pub expired: AtomicU64,
    pub evicted_host_cap: AtomicU64,
    pub evicted_total_cap: AtomicU64,
}

#[derive(Debug)]
pub struct PredictionTable {
    config: PredictionConfig,
    /// `config.ttl` in packet time.
    ttl: time::Duration,
    hosts: DashMap<IpAddr, HostPeers>,
    total: AtomicU64,
    pub stats: PredictionStats,
}

impl PredictionTable {
    /// Bytes per predicted peer of a host that has many (measured, `cargo xtask bench`: 185 B
    /// per entry with one host of 1 M peers).
    pub const PEER_BYTES: usize = 190;
    /// Bytes per host beyond its peers: its `DashMap` slot, its `HostPeers` and their first
    /// allocations (measured: 734 B per entry with 1 M hosts of one peer each).
    pub const HOST_BYTES: usize = 560;

    /// Whether one more peer (for a host not yet in the table, if `new_host`) would exceed the
    /// count cap or the memory budget. Hosts are counted only when they could matter, since a
    /// `DashMap`'s length visits every shard.
    fn full(&self, new_host: bool) -> bool {
        let total = usize::try_from(self.total.load(Relaxed)).unwrap_or(usize::MAX);
        if total >= self.config.max_total {
            return true;
        }
        let budget = self.config.max_bytes;
        let peers = (total + 1).saturating_mul(Self::PEER_BYTES);
        // Every host holds at least one peer: at most `total` of them.
        if peers.saturating_add((total + 1).saturating_mul(Self::HOST_BYTES)) <= budget {
            return false;
        }
        let hosts = self.hosts.len() + usize::from(new_host);
        peers.saturating_add(hosts.saturating_mul(Self::HOST_BYTES)) > budget
    }

    pub fn new(config: PredictionConfig) -> Self {
        Self {
            ttl: config.ttl.into(),
            config,
            hosts: DashMap::new(),
            total: AtomicU64::new(0),
            stats: PredictionStats::default(),
        }
    }

    /// Peers currently predicted, over all hosts.
    pub fn len(&self) -> u64 {
        self.total.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records a prediction, or refreshes it if the peer was already announced to the host.
    pub fn insert(&self, p: &PredictedPeer) {
        let key = (p.peer, p.transport);
        if !self.contains_key(p.host, key) && self.full(!self.hosts.contains_key(&p.host)) {
            self.evict_from_largest();
        }
        let mut host = self.hosts.entry(p.host).or_default();
        if let Some(e) = host.peers.get_mut(&key) {
            e.last_seen = p.ts;
            // Keep the first channel's credit, unless a third party now confirms a
            // self-announced prediction.
            if !e.channel.peer_evidence() && p.channel.peer_evidence() {
                e.channel = p.channel;
                // The host's own word (its uTP SYN, an LSD announce) still predicts it.
                e.confirmed = true;
                host.third_party += 1;
            } else if p.channel != e.channel && !p.channel.self_announced() {
                e.confirmed = true;
            }
            self.stats.refreshed.fetch_add(1, Relaxed);
        } else {
            if host.peers.len() >= self.config.max_per_host && host.evict_oldest() {
                self.stats.evicted_host_cap.fetch_add(1, Relaxed);
                self.total.fetch_sub(1, Relaxed);
            }
            host.peers.insert(
                key,
                Entry {
                    first_seen: p.ts,
                    last_seen: p.ts,
                    channel: p.channel,
                    confirmed: false,
                },
            );
            if p.channel.peer_evidence() {
                host.third_party += 1;
            }
            self.total.fetch_add(1, Relaxed);
            self.stats.inserted.fetch_add(1, Relaxed);
        }
        host.order.push_back((key, p.ts));
        // Refreshes append too; keep the queue from outgrowing the map by much.
        if host.order.len() > 2 * host.peers.len() + 64 {
            let HostPeers { peers, order, .. } = &mut *host;
            order.retain(|(k, stamp)| peers.get(k).is_some_and(|e| e.last_seen == *stamp));
        }
    }

    fn contains_key(&self, host: IpAddr, key: PeerKey) -> bool {
        self.hosts
            .get(&host)
            .is_some_and(|h| h.peers.contains_key(&key))
    }

    fn evict_from_largest(&self) {
        // Rare (the global cap is a safety net): a linear pass is acceptable.
        let largest = self
            .hosts
            .iter()
            .max_by_key(|h| h.peers.len())
            .map(|h| *h.key());
        if let Some(ip) = largest {
            if let Some(mut h) = self.hosts.get_mut(&ip) {
                if h.evict_oldest() {
                    self.total.fetch_sub(1, Relaxed);
                    self.stats.evicted_total_cap.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Withdraws what `r.channel` predicted for `r.host` about `r.peer`, over both transports.
    /// A prediction another channel made (or confirmed, also after it) stands: a PEX
    /// `dropped` says one peer lost contact, not that the tracker's or the DHT's word is void.
    pub fn retract(&self, r: &RetractedPeer) {
        let Some(mut h) = self.hosts.get_mut(&r.host) else {
            return;
        };
        for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
            let key = (r.peer, transport);
            if h.peers
                .get(&key)
                .is_some_and(|e| e.channel == r.channel && !e.confirmed)
            {
                h.peers.remove(&key);
                h.forget(r.channel);
                self.total.fetch_sub(1, Relaxed);
                self.stats.removed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Forgets a prediction whatever its channel.
    pub fn remove(&self, host: IpAddr, peer: SocketAddr, transport: PeerTransport) {
        if let Some(mut h) = self.hosts.get_mut(&host) {
            if let Some(e) = h.peers.remove(&(peer, transport)) {
                h.forget(e.channel);
                self.total.fetch_sub(1, Relaxed);
                self.stats.removed.fetch_add(1, Relaxed);
            }
        }
    }

    /// The channel that predicted `host` contacting `peer`, if the prediction is live at `now`.
    pub fn lookup(
        &self,
        host: IpAddr,
        peer: SocketAddr,
        transport: PeerTransport,
        now: Timestamp,
    ) -> Option<Channel> {
        let h = self.hosts.get(&host)?;
        let e = h.peers.get(&(peer, transport))?;
        let trusted = !e.channel.self_announced() || h.third_party > 0;
        (trusted && !e.last_seen.expired(self.ttl, now)).then_some(e.channel)
    }

    /// Whether coordination traffic has told `host` about any peer still in the table: the
    /// evidence that `host` runs BitTorrent.
    pub fn knows_host(&self, host: IpAddr) -> bool {
        self.hosts.get(&host).is_some_and(|h| h.third_party > 0)
    }

    /// When `host` first learnt of `peer` (for logs).
    pub fn first_seen(
        &self,
        host: IpAddr,
        peer: SocketAddr,
        transport: PeerTransport,
    ) -> Option<Timestamp> {
        Some(
            self.hosts
                .get(&host)?
                .peers
                .get(&(peer, transport))?
                .first_seen,
        )
    }

    /// Drops predictions not refreshed within the TTL, and hosts left empty.
    pub fn expire(&self, now: Timestamp) {
        let ttl = self.ttl;
        self.hosts.retain(|_, h| {
            let before = h.peers.len();
            h.peers.retain(|_, e| !e.last_seen.expired(ttl, now));
            h.third_party = h
                .peers
                .values()
                .filter(|e| e.channel.peer_evidence())
                .count();
            let gone = (before - h.peers.len()) as u64;
            if gone > 0 {
                self.total.fetch_sub(gone, Relaxed);
                self.stats.expired.fetch_add(gone, Relaxed);
                let HostPeers { peers, order, .. } = h;
                order.retain(|(k, stamp)| peers.get(k).is_some_and(|e| e.last_seen == *stamp));
            }
            !h.peers.is_empty()
        });
    }

    /// Every live prediction as plain data, for the state file (`crate::state`), oldest
    /// announcement first: restoring them in this order rebuilds each host's eviction order.
    pub fn export(&self) -> Vec<SavedPrediction> {
        let mut out: Vec<SavedPrediction> =
            Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        for h in &self.hosts {
            for (&(peer, transport), e) in &h.peers {
                out.push(SavedPrediction {
                    host: *h.key(),
                    peer,
                    transport,
                    channel: e.channel,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                    confirmed: e.confirmed,
                });
            }
        }
        out.sort_unstable_by_key(|p| (p.last_seen, p.host, p.peer, p.transport));
        out
    }

    /// Puts back one saved prediction (state file, `crate::state`), under this table's caps:
    /// past them it is dropped and counted as evicted. Entries are expected oldest first, as
    /// [`PredictionTable::export`] gives them; one already present is left alone.
    pub fn restore(&self, p: &SavedPrediction) {
        let key = (p.peer, p.transport);
        if self.contains_key(p.host, key) {
            return;
        }
        if self.full(!self.hosts.contains_key(&p.host)) {
            self.stats.evicted_total_cap.fetch_add(1, Relaxed);
            return;
        }
        let mut host = self.hosts.entry(p.host).or_default();
        if host.peers.len() >= self.config.max_per_host {
            self.stats.evicted_host_cap.fetch_add(1, Relaxed);
            return;
        }
        host.peers.insert(
            key,
            Entry {
                first_seen: p.first_seen,
                last_seen: p.last_seen,
                channel: p.channel,
                confirmed: p.confirmed,
            },
        );
        if p.channel.peer_evidence() {
            host.third_party += 1;
        }
        host.order.push_back((key, p.last_seen));
        self.total.fetch_add(1, Relaxed);
    }
}

/// One prediction as the state file keeps it (see [`PredictionTable::export`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedPrediction {
    pub host: IpAddr,
    pub peer: SocketAddr,
    pub transport: PeerTransport,
    pub channel: Channel,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub confirmed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ts_s: u64, host: &str, peer: &str) -> PredictedPeer {
        PredictedPeer {
            ts: Timestamp::from_secs(ts_s),
            host: host.parse().unwrap(),
            peer: peer.parse().unwrap(),
            transport: PeerTransport::Tcp,
            channel: Channel::Dht,
        }
    }

    const H: &str = "192.0.2.10";

    #[test]
    fn lookup_is_per_host_peer_and_transport() {
        let t = PredictionTable::new(PredictionConfig::default());
        t.insert(&p(10, H, "203.0.113.5:6881"));
        let at = |s: u64| Timestamp::from_secs(s);
        let host: IpAddr = H.parse().unwrap();
        let peer: SocketAddr = "203.0.113.5:6881".parse().unwrap();
        assert_eq!(
            t.lookup(host, peer, PeerTransport::Tcp, at(11)),
            Some(Channel::Dht)
        );
        assert_eq!(t.lookup(host, peer, PeerTransport::Udp, at(11)), None);
        assert_eq!(
            t.lookup(
                host,
                "203.0.113.5:6882".parse().unwrap(),
                PeerTransport::Tcp,
                at(11)
            ),
            None
        );
        assert_eq!(
            t.lookup(
                "192.0.2.11".parse().unwrap(),
                peer,
                PeerTransport::Tcp,
                at(11)
            ),
            None
        );
        // Live for the TTL after the last announcement, refreshed by a new one.
        assert!(t
            .lookup(host, peer, PeerTransport::Tcp, at(10 + 1800))
            .is_some());
        assert!(t
            .lookup(host, peer, PeerTransport::Tcp, at(10 + 1801))
            .is_none());
        t.insert(&p(1000, H, "203.0.113.5:6881"));
        assert!(t.lookup(host, peer, PeerTransport::Tcp, at(2500)).is_some());
        assert_eq!(t.first_seen(host, peer, PeerTransport::Tcp), Some(at(10)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn dht_nodes_are_no_bittorrent_evidence() {
        // Every host that sends a `find_node` gets `nodes` back: no cover for its uTP SYNs,
        // and no evidence for the PPR gate.
        let t = PredictionTable::new(PredictionConfig::default());
        let host: IpAddr = "192.0.2.66".parse().unwrap();
        let node: SocketAddr = "198.51.100.1:6881".parse().unwrap();
        let target: SocketAddr = "198.51.100.2:445".parse().unwrap();
        let at = Timestamp::from_secs(100);
        for (peer, transport, channel) in [
            (node, PeerTransport::Udp, Channel::DhtNodes),
            (target, PeerTransport::Tcp, Channel::Utp),
        ] {
            t.insert(&PredictedPeer {
                ts: at,
                host,
                peer,
                transport,
                channel,
            });
        }
        assert!(!t.knows_host(host));
        assert_eq!(t.lookup(host, target, PeerTransport::Tcp, at), None);
        // A third party's peer list is evidence.
        t.insert(&PredictedPeer {
            ts: at,
            host,
            peer: "198.51.100.3:51413".parse().unwrap(),
            transport: PeerTransport::Tcp,
            channel: Channel::Dht,
        });
        assert!(t.knows_host(host));
        assert_eq!(
            t.lookup(host, target, PeerTransport::Tcp, at),
            Some(Channel::Utp)
        );
    }

    #[test]
    fn self_announced_predictions_need_third_party_evidence() {
        // A scanner announcing its own targets with uTP SYNs gets nothing from them.
        let t = PredictionTable::new(PredictionConfig::default());
        let mut own = p(10, H, "198.51.100.7:23");
        own.channel = Channel::Utp;
        t.insert(&own);
        let host: IpAddr = H.parse().unwrap();
        let at = Timestamp::from_secs(11);
        assert_eq!(t.lookup(host, own.peer, PeerTransport::Tcp, at), None);
        assert!(!t.knows_host(host));
        // Once a tracker or the DHT has given the host peers, its uTP SYNs count too.
        t.insert(&p(10, H, "203.0.113.5:6881"));
        assert!(t.knows_host(host));
        assert_eq!(
            t.lookup(host, own.peer, PeerTransport::Tcp, at),
            Some(Channel::Utp)
        );
        // A third party confirming a uTP-predicted peer takes the credit; a later uTP refresh
        // does not take it back.
        let mut confirmed = own;
        confirmed.channel = Channel::UdpTracker;
        t.insert(&confirmed);
        t.insert(&own);
        assert_eq!(
            t.lookup(host, own.peer, PeerTransport::Tcp, at),
            Some(Channel::UdpTracker)
        );
        t.remove(
            host,
            "203.0.113.5:6881".parse().unwrap(),
            PeerTransport::Tcp,
        );
        assert!(
            t.knows_host(host),
            "the confirmed peer is third-party evidence too"
        );
    }

    #[test]
    fn pex_dropped_retracts_only_what_pex_predicted() {
        let t = PredictionTable::new(PredictionConfig::default());
        let host: IpAddr = H.parse().unwrap();
        let mut pex = p(10, H, "203.0.113.5:6881");
        pex.channel = Channel::Pex;
        let mut pex_udp = pex;
        pex_udp.transport = PeerTransport::Udp;
        t.insert(&pex);
        t.insert(&pex_udp);
        // The same peer from the DHT first: its credit stays with the DHT.
        let dht = p(10, H, "203.0.113.6:6881");
        let mut also_pex = dht;
        also_pex.channel = Channel::Pex;
        t.insert(&dht);
        t.insert(&also_pex);
        // From PEX first, then confirmed by the DHT: the credit stays with PEX, but the
        // DHT's word stands after PEX drops it.
        let mut pex_first = p(10, H, "203.0.113.7:6881");
        pex_first.channel = Channel::Pex;
        let mut confirmed = pex_first;
        confirmed.channel = Channel::Dht;
        t.insert(&pex_first);
        t.insert(&confirmed);
        for peer in [pex.peer, dht.peer, pex_first.peer] {
            t.retract(&RetractedPeer {
                ts: Timestamp::from_nanos(20),
                host,
                peer,
                channel: Channel::Pex,
            });
        }
        let at = Timestamp::from_secs(21);
        assert_eq!(t.lookup(host, pex.peer, PeerTransport::Tcp, at), None);
        assert_eq!(t.lookup(host, pex.peer, PeerTransport::Udp, at), None);
        assert_eq!(
            t.lookup(host, dht.peer, PeerTransport::Tcp, at),
            Some(Channel::Dht)
        );
        assert_eq!(
            t.lookup(host, pex_first.peer, PeerTransport::Tcp, at),
            Some(Channel::Pex)
        );
        assert_eq!((t.len(), t.stats.removed.load(Relaxed)), (2, 2));
        assert!(t.knows_host(host));
    }

    #[test]
    fn remove_and_expire_are_counted() {
        let t = PredictionTable::new(PredictionConfig::default());
        t.insert(&p(0, H, "203.0.113.5:6881"));
        t.insert(&p(0, H, "203.0.113.6:6881"));
        t.insert(&p(1000, H, "203.0.113.7:6881"));
        t.remove(
            H.parse().unwrap(),
            "203.0.113.5:6881".parse().unwrap(),
            PeerTransport::Tcp,
        );
        assert_eq!(t.len(), 2);
        t.expire(Timestamp::from_secs(2000));
        assert_eq!(t.len(), 1);
        assert_eq!(t.stats.removed.load(Relaxed), 1);
        assert_eq!(t.stats.expired.load(Relaxed), 1);
        t.expire(Timestamp::from_secs(5000));
        assert!(t.is_empty());
        assert_eq!(t.hosts.len(), 0, "empty hosts are dropped");
    }

    #[test]
    fn hostile_peer_lists_cannot_grow_the_table_without_bound() {
        let t = PredictionTable::new(PredictionConfig {
            max_per_host: 100,
            max_total: 250,
            ..Default::default()
        });
        for i in 0..10_000u32 {
            let peer = format!("198.51.100.{}:{}", i % 256, 1024 + i / 256);
            t.insert(&p(u64::from(i), H, &peer));
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.stats.evicted_host_cap.load(Relaxed), 9_900);
        // The newest survive: the oldest went first.
        let host: IpAddr = H.parse().unwrap();
        let newest: SocketAddr = format!("198.51.100.{}:{}", 9_999 % 256, 1024 + 9_999 / 256)
            .parse()
            .unwrap();
        assert!(t
            .lookup(
                host,
                newest,
                PeerTransport::Tcp,
                Timestamp::from_secs(9_999)
            )
            .is_some());
        for h in 0..5 {
            for i in 0..100u32 {
                t.insert(&p(
                    20_000,
                    &format!("192.0.2.{}", 100 + h),
                    &format!("203.0.113.1:{}", 2000 + i),
                ));
            }
        }
        assert!(t.len() <= 250, "{}", t.len());
        assert!(t.stats.evicted_total_cap.load(Relaxed) > 0);
    }

    /// The metric label (`as_str`, strum) and the serde name agree for every channel.
    #[test]
    fn channel_names_agree() {
        use Channel as C;
        for c in [
            C::HttpTracker,
            C::UdpTracker,
            C::Dht,
            C::DhtNodes,
            C::AzureusDht,
            C::Pex,
            C::PeerWire,
            C::Utp,
            C::Lsd,
            C::Synthetic,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for t in [PeerTransport::Tcp, PeerTransport::Udp] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(PeerTransport::Udp.as_str(), "udp");
        assert_eq!(C::HttpTracker.as_str(), "http_tracker");
        assert_eq!(C::AzureusDht.as_str(), "azureus_dht");
    }
}
