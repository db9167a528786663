//! The acceptance policy's header walk: Ethernet and VLAN tags, IPv4 or IPv6 with its extension
//! headers, then TCP, UDP or an ICMP destination unreachable. Shared by the XDP program and the
//! offline pcap path through the [`Frame`] trait.

use crate::{counter, kind, tcp_record_counter, FlowHeader, MAX_SNAPLEN};

/// Read access to a frame, so [`parse`](fn@crate::parse) runs unchanged on an XDP context and on
/// a byte slice.
pub trait Frame {
    /// Bytes in the frame (the linear part, for XDP).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `N` bytes at `off`, or `None` past the end. On XDP this is the bounds check the verifier
    /// needs before every packet read.
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
    /// A copy of `N` bytes at `off`, or `None` past the end. On XDP a helper copies them to
    /// the stack, so what is read from the copy carries no packet pointer: the verifier can
    /// then merge the paths that reached it with different header offsets (IPv4 options,
    /// IPv6 extension headers, VLAN tags), which direct packet reads keep apart.
    fn copy<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        self.bytes::<N>(off).copied()
    }
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
pub(crate) fn be32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
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
///   present) or a payload; [`tcp_action`](crate::tcp_action) then decides, per flow, whether
///   the payload goes too;
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
    hdr.kind = kind::UDP;
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
