//! XDP pre-filter: forwards the few packets the detector needs and passes everything on.
//!
//! [`sensor_ebpf::parse`] decides (shared with the offline pcap path):
//! - TCP with SYN, RST or FIN  -> a [`TcpRecord`] (5-tuple, flags, seq/ack);
//! - UDP with a payload        -> a [`UdpRecord`] holding the true length and a payload prefix of
//!   up to `SNAPLEN` bytes, exactly as long as the prefix, when the payload can carry
//!   coordination ([`sensor_ebpf::udp_action`] decides by `UDP_POLICY`, also shared with the
//!   offline path);
//! - TCP payload of a flow marked in `FLOWS` -> a [`TcpDataRecord`] ([`sensor_ebpf::tcp_action`]
//!   decides, also shared with the offline path).
//!
//! This file adds what only the kernel side does: bounds-checked packet access, the ring, the
//! per-CPU counters. Bare ACKs and data segments leave after one header read: they are the bulk
//! of traffic. Every reason a frame is not forwarded, and every record lost to a full ring, is
//! counted. The verdict is always `XDP_PASS`: the sensor never changes forwarding.
#![no_std]
#![no_main]
// The verifier needs every helper inlined into `sensor` (see the same allow in `lib.rs`):
// `#[inline(always)]` is a requirement here, not a hint.
#![allow(clippy::inline_always)]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{xdp_action, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, generated::bpf_xdp_load_bytes},
    macros::{map, xdp},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use aya_log_ebpf::error;
use sensor_ebpf::shard::{icmp_targets, shard_of, targets, tcp_targets, MAX_SHARDS};
use sensor_ebpf::{
    confirm_signature, counter, kind, mark_flow, parse, tcp_action, udp_action, udp_policy,
    FlowHeader, FlowHeaderV4, FlowKey, FlowState, FlowTable, Frame, IcmpQuote, IcmpRecord,
    IfaceTable, Parsed, TcpAction, TcpDataRecord, TcpTail, UdpAction, DEFAULT_MAX_FLOWS,
    DEFAULT_SNAPLEN, L4, MAX_SNAPLEN,
};

/// Bytes of UDP payload to copy; set at load time with `EbpfLoader::override_global`.
#[no_mangle]
static SNAPLEN: u32 = DEFAULT_SNAPLEN;

/// How UDP payloads are forwarded (`sensor_ebpf::udp_policy`); set at load time. The verifier
/// sees it as a constant and prunes the policies not loaded. The classified policy is the
/// default of `sensor run`; `FULL` stays for comparison.
#[no_mangle]
static UDP_POLICY: u32 = udp_policy::CLASSIFIED;

/// Records are submitted without waking the reader (it drains on a timer), except when a record
/// makes the unread data cross this many bytes. Default wakeups cost ~1 µs each in a VM.
/// 0 wakes the reader on every record.
#[no_mangle]
static WAKEUP_BYTES: u32 = 256 * 1024;

/// Rings of records, one per worker (`SHARDS` of them in use; aya-ebpf has no array of ring
/// maps, hence four statics). Userspace sizes each at load time (`map_max_entries`): unused
/// ones to a page. Ring 0 keeps the name it had with one worker.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);
#[map]
static EVENTS_1: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
static EVENTS_2: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
static EVENTS_3: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Workers, hence rings in use (1..=`MAX_SHARDS`); set at load time. 1 is a constant the
/// verifier prunes every other ring's path with.
#[no_mangle]
static SHARDS: u32 = 1;

/// Key of the host hash that picks a record's rings (`sensor_ebpf::shard::shard_of`); set at
/// load time.
#[no_mangle]
static SHARD_SEED: u64 = 0;

/// Per ring `i`: slot `i` counts records lost to the ring being full, slot `MAX_SHARDS + i`
/// records put in it, copies included (`counter::RING_FULL` counts frames whose record
/// reached no ring; `counter::REC_*` frames whose record reached its first ring).
#[map]
static RING_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2 * MAX_SHARDS, 0);

/// Room for the largest payload record: the TCP data record's fixed part and `MAX_SNAPLEN`
/// payload bytes.
const SCRATCH_BYTES: usize = size_of::<TcpDataRecord<0>>() + MAX_SNAPLEN as usize;

/// A payload record being built (8-byte aligned, as ring records are).
#[repr(C, align(8))]
struct Scratch([u8; SCRATCH_BYTES]);

/// One record-building buffer per CPU: a payload record is assembled here and copied into the
/// ring with its exact length (`bpf_ringbuf_output`), since a ring reservation's size must be
/// a constant. XDP does not preempt itself on a CPU, so the buffer has one user at a time.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Flows whose payload is forwarded; userspace may resize it at load time.
#[map]
static FLOWS: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(DEFAULT_MAX_FLOWS, 0);

struct Flows;

impl FlowTable for Flows {
    #[inline(always)]
    fn get(&mut self, key: &FlowKey) -> Option<FlowState> {
        // SAFETY: `get` is unsafe because another CPU may update or delete the entry while the
        // reference lives. The value is copied out at once and the reference dropped; a
        // concurrent update can at worst tear the budget count, which is advisory.
        unsafe { FLOWS.get(key).copied() }
    }
    #[inline(always)]
    fn set(&mut self, key: &FlowKey, state: &FlowState) {
        // An LRU insert cannot fail for lack of room; any other failure leaves the flow
        // unmarked, which the reassembler sees as a gap.
        let _ = FLOWS.insert(key, state, 0);
    }
    #[inline(always)]
    fn remove(&mut self, key: &FlowKey) {
        // A key already gone (evicted, or removed on another CPU) is the outcome we want.
        let _ = FLOWS.remove(key);
    }
}

/// Counters, one block of `counter::COUNT` slots per interface (`counter::MAP_ENTRIES`).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::MAP_ENTRIES, 0);

/// Which counter block each interface counts in (one entry), written by userspace before
/// attaching, in `--iface` order.
#[map]
static IFACES: Array<IfaceTable> = Array::with_max_entries(1, 0);

#[xdp]
// `#[xdp]` requires the context by value.
#[allow(clippy::needless_pass_by_value)]
pub fn sensor(ctx: XdpContext) -> u32 {
    let c = Counters::of(ingress_ifindex(&ctx));
    c.bump(counter::PACKETS);
    c.add(counter::BYTES_SEEN, (ctx.data_end() - ctx.data()) as u64);
    if let Err(reason) = inspect(&ctx, c) {
        c.bump(reason);
    }
    xdp_action::XDP_PASS
}

/// The counter block of the frame's ingress interface: its first index in `COUNTERS`. Looked
/// up once per frame; each count then indexes `base + slot`, no further lookup.
#[derive(Clone, Copy)]
struct Counters {
    base: u32,
}

impl Counters {
    #[inline(always)]
    fn of(ifindex: u32) -> Self {
        // An array's entry 0 always exists (the verifier elides the check for a constant
        // key); were it missing, the unknown block.
        let base = IFACES
            .get(0)
            .map_or(counter::UNKNOWN_IFACE * counter::COUNT, |t| {
                t.base_of(ifindex)
            });
        Self { base }
    }

    #[inline(always)]
    fn bump(self, slot: u32) {
        self.add(slot, 1);
    }

    #[inline(always)]
    fn add(self, slot: u32, n: u64) {
        if let Some(value) = COUNTERS.get_ptr_mut(self.base + slot) {
            // SAFETY: a non-null pointer from the map lookup points to this CPU's aligned `u64`
            // of the slot, valid for the program's run. The slot is per CPU and XDP does not
            // preempt itself on a CPU, so nothing else writes it meanwhile: no atomics needed.
            unsafe { *value += n }
        }
    }

    /// Counts a record of `size` bytes put in the ring, in all and under its kind's byte slot
    /// (a constant at each call: a slot looked up from the record's kind would branch, and
    /// every branch multiplies the paths the verifier follows).
    #[inline(always)]
    fn forwarded(self, slot: u32, size: usize) {
        self.add(counter::BYTES_FORWARDED, size as u64);
        self.add(slot, size as u64);
    }
}

#[inline(always)]
fn global<T: Copy>(value: &T) -> T {
    // Volatile so the compiler keeps the load the loader patched instead of the default.
    // SAFETY: `value` is a reference, hence valid, aligned and initialised for the read.
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
        // SAFETY: `start + off + N <= data_end` was just checked, so the `N` bytes lie inside
        // the packet, which stays mapped and unmodified (we never write it) while the program
        // runs; `[u8; N]` has alignment 1. The verifier checks this very comparison too.
        Some(unsafe { &*((start + off) as *const [u8; N]) })
    }

    #[inline(always)]
    // Offsets stay far below 4 GiB (`MAX_L4_OFFSET` plus headers) and N is a small constant.
    #[allow(clippy::cast_possible_truncation)]
    fn copy<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // Not zeroed first: a zeroing loop would be walked by the verifier on every path, and
        // the helper takes uninitialised memory (ARG_PTR_TO_UNINIT_MEM).
        let mut buf = core::mem::MaybeUninit::<[u8; N]>::uninit();
        // SAFETY: `buf` is writable for exactly `N` bytes; the helper checks `off + N` against
        // the packet and fails instead of reading past it, and on success has written all `N`
        // bytes, so `assume_init` reads initialised memory.
        unsafe {
            let ret = bpf_xdp_load_bytes(self.0.ctx, off as u32, buf.as_mut_ptr().cast(), N as u32);
            (ret == 0).then(|| buf.assume_init())
        }
    }
}

/// Parses one frame and emits its record; `Err` names the counter explaining why not.
#[inline(always)]
fn inspect(ctx: &XdpContext, c: Counters) -> Result<(), u32> {
    let mut parsed = parse(&Packet(ctx), global(&SNAPLEN), &mut |slot| c.bump(slot))?;
    let mut slot = parsed.counter;
    let mut probe = None;
    if let L4::Tcp { .. } = parsed.l4 {
        match tcp_action(&mut Flows, &Packet(ctx), &mut parsed, &mut |s| c.bump(s)) {
            TcpAction::Control(s) | TcpAction::Data(s) => slot = s,
            TcpAction::Probe(class) => {
                probe = Some(class);
                slot = counter::REC_TCP_DATA;
            }
            TcpAction::Skip(s) => return Err(s),
        }
    } else if let L4::Udp { .. } = parsed.l4 {
        match udp_action(
            &mut Flows,
            &Packet(ctx),
            &mut parsed,
            global(&UDP_POLICY),
            &mut |s| c.bump(s),
        ) {
            UdpAction::Forward(s) => slot = s,
            UdpAction::Skip(s) => return Err(s),
        }
    }
    let Parsed { mut hdr, l4, .. } = parsed;
    hdr.ifindex = ingress_ifindex(ctx);
    // SAFETY: a helper without arguments that reads the monotonic clock; no memory involved.
    hdr.ts_ns = unsafe { bpf_ktime_get_ns() };
    let to = Route::of_record(&hdr, &l4);
    match l4 {
        L4::Tcp {
            seq,
            ack,
            window,
            payload_off,
        } if hdr.kind == kind::TCP_DATA => {
            let tcp = TcpFields {
                seq,
                ack,
                window,
                payload_off,
                probe,
            };
            emit_tcp_data(ctx, c, to, &hdr, &tcp)?;
        }
        L4::Tcp {
            seq, ack, window, ..
        } => emit_tcp(c, to, &hdr, seq, ack, window)?,
        L4::Icmp(q) => emit_icmp(c, to, &hdr, &q)?,
        L4::Udp { payload_off } => {
            if hdr.kind == kind::UDP_META {
                emit_udp_meta(c, to, &hdr)?;
            } else {
                emit_udp(ctx, c, to, &hdr, payload_off)?;
            }
        }
    }
    c.bump(slot);
    Ok(())
}

/// `ifindex` of the interface the frame arrived on (a `__u32` in the kernel's `xdp_md`).
#[inline(always)]
// The kernel's `u32` field widened to `usize` by aya: narrowing it back is exact.
#[allow(clippy::cast_possible_truncation)]
fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    ctx.ingress_ifindex() as u32
}

/// Builds a header-only TCP record in the scratch buffer and copies it.
#[inline(always)]
fn emit_tcp(
    c: Counters,
    to: Route,
    hdr: &FlowHeader,
    seq: u32,
    ack: u32,
    window: u16,
) -> Result<(), u32> {
    let buf = scratch()?;
    let h = put_header(buf, hdr);
    put_tcp_tail(buf, h, seq, ack, window);
    output(c, to, buf, h + size_of::<TcpTail>(), counter::BYTES_TCP)
}

/// Writes the record header at the start of the scratch buffer: the compact IPv4 form, or the
/// full one; returns its length. The full header is written, then an IPv4 one compacted in
/// place (its destination address and the last 8 bytes moved down): building a
/// `FlowHeaderV4` apart took more of the program's 512-byte stack than it has.
#[inline(always)]
// The buffer is 8-byte aligned and every offset cast below is a multiple of its type's
// alignment (20 and 32 for `u32`, 24 and 48 for `u64`).
#[allow(clippy::cast_ptr_alignment)]
fn put_header(buf: *mut Scratch, hdr: &FlowHeader) -> usize {
    const V4: usize = size_of::<FlowHeaderV4>();
    // SAFETY: this CPU's scratch value (see `SCRATCH`): 8-byte aligned and longer than either
    // header. The moves read and write inside the first 56 bytes, at the offsets of the two
    // `#[repr(C)]` layouts (asserted in `sensor_ebpf`): `dst_addr` at 32 → 20, the ports and
    // lengths at 48 → 24.
    unsafe {
        buf.cast::<FlowHeader>().write(*hdr);
        if hdr.ip_version != 4 {
            return size_of::<FlowHeader>();
        }
        let b = buf.cast::<u8>();
        b.add(20)
            .cast::<u32>()
            .write(b.add(32).cast::<u32>().read());
        b.add(24)
            .cast::<u64>()
            .write(b.add(48).cast::<u64>().read());
    }
    V4
}

/// Writes the TCP fields at `at` in the scratch buffer, field by field (as `put_header`).
#[inline(always)]
// `at` is 32 or 56 in an 8-byte aligned buffer: aligned for `TcpTail` (4).
#[allow(clippy::cast_ptr_alignment)]
fn put_tcp_tail(buf: *mut Scratch, at: usize, seq: u32, ack: u32, window: u16) {
    // SAFETY: this CPU's scratch value; `at` is a header length (32 or 56), so the 16 bytes
    // lie inside it, 8-byte aligned.
    unsafe {
        let tail = buf.cast::<u8>().add(at).cast::<TcpTail>();
        (*tail).seq = seq;
        (*tail).ack = ack;
        (*tail).window = window;
        (*tail).pad = [0; 6];
    }
}

/// Builds an ICMP destination-unreachable record in the scratch buffer and copies it.
#[inline(always)]
fn emit_icmp(c: Counters, to: Route, hdr: &FlowHeader, q: &IcmpQuote) -> Result<(), u32> {
    let buf = scratch()?;
    // SAFETY: this CPU's scratch value (see `SCRATCH`): 8-byte aligned, as `IcmpRecord`
    // needs, and longer than it.
    unsafe {
        buf.cast::<IcmpRecord>().write(IcmpRecord {
            hdr: *hdr,
            icmp_type: q.icmp_type,
            icmp_code: q.icmp_code,
            inner_proto: q.inner_proto,
            inner_ip_version: q.inner_ip_version,
            pad: [0; 4],
            inner_src: q.inner_src,
            inner_dst: q.inner_dst,
            inner_src_port: q.inner_src_port,
            inner_dst_port: q.inner_dst_port,
            pad2: [0; 4],
        });
    }
    output(c, to, buf, size_of::<IcmpRecord>(), counter::BYTES_ICMP)
}

struct TcpFields {
    seq: u32,
    ack: u32,
    window: u16,
    payload_off: usize,
    /// The flow is not marked yet: mark it only if the copied head confirms this class.
    probe: Option<u8>,
}

/// The per-CPU scratch buffer.
#[inline(always)]
fn scratch() -> Result<*mut Scratch, u32> {
    // Entry 0 of a one-entry array always exists; counted rather than assumed.
    SCRATCH.get_ptr_mut(0).ok_or(counter::LOAD_ERRORS)
}

/// Builds a TCP data record in the scratch buffer (control fields, then the payload head) and,
/// for a probe, checks the signature on the copy before marking the flow.
#[inline(always)]
fn emit_tcp_data(
    ctx: &XdpContext,
    c: Counters,
    to: Route,
    hdr: &FlowHeader,
    tcp: &TcpFields,
) -> Result<(), u32> {
    let buf = scratch()?;
    let len = bounded_len(hdr.cap_len);
    let h = put_header(buf, hdr);
    let fixed = h + size_of::<TcpTail>();
    put_tcp_tail(buf, h, tcp.seq, tcp.ack, tcp.window);
    // SAFETY: this CPU's scratch value (see `SCRATCH`): the payload array at `fixed` (at most
    // 72) lies inside its `72 + MAX_SNAPLEN` bytes, after the header and the tail.
    let data = unsafe {
        &mut *buf
            .cast::<u8>()
            .add(fixed)
            .cast::<[u8; MAX_SNAPLEN as usize]>()
    };
    load_head(ctx, tcp.payload_off, len, data)?;
    if let Some(class) = tcp.probe {
        if !confirm_signature(class, data, usize::from(hdr.cap_len)) {
            return Err(counter::TCP_OTHER);
        }
        mark_flow(&mut Flows, hdr, class, &mut |s| c.bump(s));
    }
    output(c, to, buf, fixed + len, counter::BYTES_TCP_DATA)
}

/// `cap` (at most `MAX_SNAPLEN`, which `parse` guarantees) in a form the verifier can bound:
/// the copy length and the record length both derive from it.
#[inline(always)]
fn bounded_len(cap: u16) -> usize {
    let cap = usize::from(cap);
    if cap == 0 {
        return 0;
    }
    // LLVM may know cap <= MAX_SNAPLEN (from `parse`) and fold a plain mask away, leaving the
    // verifier no bound: the mask goes through a volatile stack slot, opaque to LLVM and an
    // exact constant to the verifier. `MAX_SNAPLEN` is a power of two and
    // 1 <= cap <= MAX_SNAPLEN, so this is the identity, with 1 <= result <= MAX_SNAPLEN proven.
    let mask: usize = MAX_SNAPLEN as usize - 1;
    // SAFETY: reads a local through a pointer to it: valid, aligned and initialised.
    let mask = unsafe { core::ptr::read_volatile(&raw const mask) };
    ((cap - 1) & mask) + 1
}

/// Copies `len` (0 to `MAX_SNAPLEN`, from [`bounded_len`]) payload bytes at `payload_off` into
/// `data`.
#[inline(always)]
// `payload_off` is below `MAX_L4_OFFSET` plus a TCP header and `len <= MAX_SNAPLEN`: both casts
// to the helper's `u32` arguments are exact.
#[allow(clippy::cast_possible_truncation)]
fn load_head(
    ctx: &XdpContext,
    payload_off: usize,
    len: usize,
    data: &mut [u8; MAX_SNAPLEN as usize],
) -> Result<(), u32> {
    if len == 0 {
        return Ok(());
    }
    // `bpf_xdp_load_bytes` declares its length ARG_CONST_SIZE (kernel `net/core/filter.c`): the
    // verifier needs 1 <= len <= the buffer on the register passed, which `bounded_len` gives.
    // SAFETY: `ctx.ctx` is the program's own context; `data` is writable for `MAX_SNAPLEN`
    // bytes and `1 <= len <= MAX_SNAPLEN`. The helper checks `payload_off + len` against the
    // packet and fails with an error instead of reading past it.
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            payload_off as u32,
            data.as_mut_ptr().cast(),
            len as u32,
        )
    };
    if ret != 0 {
        error!(
            ctx,
            "bpf_xdp_load_bytes({}, {}) failed: {}", payload_off, len, ret
        );
        return Err(counter::LOAD_ERRORS);
    }
    Ok(())
}

/// Copies the first `len` bytes of the scratch buffer into each of the record's rings.
#[inline(always)]
fn output(
    c: Counters,
    to: Route,
    buf: *mut Scratch,
    len: usize,
    bytes_slot: u32,
) -> Result<(), u32> {
    // SAFETY: `len` is at most `SCRATCH_BYTES` (a fixed part plus `bounded_len`), so the slice
    // lies inside this CPU's scratch value, which was written up to `len` just before.
    let record = unsafe { core::slice::from_raw_parts(buf.cast::<u8>(), len) };
    if !to.put(to.first, record) {
        // The first copy is the record: lost there, it is lost everywhere (its other copies
        // count as drops of their rings, not tried).
        return Err(to.lost());
    }
    c.forwarded(bytes_slot, len);
    for i in 0..MAX_SHARDS {
        if to.others & (1 << i) != 0 && to.put(i, record) {
            c.forwarded(bytes_slot, len);
        }
    }
    Ok(())
}

/// Builds a UDP record in the scratch buffer (header, then the payload head) and copies it.
#[inline(always)]
fn emit_udp(
    ctx: &XdpContext,
    c: Counters,
    to: Route,
    hdr: &FlowHeader,
    payload_off: usize,
) -> Result<(), u32> {
    let buf = scratch()?;
    let len = bounded_len(hdr.cap_len);
    let h = put_header(buf, hdr);
    // SAFETY: as in `emit_tcp_data`: the payload array at `h` (at most 56) lies inside this
    // CPU's scratch value.
    let data = unsafe { &mut *buf.cast::<u8>().add(h).cast::<[u8; MAX_SNAPLEN as usize]>() };
    load_head(ctx, payload_off, len, data)?;
    output(c, to, buf, h + len, counter::BYTES_UDP)
}

/// Builds a UDP metadata record (the header, no payload) and copies it.
#[inline(always)]
fn emit_udp_meta(c: Counters, to: Route, hdr: &FlowHeader) -> Result<(), u32> {
    let buf = scratch()?;
    let h = put_header(buf, hdr);
    output(c, to, buf, h, counter::BYTES_UDP_META)
}

/// The rings a record goes to (see `sensor_ebpf::shard`): it is written in `first` and copied
/// to each ring in the `others` mask.
#[derive(Clone, Copy)]
struct Route {
    first: u32,
    others: u32,
}

impl Route {
    /// `mask`: the record's rings. The first is its source's shard when that is one of them
    /// (a SYN-ACK goes to its destination's alone).
    #[inline(always)]
    fn of(hdr: &FlowHeader, mask: u32) -> Self {
        let src = shard_of(&hdr.src_addr, global(&SHARD_SEED), global(&SHARDS));
        let first = if mask & (1 << src) != 0 {
            src
        } else {
            shard_of(&hdr.dst_addr, global(&SHARD_SEED), global(&SHARDS))
        };
        Self {
            first,
            others: mask & !(1 << first),
        }
    }

    /// The rings of the record for `hdr` (see `sensor_ebpf::shard`), computed once per frame.
    #[inline(always)]
    fn of_record(hdr: &FlowHeader, l4: &L4) -> Self {
        let (seed, n) = (global(&SHARD_SEED), global(&SHARDS));
        let (src, dst, v) = (&hdr.src_addr, &hdr.dst_addr, hdr.ip_version);
        let mask = match l4 {
            L4::Tcp { .. } => tcp_targets(hdr.tcp_flags, src, dst, v, seed, n),
            L4::Icmp(q) => icmp_targets((src, dst), (&q.inner_src, &q.inner_dst), v, seed, n),
            L4::Udp { .. } => targets(src, dst, v, seed, n),
        };
        Self::of(hdr, mask)
    }

    /// The record's first copy found no room (`put` counted that drop): its other copies
    /// are not tried and count as drops of their rings. Returns the frame's counter.
    #[inline(always)]
    fn lost(self) -> u32 {
        for i in 0..MAX_SHARDS {
            if self.others & (1 << i) != 0 {
                ring_count(i);
            }
        }
        counter::RING_FULL
    }

    /// Copies `record` into ring `shard`, counting it there as a record or a drop (the
    /// helper's only failure for a valid map and size is no room, -EAGAIN).
    #[inline(always)]
    fn put(self, shard: u32, record: &[u8]) -> bool {
        let ring = ring(shard);
        let flags = wakeup_flags(ring, record.len() as u64);
        let ok = ring.output::<[u8]>(record, flags).is_ok();
        ring_count(if ok { MAX_SHARDS + shard } else { shard });
        ok
    }
}

/// Ring `shard` (0 for anything out of range).
#[inline(always)]
fn ring(shard: u32) -> &'static RingBuf {
    match shard {
        1 => &EVENTS_1,
        2 => &EVENTS_2,
        3 => &EVENTS_3,
        _ => &EVENTS,
    }
}

/// Bumps slot `slot` of `RING_STATS`.
#[inline(always)]
fn ring_count(slot: u32) {
    if let Some(value) = RING_STATS.get_ptr_mut(slot) {
        // SAFETY: as in `Counters::add`: this CPU's slot, written only by this program on
        // this CPU, which XDP does not preempt.
        unsafe { *value += 1 }
    }
}

/// Wake the reader only when this record pushed the unread bytes across the watermark.
#[inline(always)]
fn wakeup_flags(ring: &RingBuf, record_size: u64) -> u64 {
    let mark = u64::from(global(&WAKEUP_BYTES));
    if mark == 0 {
        return 0;
    }
    // BPF_RB_AVAIL_DATA: bytes not yet consumed by the reader (`bpf_ringbuf_query` in the
    // kernel's `include/uapi/linux/bpf.h`).
    let unread = ring.query(u64::from(BPF_RB_AVAIL_DATA));
    // +8: the ring's own per-record header (`BPF_RINGBUF_HDR_SZ`).
    if unread >= mark && unread < mark + record_size + 8 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

#[cfg(not(test))]
#[panic_handler]
// BPF cannot abort. No panic path survives into the object (the verifier would reject the
// endless loop), so this handler only satisfies the `no_std` link.
#[allow(clippy::empty_loop)]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
