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
//! The table is shared behind one lock (capture shards can share it): lookups are per connection
//! outcome and inserts per announced peer, both far rarer than packets, and every operation is
//! O(1) or O(log n), so the lock is never held for long. Expiry is incremental: a min-heap of
//! (last announcement, host, peer) with lazy deletion hands out exactly the entries whose TTL
//! ran out, so a sweep costs what it removes, not what the table holds. Per-host aggregates
//! (`third_party`, the peer count behind "largest host") are kept up to date on every change.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use hashlink::linked_hash_map::Entry::{Occupied, Vacant};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::detect::LinkedHashMap;
use crate::event::Timestamp;
use crate::time;

/// Hash state of the table's maps. The keys (hosts, announced peers) come off the wire, so an
/// attacker picks them: foldhash with a per-process random seed, fast and keyed, not an unkeyed
/// hash whose collisions could be precomputed.
type Keyed = foldhash::fast::RandomState;

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
    /// The generation of this entry's one live item in the expiry queues, whose time is never
    /// later than `last_seen`.
    due: u64,
}

/// A predicted peer in the table's maps and queues: 20 bytes where `(SocketAddr, PeerTransport)`
/// takes 36 (a socket address carries IPv6 flow info and scope, never set on announced peers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerKey {
    ip: IpAddr,
    port: u16,
    transport: PeerTransport,
}

impl PeerKey {
    fn new(peer: SocketAddr, transport: PeerTransport) -> Self {
        Self {
            ip: peer.ip(),
            port: peer.port(),
            transport,
        }
    }
}

#[derive(Debug, Default)]
struct HostPeers {
    /// The host's peers, least recently announced first: a new peer goes to the back, and so
    /// does a known one announced at a time other than its last (an announcement repeated at
    /// the same time keeps the place). Eviction takes the front. A linked map rather than a
    /// map plus a queue of (peer, time) pairs with lazy deletion: one node per peer instead
    /// of a map slot and up to two queue pairs, so about 60 B less per prediction, and no
    /// queue to grow and compact on every refresh (the table's growth was most of the
    /// engine's time on BitTorrent-heavy captures, BENCHMARKS.md).
    peers: LinkedHashMap<PeerKey, Entry>,
    /// Entries that show the host a BitTorrent client (see [`Channel::peer_evidence`]), kept
    /// up to date on every insert, upgrade and removal.
    third_party: usize,
}

impl HostPeers {
    fn forget(&mut self, channel: Channel) {
        if channel.peer_evidence() {
            self.third_party = self.third_party.saturating_sub(1);
        }
    }

    /// Drops the least recently announced entry; its channel, or `None` if none is left.
    fn evict_oldest(&mut self) -> Option<Channel> {
        let (_, e) = self.peers.pop_front()?;
        self.forget(e.channel);
        Some(e.channel)
    }
}

/// Hosts bucketed by their number of predicted peers, so the largest is found in O(1): sizes
/// only ever change by one, so the maximum moves by at most one bucket per change.
#[derive(Debug, Default)]
struct SizeIndex {
    /// `buckets[n]`: the hosts holding exactly `n` peers (`buckets[0]` unused).
    buckets: Vec<HashSet<IpAddr, Keyed>>,
    max: usize,
}

impl SizeIndex {
    fn resize(&mut self, host: IpAddr, from: usize, to: usize) {
        if from == to {
            return;
        }
        if from > 0 {
            if let Some(b) = self.buckets.get_mut(from) {
                b.remove(&host);
            }
        }
        if to > 0 {
            if self.buckets.len() <= to {
                self.buckets.resize_with(to + 1, HashSet::default);
            }
            self.buckets[to].insert(host);
            self.max = self.max.max(to);
        }
        while self.max > 0 && self.buckets[self.max].is_empty() {
            self.max -= 1;
        }
    }

    fn largest(&self) -> Option<IpAddr> {
        self.buckets.get(self.max)?.iter().next().copied()
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

/// A pending expiry check: (no later than the last announcement, generation, host, peer). Only
/// the item whose generation the entry holds is live; the others (the entry was removed, or
/// announced with an older time) are skipped when they come up.
type Due = Reverse<(Timestamp, u64, IpAddr, PeerKey)>;

#[derive(Debug, Default)]
struct Inner {
    hosts: HashMap<IpAddr, HostPeers, Keyed>,
    /// One live item per entry, earliest first, over two queues: `in_order` takes the items
    /// that come in time order (O(1), nearly all of them: announcements arrive in packet
    /// time), `expiry` the others (O(log n)). Popped as the TTL runs out. A refresh to a later
    /// time pushes nothing: the item comes up at the old time and is pushed again at the new
    /// one, so a peer announced every minute costs one push per TTL, not one per minute.
    in_order: VecDeque<Due>,
    expiry: BinaryHeap<Due>,
    /// The last generation stamp given out.
    generation: u64,
    /// Built when the global caps first force an eviction, kept up to date from then on:
    /// until then no insert pays for it.
    sizes: Option<SizeIndex>,
    /// Hosts left without peers by a removal or an eviction: dropped at the next `expire` if
    /// still empty (as a full sweep would), without looking at any other host.
    emptied: Vec<IpAddr>,
    total: usize,
}

impl Inner {
    /// Removes `key` of `host` (present), keeping every aggregate right. Returns the entry.
    fn take(&mut self, host: IpAddr, key: PeerKey) -> Option<Entry> {
        let h = self.hosts.get_mut(&host)?;
        let e = h.peers.remove(&key)?;
        h.forget(e.channel);
        let left = h.peers.len();
        self.resize(host, left + 1, left);
        self.total -= 1;
        if left == 0 {
            self.emptied.push(host);
        }
        Some(e)
    }

    fn resize(&mut self, host: IpAddr, from: usize, to: usize) {
        if let Some(sizes) = &mut self.sizes {
            sizes.resize(host, from, to);
        }
    }

    /// Schedules an expiry check.
    fn push_due(&mut self, item: (Timestamp, u64, IpAddr, PeerKey)) {
        if self
            .in_order
            .back()
            .is_none_or(|Reverse(last)| last.0 <= item.0)
        {
            self.in_order.push_back(Reverse(item));
        } else {
            self.expiry.push(Reverse(item));
        }
    }

    /// The earliest scheduled check, if due by `due(stamp)`, removed from its queue.
    fn pop_due(
        &mut self,
        due: impl Fn(Timestamp) -> bool,
    ) -> Option<(Timestamp, u64, IpAddr, PeerKey)> {
        let a = self.in_order.front().map(|Reverse(i)| i.0);
        let b = self.expiry.peek().map(|Reverse(i)| i.0);
        let from_heap = match (a, b) {
            (Some(a), Some(b)) => b < a,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let stamp = if from_heap { b } else { a }?;
        if !due(stamp) {
            return None;
        }
        let Reverse(item) = if from_heap {
            self.expiry.pop()
        } else {
            self.in_order.pop_front()
        }?;
        Some(item)
    }

    /// Rebuilds the expiry heap from its live items once stale ones (left by removals and
    /// out-of-order announcements) dominate: O(n) every n pushes, so the heap stays within a
    /// small factor of the table.
    fn compact_expiry(&mut self) {
        if self.expiry.len() + self.in_order.len() <= 2 * self.total + 1024 {
            return;
        }
        let hosts = &self.hosts;
        let live = |Reverse((_, generation, host, key)): &Due| {
            hosts
                .get(host)
                .and_then(|h| h.peers.get(key))
                .is_some_and(|e| e.due == *generation)
        };
        let mut heap: Vec<Due> = std::mem::take(&mut self.expiry).into_vec();
        heap.retain(live);
        self.in_order.retain(live);
        self.expiry = BinaryHeap::from(heap);
    }
}

#[derive(Debug)]
pub struct PredictionTable {
    config: PredictionConfig,
    /// `config.ttl` in packet time.
    ttl: time::Duration,
    inner: Mutex<Inner>,
    pub stats: PredictionStats,
}

impl PredictionTable {
    /// Bytes per predicted peer of a host that has many: its linked-map node and slot and its
    /// item in the expiry queue. Measured 208 B per entry with one host of 1 M peers when the
    /// host kept a separate insertion-order queue, 155 B with the linked map (`bench --flood
    /// entry predictions_one_host`); the budget keeps the old figure, so the caps (and what
    /// a full table keeps) are as they were, with memory to spare.
    pub const PEER_BYTES: usize = 215;
    /// Bytes per host beyond its peers: its map slot, its `HostPeers` and their first
    /// allocations (measured: 669 B per entry with 1 M hosts of one peer each before the
    /// linked map, 467 B with it, peer included; kept for the same reason).
    pub const HOST_BYTES: usize = 560;

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // No operation leaves the table inconsistent halfway through a panic it could
        // cause; a poisoned lock still guards a usable table.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether one more peer (for a host not yet in the table, if `new_host`) would exceed the
    /// count cap or the memory budget.
    fn full(&self, t: &Inner, new_host: bool) -> bool {
        let total = t.total;
        if total >= self.config.max_total {
            return true;
        }
        let budget = self.config.max_bytes;
        let peers = (total + 1).saturating_mul(Self::PEER_BYTES);
        // Every host holds at least one peer: at most `total` of them.
        if peers.saturating_add((total + 1).saturating_mul(Self::HOST_BYTES)) <= budget {
            return false;
        }
        let hosts = t.hosts.len() + usize::from(new_host);
        peers.saturating_add(hosts.saturating_mul(Self::HOST_BYTES)) > budget
    }

    pub fn new(config: PredictionConfig) -> Self {
        Self {
            ttl: config.ttl.into(),
            config,
            inner: Mutex::new(Inner::default()),
            stats: PredictionStats::default(),
        }
    }

    /// Peers currently predicted, over all hosts.
    pub fn len(&self) -> u64 {
        self.lock().total as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether [`Self::full`] can be true at `total` peers, whatever the hosts: lets the
    /// common case skip the lookups `full` needs.
    fn may_be_full(&self, total: usize) -> bool {
        total >= self.config.max_total
            || (total + 1).saturating_mul(Self::PEER_BYTES + Self::HOST_BYTES)
                > self.config.max_bytes
    }

    /// Records a prediction, or refreshes it if the peer was already announced to the host.
    pub fn insert(&self, p: &PredictedPeer) {
        self.insert_all(std::slice::from_ref(p));
    }

    /// [`Self::insert`] for each of `ps` in turn, under one lock: a peer list's worth. The
    /// inserted and refreshed counters are updated once for the list: one atomic add per
    /// prediction was a few per cent of the engine's time on BitTorrent-heavy captures.
    pub fn insert_all(&self, ps: &[PredictedPeer]) {
        let mut guard = self.lock();
        let mut inserted = 0;
        for p in ps {
            inserted += u64::from(self.insert_into(&mut guard, p));
        }
        self.stats.inserted.fetch_add(inserted, Relaxed);
        self.stats
            .refreshed
            .fetch_add(ps.len() as u64 - inserted, Relaxed);
    }

    /// Returns whether the peer is new to the host (inserted, not refreshed).
    fn insert_into(&self, t: &mut Inner, p: &PredictedPeer) -> bool {
        let key = PeerKey::new(p.peer, p.transport);
        t.compact_expiry();
        // `full` with a new host is the worst case: when even that has room, no lookup is
        // needed to know nothing must be evicted.
        if self.may_be_full(t.total) && self.full(t, true) {
            let known_host = t.hosts.get(&p.host);
            let known = known_host.is_some_and(|h| h.peers.contains_key(&key));
            if !known && self.full(t, known_host.is_none()) {
                self.evict_from_largest(t);
            }
        }
        // The generation a new expiry item would take.
        let generation = t.generation + 1;
        let host = t.hosts.entry(p.host).or_default();
        let mut before = host.peers.len();
        if before >= self.config.max_per_host
            && !host.peers.contains_key(&key)
            && host.evict_oldest().is_some()
        {
            self.stats.evicted_host_cap.fetch_add(1, Relaxed);
            t.total -= 1;
            if let Some(sizes) = &mut t.sizes {
                sizes.resize(p.host, before, before - 1);
            }
            before -= 1;
        }
        let (known, schedule) = match host.peers.entry(key) {
            Occupied(mut o) => {
                if o.get().last_seen != p.ts {
                    o.to_back();
                }
                let e = o.get_mut();
                // A later announcement needs no new item: the scheduled one comes up earlier
                // and is pushed again then. An earlier one (records out of order) may need an
                // earlier item: it gets one, which supersedes the old.
                let earlier = p.ts < e.last_seen;
                e.last_seen = p.ts;
                if earlier {
                    e.due = generation;
                }
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
                (true, earlier)
            }
            Vacant(v) => {
                v.insert(Entry {
                    first_seen: p.ts,
                    last_seen: p.ts,
                    channel: p.channel,
                    confirmed: false,
                    due: generation,
                });
                if p.channel.peer_evidence() {
                    host.third_party += 1;
                }
                if let Some(sizes) = &mut t.sizes {
                    sizes.resize(p.host, before, before + 1);
                }
                t.total += 1;
                (false, true)
            }
        };
        if schedule {
            t.generation = generation;
            t.push_due((p.ts, generation, p.host, key));
        }
        !known
    }

    /// Makes room under the global caps: the oldest peer of the host holding the most.
    fn evict_from_largest(&self, t: &mut Inner) {
        let hosts = &t.hosts;
        let sizes = t.sizes.get_or_insert_with(|| {
            let mut sizes = SizeIndex::default();
            for (&ip, h) in hosts {
                sizes.resize(ip, 0, h.peers.len());
            }
            sizes
        });
        let Some(ip) = sizes.largest() else {
            return;
        };
        let Some(h) = t.hosts.get_mut(&ip) else {
            return;
        };
        let before = h.peers.len();
        if h.evict_oldest().is_some() {
            t.resize(ip, before, before - 1);
            t.total -= 1;
            if before == 1 {
                t.emptied.push(ip);
            }
            self.stats.evicted_total_cap.fetch_add(1, Relaxed);
        }
    }

    /// Withdraws what `r.channel` predicted for `r.host` about `r.peer`, over both transports.
    /// A prediction another channel made (or confirmed, also after it) stands: a PEX
    /// `dropped` says one peer lost contact, not that the tracker's or the DHT's word is void.
    pub fn retract(&self, r: &RetractedPeer) {
        let mut t = self.lock();
        for transport in [PeerTransport::Tcp, PeerTransport::Udp] {
            let key = PeerKey::new(r.peer, transport);
            let ours = t
                .hosts
                .get(&r.host)
                .and_then(|h| h.peers.get(&key))
                .is_some_and(|e| e.channel == r.channel && !e.confirmed);
            if ours && t.take(r.host, key).is_some() {
                self.stats.removed.fetch_add(1, Relaxed);
            }
        }
    }

    /// Forgets a prediction whatever its channel.
    pub fn remove(&self, host: IpAddr, peer: SocketAddr, transport: PeerTransport) {
        if self
            .lock()
            .take(host, PeerKey::new(peer, transport))
            .is_some()
        {
            self.stats.removed.fetch_add(1, Relaxed);
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
        let t = self.lock();
        let h = t.hosts.get(&host)?;
        let e = h.peers.get(&PeerKey::new(peer, transport))?;
        let trusted = !e.channel.self_announced() || h.third_party > 0;
        (trusted && !e.last_seen.expired(self.ttl, now)).then_some(e.channel)
    }

    /// Whether coordination traffic has told `host` about any peer still in the table: the
    /// evidence that `host` runs BitTorrent.
    pub fn knows_host(&self, host: IpAddr) -> bool {
        self.lock()
            .hosts
            .get(&host)
            .is_some_and(|h| h.third_party > 0)
    }

    /// When `host` first learnt of `peer` (for logs).
    pub fn first_seen(
        &self,
        host: IpAddr,
        peer: SocketAddr,
        transport: PeerTransport,
    ) -> Option<Timestamp> {
        Some(
            self.lock()
                .hosts
                .get(&host)?
                .peers
                .get(&PeerKey::new(peer, transport))?
                .first_seen,
        )
    }

    /// Drops predictions not refreshed within the TTL, and hosts left empty. Costs what it
    /// removes (O(log n) each), not what the table holds.
    pub fn expire(&self, now: Timestamp) {
        let ttl = self.ttl;
        let mut guard = self.lock();
        let t = &mut *guard;
        // Items come up in time order: the first one not yet due ends the run.
        while let Some((_, generation, host, key)) = t.pop_due(|stamp| stamp.expired(ttl, now)) {
            let Some(h) = t.hosts.get_mut(&host) else {
                continue;
            };
            let Some(e) = h.peers.get_mut(&key) else {
                continue;
            };
            if e.due != generation {
                continue;
            }
            if e.last_seen.expired(ttl, now) {
                t.take(host, key);
                self.stats.expired.fetch_add(1, Relaxed);
            } else {
                // Announced again since: check again when that announcement runs out.
                t.generation += 1;
                e.due = t.generation;
                let item = (e.last_seen, t.generation, host, key);
                t.push_due(item);
            }
        }
        for host in std::mem::take(&mut t.emptied) {
            if t.hosts.get(&host).is_some_and(|h| h.peers.is_empty()) {
                t.hosts.remove(&host);
            }
        }
    }

    /// Hosts in the table (tests).
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.lock().hosts.len()
    }

    /// Every live prediction as plain data, for the state file (`crate::state`), oldest
    /// announcement first: restoring them in this order rebuilds each host's eviction order.
    pub fn export(&self) -> Vec<SavedPrediction> {
        let t = self.lock();
        let mut out: Vec<SavedPrediction> = Vec::with_capacity(t.total);
        for (&host, h) in &t.hosts {
            for (key, e) in &h.peers {
                out.push(SavedPrediction {
                    host,
                    peer: SocketAddr::new(key.ip, key.port),
                    transport: key.transport,
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
        let key = PeerKey::new(p.peer, p.transport);
        let mut guard = self.lock();
        let t = &mut *guard;
        let known_host = t.hosts.get(&p.host);
        if known_host.is_some_and(|h| h.peers.contains_key(&key)) {
            return;
        }
        if self.full(t, known_host.is_none()) {
            self.stats.evicted_total_cap.fetch_add(1, Relaxed);
            return;
        }
        let generation = t.generation + 1;
        let host = t.hosts.entry(p.host).or_default();
        let before = host.peers.len();
        if before >= self.config.max_per_host {
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
                due: generation,
            },
        );
        if p.channel.peer_evidence() {
            host.third_party += 1;
        }
        if let Some(sizes) = &mut t.sizes {
            sizes.resize(p.host, before, before + 1);
        }
        t.total += 1;
        t.generation = generation;
        t.push_due((p.last_seen, generation, p.host, key));
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
        assert_eq!(t.hosts(), 0, "empty hosts are dropped");
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

    /// Expiry removes exactly what a pass over every entry would: refreshed entries stay, an
    /// announcement older than the last (records out of order) moves the deadline back, and
    /// `third_party` follows removals.
    #[test]
    fn incremental_expiry_matches_a_full_pass() {
        let t = PredictionTable::new(PredictionConfig {
            ttl: Duration::from_secs(100),
            ..Default::default()
        });
        let host: IpAddr = H.parse().unwrap();
        let peer = |i: u32| -> SocketAddr { format!("203.0.113.{i}:6881").parse().unwrap() };
        let live = |i: u32, now: u64| {
            t.lookup(host, peer(i), PeerTransport::Tcp, Timestamp::from_secs(now))
                .is_some()
        };
        t.insert(&p(0, H, "203.0.113.1:6881")); // expires after 100
        t.insert(&p(0, H, "203.0.113.2:6881"));
        t.insert(&p(50, H, "203.0.113.2:6881")); // refreshed: after 150
        t.insert(&p(60, H, "203.0.113.3:6881"));
        t.insert(&p(10, H, "203.0.113.3:6881")); // moved back: after 110
        t.expire(Timestamp::from_secs(101));
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats.expired.load(Relaxed), 1);
        assert!(!live(1, 101) && live(2, 101) && live(3, 101));
        t.expire(Timestamp::from_secs(111));
        assert_eq!(t.len(), 1);
        assert!(live(2, 111) && !live(3, 111));
        assert!(t.knows_host(host));
        t.expire(Timestamp::from_secs(150)); // exactly the TTL: not expired (Bro's `<`)
        assert_eq!(t.len(), 1);
        t.expire(Timestamp::from_secs(151));
        assert!(t.is_empty());
        assert!(!t.knows_host(host), "third_party follows the removals");
        assert_eq!(t.hosts(), 0);
        assert_eq!(t.stats.expired.load(Relaxed), 3);
    }

    /// Refreshing the same peers over and over, and removing and re-adding them, leaves the
    /// expiry queues within a small factor of the table.
    #[test]
    fn expiry_queues_stay_bounded_under_churn() {
        let t = PredictionTable::new(PredictionConfig::default());
        let host: IpAddr = H.parse().unwrap();
        for round in 0..2_000u64 {
            for i in 0..10u32 {
                let peer = format!("203.0.113.{i}:6881");
                // Out of order on purpose: every other round is older than the last.
                t.insert(&p(round.saturating_sub(2 * (round % 2)), H, &peer));
                t.remove(host, peer.parse().unwrap(), PeerTransport::Tcp);
                t.insert(&p(round, H, &peer));
            }
        }
        let inner = t.lock();
        assert_eq!(inner.total, 10);
        assert!(inner.expiry.len() + inner.in_order.len() <= 2 * 10 + 1024 + 1);
    }

    /// The global cap takes from the host holding the most peers, whichever it is.
    #[test]
    fn global_cap_evicts_from_the_largest_host() {
        let t = PredictionTable::new(PredictionConfig {
            max_total: 30,
            ..Default::default()
        });
        let at = Timestamp::from_secs(1);
        for (h, n) in [("192.0.2.1", 5u32), ("192.0.2.2", 20), ("192.0.2.3", 5)] {
            for i in 0..n {
                t.insert(&p(1, h, &format!("198.51.100.1:{}", 1000 + i)));
            }
        }
        assert_eq!(t.len(), 30);
        t.insert(&p(1, "192.0.2.4", "198.51.100.9:1"));
        t.insert(&p(1, "192.0.2.1", "198.51.100.9:2"));
        assert_eq!(t.len(), 30);
        assert_eq!(t.stats.evicted_total_cap.load(Relaxed), 2);
        let big: IpAddr = "192.0.2.2".parse().unwrap();
        // Its two oldest went.
        for (port, kept) in [(1000, false), (1001, false), (1002, true)] {
            let peer: SocketAddr = format!("198.51.100.1:{port}").parse().unwrap();
            assert_eq!(t.lookup(big, peer, PeerTransport::Tcp, at).is_some(), kept);
        }
        let small: IpAddr = "192.0.2.1".parse().unwrap();
        let first: SocketAddr = "198.51.100.1:1000".parse().unwrap();
        assert!(t.lookup(small, first, PeerTransport::Tcp, at).is_some());
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
