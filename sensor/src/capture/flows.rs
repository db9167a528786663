//! The offline mirror of the XDP program's `FLOWS` LRU map, so a capture file and its replay
//! through XDP forward the same TCP payloads.
//!
//! Same capacity and least-recently-used eviction. The kernel's LRU is approximate (it evicts
//! from per-CPU free lists in batches), so under pressure the two can differ in which flow goes
//! first; below capacity they agree exactly.

use std::collections::{BTreeMap, HashMap};

use sensor_ebpf::{FlowKey, FlowState, FlowTable, DEFAULT_MAX_FLOWS};

#[derive(Debug)]
pub struct FlowMarks {
    map: HashMap<FlowKey, (FlowState, u64)>,
    /// Last use → key: the least recently used entry is the first.
    by_use: BTreeMap<u64, FlowKey>,
    clock: u64,
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
            map: HashMap::new(),
            by_use: BTreeMap::new(),
            clock: 0,
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

    fn touch(&mut self, key: &FlowKey) -> u64 {
        self.clock += 1;
        if let Some((_, used)) = self.map.get_mut(key) {
            self.by_use.remove(used);
            *used = self.clock;
            self.by_use.insert(self.clock, *key);
        }
        self.clock
    }
}

impl FlowTable for FlowMarks {
    fn get(&mut self, key: &FlowKey) -> Option<FlowState> {
        self.touch(key);
        self.map.get(key).map(|(s, _)| *s)
    }

    fn set(&mut self, key: &FlowKey, state: &FlowState) {
        if let Some((s, _)) = self.map.get_mut(key) {
            *s = *state;
            self.touch(key);
            return;
        }
        if self.map.len() >= self.cap {
            if let Some((_, oldest)) = self.by_use.pop_first() {
                self.map.remove(&oldest);
                self.evicted += 1;
            }
        }
        self.clock += 1;
        self.map.insert(*key, (*state, self.clock));
        self.by_use.insert(self.clock, *key);
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some((_, used)) = self.map.remove(key) {
            self.by_use.remove(&used);
        }
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
        assert_eq!(t.by_use.len(), t.map.len());
    }
}
