//! The offline mirror of the XDP program's `FLOWS` LRU map, so a capture file and its replay
//! through XDP forward the same TCP payloads.
//!
//! Same capacity and least-recently-used eviction. The kernel's LRU is approximate (it evicts
//! from per-CPU free lists in batches), so under pressure the two can differ in which flow goes
//! first; below capacity they agree exactly.

use sensor_ebpf::{FlowKey, FlowState, FlowTable, DEFAULT_MAX_FLOWS};

use crate::detect::LinkedHashMap;

#[derive(Debug)]
pub struct FlowMarks {
    /// Least recently used first. A linked map with keyed foldhash: the keys come off the wire,
    /// and the map is read for every TCP segment and classified UDP datagram (std's SipHash
    /// and a second map in use order were a few per cent of the pre-filter's time).
    map: LinkedHashMap<FlowKey, FlowState>,
    cap: usize,
    /// Entries dropped to make room (the kernel does not report its own).
    pub evicted: u64,
}

impl Default for FlowMarks {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FLOWS as usize)
    }
}

impl FlowMarks {
    pub fn new(cap: usize) -> Self {
        Self {
            map: LinkedHashMap::default(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl FlowTable for FlowMarks {
    fn get(&mut self, key: &FlowKey) -> Option<FlowState> {
        self.map.to_back(key).copied()
    }

    fn set(&mut self, key: &FlowKey, state: &FlowState) {
        if let Some(s) = self.map.to_back(key) {
            *s = *state;
            return;
        }
        if self.map.len() >= self.cap && self.map.pop_front().is_some() {
            self.evicted += 1;
        }
        self.map.insert(*key, *state);
    }

    fn remove(&mut self, key: &FlowKey) {
        self.map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            a_addr: [1; 16],
            b_addr: [2; 16],
            a_port: port,
            b_port: 80,
            ip_version: 4,
            proto: 6,
            pad: [0; 2],
        }
    }

    fn state(n: u32) -> FlowState {
        FlowState {
            class: 1,
            fins: 0,
            pad: [0; 2],
            segments_left: n,
        }
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut t = FlowMarks::new(2);
        t.set(&key(1), &state(1));
        t.set(&key(2), &state(2));
        assert_eq!(t.get(&key(1)), Some(state(1)));
        t.set(&key(3), &state(3));
        assert_eq!(t.get(&key(2)), None, "key 2 was the least recently used");
        assert_eq!(t.get(&key(1)), Some(state(1)));
        assert_eq!(t.get(&key(3)), Some(state(3)));
        assert_eq!((t.len(), t.evicted), (2, 1));
        t.remove(&key(1));
        t.set(&key(4), &state(4));
        assert_eq!((t.len(), t.evicted), (2, 1));
        // Key 3 is now the least recently used.
        t.set(&key(5), &state(5));
        assert_eq!(t.get(&key(3)), None);
        assert_eq!(t.get(&key(4)), Some(state(4)));
    }
}
