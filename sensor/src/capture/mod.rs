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

    /// Records the kernel emitted.
    pub fn records(&self) -> u64 {
        [
            counter::REC_RST,
            counter::REC_SYN,
            counter::REC_SYNACK,
            counter::REC_FIN,
            counter::REC_UDP,
            counter::REC_ICMP,
        ]
        .iter()
        .map(|&s| self.get(s))
        .sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::NAMES.iter().copied().zip(self.0.iter().copied())
    }
}
