//! Record ABI shared by the XDP program (`src/main.rs`) and the userspace agent.
//!
//! Every record starts with a [`FlowHeader`]; its `kind` says which record follows. Records are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte, and fixed-size because the
//! verifier only accepts constant-size ring reservations: UDP payload prefixes therefore come in
//! three size classes ([`UDP_CLASSES`]) instead of one large record that would waste the ring.
//!
//! Multi-byte integer fields are in host byte order; addresses stay in network order.
#![no_std]

use core::mem::size_of;

/// Record kinds (`FlowHeader::kind`).
pub mod kind {
    /// A TCP segment carrying SYN, RST or FIN: [`super::TcpRecord`].
    pub const TCP: u8 = 1;
    /// A UDP datagram with a payload, plus its head: [`super::UdpRecord`] in one of three classes.
    pub const UDP_128: u8 = 2;
    pub const UDP_512: u8 = 3;
    pub const UDP_2048: u8 = 4;
}

/// TCP flag bits as they appear in byte 13 of the TCP header.
pub mod tcp_flag {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// Header common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHeader {
    /// One of [`kind`].
    pub kind: u8,
    /// 4 or 6.
    pub ip_version: u8,
    /// Number of 802.1Q/802.1ad tags that were skipped (0..=2).
    pub vlan_depth: u8,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// Interface the frame arrived on.
    pub ifindex: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds; userspace converts to wall time.
    pub ts_ns: u64,
    /// Source address, network order; IPv4 uses the first 4 bytes, the rest is zero.
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// True L4 payload length from the headers, not limited by the snap length.
    pub payload_len: u16,
    /// Payload bytes copied into the record (UDP only; 0 for TCP).
    pub cap_len: u16,
}

/// A TCP segment with SYN, RST or FIN set.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRecord {
    pub hdr: FlowHeader,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub _pad: [u8; 6],
}

/// A UDP datagram: header plus up to `N` bytes of payload. Only the first `hdr.cap_len` bytes of
/// `data` are written by the kernel; the rest is whatever the ring held before.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdpRecord<const N: usize> {
    pub hdr: FlowHeader,
    pub data: [u8; N],
}

/// UDP record classes: (kind, payload capacity). Capacities are powers of two, which the eBPF
/// side relies on to prove copy lengths to the verifier.
pub const UDP_CLASSES: [(u8, usize); 3] =
    [(kind::UDP_128, 128), (kind::UDP_512, 512), (kind::UDP_2048, 2048)];

/// Largest snap length the program can honour (the largest class).
pub const MAX_SNAPLEN: u32 = 2048;
/// Default snap length: a full UDP payload in a 1500-byte IPv4 packet.
pub const DEFAULT_SNAPLEN: u32 = 1472;

/// Size in bytes of a record of the given kind, or `None` for an unknown kind.
pub const fn record_size(kind: u8) -> Option<usize> {
    match kind {
        kind::TCP => Some(size_of::<TcpRecord>()),
        kind::UDP_128 => Some(size_of::<UdpRecord<128>>()),
        kind::UDP_512 => Some(size_of::<UdpRecord<512>>()),
        kind::UDP_2048 => Some(size_of::<UdpRecord<2048>>()),
        _ => None,
    }
}

/// Slots of the per-CPU `COUNTERS` array. Userspace sums them over CPUs at scrape time.
pub mod counter {
    /// Every frame the program ran on.
    pub const PACKETS: u32 = 0;
    /// Neither IPv4 nor IPv6 (ARP, LLDP, ...), or more VLAN tags than we unwrap.
    pub const NON_IP: u32 = 1;
    pub const IPV4: u32 = 2;
    pub const IPV6: u32 = 3;
    /// Non-first IP fragments: no L4 header, skipped.
    pub const FRAGMENTS: u32 = 4;
    /// Truncated or malformed headers.
    pub const PARSE_ERRORS: u32 = 5;
    /// TCP segments without SYN, RST or FIN: not forwarded.
    pub const TCP_OTHER: u32 = 6;
    /// UDP datagrams without payload: not forwarded.
    pub const UDP_EMPTY: u32 = 7;
    /// IP packets that are neither TCP nor UDP.
    pub const OTHER_L4: u32 = 8;
    /// Records emitted, by what they carry. A TCP segment is counted once, under the first of
    /// RST, SYN (no ACK), SYN-ACK, FIN that it has.
    pub const REC_RST: u32 = 9;
    pub const REC_SYN: u32 = 10;
    pub const REC_SYNACK: u32 = 11;
    pub const REC_FIN: u32 = 12;
    pub const REC_UDP: u32 = 13;
    /// A record could not be reserved because the ring was full: the record is lost.
    pub const RING_FULL: u32 = 14;
    /// `bpf_xdp_load_bytes` failed (should not happen; counted rather than assumed).
    pub const LOAD_ERRORS: u32 = 15;
    /// UDP payload longer than the snap length: the record holds a prefix.
    pub const UDP_TRUNCATED: u32 = 16;

    pub const COUNT: u32 = 17;

    /// Metric-friendly names, indexed by slot.
    pub const NAMES: [&str; COUNT as usize] = [
        "packets",
        "non_ip",
        "ipv4",
        "ipv6",
        "fragments",
        "parse_errors",
        "tcp_other",
        "udp_empty",
        "other_l4",
        "records_rst",
        "records_syn",
        "records_synack",
        "records_fin",
        "records_udp",
        "ring_full",
        "load_errors",
        "udp_truncated",
    ];
}

/// Which record counter a TCP segment with these flags is counted under (see [`counter`]), or
/// `None` if the segment is not forwarded. Shared by the eBPF program and the offline path so
/// both classify identically.
#[inline(always)]
pub const fn tcp_record_counter(flags: u8) -> Option<u32> {
    if flags & tcp_flag::RST != 0 {
        Some(counter::REC_RST)
    } else if flags & tcp_flag::SYN != 0 {
        if flags & tcp_flag::ACK != 0 {
            Some(counter::REC_SYNACK)
        } else {
            Some(counter::REC_SYN)
        }
    } else if flags & tcp_flag::FIN != 0 {
        Some(counter::REC_FIN)
    } else {
        None
    }
}

/// UDP record class (kind, capacity) for a copy of `cap_len` bytes.
#[inline(always)]
pub const fn udp_class(cap_len: u32) -> (u8, usize) {
    if cap_len <= 128 {
        UDP_CLASSES[0]
    } else if cap_len <= 512 {
        UDP_CLASSES[1]
    } else {
        UDP_CLASSES[2]
    }
}

// Layout is ABI: pin it so a careless edit fails to compile instead of corrupting records.
const _: () = assert!(size_of::<FlowHeader>() == 56);
const _: () = assert!(size_of::<TcpRecord>() == 72);
const _: () = assert!(size_of::<UdpRecord<128>>() == 56 + 128);
const _: () = assert!(size_of::<UdpRecord<2048>>() == 56 + 2048);
const _: () = assert!(core::mem::align_of::<TcpRecord>() <= 8);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data `#[repr(C)]` structs with no implicit padding (checked above).
    unsafe impl aya::Pod for super::FlowHeader {}
    unsafe impl aya::Pod for super::TcpRecord {}
}
