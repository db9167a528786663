//! Record ABI shared by the XDP program (`src/main.rs`) and the userspace agent.
//!
//! Every record starts with a [`FlowHeader`]; its `kind` says which record follows. Records are
//! `#[repr(C)]` with explicit padding so both sides agree byte for byte, and fixed-size because the
//! verifier only accepts constant-size ring reservations: UDP payload prefixes therefore come in
//! three size classes ([`UDP_CLASSES`]) instead of one large record that would waste the ring.
//!
//! Multi-byte integer fields are in host byte order; addresses stay in network order.
#![no_std]
// The BPF verifier needs the parse steps inlined into the XDP program: a BPF-to-BPF call would
// lose the packet pointer's proven bounds (and generic helpers taking `&impl Frame` cannot be
// BPF functions at all), so `#[inline(always)]` is a requirement here, not a hint.
#![allow(clippy::inline_always)]

use core::mem::size_of;

/// Record kinds (`FlowHeader::kind`).
pub mod kind {
    /// A TCP segment carrying SYN, RST or FIN: [`super::TcpRecord`].
    pub const TCP: u8 = 1;
    /// A UDP datagram with a payload, plus its head: [`super::UdpRecord`] in one of three classes.
    pub const UDP_128: u8 = 2;
    pub const UDP_512: u8 = 3;
    pub const UDP_2048: u8 = 4;
    /// An ICMP/ICMPv6 destination-unreachable quoting a TCP or UDP packet: [`super::IcmpRecord`].
    pub const ICMP: u8 = 5;
    /// A TCP segment of a marked flow with its payload head: [`super::TcpDataRecord`] in one of
    /// three classes. Its flags may include FIN or RST (never SYN).
    pub const TCP_DATA_128: u8 = 6;
    pub const TCP_DATA_512: u8 = 7;
    pub const TCP_DATA_2048: u8 = 8;
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

/// A TCP segment with SYN, RST or FIN set.
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

/// UDP record classes: (kind, payload capacity). Capacities are powers of two, which the eBPF
/// side relies on to prove copy lengths to the verifier.
pub const UDP_CLASSES: [(u8, usize); 3] = [
    (kind::UDP_128, 128),
    (kind::UDP_512, 512),
    (kind::UDP_2048, 2048),
];

/// TCP data record classes, as [`UDP_CLASSES`].
pub const TCP_DATA_CLASSES: [(u8, usize); 3] = [
    (kind::TCP_DATA_128, 128),
    (kind::TCP_DATA_512, 512),
    (kind::TCP_DATA_2048, 2048),
];

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
        kind::ICMP => Some(size_of::<IcmpRecord>()),
        kind::TCP_DATA_128 => Some(size_of::<TcpDataRecord<128>>()),
        kind::TCP_DATA_512 => Some(size_of::<TcpDataRecord<512>>()),
        kind::TCP_DATA_2048 => Some(size_of::<TcpDataRecord<2048>>()),
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

    pub const COUNT: u32 = 22;

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

/// TCP data record class (kind, capacity) for a copy of `cap_len` bytes.
#[inline(always)]
pub const fn tcp_data_class(cap_len: u32) -> (u8, usize) {
    if cap_len <= 128 {
        TCP_DATA_CLASSES[0]
    } else if cap_len <= 512 {
        TCP_DATA_CLASSES[1]
    } else {
        TCP_DATA_CLASSES[2]
    }
}

/// Read access to a frame, so [`parse`] runs unchanged on an XDP context and on a byte slice.
pub trait Frame {
    /// Bytes in the frame (the linear part, for XDP).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `N` bytes at `off`, or `None` past the end. On XDP this is the bounds check the verifier
    /// needs before every packet read.
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
}

impl Frame for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.get(off..off.checked_add(N)?)?.try_into().ok()
    }
}

/// Transport part of a forwarded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// The payload, if any, starts at `payload_off`; `hdr.cap_len` bytes of it can be copied.
    Tcp {
        seq: u32,
        ack: u32,
        window: u16,
        payload_off: usize,
    },
    /// The payload starts at `payload_off`; `hdr.cap_len` bytes of it are to be copied.
    Udp { payload_off: usize },
    /// Destination unreachable; the header fields of the packet it quotes.
    Icmp(IcmpQuote),
}

/// What an ICMP destination unreachable says about the packet that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpQuote {
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub inner_proto: u8,
    pub inner_ip_version: u8,
    pub inner_src: [u8; 16],
    pub inner_dst: [u8; 16],
    pub inner_src_port: u16,
    pub inner_dst_port: u16,
}

/// A packet the pre-filter forwards: the record header (without `ifindex` and `ts_ns`, which
/// the capture source fills in), its transport part, and the counter slot it is recorded under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub hdr: FlowHeader,
    pub l4: L4,
    pub counter: u32,
}

/// EtherType of IPv4 (RFC 894).
const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6 (RFC 2464).
const ETH_P_IPV6: u16 = 0x86dd;
/// Customer VLAN tag, IEEE 802.1Q.
const ETH_P_8021Q: u16 = 0x8100;
/// Service VLAN tag (the outer tag of QinQ), IEEE 802.1ad.
const ETH_P_8021AD: u16 = 0x88a8;
/// Pre-standard outer QinQ tag some switches still emit (never assigned by the IEEE).
const ETH_P_QINQ_OLD: u16 = 0x9100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// Furthest L4 offset followed; keeps offsets small enough for the verifier to track.
const MAX_L4_OFFSET: usize = 1024;

// Big-endian reads: the one helper set of this crate.
//
// They differ from userspace's `bt::wire::Reader` on purpose. That cursor walks a slice and
// reports `Truncated` at run time; here nothing is read until `Frame::bytes` has handed out a
// fixed-size array, and on XDP that call *is* the `data + off + N <= data_end` comparison the
// verifier must see before any packet load. Every field is then read from that array at a
// constant offset, which compiles to plain loads with no bounds check or panic path (BPF has
// no panic and the verifier rejects unbounded slice arithmetic). `get` is the checked step,
// `be16`/`be32` the reads inside what it returned.

/// `N` bytes of `frame` at `off`, or `PARSE_ERRORS` when the frame is shorter.
#[inline(always)]
fn get<const N: usize, F: Frame + ?Sized>(frame: &F, off: usize) -> Result<&[u8; N], u32> {
    frame.bytes::<N>(off).ok_or(counter::PARSE_ERRORS)
}

/// Big-endian `u16` at `at` of a header already bounds-checked by [`get`].
#[inline(always)]
fn be16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Big-endian `u32` at `at` of a header already bounds-checked by [`get`].
#[inline(always)]
fn be32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What the IP layer says about the transport header it carries.
#[derive(Clone, Copy)]
struct IpPayload {
    /// Offset of the L4 header in the frame.
    l4_off: usize,
    /// L4 bytes in this packet according to the IP header (the frame may hold fewer).
    l4_len: usize,
    /// IPv4 protocol, or the IPv6 next header after the walked extension headers.
    proto: u8,
    /// First of several fragments: MF set and offset 0.
    first_fragment: bool,
}

/// The pre-filter's decision for one Ethernet frame: `Ok` for a packet to forward, `Err(slot)`
/// naming the [`counter`] that explains why not. `count` receives the other counters the frame
/// touches on the way (IP version, truncated UDP).
///
/// This one function is the acceptance policy of both the XDP program and the offline pcap path,
/// so a file and a replay of it through XDP forward exactly the same packets:
/// - up to two VLAN tags (802.1Q, 802.1ad, 0x9100) are unwrapped;
/// - IPv4 non-first fragments and IPv6 fragments with a nonzero offset are skipped;
/// - IPv6 hop-by-hop, routing, destination-options, fragment and AH headers are walked, at most 6;
/// - TCP is forwarded if it has SYN, RST or FIN (only its first 20 header bytes must be
///   present) or a payload; [`tcp_action`] then decides, per flow, whether the payload goes too;
/// - UDP is forwarded if it has a payload; up to `snaplen` bytes of it present in the frame are
///   copied (a UDP length beyond the IP payload is accepted only in a first fragment).
///
/// Each layer is one step below; all are `#[inline(always)]` so the XDP program is still one
/// function with one packet pointer whose bounds the verifier tracks throughout.
#[inline(always)]
pub fn parse<F: Frame + ?Sized>(
    frame: &F,
    snaplen: u32,
    count: &mut impl FnMut(u32),
) -> Result<Parsed, u32> {
    let mut hdr = FlowHeader {
        kind: 0,
        ip_version: 0,
        vlan_depth: 0,
        tcp_flags: 0,
        ifindex: 0,
        ts_ns: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: 0,
        payload_len: 0,
        cap_len: 0,
    };
    let (ethertype, off) = link_layer(frame, &mut hdr)?;
    let ip = match ethertype {
        ETH_P_IPV4 => {
            count(counter::IPV4);
            ipv4(frame, off, &mut hdr)?
        }
        ETH_P_IPV6 => {
            count(counter::IPV6);
            ipv6(frame, off, &mut hdr)?
        }
        _ => return Err(counter::NON_IP),
    };
    if ip.l4_off > MAX_L4_OFFSET {
        return Err(counter::PARSE_ERRORS);
    }
    match ip.proto {
        IPPROTO_TCP => tcp(frame, hdr, &ip, snaplen),
        IPPROTO_UDP => udp(frame, hdr, &ip, snaplen, count),
        IPPROTO_ICMP if hdr.ip_version == 4 => {
            icmp_unreachable(frame, hdr, ip.l4_off, ip.l4_len, 3)
        }
        IPPROTO_ICMPV6 if hdr.ip_version == 6 => {
            icmp_unreachable(frame, hdr, ip.l4_off, ip.l4_len, 1)
        }
        _ => Err(counter::OTHER_L4),
    }
}

/// Ethernet II header and up to two VLAN tags: the EtherType they end on and the offset of the
/// network header. Each tag (IEEE 802.1Q customer tag, 802.1ad service tag, or the old 0x9100)
/// is 4 bytes: 2 of tag control, then the EtherType of what follows. A third tag is left in
/// place, so the frame reads as non-IP.
#[inline(always)]
fn link_layer<F: Frame + ?Sized>(frame: &F, hdr: &mut FlowHeader) -> Result<(u16, usize), u32> {
    let eth = get::<14, F>(frame, 0)?;
    let mut ethertype = be16(eth, 12);
    let mut off = 14usize;
    for _ in 0..2 {
        if matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_OLD) {
            let tag = get::<4, F>(frame, off)?;
            ethertype = be16(tag, 2);
            off += 4;
            hdr.vlan_depth += 1;
        }
    }
    Ok((ethertype, off))
}

/// IPv4 header (RFC 791 §3.1): version 4, IHL in 32-bit words (at least 5), total length
/// covering header and data, fragment offset in the low 13 bits of bytes 6-7 and More
/// Fragments at 0x2000. A fragment with a nonzero offset holds no transport header.
#[inline(always)]
fn ipv4<F: Frame + ?Sized>(frame: &F, off: usize, hdr: &mut FlowHeader) -> Result<IpPayload, u32> {
    let ip = get::<20, F>(frame, off)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        return Err(counter::PARSE_ERRORS);
    }
    let frag = be16(ip, 6);
    if frag & 0x1fff != 0 {
        return Err(counter::FRAGMENTS);
    }
    let total = usize::from(be16(ip, 2));
    if total < ihl {
        return Err(counter::PARSE_ERRORS);
    }
    hdr.ip_version = 4;
    hdr.src_addr[..4].copy_from_slice(&ip[12..16]);
    hdr.dst_addr[..4].copy_from_slice(&ip[16..20]);
    Ok(IpPayload {
        l4_off: off + ihl,
        l4_len: total - ihl,
        proto: ip[9],
        first_fragment: frag & 0x2000 != 0,
    })
}

/// IPv6 fixed header (RFC 8200 §3): version 6, payload length (everything after these 40
/// bytes, extension headers included), next header, then the addresses.
#[inline(always)]
fn ipv6<F: Frame + ?Sized>(frame: &F, off: usize, hdr: &mut FlowHeader) -> Result<IpPayload, u32> {
    let ip = get::<40, F>(frame, off)?;
    if ip[0] >> 4 != 6 {
        return Err(counter::PARSE_ERRORS);
    }
    hdr.ip_version = 6;
    hdr.src_addr.copy_from_slice(&ip[8..24]);
    hdr.dst_addr.copy_from_slice(&ip[24..40]);
    ipv6_extensions(frame, off + 40, usize::from(be16(ip, 4)), ip[6])
}

/// Walks at most six IPv6 extension headers (a constant bound, as the verifier requires)
/// starting at `off`, with `len` payload bytes left and `next` the first header type.
/// Lengths per RFC 8200 §4.3-4.6: hop-by-hop options (0), routing (43) and destination options
/// (60) are `(Hdr Ext Len + 1) * 8` bytes; the fragment header (44, §4.5) is 8 bytes with the
/// offset in the top 13 bits of bytes 2-3 and M in bit 0; the authentication header (51,
/// RFC 4302 §2.2) is `(Payload Len + 2) * 4` bytes. A chain longer than the walk is an error.
#[inline(always)]
fn ipv6_extensions<F: Frame + ?Sized>(
    frame: &F,
    mut off: usize,
    mut len: usize,
    mut next: u8,
) -> Result<IpPayload, u32> {
    let mut fragmented = false;
    for _ in 0..6 {
        let ext = match next {
            0 | 43 | 60 => {
                let h = get::<2, F>(frame, off)?;
                next = h[0];
                (usize::from(h[1]) + 1) * 8
            }
            // Only the first fragment carries the L4 header.
            44 => {
                let h = get::<8, F>(frame, off)?;
                let frag = be16(h, 2);
                if frag & 0xfff8 != 0 {
                    return Err(counter::FRAGMENTS);
                }
                fragmented = frag & 1 != 0;
                next = h[0];
                8
            }
            51 => {
                let h = get::<2, F>(frame, off)?;
                next = h[0];
                (usize::from(h[1]) + 2) * 4
            }
            _ => break,
        };
        if ext > len {
            return Err(counter::PARSE_ERRORS);
        }
        len -= ext;
        off += ext;
        if off > MAX_L4_OFFSET {
            return Err(counter::PARSE_ERRORS);
        }
    }
    if matches!(next, 0 | 43 | 44 | 51 | 60) {
        // More extension headers than we walk.
        return Err(counter::PARSE_ERRORS);
    }
    Ok(IpPayload {
        l4_off: off,
        l4_len: len,
        proto: next,
        first_fragment: fragmented,
    })
}

/// TCP header (RFC 9293 §3.1): ports, sequence and acknowledgment numbers, data offset in
/// 32-bit words in the top nibble of byte 12, flags in byte 13, window. Only the fixed 20
/// bytes must be in the frame; options are skipped by the data offset.
#[inline(always)]
// Lengths come from 16-bit IP length fields and frames far below 4 GiB: the casts are exact.
#[allow(clippy::cast_possible_truncation)]
fn tcp<F: Frame + ?Sized>(
    frame: &F,
    mut hdr: FlowHeader,
    ip: &IpPayload,
    snaplen: u32,
) -> Result<Parsed, u32> {
    let th = get::<20, F>(frame, ip.l4_off)?;
    let flags = th[13];
    let doff = usize::from(th[12] >> 4) * 4;
    let slot = tcp_record_counter(flags);
    // Bare ACKs, the bulk of TCP, leave here.
    if slot.is_none() && ip.l4_len <= doff {
        return Err(counter::TCP_OTHER);
    }
    if doff < 20 || doff > ip.l4_len {
        return Err(counter::PARSE_ERRORS);
    }
    let payload_len = (ip.l4_len - doff) as u32;
    let payload_off = ip.l4_off + doff;
    let in_frame = frame.len().saturating_sub(payload_off) as u32;
    hdr.kind = kind::TCP;
    hdr.tcp_flags = flags;
    hdr.src_port = be16(th, 0);
    hdr.dst_port = be16(th, 2);
    hdr.payload_len = payload_len as u16;
    hdr.cap_len = min(min(payload_len, clamp_snaplen(snaplen)), in_frame) as u16;
    Ok(Parsed {
        hdr,
        l4: L4::Tcp {
            seq: be32(th, 4),
            ack: be32(th, 8),
            window: be16(th, 14),
            payload_off,
        },
        counter: match slot {
            Some(slot) => slot,
            None => counter::REC_TCP_DATA,
        },
    })
}

/// UDP header (RFC 768): ports, then a length covering header and data, at least 8.
#[inline(always)]
// As in `tcp`: 16-bit lengths and frames far below 4 GiB, the casts are exact.
#[allow(clippy::cast_possible_truncation)]
fn udp<F: Frame + ?Sized>(
    frame: &F,
    mut hdr: FlowHeader,
    ip: &IpPayload,
    snaplen: u32,
    count: &mut impl FnMut(u32),
) -> Result<Parsed, u32> {
    let uh = get::<8, F>(frame, ip.l4_off)?;
    let udp_len = usize::from(be16(uh, 4));
    // A first fragment holds less than the UDP length says; anything else must not.
    if udp_len < 8 || (udp_len > ip.l4_len && !ip.first_fragment) {
        return Err(counter::PARSE_ERRORS);
    }
    let payload_len = (udp_len - 8) as u32;
    if payload_len == 0 {
        return Err(counter::UDP_EMPTY);
    }
    let payload_off = ip.l4_off + 8;
    // `get::<8>` above proved payload_off <= frame length.
    let in_frame = (frame.len() - payload_off) as u32;
    let cap = min(min(payload_len, clamp_snaplen(snaplen)), in_frame);
    if cap < payload_len {
        count(counter::UDP_TRUNCATED);
    }
    hdr.kind = udp_class(cap).0;
    hdr.src_port = be16(uh, 0);
    hdr.dst_port = be16(uh, 2);
    hdr.payload_len = payload_len as u16;
    hdr.cap_len = cap as u16;
    Ok(Parsed {
        hdr,
        l4: L4::Udp { payload_off },
        counter: counter::REC_UDP,
    })
}

/// ICMP destination unreachable (type 3, RFC 792) or ICMPv6 destination unreachable (type 1,
/// RFC 4443 §3.1) quoting a TCP or UDP packet. After the 8-byte ICMP header both quote the
/// offending packet from its IP header on (RFC 792: the header plus at least 64 bits of data;
/// RFC 4443: as much as fits), so its IP header and first 4 transport bytes (the ports, at the
/// same place in TCP and UDP) are all that is needed. Other ICMP is not forwarded.
#[inline(always)]
// `l4_len` comes from a 16-bit IP length field: the cast is exact.
#[allow(clippy::cast_possible_truncation)]
fn icmp_unreachable<F: Frame + ?Sized>(
    frame: &F,
    mut hdr: FlowHeader,
    l4_off: usize,
    l4_len: usize,
    unreachable: u8,
) -> Result<Parsed, u32> {
    let icmp = get::<8, F>(frame, l4_off)?;
    if icmp[0] != unreachable {
        return Err(counter::OTHER_L4);
    }
    let inner_off = l4_off + 8;
    let mut q = IcmpQuote {
        icmp_type: icmp[0],
        icmp_code: icmp[1],
        inner_proto: 0,
        inner_ip_version: 0,
        inner_src: [0; 16],
        inner_dst: [0; 16],
        inner_src_port: 0,
        inner_dst_port: 0,
    };
    let ports_off = if unreachable == 3 {
        let ip = get::<20, F>(frame, inner_off)?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 {
            return Err(counter::PARSE_ERRORS);
        }
        q.inner_ip_version = 4;
        q.inner_proto = ip[9];
        q.inner_src[..4].copy_from_slice(&ip[12..16]);
        q.inner_dst[..4].copy_from_slice(&ip[16..20]);
        inner_off + ihl
    } else {
        // Extension headers in the quoted packet are not walked: such a quote is skipped.
        let ip = get::<40, F>(frame, inner_off)?;
        if ip[0] >> 4 != 6 {
            return Err(counter::PARSE_ERRORS);
        }
        q.inner_ip_version = 6;
        q.inner_proto = ip[6];
        q.inner_src.copy_from_slice(&ip[8..24]);
        q.inner_dst.copy_from_slice(&ip[24..40]);
        inner_off + 40
    };
    if q.inner_proto != IPPROTO_TCP && q.inner_proto != IPPROTO_UDP {
        return Err(counter::OTHER_L4);
    }
    if ports_off > MAX_L4_OFFSET + 128 {
        return Err(counter::PARSE_ERRORS);
    }
    let ports = get::<4, F>(frame, ports_off)?;
    q.inner_src_port = be16(ports, 0);
    q.inner_dst_port = be16(ports, 2);
    hdr.kind = kind::ICMP;
    hdr.payload_len = l4_len.saturating_sub(8) as u16;
    Ok(Parsed {
        hdr,
        l4: L4::Icmp(q),
        counter: counter::REC_ICMP,
    })
}

// ---------------------------------------------------------------------------------------------
// Flow marking: which TCP flows have their payload forwarded.
//
// The HTTP tracker and the peer wire need TCP payloads, but forwarding every TCP payload would
// put the whole link into the ring. A flow is marked only on a positive signature in one of its
// payloads: an HTTP `GET ` whose query carries `info_hash=` in its first bytes (a tracker
// announce, BEP 3 "Trackers"), the peer-wire handshake `0x13 "BitTorrent protocol"` (BEP 3
// "Peer protocol"), or a BEP 10 extended message (message id 20) opening a segment: a
// connection whose handshake came before the flow table or the capture did, since PEX (BEP 11)
// is sent mid-session. SYNs never mark, so a scan or a flood cannot churn the table.
// A marked flow has a budget: its first `FLOW_SEGMENTS` payload segments are forwarded; after
// that a peer-wire flow forwards only segments of at most `SMALL_SEGMENT` bytes (control
// messages and PEX are small, `piece` data is not) and an HTTP flow is unmarked (a new announce
// on the connection marks it again). RST, or a FIN from each side, unmarks.
// In the kernel the table is a `BPF_MAP_TYPE_LRU_HASH` (kernel `Documentation/bpf/map_hash.rst`):
// preallocated, and a full map evicts its least recently used entries instead of failing an
// insert, so a flow that goes quiet is eventually forgotten without any timer.

/// What a marked flow carries.
pub mod flow_class {
    pub const HTTP_TRACKER: u8 = 1;
    pub const PEER_WIRE: u8 = 2;
}

/// Payload segments of a marked flow forwarded in full before the budget applies.
pub const FLOW_SEGMENTS: u32 = 64;
/// Past the budget, peer-wire segments up to this many payload bytes are still forwarded.
pub const SMALL_SEGMENT: u16 = 512;
/// Bytes of a `GET ` payload searched for `info_hash=`.
pub const ANNOUNCE_SCAN: usize = 512;
/// Default capacity of the flow table (the kernel's LRU map and its offline mirror).
pub const DEFAULT_MAX_FLOWS: u32 = 65536;

const HANDSHAKE: &[u8; 20] = b"\x13BitTorrent protocol";
const INFO_HASH: &[u8; 10] = b"info_hash=";

/// [`FlowState::fins`] bits.
pub const FIN_A: u8 = 1;
pub const FIN_B: u8 = 2;

/// Both directions of a TCP flow: the endpoint that sorts first is `a`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub a_addr: [u8; 16],
    pub b_addr: [u8; 16],
    pub a_port: u16,
    pub b_port: u16,
    pub ip_version: u8,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowState {
    /// One of [`flow_class`].
    pub class: u8,
    /// Directions that sent a FIN: [`FIN_A`] and [`FIN_B`] (the key's `a` and `b` sides).
    pub fins: u8,
    /// Zero. Explicit so the struct has no implicit padding: every byte of the ABI is defined.
    pub pad: [u8; 2],
    /// Full-size payload segments still to forward.
    pub segments_left: u32,
}

/// The flow table: an LRU hash map in the kernel, a map with the same capacity offline.
pub trait FlowTable {
    fn get(&mut self, key: &FlowKey) -> Option<FlowState>;
    fn set(&mut self, key: &FlowKey, state: &FlowState);
    fn remove(&mut self, key: &FlowKey);
}

/// The canonical key of the flow a record header belongs to.
#[inline(always)]
pub fn flow_key(hdr: &FlowHeader) -> FlowKey {
    let src_first = (hdr.src_addr, hdr.src_port) <= (hdr.dst_addr, hdr.dst_port);
    let ((a_addr, a_port), (b_addr, b_port)) = if src_first {
        ((hdr.src_addr, hdr.src_port), (hdr.dst_addr, hdr.dst_port))
    } else {
        ((hdr.dst_addr, hdr.dst_port), (hdr.src_addr, hdr.src_port))
    };
    FlowKey {
        a_addr,
        b_addr,
        a_port,
        b_port,
        ip_version: hdr.ip_version,
        pad: [0; 3],
    }
}

/// What to do with a TCP segment [`parse`] accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpAction {
    /// A header-only [`TcpRecord`], counted under the slot.
    Control(u32),
    /// A [`TcpDataRecord`] of class `hdr.kind` with `hdr.cap_len` payload bytes, counted under
    /// the slot.
    Data(u32),
    /// An unmarked flow whose payload opens like `class`: copy the head into a data record,
    /// then [`confirm_signature`]; if it holds, [`mark_flow`] and emit it as
    /// `Data(REC_TCP_DATA)`, otherwise drop it under `TCP_OTHER`.
    Probe(u8),
    /// Not forwarded, counted under the slot.
    Skip(u32),
}

/// The per-flow payload policy, shared by the XDP program and the offline path. Updates the
/// flow's budget, unmarks ended flows, and sets `hdr.kind`/`hdr.cap_len` for the record to
/// emit.
#[inline(always)]
pub fn tcp_action<T: FlowTable + ?Sized, F: Frame + ?Sized>(
    table: &mut T,
    frame: &F,
    p: &mut Parsed,
    count: &mut impl FnMut(u32),
) -> TcpAction {
    let L4::Tcp { payload_off, .. } = p.l4 else {
        return TcpAction::Skip(counter::PARSE_ERRORS);
    };
    let flags = p.hdr.tcp_flags;
    let control = tcp_record_counter(flags);
    let header_only = |p: &mut Parsed, or: u32| {
        p.hdr.kind = kind::TCP;
        p.hdr.cap_len = 0;
        match control {
            Some(slot) => TcpAction::Control(slot),
            None => TcpAction::Skip(or),
        }
    };
    let ends = flags & (tcp_flag::FIN | tcp_flag::RST) != 0;
    // SYNs never carry a forwarded payload: they would let a flood reach the table. Only
    // payloads and FIN/RST (which end marks) look the flow up.
    if flags & tcp_flag::SYN != 0 || (p.hdr.payload_len == 0 && !ends) {
        return header_only(p, counter::TCP_OTHER);
    }
    let key = flow_key(&p.hdr);
    let Some(mut state) = table.get(&key) else {
        if control.is_some() {
            return header_only(p, counter::TCP_OTHER);
        }
        let Some(class) = probe_class(frame, payload_off) else {
            return header_only(p, counter::TCP_OTHER);
        };
        p.hdr.kind = tcp_data_class(u32::from(p.hdr.cap_len)).0;
        return TcpAction::Probe(class);
    };
    let has_payload = p.hdr.payload_len > 0;
    let fins = state.fins;
    let forward = spend_budget(&mut state, &p.hdr, &key);
    if state.fins == FIN_A | FIN_B
        || (has_payload && !forward && state.class != flow_class::PEER_WIRE)
    {
        table.remove(&key);
        count(counter::FLOWS_ENDED);
    } else if forward || state.fins != fins {
        table.set(&key, &state);
    }
    if !forward {
        return header_only(p, counter::TCP_OVER_BUDGET);
    }
    p.hdr.kind = tcp_data_class(u32::from(p.hdr.cap_len)).0;
    TcpAction::Data(match control {
        Some(slot) => slot,
        None => counter::REC_TCP_DATA,
    })
}

/// The class an unmarked flow's payload opens like, from its first bytes in the frame, or
/// `None`. Only a hint: [`confirm_signature`] checks the copied head before the flow is marked.
#[inline(always)]
fn probe_class<F: Frame + ?Sized>(frame: &F, payload_off: usize) -> Option<u8> {
    match frame.bytes::<4>(payload_off) {
        Some(&[0x13, b'B', b'i', b't']) => Some(flow_class::PEER_WIRE),
        Some(b"GET ") => Some(flow_class::HTTP_TRACKER),
        Some(&[0, 0, _, _]) => match frame.bytes::<EXTENDED_SHAPE>(payload_off) {
            Some(b) if extended_message_shape(b) => Some(flow_class::PEER_WIRE),
            _ => None,
        },
        _ => None,
    }
}

/// Charges a segment of a marked flow to its budget and records its FIN or RST in
/// `state.fins`; returns whether the segment's payload is forwarded.
#[inline(always)]
fn spend_budget(state: &mut FlowState, hdr: &FlowHeader, key: &FlowKey) -> bool {
    let forward = if hdr.payload_len == 0 {
        false
    } else if state.segments_left > 0 {
        state.segments_left -= 1;
        true
    } else {
        state.class == flow_class::PEER_WIRE && hdr.payload_len <= SMALL_SEGMENT
    };
    // A FIN ends its sender's direction only (RFC 9293 §3.6: a half-closed connection still
    // carries data the other way: a peer's PEX after the client closed, an HTTP/1.0 body after
    // the request's FIN). RST ends both.
    if hdr.tcp_flags & tcp_flag::RST != 0 {
        state.fins = FIN_A | FIN_B;
    } else if hdr.tcp_flags & tcp_flag::FIN != 0 {
        let src_is_a = (hdr.src_addr, hdr.src_port) == (key.a_addr, key.a_port);
        state.fins |= if src_is_a { FIN_A } else { FIN_B };
    }
    forward
}

/// Whether the copied payload head (`len` valid bytes of `head`) really opens `class`.
///
/// Written with checked byte reads only: a slice comparison could become a `bcmp` call or a
/// panic path, neither of which BPF has.
#[inline(always)]
pub fn confirm_signature<const N: usize>(class: u8, head: &[u8; N], len: usize) -> bool {
    if class == flow_class::PEER_WIRE {
        if len >= HANDSHAKE.len() && matches_at(head, 0, HANDSHAKE) {
            return true;
        }
        let mut shape = [0u8; EXTENDED_SHAPE];
        let mut k = 0;
        while k < EXTENDED_SHAPE {
            match head.get(k) {
                Some(b) if k < len => shape[k] = *b,
                _ => return false,
            }
            k += 1;
        }
        return extended_message_shape(&shape);
    }
    if class != flow_class::HTTP_TRACKER || len < 4 || !matches_at(head, 0, b"GET ") {
        return false;
    }
    let scan = if N < ANNOUNCE_SCAN { N } else { ANNOUNCE_SCAN };
    let scan = if len < scan { len } else { scan };
    let mut i = 4;
    // Bounded by a constant, as the verifier requires.
    while i + INFO_HASH.len() <= ANNOUNCE_SCAN {
        if i + INFO_HASH.len() > scan {
            return false;
        }
        if matches_at(head, i, INFO_HASH) {
            return true;
        }
        i += 1;
    }
    false
}

#[inline(always)]
fn matches_at<const N: usize, const M: usize>(head: &[u8; N], at: usize, needle: &[u8; M]) -> bool {
    let mut k = 0;
    while k < M {
        match head.get(at + k) {
            Some(b) if *b == needle[k] => k += 1,
            _ => return false,
        }
    }
    true
}

/// Bytes [`extended_message_shape`] looks at.
pub const EXTENDED_SHAPE: usize = 9;

/// A BEP 10 extended message with a bencoded payload at the start of a segment:
/// `be32 length < 64 KiB | 20 | ext id | d <digit> <digit or :>` — the opening of a PEX
/// (`d5:added…`, `d7:dropped…`) or extended-handshake dict. Nine fixed bytes, so a random
/// binary payload matches about once in 2^50.
#[inline(always)]
pub fn extended_message_shape(b: &[u8; EXTENDED_SHAPE]) -> bool {
    let len = be32(b, 0);
    b[0] == 0
        && b[1] == 0
        && len >= 4
        && b[4] == 20
        && b[6] == b'd'
        && (b'1'..=b'9').contains(&b[7])
        && (b[8] == b':' || b[8].is_ascii_digit())
}

/// Marks the flow of a confirmed probe; the probing segment is the first of its budget.
#[inline(always)]
pub fn mark_flow<T: FlowTable + ?Sized>(
    table: &mut T,
    hdr: &FlowHeader,
    class: u8,
    count: &mut impl FnMut(u32),
) {
    table.set(
        &flow_key(hdr),
        &FlowState {
            class,
            fins: 0,
            pad: [0; 2],
            segments_left: FLOW_SEGMENTS - 1,
        },
    );
    count(counter::FLOWS_MARKED);
}

#[inline(always)]
const fn clamp_snaplen(snaplen: u32) -> u32 {
    if snaplen > MAX_SNAPLEN {
        MAX_SNAPLEN
    } else {
        snaplen
    }
}

#[inline(always)]
const fn min(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

// Layout is ABI: pin it so a careless edit fails to compile instead of corrupting records.
const _: () = assert!(size_of::<FlowHeader>() == 56);
const _: () = assert!(size_of::<TcpRecord>() == 72);
const _: () = assert!(size_of::<UdpRecord<128>>() == 56 + 128);
const _: () = assert!(size_of::<UdpRecord<2048>>() == 56 + 2048);
const _: () = assert!(align_of::<TcpRecord>() <= 8);
const _: () = assert!(size_of::<IcmpRecord>() == 104);
const _: () = assert!(size_of::<TcpDataRecord<128>>() == 72 + 128);
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<FlowState>() == 8);

#[cfg(feature = "user")]
mod user {
    // Every type below is `#[repr(C)]`, `Copy` and made only of integers and byte arrays, so any
    // bit pattern is a valid value; the size asserts above show it has no implicit padding, so
    // every byte userspace reads was written by the kernel. That is what `aya::Pod` requires.

    // SAFETY: `#[repr(C)]` integers and byte arrays, 56 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowHeader {}
    // SAFETY: a `FlowHeader` plus integers and explicit `pad`, 72 bytes with no implicit padding.
    unsafe impl aya::Pod for super::TcpRecord {}
    // SAFETY: a `FlowHeader` plus integers, byte arrays and explicit `pad`/`pad2`, 104 bytes with
    // no implicit padding.
    unsafe impl aya::Pod for super::IcmpRecord {}
    // SAFETY: byte arrays, integers and explicit `pad`, 40 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: integers and explicit `pad`, 8 bytes with no implicit padding.
    unsafe impl aya::Pod for super::FlowState {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

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
            (1000, 256, kind::UDP_512)
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
    fn udp_classes_are_the_smallest_that_fit() {
        assert_eq!(udp_class(0).0, kind::UDP_128);
        assert_eq!(udp_class(128).0, kind::UDP_128);
        assert_eq!(udp_class(129).0, kind::UDP_512);
        assert_eq!(udp_class(512).0, kind::UDP_512);
        assert_eq!(udp_class(513).0, kind::UDP_2048);
        for (k, cap) in UDP_CLASSES {
            assert!(cap.is_power_of_two());
            assert_eq!(record_size(k), Some(size_of::<FlowHeader>() + cap));
        }
    }
}
