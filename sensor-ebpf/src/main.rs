//! XDP pre-filter: forwards the few packets the detector needs and passes everything on.
//!
//! [`sensor_ebpf::parse`] decides (shared with the offline pcap path):
//! - TCP with SYN, RST or FIN  -> a [`TcpRecord`] (5-tuple, flags, seq/ack);
//! - UDP with a payload        -> a [`UdpRecord`] holding the true length and a payload prefix of
//!   up to `SNAPLEN` bytes, in the smallest size class that fits.
//!
//! This file adds what only the kernel side does: bounds-checked packet access, the ring, the
//! per-CPU counters. Bare ACKs and data segments leave after one header read: they are the bulk
//! of traffic. Every reason a frame is not forwarded, and every record lost to a full ring, is
//! counted. The verdict is always `XDP_PASS`: the sensor never changes forwarding.
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
    counter, kind, parse, FlowHeader, Frame, IcmpRecord, Parsed, TcpRecord, UdpRecord,
    DEFAULT_SNAPLEN, L4,
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

/// Direct packet access, bounds-checked against `data_end` as the verifier requires.
struct Packet<'a>(&'a XdpContext);

impl Frame for Packet<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        let start = self.0.data();
        if start + off + N > self.0.data_end() {
            return None;
        }
        Some(unsafe { &*((start + off) as *const [u8; N]) })
    }
}

/// Parses one frame and emits its record; `Err` names the counter explaining why not.
#[inline(always)]
fn inspect(ctx: &XdpContext) -> Result<(), u32> {
    let Parsed {
        mut hdr,
        l4,
        counter: slot,
    } = parse(&Packet(ctx), global(&SNAPLEN), &mut |slot| bump(slot))?;
    hdr.ifindex = ctx.ingress_ifindex() as u32;
    hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
    match l4 {
        L4::Tcp { seq, ack, window } => {
            let Some(mut entry) = EVENTS.reserve::<TcpRecord>(0) else {
                return Err(counter::RING_FULL);
            };
            entry.write(TcpRecord {
                hdr,
                seq,
                ack,
                window,
                _pad: [0; 6],
            });
            entry.submit(wakeup_flags(size_of::<TcpRecord>() as u64));
        }
        L4::Icmp(q) => {
            let Some(mut entry) = EVENTS.reserve::<IcmpRecord>(0) else {
                return Err(counter::RING_FULL);
            };
            entry.write(IcmpRecord {
                hdr,
                icmp_type: q.icmp_type,
                icmp_code: q.icmp_code,
                inner_proto: q.inner_proto,
                inner_ip_version: q.inner_ip_version,
                _pad: [0; 4],
                inner_src: q.inner_src,
                inner_dst: q.inner_dst,
                inner_src_port: q.inner_src_port,
                inner_dst_port: q.inner_dst_port,
                _pad2: [0; 4],
            });
            entry.submit(wakeup_flags(size_of::<IcmpRecord>() as u64));
        }
        L4::Udp { payload_off } => match hdr.kind {
            kind::UDP_128 => emit_udp::<128>(ctx, &hdr, payload_off)?,
            kind::UDP_512 => emit_udp::<512>(ctx, &hdr, payload_off)?,
            _ => emit_udp::<2048>(ctx, &hdr, payload_off)?,
        },
    }
    bump(slot);
    Ok(())
}

/// Reserves a UDP record of capacity `N` and loads the payload head straight into it.
#[inline(always)]
fn emit_udp<const N: usize>(
    ctx: &XdpContext,
    hdr: &FlowHeader,
    payload_off: usize,
) -> Result<(), u32> {
    let Some(mut entry) = EVENTS.reserve::<UdpRecord<N>>(0) else {
        return Err(counter::RING_FULL);
    };
    let rec = entry.as_mut_ptr();
    let cap = hdr.cap_len as u64;
    unsafe {
        (*rec).hdr = *hdr;
        if cap > 0 {
            // The verifier needs 1 <= len <= N on the very register passed to the helper. LLVM
            // knows cap <= N and would fold a plain `& (N - 1)` away, so the mask goes through a
            // volatile stack slot: opaque to LLVM, an exact constant to the verifier. N is a
            // power of two and 1 <= cap <= N, so this is the identity.
            let mask: u64 = N as u64 - 1;
            let mask = core::ptr::read_volatile(&mask);
            let len = (((cap - 1) & mask) + 1) as u32;
            let ret = bpf_xdp_load_bytes(
                ctx.ctx,
                payload_off as u32,
                (*rec).data.as_mut_ptr().cast(),
                len,
            );
            if ret != 0 {
                entry.discard(0);
                error!(
                    ctx,
                    "bpf_xdp_load_bytes({}, {}) failed: {}", payload_off, len, ret
                );
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
    // +8: the ring's own per-record header.
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
