//! The BitTorrent-vs-scan sensor's userspace agent.
//!
//! Data flows one way: a capture source (the XDP ring buffer, or a pcap file) produces
//! [`event::PacketEvent`]s, which every later stage consumes the same way.

pub mod agent;
pub mod analyze;
pub mod bt;
pub mod capture;
pub mod cli;
pub mod conn;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod event;
pub mod logs;
pub mod metrics;
pub mod ppr;
pub mod predict;
pub mod privileges;
pub mod shard;
pub mod state;
#[cfg(test)]
pub(crate) mod test_support;
pub mod time;

/// The XDP object built by `build.rs`, aligned as aya's object parser requires.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensor"));
