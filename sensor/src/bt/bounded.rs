//! The bounded, expiring table every channel keeps its pending transactions and sessions in,
//! and the fair-share policy for the tables other hosts' traffic fills.
//!
//! # Fair shares
//!
//! The coordination tables are filled by traffic anyone can send: a DHT query, a UDP tracker
//! connect, a one-segment `GET /announce`, a TCP segment that looks like a peer-wire
//! handshake each take an entry, from any source address, spoofed or not. Evicting the oldest
//! entry when the table is full lets a flood flush another host's transaction before its
//! answer arrives (and lose the predictions the answer carries). A table built with
//! [`Bounded::fair`] admits instead:
//!
//! 1. **Per-host share.** One host (the entry's *owner*: the querier, the HTTP client, the
//!    connection's initiator) holds at most `cap / SHARE_DIVISOR` entries; past it its new
//!    entries are refused (`host_share`). One source alone can never fill the table.
//! 2. **Unanswered past the deadline.** When the table is full, the least recently active
//!    entry that the other side never answered and that has waited longer than the answer
//!    deadline (a DHT node, a tracker, a peer answer within seconds) is evicted
//!    (`unanswered_evicted`). A flood's entries are never answered, a genuine host's are.
//! 3. **Standing.** A host whose entries were answered (within [`STANDING_TTL`]) has standing;
//!    when the table is full of unanswered entries younger than the deadline, a host with
//!    standing displaces the oldest unanswered entry of a host without (`displaced`). A
//!    spoofed source never gets an answer, so it never gets standing.
//! 4. Otherwise the new entry is refused (`table_full`): a full table keeps what it holds.
//!
//! Only the least recently active [`SCAN_WINDOW`] entries are looked at for 2 and 3, so a
//! full table costs a bounded amount of work per refused entry.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use super::TableStats;
use crate::time::{Duration, Timestamp};

/// A host holds at most `cap / SHARE_DIVISOR` entries of a fair table.
pub(crate) const SHARE_DIVISOR: usize = 8;
/// How long an answer gives its host standing.
pub(crate) const STANDING_TTL: std::time::Duration = std::time::Duration::from_hours(1);
/// Entries looked at, least recently active first, to make room in a full fair table.
pub(crate) const SCAN_WINDOW: usize = 64;

/// How a fair table learns who owns an entry and whether it was answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fairness<K, V> {
    /// How long the other side may take to answer before an unanswered entry may be evicted
    /// from a full table.
    pub(crate) deadline: std::time::Duration,
    /// The host whose traffic created the entry.
    pub(crate) owner: fn(&K, &V) -> IpAddr,
    /// Whether the other side answered (a pending transaction is removed when answered:
    /// `|_| false`).
    pub(crate) answered: fn(&V) -> bool,
}

/// What a fair table refused or evicted to stay fair, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FairStats {
    /// New entries refused because their host held its share.
    pub host_share: u64,
    /// New entries refused because the table was full of entries it keeps.
    pub table_full: u64,
    /// Unanswered entries past the answer deadline evicted to make room (also counted as
    /// evicted in [`TableStats`]).
    pub unanswered_evicted: u64,
    /// Unanswered entries of hosts without standing evicted for a host with standing (also
    /// counted as evicted).
    pub displaced: u64,
}

impl FairStats {
    /// The refusals and evictions, by the reason `peers --stats` and `/metrics` name.
    pub fn drops(&self) -> [(&'static str, u64); 4] {
        [
            ("host_share", self.host_share),
            ("table_full", self.table_full),
            ("unanswered_evicted", self.unanswered_evicted),
            ("displaced", self.displaced),
        ]
    }
}

#[derive(Debug)]
struct Fair<K, V> {
    policy: Fairness<K, V>,
    share: usize,
    deadline: Duration,
    /// Live entries per owner (owners with none are removed). Keyed foldhash, as the map:
    /// owners come off the wire (SipHash here was a few per cent of `analyze`).
    held: HashMap<IpAddr, usize, foldhash::fast::RandomState>,
    /// Hosts that had an entry answered.
    standing: Bounded<IpAddr, ()>,
    stats: FairStats,
}

/// A map whose entries expire `ttl` after insertion and whose size is capped; both losses are
/// counted. Plain tables evict the oldest entry to make room; fair ones ([`Bounded::fair`])
/// follow the module's policy. Used for transactions awaiting their response and for the
/// sessions of coordination traffic, where a flood must not grow memory.
#[derive(Debug)]
pub(crate) struct Bounded<K, V> {
    /// Keyed foldhash: transaction keys come off the wire, so an attacker picks them.
    map: HashMap<K, Slot<V>, foldhash::fast::RandomState>,
    /// Insertion order as (key, sequence number); pairs whose entry was since removed or
    /// replaced are skipped lazily.
    order: VecDeque<(K, u64)>,
    next_seq: u64,
    cap: usize,
    ttl: Duration,
    evicted: u64,
    expired: u64,
    fair: Option<Box<Fair<K, V>>>,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    ts: Timestamp,
    seq: u64,
    /// The owner, in fair tables.
    owner: Option<IpAddr>,
}

impl<K: Copy + Eq + Hash, V> Bounded<K, V> {
    pub(crate) fn new(cap: usize, ttl: std::time::Duration) -> Self {
        Self {
            map: HashMap::default(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            ttl: ttl.into(),
            evicted: 0,
            expired: 0,
            fair: None,
        }
    }

    /// A table with per-host fair shares and admission (see the module docs).
    pub(crate) fn fair(cap: usize, ttl: std::time::Duration, policy: Fairness<K, V>) -> Self {
        let cap = cap.max(1);
        Self {
            fair: Some(Box::new(Fair {
                share: (cap / SHARE_DIVISOR).max(1),
                deadline: policy.deadline.into(),
                policy,
                held: HashMap::default(),
                standing: Bounded::new(cap, STANDING_TTL),
                stats: FairStats::default(),
            })),
            ..Self::new(cap, ttl)
        }
    }

    pub(crate) fn stats(&self) -> TableStats {
        TableStats {
            len: self.map.len() as u64,
            evicted: self.evicted,
            expired: self.expired,
            evicted_reported: 0,
        }
    }

    /// What the fair policy refused and evicted (zeros for a plain table).
    pub(crate) fn fair_stats(&self) -> FairStats {
        self.fair.as_ref().map(|f| f.stats).unwrap_or_default()
    }

    /// Records that `host` had an entry answered: it has standing for [`STANDING_TTL`].
    pub(crate) fn vouch(&mut self, host: IpAddr, now: Timestamp) {
        if let Some(f) = &mut self.fair {
            f.standing.insert(host, (), now);
        }
    }

    fn is_live(&self, key: &K, seq: u64) -> bool {
        self.map.get(key).is_some_and(|s| s.seq == seq)
    }

    /// Removes `key`'s slot, releasing its owner's share.
    fn remove_slot(&mut self, key: &K) -> Option<Slot<V>> {
        let slot = self.map.remove(key)?;
        if let (Some(f), Some(owner)) = (&mut self.fair, slot.owner) {
            if let Some(n) = f.held.get_mut(&owner) {
                *n -= 1;
                if *n == 0 {
                    f.held.remove(&owner);
                }
            }
        }
        Some(slot)
    }

    /// Removes the oldest live entry (counted as evicted).
    fn evict_oldest(&mut self) -> Option<(K, V)> {
        while let Some((k, seq)) = self.order.pop_front() {
            if self.is_live(&k, seq) {
                self.evicted += 1;
                return self.remove_slot(&k).map(|s| (k, s.value));
            }
        }
        None
    }

    /// Inserts or replaces `key`, restarting its TTL. A plain table evicts its oldest entry
    /// when full; a fair one may refuse the new entry instead (dropped, and counted).
    pub(crate) fn insert(&mut self, key: K, value: V, now: Timestamp) {
        // A refused value is dropped here; owners that must release it use `try_insert`.
        let _ = self.try_insert(key, value, now);
    }

    /// As [`Bounded::insert`], returning a refused value to the caller.
    pub(crate) fn try_insert(&mut self, key: K, value: V, now: Timestamp) -> Result<(), V> {
        self.expire(now);
        let owner = self.fair.as_ref().map(|f| (f.policy.owner)(&key, &value));
        let answered = self
            .fair
            .as_ref()
            .is_some_and(|f| (f.policy.answered)(&value));
        if let Some(old) = self.map.get(&key) {
            // A replacement keeps its owner, and its owner's count as it is.
            let old_owner = old.owner;
            self.put(key, value, now, old_owner);
        } else {
            if let Some(owner) = owner {
                if !self.admit(owner, now) {
                    return Err(value);
                }
            } else if self.map.len() >= self.cap {
                self.evict_oldest();
            }
            if let (Some(f), Some(o)) = (&mut self.fair, owner) {
                *f.held.entry(o).or_default() += 1;
            }
            self.put(key, value, now, owner);
        }
        if let (true, Some(o)) = (answered, owner) {
            self.vouch(o, now);
        }
        Ok(())
    }

    fn put(&mut self, key: K, value: V, now: Timestamp, owner: Option<IpAddr>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(
            key,
            Slot {
                value,
                ts: now,
                seq,
                owner,
            },
        );
        self.order.push_back((key, seq));
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|s| s.seq == *seq));
        }
    }

    /// Whether a fair table takes a new entry of `owner`, making room if it must (counted
    /// either way).
    fn admit(&mut self, owner: IpAddr, now: Timestamp) -> bool {
        let Some(f) = &mut self.fair else {
            return true;
        };
        if f.held.get(&owner).copied().unwrap_or(0) >= f.share {
            f.stats.host_share += 1;
            return false;
        }
        if self.map.len() < self.cap {
            return true;
        }
        if let Some((k, stale)) = self.fair_victim(owner, now) {
            self.remove_slot(&k);
            self.evicted += 1;
            if let Some(f) = &mut self.fair {
                if stale {
                    f.stats.unanswered_evicted += 1;
                } else {
                    f.stats.displaced += 1;
                }
            }
            true
        } else {
            if let Some(f) = &mut self.fair {
                f.stats.table_full += 1;
            }
            false
        }
    }

    /// The entry a full fair table gives up for a new entry of `owner`, and whether it waited
    /// past the deadline (else it is displaced for a host with standing).
    fn fair_victim(&mut self, owner: IpAddr, now: Timestamp) -> Option<(K, bool)> {
        let f = self.fair.as_mut()?;
        let standing = f.standing.get_mut(&owner, now).is_some();
        let mut displace = None;
        let mut seen = 0;
        for &(k, seq) in self.order.iter().take(4 * SCAN_WINDOW) {
            let Some(slot) = self.map.get(&k).filter(|s| s.seq == seq) else {
                continue;
            };
            seen += 1;
            if seen > SCAN_WINDOW {
                break;
            }
            if (f.policy.answered)(&slot.value) {
                continue;
            }
            if now - slot.ts > f.deadline {
                return Some((k, true));
            }
            if standing && displace.is_none() {
                let other = slot.owner.unwrap_or(owner);
                if other != owner && f.standing.get_mut(&other, now).is_none() {
                    displace = Some(k);
                }
            }
        }
        displace.map(|k| (k, false))
    }

    fn stale(&self, slot: &Slot<V>, now: Timestamp) -> bool {
        now - slot.ts > self.ttl
    }

    /// The live value of `key`; an expired one is dropped (and counted) instead.
    pub(crate) fn get_mut(&mut self, key: &K, now: Timestamp) -> Option<&mut V> {
        let stale = self.stale(self.map.get(key)?, now);
        if stale {
            self.remove_slot(key);
            self.expired += 1;
            return None;
        }
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Removes and returns the live value of `key`.
    pub(crate) fn take(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let slot = self.remove_slot(key)?;
        if self.stale(&slot, now) {
            self.expired += 1;
            return None;
        }
        Some(slot.value)
    }

    /// Removes and returns the live value of `key`, the answer to it vouching for its owner
    /// (see [`Bounded::vouch`]).
    pub(crate) fn answer(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let owner = self.map.get(key).and_then(|s| s.owner);
        let v = self.take(key, now)?;
        if let Some(o) = owner {
            self.vouch(o, now);
        }
        Some(v)
    }

    /// Removes and returns the oldest entry if it outlived the TTL (counted as expired), for
    /// owners that must release what an entry holds.
    pub(crate) fn pop_expired(&mut self, now: Timestamp) -> Option<(K, V)> {
        while let Some(&(k, seq)) = self.order.front() {
            match self.map.get(&k) {
                Some(s) if s.seq == seq => {
                    if !self.stale(s, now) {
                        return None;
                    }
                    self.order.pop_front();
                    self.expired += 1;
                    return self.remove_slot(&k).map(|s| (k, s.value));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Makes room for `key` (whose value is `value`): when it is absent and the table is full,
    /// removes and returns the entry that must go (counted as evicted), so that the next
    /// [`Bounded::try_insert`] of it evicts nothing. A fair table may find none to give up;
    /// its `try_insert` then refuses the entry.
    pub(crate) fn make_room(&mut self, key: &K, value: &V, now: Timestamp) -> Option<(K, V)> {
        if self.map.contains_key(key) || self.map.len() < self.cap {
            return None;
        }
        let Some(f) = &self.fair else {
            return self.evict_oldest();
        };
        let owner = (f.policy.owner)(key, value);
        if f.held.get(&owner).copied().unwrap_or(0) >= f.share {
            return None;
        }
        let (k, stale) = self.fair_victim(owner, now)?;
        let slot = self.remove_slot(&k)?;
        self.evicted += 1;
        if let Some(f) = &mut self.fair {
            if stale {
                f.stats.unanswered_evicted += 1;
            } else {
                f.stats.displaced += 1;
            }
        }
        Some((k, slot.value))
    }

    /// Drops expired entries from the old end (entries are inserted in packet-time order).
    pub(crate) fn expire(&mut self, now: Timestamp) {
        while let Some(&(k, seq)) = self.order.front() {
            match self.map.get(&k) {
                Some(s) if s.seq == seq => {
                    if !self.stale(s, now) {
                        break;
                    }
                    self.remove_slot(&k);
                    self.expired += 1;
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests;
