//! The bounded, expiring table every channel keeps its pending transactions in.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use super::TableStats;
use crate::time::{Duration, Timestamp};

/// A map whose entries expire `ttl` after insertion and whose size is capped, oldest evicted
/// first; both losses are counted. Used for transactions awaiting their response, where a
/// flood of queries must not grow memory.
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
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    ts: Timestamp,
    seq: u64,
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
        }
    }

    /// Whether a new key would have to evict another (expired entries are dropped first).
    pub(crate) fn is_full(&mut self, now: Timestamp) -> bool {
        self.expire(now);
        self.map.len() >= self.cap
    }

    pub(crate) fn stats(&self) -> TableStats {
        TableStats {
            len: self.map.len() as u64,
            evicted: self.evicted,
            expired: self.expired,
        }
    }

    fn is_live(&self, key: &K, seq: u64) -> bool {
        self.map.get(key).is_some_and(|s| s.seq == seq)
    }

    /// Inserts or replaces `key`, restarting its TTL.
    pub(crate) fn insert(&mut self, key: K, value: V, now: Timestamp) {
        self.expire(now);
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            while let Some((k, seq)) = self.order.pop_front() {
                if self.is_live(&k, seq) {
                    self.map.remove(&k);
                    self.evicted += 1;
                    break;
                }
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(
            key,
            Slot {
                value,
                ts: now,
                seq,
            },
        );
        self.order.push_back((key, seq));
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(k, seq)| map.get(k).is_some_and(|s| s.seq == *seq));
        }
    }

    fn stale(&self, slot: &Slot<V>, now: Timestamp) -> bool {
        now - slot.ts > self.ttl
    }

    /// The live value of `key`; an expired one is dropped (and counted) instead.
    pub(crate) fn get_mut(&mut self, key: &K, now: Timestamp) -> Option<&mut V> {
        let stale = self.stale(self.map.get(key)?, now);
        if stale {
            self.map.remove(key);
            self.expired += 1;
            return None;
        }
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// Removes and returns the live value of `key`.
    pub(crate) fn take(&mut self, key: &K, now: Timestamp) -> Option<V> {
        let slot = self.map.remove(key)?;
        if self.stale(&slot, now) {
            self.expired += 1;
            return None;
        }
        Some(slot.value)
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
                    return self.map.remove(&k).map(|s| (k, s.value));
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
        None
    }

    /// Makes room for `key`: when it is absent and the table is full, removes and returns the
    /// oldest entry (counted as evicted), so the next [`Bounded::insert`] evicts nothing.
    pub(crate) fn make_room(&mut self, key: &K) -> Option<(K, V)> {
        if self.map.contains_key(key) || self.map.len() < self.cap {
            return None;
        }
        while let Some((k, seq)) = self.order.pop_front() {
            if self.is_live(&k, seq) {
                self.evicted += 1;
                return self.map.remove(&k).map(|s| (k, s.value));
            }
        }
        None
    }

    /// Drops expired entries from the old end (entries are inserted in packet-time order).
    pub(crate) fn expire(&mut self, now: Timestamp) {
        while let Some(&(k, seq)) = self.order.front() {
            match self.map.get(&k) {
                Some(s) if s.seq == seq => {
                    if !self.stale(s, now) {
                        break;
                    }
                    self.map.remove(&k);
                    self.expired += 1;
                }
                _ => {}
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_table_expires_and_evicts_oldest_first() {
        let at = Timestamp::from_secs;
        let mut t: Bounded<u32, u32> = Bounded::new(3, std::time::Duration::from_secs(10));
        for k in 0..3 {
            t.insert(k, k, at(u64::from(k)));
        }
        t.insert(3, 3, at(3));
        assert_eq!(t.stats().evicted, 1);
        assert!(t.get_mut(&0, at(3)).is_none(), "oldest evicted");
        assert_eq!(t.take(&1, at(4)), Some(1));
        assert!(t.take(&2, at(13)).is_none(), "older than the TTL");
        assert_eq!(t.stats().expired, 1);
        t.expire(at(100));
        assert_eq!(t.stats().len, 0);
        assert_eq!(t.stats().expired, 2);
        // Removed entries do not grow the order queue without bound.
        for k in 0..10_000 {
            t.insert(k, k, at(200));
            t.take(&k, at(200));
        }
        assert!(t.order.len() <= 2 * t.map.len() + 65);
    }
}
