//! Capture sources. Each produces [`crate::event::PacketEvent`]s for the shared pipeline.

pub mod flows;
pub mod pcap;
pub mod record;
pub mod xdp;

use sensor_ebpf::counter;

/// Pre-filter counter values (summed over CPUs for XDP), indexed by [`sensor_ebpf::counter`] slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot(pub [u64; counter::COUNT as usize]);

impl CounterSnapshot {
    pub fn get(&self, slot: u32) -> u64 {
        self.0[slot as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES.iter().copied().zip(self.0.iter().copied())
    }
}
