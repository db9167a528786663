//! XDP pre-filter: forwards the few packets the detector needs and passes everything on.
//!
//! For each frame: unwrap up to two VLAN tags, parse IPv4 (skipping non-first fragments) or IPv6
//! (walking extension headers), then
//! - TCP with SYN, RST or FIN  -> a [`TcpRecord`] (5-tuple, flags, seq/ack);
//! - UDP with a payload        -> a [`UdpRecord`] holding the true length and a payload prefix of
//!   up to `SNAPLEN` bytes, in the smallest size class that fits.
//!
//! Bare ACKs and data segments leave after one header read: they are the bulk of traffic. Every
//! reason a frame is not forwarded, and every record lost to a full ring, is counted per CPU.
//! The verdict is always `XDP_PASS`: the sensor never changes forwarding.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{xdp_action, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::error;
use sensor_ebpf::{
    counter, kind, tcp_record_counter, udp_class, FlowHeader, TcpRecord, UdpRecord,
    DEFAULT_SNAPLEN, MAX_SNAPLEN,
};

/// Bytes of UDP payload to copy; set at load time with `EbpfLoader::override_global`.
#[no_mangle]
static SNAPLEN: u32 = DEFAULT_SNAPLEN;

/// Records are submitted without waking the reader (it drains on a timer), except when a record
/// makes the unread data cross this many bytes. Default wakeups cost ~1 µs each in a VM.
/// 0 wakes the reader on every record.
#[no_mangle]
static WAKEUP_BYTES: u32 = 256 * 1024;

/// Ring of records; userspace resizes it at load time (`map_max_entries`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const ETH_P_QINQ_OLD: u16 = 0x9100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Furthest L4 offset we follow; keeps offsets small enough for the verifier to track.
const MAX_L4_OFFSET: usize = 1024;

#[xdp]
pub fn sensor(ctx: XdpContext) -> u32 {
    bump(counter::PACKETS);
    if let Err(reason) = inspect(&ctx) {
        bump(reason);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn bump(slot: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(slot) {
        // Per-CPU slot and XDP does not preempt itself on a CPU: no atomics needed.
        unsafe { *value += 1 }
    }
}

#[inline(always)]
fn global(value: &u32) -> u32 {
    // Volatile so the compiler keeps the load the loader patched instead of the default.
    unsafe { core::ptr::read_volatile(value) }
}

/// `N` bytes at `off` from the start of the frame, bounds-checked for the verifier.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Result<&[u8; N], u32> {
    let start = ctx.data();
    if start + off + N > ctx.data_end() {
        return Err(counter::PARSE_ERRORS);
    }
    Ok(unsafe { &*((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses one frame and emits its record; `Err` names the counter explaining why not.
#[inline(always)]
fn inspect(ctx: &XdpContext) -> Result<(), u32> {
    let eth = bytes::<14>(ctx, 0)?;
    let mut ethertype = be16(eth, 12);
    let mut off = 14usize;
    let mut hdr = FlowHeader {
        kind: 0,
        ip_version: 0,
        vlan_depth: 0,
        tcp_flags: 0,
        ifindex: ctx.ingress_ifindex() as u32,
        ts_ns: 0,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: 0,
        payload_len: 0,
        cap_len: 0,
    };

    for _ in 0..2 {
        if matches!(ethertype, ETH_P_8021Q | ETH_P_8021AD | ETH_P_QINQ_OLD) {
            let tag = bytes::<4>(ctx, off)?;
            ethertype = be16(tag, 2);
            off += 4;
            hdr.vlan_depth += 1;
        }
    }

    // (L4 offset, L4 bytes in this packet per the IP header, protocol, first of several fragments)
    let (l4_off, l4_len, proto, first_fragment) = match ethertype {
        ETH_P_IPV4 => {
            bump(counter::IPV4);
            let ip = bytes::<20>(ctx, off)?;
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 {
                return Err(counter::PARSE_ERRORS);
            }
            let frag = be16(ip, 6);
            if frag & 0x1fff != 0 {
                return Err(counter::FRAGMENTS);
            }
            let total = be16(ip, 2) as usize;
            if total < ihl {
                return Err(counter::PARSE_ERRORS);
            }
            hdr.ip_version = 4;
            hdr.src_addr[..4].copy_from_slice(&ip[12..16]);
            hdr.dst_addr[..4].copy_from_slice(&ip[16..20]);
            (off + ihl, total - ihl, ip[9], frag & 0x2000 != 0)
        }
        ETH_P_IPV6 => {
            bump(counter::IPV6);
            let ip = bytes::<40>(ctx, off)?;
            if ip[0] >> 4 != 6 {
                return Err(counter::PARSE_ERRORS);
            }
            hdr.ip_version = 6;
            hdr.src_addr.copy_from_slice(&ip[8..24]);
            hdr.dst_addr.copy_from_slice(&ip[24..40]);
            let mut len = be16(ip, 4) as usize;
            let mut next = ip[6];
            let mut fragmented = false;
            off += 40;
            for _ in 0..6 {
                let ext = match next {
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    0 | 43 | 60 => {
                        let h = bytes::<2>(ctx, off)?;
                        next = h[0];
                        (h[1] as usize + 1) * 8
                    }
                    // Fragment: only the first fragment carries the L4 header.
                    44 => {
                        let h = bytes::<8>(ctx, off)?;
                        let frag = be16(h, 2);
                        if frag & 0xfff8 != 0 {
                            return Err(counter::FRAGMENTS);
                        }
                        fragmented = frag & 1 != 0;
                        next = h[0];
                        8
                    }
                    // Authentication header: (len + 2) * 4 bytes.
                    51 => {
                        let h = bytes::<2>(ctx, off)?;
                        next = h[0];
                        (h[1] as usize + 2) * 4
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
            (off, len, next, fragmented)
        }
        _ => return Err(counter::NON_IP),
    };
    if l4_off > MAX_L4_OFFSET {
        return Err(counter::PARSE_ERRORS);
    }

    match proto {
        IPPROTO_TCP => {
            let th = bytes::<20>(ctx, l4_off)?;
            let flags = th[13];
            let Some(slot) = tcp_record_counter(flags) else {
                return Err(counter::TCP_OTHER);
            };
            let doff = ((th[12] >> 4) as usize) * 4;
            if doff < 20 || doff > l4_len {
                return Err(counter::PARSE_ERRORS);
            }
            hdr.kind = kind::TCP;
            hdr.tcp_flags = flags;
            hdr.src_port = be16(th, 0);
            hdr.dst_port = be16(th, 2);
            hdr.payload_len = (l4_len - doff) as u16;
            hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
            let Some(mut entry) = EVENTS.reserve::<TcpRecord>(0) else {
                return Err(counter::RING_FULL);
            };
            entry.write(TcpRecord {
                hdr,
                seq: be32(th, 4),
                ack: be32(th, 8),
                window: be16(th, 14),
                _pad: [0; 6],
            });
            entry.submit(wakeup_flags(size_of::<TcpRecord>() as u64));
            bump(slot);
            Ok(())
        }
        IPPROTO_UDP => {
            let uh = bytes::<8>(ctx, l4_off)?;
            let udp_len = be16(uh, 4) as usize;
            // A first fragment holds less than the UDP length says; anything else must not.
            if udp_len < 8 || (udp_len > l4_len && !first_fragment) {
                return Err(counter::PARSE_ERRORS);
            }
            let payload_len = (udp_len - 8) as u32;
            if payload_len == 0 {
                return Err(counter::UDP_EMPTY);
            }
            let payload_off = l4_off + 8;
            // `bytes::<8>` above proved payload_off <= frame length.
            let in_frame = (ctx.data_end() - ctx.data() - payload_off) as u32;
            let mut snap = global(&SNAPLEN);
            if snap > MAX_SNAPLEN {
                snap = MAX_SNAPLEN;
            }
            let cap = min(min(payload_len, snap), in_frame);
            if cap < payload_len {
                bump(counter::UDP_TRUNCATED);
            }
            hdr.src_port = be16(uh, 0);
            hdr.dst_port = be16(uh, 2);
            hdr.payload_len = payload_len as u16;
            hdr.cap_len = cap as u16;
            hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
            match udp_class(cap) {
                (kind::UDP_128, _) => emit_udp::<128>(ctx, &mut hdr, kind::UDP_128, payload_off, cap),
                (kind::UDP_512, _) => emit_udp::<512>(ctx, &mut hdr, kind::UDP_512, payload_off, cap),
                _ => emit_udp::<2048>(ctx, &mut hdr, kind::UDP_2048, payload_off, cap),
            }?;
            bump(counter::REC_UDP);
            Ok(())
        }
        _ => Err(counter::OTHER_L4),
    }
}

#[inline(always)]
fn min(a: u32, b: u32) -> u32 {
    if a < b {
        a
    } else {
        b
    }
}

/// Reserves a UDP record of capacity `N` and loads the payload head straight into it.
#[inline(always)]
fn emit_udp<const N: usize>(
    ctx: &XdpContext,
    hdr: &mut FlowHeader,
    record_kind: u8,
    payload_off: usize,
    cap: u32,
) -> Result<(), u32> {
    hdr.kind = record_kind;
    let Some(mut entry) = EVENTS.reserve::<UdpRecord<N>>(0) else {
        return Err(counter::RING_FULL);
    };
    let rec = entry.as_mut_ptr();
    unsafe {
        (*rec).hdr = *hdr;
        if cap > 0 {
            // The verifier needs 1 <= len <= N on the very register passed to the helper. LLVM
            // knows cap <= N and would fold a plain `& (N - 1)` away, so the mask goes through a
            // volatile stack slot: opaque to LLVM, an exact constant to the verifier. N is a
            // power of two and 1 <= cap <= N, so this is the identity.
            let mask: u64 = N as u64 - 1;
            let mask = core::ptr::read_volatile(&mask);
            let len = (((cap as u64 - 1) & mask) + 1) as u32;
            let ret = bpf_xdp_load_bytes(
                ctx.ctx,
                payload_off as u32,
                (*rec).data.as_mut_ptr().cast(),
                len,
            );
            if ret != 0 {
                entry.discard(0);
                error!(ctx, "bpf_xdp_load_bytes({}, {}) failed: {}", payload_off, len, ret);
                return Err(counter::LOAD_ERRORS);
            }
        }
    }
    entry.submit(wakeup_flags(size_of::<UdpRecord<N>>() as u64));
    Ok(())
}

/// Wake the reader only when this record pushed the unread bytes across the watermark.
#[inline(always)]
fn wakeup_flags(record_size: u64) -> u64 {
    let mark = global(&WAKEUP_BYTES) as u64;
    if mark == 0 {
        return 0;
    }
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if unread >= mark && unread < mark + record_size + 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
