//! Record ABI shared by the XDP program (`src/main.rs`) and the userspace agent.
//!
//! Every record starts with a [`FlowHeader`]; its `kind` says which record follows. Records are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte. Header-only records
//! have a fixed size; payload records ([`kind::UDP`], [`kind::TCP_DATA`]) are their fixed part
//! followed by exactly `cap_len` payload bytes ([`record_len`]), so the ring carries no
//! rounding. `bpf_ringbuf_reserve` only takes a constant size (ARG_CONST_ALLOC_SIZE_OR_ZERO,
//! kernel `kernel/bpf/ringbuf.c`), so the program builds a payload record in a per-CPU scratch
//! buffer and copies it with `bpf_ringbuf_output`, whose size may vary within known bounds.
//!
//! Multi-byte integer fields are in host byte order; addresses stay in network order.
#![no_std]
// The XDP program passes the verifier in its fully inlined shape: every packet read next to the
// `data_end` comparison that proves it, every copy length next to the mask that bounds it (see
// `load_head` in main.rs). An outlined helper would become a BPF-to-BPF call, moving those proofs
// across a call boundary and spending stack frames from a 512-byte budget, a shape this program
// was never verified in. So `#[inline(always)]` is a requirement here, not a hint.
#![allow(clippy::inline_always)]

use core::mem::size_of;

/// Record kinds (`FlowHeader::kind`).
///
/// Kinds 3, 4, 7, 8 and 9 were the payload size classes of the fixed-size records this ABI
/// replaced; they are not reused, so a mixed-up object and agent fail to decode.
pub mod kind {
    /// A TCP segment carrying SYN, RST or FIN: [`super::TcpRecord`].
    pub const TCP: u8 = 1;
    /// A UDP datagram with a payload: a [`super::FlowHeader`] followed by exactly `cap_len`
    /// payload bytes ([`super::UdpRecord`]'s layout, of variable length).
    pub const UDP: u8 = 2;
    /// An ICMP/ICMPv6 destination-unreachable quoting a TCP or UDP packet: [`super::IcmpRecord`].
    pub const ICMP: u8 = 5;
    /// A TCP segment of a marked flow: the [`super::TcpRecord`] fields followed by exactly
    /// `cap_len` payload bytes ([`super::TcpDataRecord`]'s layout, of variable length). Its
    /// flags may include FIN or RST (never SYN).
    pub const TCP_DATA: u8 = 6;
    /// A UDP datagram without its payload ([`super::UdpRecord`] of capacity 0, `cap_len` 0):
    /// the compact metadata record `--udp-scan` asks for when the payload carries no
    /// coordination message.
    pub const UDP_META: u8 = 10;
}

/// TCP flag bits as they appear in byte 13 of the TCP header (RFC 9293 §3.1; ECE and CWR are
/// RFC 3168).
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
    /// Payload bytes copied into the record (UDP and TCP data records; 0 otherwise).
    pub cap_len: u16,
}

/// The header of an IPv4 record (every kind but [`kind::ICMP`], whose quoted packet may be
/// IPv6): [`FlowHeader`]'s fields with 4-byte addresses, 24 bytes shorter. It replaces the
/// [`FlowHeader`] at the start of the record; `ip_version` (4) is at the same offset in both,
/// so a reader tells them apart by that byte ([`header_len`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowHeaderV4 {
    pub kind: u8,
    pub ip_version: u8,
    pub vlan_depth: u8,
    pub tcp_flags: u8,
    pub ifindex: u32,
    pub ts_ns: u64,
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: u16,
    pub cap_len: u16,
}

impl FlowHeaderV4 {
    /// The compact form of an IPv4 header (the address bytes past the fourth are zero).
    #[inline(always)]
    pub const fn of(h: &FlowHeader) -> Self {
        Self {
            kind: h.kind,
            ip_version: h.ip_version,
            vlan_depth: h.vlan_depth,
            tcp_flags: h.tcp_flags,
            ifindex: h.ifindex,
            ts_ns: h.ts_ns,
            src_addr: [h.src_addr[0], h.src_addr[1], h.src_addr[2], h.src_addr[3]],
            dst_addr: [h.dst_addr[0], h.dst_addr[1], h.dst_addr[2], h.dst_addr[3]],
            src_port: h.src_port,
            dst_port: h.dst_port,
            payload_len: h.payload_len,
            cap_len: h.cap_len,
        }
    }

    /// The full header it stands for.
    pub const fn expand(&self) -> FlowHeader {
        let (s, d) = (self.src_addr, self.dst_addr);
        FlowHeader {
            kind: self.kind,
            ip_version: self.ip_version,
            vlan_depth: self.vlan_depth,
            tcp_flags: self.tcp_flags,
            ifindex: self.ifindex,
            ts_ns: self.ts_ns,
            src_addr: [s[0], s[1], s[2], s[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [d[0], d[1], d[2], d[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            src_port: self.src_port,
            dst_port: self.dst_port,
            payload_len: self.payload_len,
            cap_len: self.cap_len,
        }
    }
}

/// Length of the header a record of this kind and IP version starts with: the compact
/// [`FlowHeaderV4`] for IPv4 (but ICMP), the [`FlowHeader`] otherwise.
#[inline(always)]
pub const fn header_len(kind: u8, ip_version: u8) -> usize {
    if ip_version == 4 && kind != kind::ICMP {
        size_of::<FlowHeaderV4>()
    } else {
        size_of::<FlowHeader>()
    }
}

/// The TCP fields that follow the header in [`kind::TCP`] and [`kind::TCP_DATA`] records.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpTail {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 6],
}

/// A TCP segment with SYN, RST or FIN set (the IPv6 layout; an IPv4 record has a
/// [`FlowHeaderV4`] in place of `hdr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpRecord {
    pub hdr: FlowHeader,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 6],
}

/// A TCP segment of a flow marked for payload forwarding (see [`tcp_action`]): the control
/// fields plus up to `N` payload bytes. Only `hdr.cap_len` bytes of `data` are written.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpDataRecord<const N: usize> {
    pub hdr: FlowHeader,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 6],
    pub data: [u8; N],
}

/// An ICMP (type 3) or ICMPv6 (type 1) destination unreachable. The header's addresses are the
/// outer ones (ports 0, `payload_len` the ICMP payload length); the quoted packet's 5-tuple
/// says which attempt failed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpRecord {
    pub hdr: FlowHeader,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// 6 (TCP) or 17 (UDP).
    pub inner_proto: u8,
    pub inner_ip_version: u8,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 4],
    pub inner_src: [u8; 16],
    pub inner_dst: [u8; 16],
    pub inner_src_port: u16,
    pub inner_dst_port: u16,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad2: [u8; 4],
}

/// A UDP datagram: header plus up to `N` bytes of payload. Only the first `hdr.cap_len` bytes of
/// `data` are written by the kernel; the rest is whatever the ring held before.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdpRecord<const N: usize> {
    pub hdr: FlowHeader,
    pub data: [u8; N],
}

/// Largest snap length the program can honour (the scratch buffer's payload room).
pub const MAX_SNAPLEN: u32 = 2048;
/// Default snap length: a full UDP payload in a 1500-byte IPv4 packet.
pub const DEFAULT_SNAPLEN: u32 = 1472;

/// Size in bytes of the part of a record after its header: all of it for header-only kinds,
/// the part before the payload for [`kind::UDP`] and [`kind::TCP_DATA`]; `None` for an
/// unknown kind.
pub const fn tail_size(kind: u8) -> Option<usize> {
    match kind {
        kind::TCP | kind::TCP_DATA => Some(size_of::<TcpTail>()),
        kind::UDP | kind::UDP_META => Some(0),
        kind::ICMP => Some(size_of::<IcmpRecord>() - size_of::<FlowHeader>()),
        _ => None,
    }
}

/// Whether records of this kind carry `cap_len` payload bytes after their fixed part.
pub const fn has_payload(kind: u8) -> bool {
    matches!(kind, kind::UDP | kind::TCP_DATA)
}

/// Size in bytes of the record `hdr` heads: what the program puts in the ring, and what the
/// offline pre-filter counts. `None` for an unknown kind.
pub const fn record_len(hdr: &FlowHeader) -> Option<usize> {
    let Some(tail) = tail_size(hdr.kind) else {
        return None;
    };
    let fixed = header_len(hdr.kind, hdr.ip_version) + tail;
    Some(if has_payload(hdr.kind) {
        fixed + hdr.cap_len as usize
    } else {
        fixed
    })
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
    /// TCP segments without SYN, RST or FIN that are not forwarded: bare ACKs, and payloads of
    /// flows that are not marked (see [`super::tcp_action`]).
    pub const TCP_OTHER: u32 = 6;
    /// UDP datagrams without payload: not forwarded.
    pub const UDP_EMPTY: u32 = 7;
    /// IP packets that are neither TCP, UDP, nor an ICMP unreachable quoting TCP or UDP.
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
    /// ICMP destination-unreachable records.
    pub const REC_ICMP: u32 = 17;
    /// TCP data records without SYN, RST or FIN (those count under their flag's slot).
    pub const REC_TCP_DATA: u32 = 18;
    /// Payload segments of a marked flow not forwarded because its budget was spent: a loss
    /// the stream reassembler sees as a gap.
    pub const TCP_OVER_BUDGET: u32 = 19;
    /// Flows marked for payload forwarding (a signature matched). Not a frame outcome.
    pub const FLOWS_MARKED: u32 = 20;
    /// Marks removed on FIN, RST or a spent budget. Not a frame outcome; LRU evictions are not
    /// seen by the program.
    pub const FLOWS_ENDED: u32 = 21;
    /// UDP datagrams with a payload that has none of the coordination shapes
    /// (`udp_class_of`, the classified policy): not forwarded.
    pub const UDP_UNCLASSIFIED: u32 = 22;
    /// Compact metadata records (`--udp-scan`): a UDP datagram without its payload.
    pub const REC_UDP_META: u32 = 23;
    /// uTP DATA packets of a peer-wire flow past its budget and too large to be a control
    /// message: forwarded as their bare header (counted in `REC_UDP` too), which keeps the
    /// stream's sequence numbers whole. Not a frame outcome.
    pub const UTP_HEADER_ONLY: u32 = 24;
    /// Bytes of every frame the program ran on (the linear part XDP sees; offline, the
    /// captured frame). Not a frame outcome, nor are the byte counts below.
    pub const BYTES_SEEN: u32 = 25;
    /// Record bytes put in the ring (record sizes, without the ring's own 8-byte header), in
    /// all and by record kind.
    pub const BYTES_FORWARDED: u32 = 26;
    pub const BYTES_TCP: u32 = 27;
    pub const BYTES_TCP_DATA: u32 = 28;
    pub const BYTES_UDP: u32 = 29;
    pub const BYTES_UDP_META: u32 = 30;
    pub const BYTES_ICMP: u32 = 31;

    pub const COUNT: u32 = 32;

    /// Interfaces one program counts apart: the kernel's counter map holds `COUNT` slots for
    /// each, at `iface_slot * COUNT`, plus one more block ([`UNKNOWN_IFACE`]). `sensor run`
    /// refuses more `--iface`s than this.
    pub const MAX_IFACES: u32 = 8;
    /// The block counting frames from an interface missing from the program's interface map.
    /// Userspace fills that map before attaching, so this block stays zero unless something
    /// attached the program elsewhere; it is counted, not dropped, so totals stay whole.
    pub const UNKNOWN_IFACE: u32 = MAX_IFACES;
    /// Entries of the kernel's counter map: one block per interface and the unknown block.
    pub const MAP_ENTRIES: u32 = (MAX_IFACES + 1) * COUNT;

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
        "records_icmp",
        "records_tcp_data",
        "tcp_over_budget",
        "flows_marked",
        "flows_ended",
        "udp_unclassified",
        "records_udp_meta",
        "utp_header_only",
        "bytes_seen",
        "bytes_forwarded",
        "bytes_tcp",
        "bytes_tcp_data",
        "bytes_udp",
        "bytes_udp_meta",
        "bytes_icmp",
    ];

    /// The byte counter of a record kind's bytes.
    #[inline(always)]
    pub const fn bytes_of(kind: u8) -> u32 {
        match kind {
            super::kind::TCP => BYTES_TCP,
            super::kind::TCP_DATA => BYTES_TCP_DATA,
            super::kind::ICMP => BYTES_ICMP,
            super::kind::UDP_META => BYTES_UDP_META,
            _ => BYTES_UDP,
        }
    }
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

mod flow;
mod parse;
// Bit operations instead of `&&`/`||`, as in `udp`: fewer branches for the verifier.
#[allow(clippy::needless_bitwise_bool)]
pub mod shard;
// Conditions combined with `&`/`|` on purpose: each `&&`/`||` is a branch the verifier walks.
#[allow(clippy::needless_bitwise_bool)]
mod udp;

pub use flow::{
    confirm_signature, extended_message_shape, flow_class, flow_key, mark_flow, tcp_action,
    FlowKey, FlowState, FlowTable, TcpAction, ANNOUNCE_SCAN, DEFAULT_MAX_FLOWS, EXTENDED_SHAPE,
    FIN_A, FIN_B, FLOW_SEGMENTS, SMALL_SEGMENT,
};
pub use parse::{parse, Frame, IcmpQuote, Parsed, L4};
pub use udp::{
    udp_action, udp_class_of, udp_policy, UdpAction, UdpClass, UTP_FULL_PACKETS, UTP_SMALL_DATAGRAM,
};

// Layout is ABI: pin it so a careless edit fails to compile instead of corrupting records.
const _: () = assert!(size_of::<FlowHeader>() == 56);
const _: () = assert!(size_of::<FlowHeaderV4>() == 32);
const _: () = assert!(size_of::<TcpTail>() == 16);
const _: () = assert!(size_of::<TcpRecord>() == 72);
const _: () = assert!(size_of::<UdpRecord<0>>() == 56);
const _: () = assert!(size_of::<UdpRecord<32>>() == 56 + 32);
const _: () = assert!(size_of::<UdpRecord<128>>() == 56 + 128);
const _: () = assert!(size_of::<UdpRecord<2048>>() == 56 + 2048);
const _: () = assert!(align_of::<TcpRecord>() <= 8);
const _: () = assert!(size_of::<IcmpRecord>() == 104);
const _: () = assert!(size_of::<TcpDataRecord<128>>() == 72 + 128);
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<FlowState>() == 8);
const _: () = assert!(size_of::<IfaceTable>() == 4 * (2 * counter::MAX_IFACES as usize + 1));

/// Which counter block each interface counts in: the single entry of the kernel's `IFACES`
/// map, written by userspace before attaching. The program scans `ifindex` for the frame's
/// ingress interface (a few compares: cheaper per frame than a hash-map lookup) and takes the
/// block's first counter index from `base`, the last entry serving frames of no listed
/// interface ([`counter::UNKNOWN_IFACE`]).
///
/// `base` holds what could be computed (`block * COUNT`) so that the verifier reads it from map
/// memory, an unknown scalar: computed, each match would be a distinct constant that the
/// verifier carries through the rest of the program, following it once per interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceTable {
    /// Interface index of block `i`; 0 (no interface has index 0) for an unused block.
    pub ifindex: [u32; counter::MAX_IFACES as usize],
    /// First index in the counter map of block `i`.
    pub base: [u32; counter::MAX_IFACES as usize + 1],
}

impl IfaceTable {
    /// Blocks for `ifindexes` in order; `None` for more than [`counter::MAX_IFACES`].
    pub fn new(ifindexes: &[u32]) -> Option<Self> {
        if ifindexes.len() > counter::MAX_IFACES as usize {
            return None;
        }
        let mut table = Self {
            ifindex: [0; counter::MAX_IFACES as usize],
            base: [0; counter::MAX_IFACES as usize + 1],
        };
        table.ifindex[..ifindexes.len()].copy_from_slice(ifindexes);
        for (base, block) in table.base.iter_mut().zip(0u32..) {
            *base = block * counter::COUNT;
        }
        Some(table)
    }

    /// The first counter index of the block of frames arriving on `ifindex`.
    #[inline(always)]
    pub fn base_of(&self, ifindex: u32) -> u32 {
        let mut block = counter::MAX_IFACES as usize;
        // No early exit: a fixed number of compares, and an index known to be in bounds.
        for (i, &index) in self.ifindex.iter().enumerate() {
            if index == ifindex {
                block = i;
            }
        }
        self.base[block]
    }
}

#[cfg(feature = "user")]
mod user {
    // Every type below is `#[repr(C)]`, `Copy` and made only of integers and byte arrays, so any
    // bit pattern is a valid value; the size asserts above show it has no implicit padding, so
    // every byte userspace reads was written by the kernel. That is what `aya::Pod` requires.

    // SAFETY: `#[repr(C)]` integers and byte arrays, 56 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowHeader {}
    // SAFETY: a `FlowHeader` plus integers and explicit `pad`, 72 bytes with no implicit padding.
    unsafe impl aya::Pod for super::TcpRecord {}
    // SAFETY: `#[repr(C)]` integers and byte arrays, 32 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowHeaderV4 {}
    // SAFETY: a `FlowHeader` plus integers, byte arrays and explicit `pad`/`pad2`, 104 bytes with
    // no implicit padding.
    unsafe impl aya::Pod for super::IcmpRecord {}
    // SAFETY: byte arrays, integers and explicit `pad`, 40 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: integers and explicit `pad`, 8 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowState {}
    // SAFETY: integer arrays only, with no implicit padding (size asserted above).
    unsafe impl aya::Pod for super::IfaceTable {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn each_interface_counts_in_its_own_block_and_others_in_the_unknown_one() {
        let table = IfaceTable::new(&[7, 3, 1_000_000]).unwrap();
        assert_eq!(table.base_of(7), 0);
        assert_eq!(table.base_of(3), counter::COUNT);
        assert_eq!(table.base_of(1_000_000), 2 * counter::COUNT);
        let unknown = counter::UNKNOWN_IFACE * counter::COUNT;
        assert_eq!(table.base_of(4), unknown);
        assert_eq!(IfaceTable::new(&[]).unwrap().base_of(7), unknown);
        // The last block's counters end where the map does.
        assert_eq!(unknown + counter::COUNT, counter::MAP_ENTRIES);
        let full: Vec<u32> = (1..=counter::MAX_IFACES).collect();
        let table = IfaceTable::new(&full).unwrap();
        assert_eq!(
            table.base_of(counter::MAX_IFACES),
            (counter::MAX_IFACES - 1) * counter::COUNT
        );
        assert!(IfaceTable::new(&(1..=counter::MAX_IFACES + 1).collect::<Vec<_>>()).is_none());
    }

    /// Ethernet + IPv4 + TCP SYN from 192.0.2.10:51413 to 203.0.113.7:6881, options included.
    const SYN: [u8; 74] = [
        0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00, // Ethernet
        0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 10, 203, 0, 113,
        7, // IPv4
        0xc8, 0xd5, 0x1a, 0xe1, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0xa0, 0x02, 0xfa, 0xf0, 0, 0, 0, 0,
        // TCP options (MSS, SACK permitted, timestamps, NOP, window scale): 20 bytes
        2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::from(&SYN[..14]);
        let total = u16::try_from(20 + 8 + payload.len()).unwrap();
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[192, 0, 2, 10, 203, 0, 113, 7]);
        let ulen = u16::try_from(8 + payload.len()).unwrap();
        f.extend_from_slice(&[0x1a, 0xe1, 0x1a, 0xe1]);
        f.extend_from_slice(&ulen.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn run(frame: &[u8], snaplen: u32) -> (Result<Parsed, u32>, Vec<u32>) {
        let mut seen = Vec::new();
        let r = parse(frame, snaplen, &mut |slot| seen.push(slot));
        (r, seen)
    }

    #[test]
    fn syn_with_options_is_forwarded() {
        let (r, seen) = run(&SYN, DEFAULT_SNAPLEN);
        let p = r.unwrap();
        assert_eq!(seen, [counter::IPV4]);
        assert_eq!(p.counter, counter::REC_SYN);
        assert_eq!((p.hdr.src_port, p.hdr.dst_port), (51413, 6881));
        assert_eq!(&p.hdr.src_addr[..4], &[192, 0, 2, 10]);
        assert_eq!(p.hdr.payload_len, 0);
        assert_eq!(
            p.l4,
            L4::Tcp {
                seq: 1000,
                ack: 0,
                window: 64240,
                payload_off: 14 + 20 + 40,
            }
        );
    }

    #[test]
    fn only_the_first_20_tcp_header_bytes_are_required() {
        // A capture with a 54-byte snap length still yields the SYN (as XDP would on replay).
        let (r, _) = run(&SYN[..54], DEFAULT_SNAPLEN);
        assert_eq!(r.unwrap().counter, counter::REC_SYN);
        assert_eq!(
            run(&SYN[..53], DEFAULT_SNAPLEN).0,
            Err(counter::PARSE_ERRORS)
        );
    }

    #[test]
    fn every_prefix_of_real_frames_is_handled() {
        let udp = udp_frame(&[0x64; 300]);
        for frame in [&SYN[..], &udp[..]] {
            for len in 0..=frame.len() {
                if let (Ok(p), _) = run(&frame[..len], DEFAULT_SNAPLEN) {
                    if let L4::Udp { payload_off } = p.l4 {
                        assert!(payload_off + usize::from(p.hdr.cap_len) <= len);
                        assert!(p.hdr.cap_len <= p.hdr.payload_len);
                    }
                }
            }
        }
    }

    #[test]
    fn udp_prefix_respects_snap_length_and_frame() {
        let frame = udp_frame(&[7; 1000]);
        let (r, seen) = run(&frame, 256);
        let p = r.unwrap();
        assert_eq!(
            (p.hdr.payload_len, p.hdr.cap_len, p.hdr.kind),
            (1000, 256, kind::UDP)
        );
        assert_eq!(seen, [counter::IPV4, counter::UDP_TRUNCATED]);
        // Larger than the largest class is clamped.
        let (r, _) = run(&frame, 1 << 20);
        assert_eq!(r.unwrap().hdr.cap_len, 1000);
        // A snapped capture copies only what it holds, and says so.
        let (r, seen) = run(&frame[..14 + 20 + 8 + 100], 1472);
        assert!(seen.contains(&counter::UDP_TRUNCATED));
        assert_eq!(r.unwrap().hdr.cap_len, 100);
    }

    #[test]
    fn tcp_flag_precedence() {
        use tcp_flag::*;
        assert_eq!(tcp_record_counter(SYN), Some(counter::REC_SYN));
        assert_eq!(tcp_record_counter(SYN | ACK), Some(counter::REC_SYNACK));
        assert_eq!(tcp_record_counter(SYN | RST), Some(counter::REC_RST));
        assert_eq!(tcp_record_counter(FIN | SYN), Some(counter::REC_SYN));
        assert_eq!(tcp_record_counter(FIN | ACK | PSH), Some(counter::REC_FIN));
        assert_eq!(tcp_record_counter(ACK | PSH), None);
    }

    #[test]
    fn announce_signature_is_searched_in_the_first_bytes_only() {
        let at = |offset: usize, len: usize| {
            let mut head = [b'x'; 2048];
            head[..4].copy_from_slice(b"GET ");
            head[offset..offset + 10].copy_from_slice(b"info_hash=");
            confirm_signature(flow_class::HTTP_TRACKER, &head, len)
        };
        assert!(at(4, 2048));
        assert!(
            at(ANNOUNCE_SCAN - 10, 2048),
            "ends exactly at the scan limit"
        );
        assert!(!at(ANNOUNCE_SCAN - 9, 2048), "ends one byte past it");
        assert!(!at(100, 109), "only the copied bytes count");
        assert!(at(100, 110));
        let mut small = [0u8; 128];
        small[..14].copy_from_slice(b"GET info_hash=");
        assert!(confirm_signature(flow_class::HTTP_TRACKER, &small, 14));
        assert!(!confirm_signature(flow_class::PEER_WIRE, &small, 128));
        let mut hs = [0u8; 128];
        hs[..20].copy_from_slice(b"\x13BitTorrent protocol");
        assert!(confirm_signature(flow_class::PEER_WIRE, &hs, 20));
        assert!(!confirm_signature(flow_class::PEER_WIRE, &hs, 19));
    }

    #[test]
    fn payload_records_are_exactly_their_fixed_part_and_payload() {
        let (r, _) = run(&udp_frame(&[7; 61]), DEFAULT_SNAPLEN);
        let hdr = r.unwrap().hdr;
        assert_eq!((hdr.kind, hdr.cap_len), (kind::UDP, 61));
        // IPv4: the 32-byte compact header.
        assert_eq!(record_len(&hdr), Some(32 + 61));
        let v6 = FlowHeader {
            ip_version: 6,
            ..hdr
        };
        assert_eq!(record_len(&v6), Some(56 + 61));
        let (r, _) = run(&SYN, DEFAULT_SNAPLEN);
        assert_eq!(record_len(&r.unwrap().hdr), Some(32 + 16));
        let mut data = FlowHeader {
            kind: kind::TCP_DATA,
            ..hdr
        };
        data.cap_len = 5;
        assert_eq!(record_len(&data), Some(48 + 5));
        // ICMP keeps the full header (its quote may be IPv6).
        let icmp = FlowHeader {
            kind: kind::ICMP,
            ..hdr
        };
        assert_eq!(record_len(&icmp), Some(104));
        assert_eq!(FlowHeaderV4::of(&hdr).expand(), hdr);
        // Header-only kinds ignore `cap_len`; retired class kinds are unknown.
        data.kind = kind::UDP_META;
        assert_eq!(record_len(&data), Some(32));
        for retired in [3, 4, 7, 8, 9] {
            data.kind = retired;
            assert_eq!(record_len(&data), None);
        }
    }
}
