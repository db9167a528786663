//! The XDP program under `BPF_PROG_TEST_RUN`: crafted frames in, verdict, every record byte and
//! every counter checked. Each test loads its own object, so map state is isolated.
//!
//! Needs root; see `sensor_tests::privilege`.

use std::net::Ipv6Addr;

use aya::maps::{MapData, RingBuf};
use aya::programs::{TestRun, TestRunOptions};
use etherparse::{PacketBuilder, VlanId};
use sensor::capture::xdp::{KernelCounters, XdpConfig, XdpSensor};
use sensor::capture::CounterSnapshot;
use sensor_ebpf::{counter, kind, tcp_flag, FlowHeader, IcmpRecord, TcpRecord};
use sensor_tests::privilege::privileged;
use sensor_tests::xdp::{run_frame, XDP_PASS};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const V4_A: [u8; 4] = [192, 0, 2, 10];
const V4_B: [u8; 4] = [203, 0, 113, 7];

struct Harness {
    sensor: XdpSensor,
    ring: RingBuf<MapData>,
    counters: KernelCounters,
}

impl Harness {
    fn new(config: XdpConfig) -> Self {
        let mut sensor = XdpSensor::load(&config).expect("load XDP object");
        let ring = sensor.take_ring().unwrap();
        // BPF_PROG_TEST_RUN runs frames as arriving on the loopback device.
        sensor.set_ifaces(&["lo".into()]).unwrap();
        let counters = sensor.take_counters().unwrap();
        Self {
            sensor,
            ring,
            counters,
        }
    }

    fn run(&mut self, frame: &[u8]) {
        run_frame(&mut self.sensor, frame);
    }

    fn drain(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(item.to_vec());
        }
        out
    }

    /// Runs one frame and returns the records it produced.
    fn records(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        self.run(frame);
        self.drain()
    }

    /// The frame outcomes and events counted; the byte counts are checked on their own
    /// ([`Harness::all_counters`]).
    fn counters(&self) -> CounterSnapshot {
        without_bytes(self.all_counters())
    }

    /// Every count lands in the loopback's block: none in the block of unknown interfaces.
    fn all_counters(&self) -> CounterSnapshot {
        let snap = self.counters.read().unwrap();
        assert_eq!(snap.ifaces.len(), 1);
        assert_eq!(
            snap.unknown,
            CounterSnapshot::default(),
            "counted as unknown"
        );
        snap.ifaces[0]
    }
}

/// The counters with the byte counts zeroed.
fn without_bytes(mut snap: CounterSnapshot) -> CounterSnapshot {
    for slot in counter::BYTES_SEEN..=counter::BYTES_ICMP {
        snap.0[slot as usize] = 0;
    }
    snap
}

/// Every UDP payload forwarded (the policy before classification): the tests of the header
/// walk and the record classes.
fn full_udp() -> XdpConfig {
    XdpConfig {
        udp_policy: sensor_ebpf::udp_policy::FULL,
        ..XdpConfig::default()
    }
}

fn expected_counters(slots: &[(u32, u64)]) -> CounterSnapshot {
    let mut snap = CounterSnapshot::default();
    for &(slot, n) in slots {
        snap.0[slot as usize] += n;
    }
    snap
}

/// A record as the ring holds it, from its full-layout struct (a `FlowHeader` first): for IPv4
/// (but ICMP) the header compacted to 32 bytes by the full layout's offsets, kind to timestamp
/// (0..16), the first 4 bytes of each address (16, 32), ports and lengths (48..56).
fn bytes_of<T>(value: &T) -> Vec<u8> {
    // SAFETY: only called with the `#[repr(C)]` ABI records, which have no implicit padding
    // (sensor-ebpf asserts their sizes), so all `size_of::<T>()` bytes behind the reference are
    // initialised; the slice lives no longer than the borrow.
    let full = unsafe {
        std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
    };
    if full[1] == 4 && full[0] != kind::ICMP {
        [&full[..20], &full[32..36], &full[48..]].concat()
    } else {
        full.to_vec()
    }
}

/// A test length as the 16-bit field it goes into (they are all far below 64 KiB).
fn len16(n: usize) -> u16 {
    u16::try_from(n).expect("test lengths fit 16 bits")
}

/// A test length as a 32-bit sequence-number offset.
fn len32(n: usize) -> u32 {
    u32::try_from(n).expect("test lengths fit 32 bits")
}

fn v4(addr: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&addr);
    out
}

/// The header we expect, with the timestamp left at 0 (the kernel's clock is real).
fn header(kind: u8, ip_version: u8, src: [u8; 16], dst: [u8; 16], ports: (u16, u16)) -> FlowHeader {
    FlowHeader {
        kind,
        ip_version,
        vlan_depth: 0,
        tcp_flags: 0,
        // BPF_PROG_TEST_RUN without a context runs on the namespace's loopback device.
        ifindex: 1,
        ts_ns: 0,
        src_addr: src,
        dst_addr: dst,
        src_port: ports.0,
        dst_port: ports.1,
        payload_len: 0,
        cap_len: 0,
    }
}

/// Asserts a record equals `expected` byte for byte, its length included (records are exactly
/// their fixed part and the bytes copied); the timestamp must be set but its value is the
/// kernel's.
fn assert_record(actual: &[u8], expected: &[u8]) {
    assert_eq!(actual.len(), expected.len(), "record size");
    let ts = u64::from_ne_bytes(actual[8..16].try_into().unwrap());
    assert_ne!(ts, 0, "timestamp not set");
    let mut actual = actual.to_vec();
    actual[8..16].fill(0);
    assert_eq!(actual, expected, "record bytes");
}

fn tcp_frame(flags: u8, payload: &[u8]) -> Vec<u8> {
    sensor_tests::xdp::tcp_frame(V4_A, V4_B, flags, payload)
}

fn expected_tcp(flags: u8, payload_len: u16, vlan_depth: u8) -> TcpRecord {
    let mut hdr = header(kind::TCP, 4, v4(V4_A), v4(V4_B), (51413, 6881));
    hdr.tcp_flags = flags;
    hdr.payload_len = payload_len;
    hdr.vlan_depth = vlan_depth;
    let ack = if flags & tcp_flag::ACK != 0 { 7777 } else { 0 };
    TcpRecord {
        hdr,
        seq: 1000,
        ack,
        window: 64240,
        pad: [0; 6],
    }
}

fn udp_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_A, V4_B, 64)
        .udp(6881, 6881)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// Payload bytes that differ at every offset, so a misplaced copy shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 + i / 251).to_le_bytes()[0])
        .collect()
}

fn expected_udp(payload: &[u8], cap: usize) -> Vec<u8> {
    let mut hdr = header(kind::UDP, 4, v4(V4_A), v4(V4_B), (6881, 6881));
    hdr.payload_len = len16(payload.len());
    hdr.cap_len = len16(cap);
    let mut out = bytes_of(&hdr);
    out.extend_from_slice(&payload[..cap]);
    out
}

#[test]
fn tcp_control_segments_emit_one_record_each() {
    use tcp_flag::{ACK, FIN, PSH, RST, SYN};
    if !privileged("tcp_control_segments_emit_one_record_each") {
        return;
    }
    let mut h = Harness::new(XdpConfig::default());
    for (flags, payload) in [
        (SYN, &b""[..]),
        (SYN | ACK, b""),
        (RST | ACK, b""),
        (RST, b""),
        (FIN | ACK, b""),
        (FIN | PSH | ACK, b"bye\r\n"),
    ] {
        let records = h.records(&tcp_frame(flags, payload));
        assert_eq!(records.len(), 1, "flags {flags:#x}");
        assert_record(
            &records[0],
            &bytes_of(&expected_tcp(flags, len16(payload.len()), 0)),
        );
    }
    // Bare ACKs and data segments are the bulk of traffic and are not forwarded.
    assert!(h.records(&tcp_frame(ACK, b"")).is_empty());
    assert!(h
        .records(&tcp_frame(PSH | ACK, b"GET / HTTP/1.1\r\n\r\n"))
        .is_empty());
    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 8),
            (counter::IPV4, 8),
            (counter::REC_SYN, 1),
            (counter::REC_SYNACK, 1),
            (counter::REC_RST, 2),
            (counter::REC_FIN, 2),
            (counter::TCP_OTHER, 2),
        ])
    );
}

#[test]
fn vlan_and_qinq_tags_are_unwrapped() {
    if !privileged("vlan_and_qinq_tags_are_unwrapped") {
        return;
    }
    let mut h = Harness::new(XdpConfig::default());
    let vlan = |id| VlanId::try_new(id).unwrap();

    let mut single = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .single_vlan(vlan(10))
        .ipv4(V4_A, V4_B, 64)
        .tcp(51413, 6881, 1000, 64240)
        .syn()
        .write(&mut single, &[])
        .unwrap();
    let records = h.records(&single);
    assert_eq!(records.len(), 1);
    assert_record(&records[0], &bytes_of(&expected_tcp(tcp_flag::SYN, 0, 1)));

    let mut double = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .double_vlan(vlan(100), vlan(10))
        .ipv4(V4_A, V4_B, 64)
        .tcp(51413, 6881, 1000, 64240)
        .syn()
        .write(&mut double, &[])
        .unwrap();
    // etherparse writes 0x8100 for both tags; a real QinQ outer tag is 802.1ad (0x88a8).
    double[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
    let records = h.records(&double);
    assert_eq!(records.len(), 1);
    assert_record(&records[0], &bytes_of(&expected_tcp(tcp_flag::SYN, 0, 2)));

    // A third tag is more than we unwrap: counted, not misparsed.
    let mut triple = double[..12].to_vec();
    triple.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    triple.extend_from_slice(&double[12..]);
    assert!(h.records(&triple).is_empty());

    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 3),
            (counter::IPV4, 2),
            (counter::REC_SYN, 2),
            (counter::NON_IP, 1),
        ])
    );
}

/// Ethernet + IPv6 with the given extension headers (each `(type, bytes)`) + `l4`.
fn ipv6_frame(exts: &[(u8, Vec<u8>)], l4_proto: u8, l4: &[u8]) -> Vec<u8> {
    let src = "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets();
    let dst = "2001:db8::200".parse::<Ipv6Addr>().unwrap().octets();
    let mut frame = Vec::new();
    frame.extend_from_slice(&MAC_B);
    frame.extend_from_slice(&MAC_A);
    frame.extend_from_slice(&0x86ddu16.to_be_bytes());
    let ext_len: usize = exts.iter().map(|(_, b)| b.len()).sum();
    let first = exts.first().map_or(l4_proto, |(t, _)| *t);
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(&len16(ext_len + l4.len()).to_be_bytes());
    frame.extend_from_slice(&[first, 64]);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&dst);
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut bytes = bytes.clone();
        bytes[0] = exts.get(i + 1).map_or(l4_proto, |(t, _)| *t);
        frame.extend_from_slice(&bytes);
    }
    frame.extend_from_slice(l4);
    frame
}

fn udp_bytes(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&len16(8 + payload.len()).to_be_bytes());
    out.extend_from_slice(&[0, 0]); // checksum: XDP does not verify it
    out.extend_from_slice(payload);
    out
}

#[test]
fn ipv6_extension_headers_are_walked() {
    if !privileged("ipv6_extension_headers_are_walked") {
        return;
    }
    let mut h = Harness::new(full_udp());
    let src = "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets();
    let dst = "2001:db8::200".parse::<Ipv6Addr>().unwrap().octets();
    let hop_by_hop = (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]); // PadN
    let dest_opts = (60u8, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 16 bytes
    let routing = (43u8, vec![0, 0, 0, 0, 0, 0, 0, 0]);
    let auth = (51u8, vec![0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // (1 + 2) * 4 = 12 bytes
    let payload = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";

    let frame = ipv6_frame(
        &[hop_by_hop.clone(), dest_opts, routing, auth],
        17,
        &udp_bytes(6881, 6881, payload),
    );
    let records = h.records(&frame);
    assert_eq!(records.len(), 1);
    let mut hdr = header(kind::UDP, 6, src, dst, (6881, 6881));
    hdr.payload_len = len16(payload.len());
    hdr.cap_len = len16(payload.len());
    let mut expected = bytes_of(&hdr);
    expected.extend_from_slice(payload);
    assert_record(&records[0], &expected);

    // TCP behind a first fragment header (offset 0) is parsed...
    let first_fragment = (44u8, vec![0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef]);
    let mut syn = vec![0u8; 20];
    syn[0..2].copy_from_slice(&51413u16.to_be_bytes());
    syn[2..4].copy_from_slice(&6881u16.to_be_bytes());
    syn[4..8].copy_from_slice(&1000u32.to_be_bytes());
    syn[12] = 5 << 4;
    syn[13] = tcp_flag::SYN;
    syn[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let records = h.records(&ipv6_frame(&[hop_by_hop, first_fragment], 6, &syn));
    assert_eq!(records.len(), 1);
    let mut hdr = header(kind::TCP, 6, src, dst, (51413, 6881));
    hdr.tcp_flags = tcp_flag::SYN;
    assert_record(
        &records[0],
        &bytes_of(&TcpRecord {
            hdr,
            seq: 1000,
            ack: 0,
            window: 64240,
            pad: [0; 6],
        }),
    );

    // ...a later fragment has no L4 header and is skipped.
    let later_fragment = (44u8, vec![0, 0, 0x05, 0xa8, 0xde, 0xad, 0xbe, 0xef]);
    assert!(h
        .records(&ipv6_frame(&[later_fragment], 17, &[0u8; 64]))
        .is_empty());

    // Seven extension headers are more than the bounded walk follows.
    let many: Vec<_> = (0..7)
        .map(|_| (60u8, vec![0, 0, 1, 4, 0, 0, 0, 0]))
        .collect();
    assert!(h
        .records(&ipv6_frame(&many, 17, &udp_bytes(1, 2, b"x")))
        .is_empty());

    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 4),
            (counter::IPV6, 4),
            (counter::REC_UDP, 1),
            (counter::REC_SYN, 1),
            (counter::FRAGMENTS, 1),
            (counter::PARSE_ERRORS, 1),
        ])
    );
}

#[test]
fn ipv4_fragments_and_options() {
    if !privileged("ipv4_fragments_and_options") {
        return;
    }
    let mut h = Harness::new(full_udp());
    let payload = pattern(1000);

    // First fragment (MF set, offset 0): UDP header present, the true length is the whole
    // datagram's and the copy is what this fragment holds.
    let whole = udp_frame(&payload);
    let mut first = whole[..14 + 20 + 8 + 600].to_vec();
    first[14 + 2..14 + 4].copy_from_slice(&(20u16 + 8 + 600).to_be_bytes());
    first[14 + 6] = 0x20; // MF
    let records = h.records(&first);
    assert_eq!(records.len(), 1);
    let record = &records[0];
    let mut hdr = header(kind::UDP, 4, v4(V4_A), v4(V4_B), (6881, 6881));
    hdr.payload_len = 1000;
    hdr.cap_len = 600;
    let mut expected = bytes_of(&hdr);
    expected.extend_from_slice(&payload[..600]);
    assert_record(record, &expected);

    // Non-first fragment: skipped and counted.
    let mut later = whole[..14 + 20 + 200].to_vec();
    later[14 + 6..14 + 8].copy_from_slice(&(608u16 / 8).to_be_bytes());
    assert!(h.records(&later).is_empty());

    // IPv4 options (ihl 6) are skipped by ihl.
    let syn = tcp_frame(tcp_flag::SYN, b"");
    let mut with_opts = syn[..14].to_vec();
    with_opts.extend_from_slice(&syn[14..34]);
    with_opts.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    with_opts.extend_from_slice(&syn[34..]);
    with_opts[14] = 0x46;
    with_opts[14 + 2..14 + 4].copy_from_slice(&(24u16 + 20).to_be_bytes());
    let records = h.records(&with_opts);
    assert_eq!(records.len(), 1);
    assert_record(&records[0], &bytes_of(&expected_tcp(tcp_flag::SYN, 0, 0)));

    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 3),
            (counter::IPV4, 3),
            (counter::REC_UDP, 1),
            (counter::UDP_TRUNCATED, 1),
            (counter::FRAGMENTS, 1),
            (counter::REC_SYN, 1),
        ])
    );
}

#[test]
fn udp_records_are_exactly_as_long_as_their_payload_head() {
    if !privileged("udp_records_are_exactly_as_long_as_their_payload_head") {
        return;
    }
    let mut h = Harness::new(full_udp());
    // (payload length, bytes copied): the record is the 32-byte IPv4 header and those bytes.
    let cases = [
        (1, 1),
        (32, 32),
        (33, 33),
        (129, 129),
        (513, 513),
        (1472, 1472),
        // Longer than the default snap length of 1472: a prefix, and counted as truncated.
        (2000, 1472),
    ];
    let mut record_bytes = 0;
    for (len, cap) in cases {
        let payload = pattern(len);
        let records = h.records(&udp_frame(&payload));
        assert_eq!(records.len(), 1, "payload {len}");
        assert_eq!(records[0].len(), 32 + cap, "payload {len}");
        assert_record(&records[0], &expected_udp(&payload, cap));
        record_bytes += 32 + cap as u64;
    }
    assert!(
        h.records(&udp_frame(b"")).is_empty(),
        "empty UDP is not forwarded"
    );
    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 8),
            (counter::IPV4, 8),
            (counter::REC_UDP, 7),
            (counter::UDP_TRUNCATED, 1),
            (counter::UDP_EMPTY, 1),
        ])
    );
    let all = h.all_counters();
    assert_eq!(
        (
            all.get(counter::BYTES_FORWARDED),
            all.get(counter::BYTES_UDP)
        ),
        (record_bytes, record_bytes)
    );

    // A configured snap length of 256 copies 256 bytes of a 1000-byte payload.
    let mut h = Harness::new(XdpConfig {
        snaplen: 256,
        ..full_udp()
    });
    let payload = pattern(1000);
    let records = h.records(&udp_frame(&payload));
    assert_eq!(records.len(), 1);
    assert_record(&records[0], &expected_udp(&payload, 256));
    // Snap length 0 forwards the header only.
    let mut h = Harness::new(XdpConfig {
        snaplen: 0,
        ..full_udp()
    });
    let records = h.records(&udp_frame(&payload));
    assert_eq!(records.len(), 1);
    assert_record(&records[0], &expected_udp(&payload, 0));
}

#[test]
fn truncated_and_foreign_frames_are_counted() {
    if !privileged("truncated_and_foreign_frames_are_counted") {
        return;
    }
    let mut h = Harness::new(full_udp());
    let syn = tcp_frame(tcp_flag::SYN, b"");
    let udp = udp_frame(b"hello");
    let frames: Vec<Vec<u8>> = vec![
        syn[..14 + 10].to_vec(),      // IPv4 header cut
        syn[..14 + 20 + 12].to_vec(), // TCP header cut
        udp[..14 + 20 + 4].to_vec(),  // UDP header cut
        {
            let mut bad = syn.clone();
            bad[14] = 0x44; // ihl 4 < 5
            bad
        },
        {
            let mut bad = udp.clone();
            bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&4u16.to_be_bytes()); // UDP length < 8
            bad
        },
        {
            let mut bad = udp.clone();
            // UDP length beyond the IP payload, and not a fragment.
            bad[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&100u16.to_be_bytes());
            bad
        },
        {
            let mut arp = vec![0xff; 6];
            arp.extend_from_slice(&MAC_A);
            arp.extend_from_slice(&[0x08, 0x06]);
            arp.extend_from_slice(&[0u8; 28]);
            arp
        },
        {
            let mut icmp = Vec::new();
            PacketBuilder::ethernet2(MAC_A, MAC_B)
                .ipv4(V4_A, V4_B, 64)
                .icmpv4_echo_request(1, 1)
                .write(&mut icmp, b"ping")
                .unwrap();
            icmp
        },
    ];
    for frame in &frames {
        assert!(h.records(frame).is_empty(), "{frame:02x?}");
    }
    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 8),
            (counter::IPV4, 7),
            (counter::PARSE_ERRORS, 6),
            (counter::NON_IP, 1),
            (counter::OTHER_L4, 1),
        ])
    );
}

#[test]
fn full_ring_drops_are_counted_exactly() {
    if !privileged("full_ring_drops_are_counted_exactly") {
        return;
    }
    // One page of ring: a handful of 2104-byte records fit, the rest must be counted.
    let page = 4096;
    let mut h = Harness::new(XdpConfig {
        ring_bytes: page,
        wakeup_bytes: 0,
        ..full_udp()
    });
    let frame = udp_frame(&pattern(1400));
    let runs = 20u64;
    for _ in 0..runs {
        h.run(&frame);
    }
    let snap = h.counters();
    let drained = h.drain().len() as u64;
    assert!(
        snap.get(counter::RING_FULL) > 0,
        "ring never filled: {snap:?}"
    );
    assert_eq!(
        snap.get(counter::REC_UDP) + snap.get(counter::RING_FULL),
        runs
    );
    assert_eq!(
        drained,
        snap.get(counter::REC_UDP),
        "every emitted record is readable"
    );
    assert_eq!(snap.get(counter::PACKETS), runs);
}

#[test]
fn icmp_unreachable_quoting_tcp_and_udp() {
    if !privileged("icmp_unreachable_quoting_tcp_and_udp") {
        return;
    }
    let mut h = Harness::new(XdpConfig::default());
    // A router's port unreachable for our SYN: outer 198.51.100.1 -> 192.0.2.10, quoting
    // the SYN's IPv4 header and first 8 TCP bytes.
    let syn = tcp_frame(tcp_flag::SYN, b"");
    let quoted = &syn[14..14 + 20 + 8];
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(MAC_B, MAC_A)
        .ipv4([198, 51, 100, 1], V4_A, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut frame, quoted)
        .unwrap();
    let records = h.records(&frame);
    assert_eq!(records.len(), 1);
    let mut hdr = header(kind::ICMP, 4, v4([198, 51, 100, 1]), v4(V4_A), (0, 0));
    hdr.payload_len = len16(quoted.len());
    let expected = IcmpRecord {
        hdr,
        icmp_type: 3,
        icmp_code: 3,
        inner_proto: 6,
        inner_ip_version: 4,
        pad: [0; 4],
        inner_src: v4(V4_A),
        inner_dst: v4(V4_B),
        inner_src_port: 51413,
        inner_dst_port: 6881,
        pad2: [0; 4],
    };
    assert_record(&records[0], &bytes_of(&expected));

    // ICMPv6 destination unreachable (type 1, code 4 port) quoting a UDP datagram.
    let src = "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets();
    let dst = "2001:db8::200".parse::<Ipv6Addr>().unwrap().octets();
    let mut inner = vec![0x60, 0, 0, 0, 0, 16, 17, 64];
    inner.extend_from_slice(&src);
    inner.extend_from_slice(&dst);
    inner.extend_from_slice(&udp_bytes(6881, 51413, b"d1:ad2:")[..8]);
    let mut icmp6 = vec![1, 4, 0, 0, 0, 0, 0, 0];
    icmp6.extend_from_slice(&inner);
    let frame = ipv6_frame(&[], 58, &icmp6);
    let records = h.records(&frame);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].len(), size_of::<IcmpRecord>());
    // SAFETY: the record holds exactly `size_of::<IcmpRecord>()` bytes (asserted above),
    // `read_unaligned` needs no alignment, and every bit pattern is a valid `IcmpRecord`
    // (integers and byte arrays only).
    let r: IcmpRecord = unsafe { std::ptr::read_unaligned(records[0].as_ptr().cast()) };
    assert_eq!(
        (r.icmp_type, r.icmp_code, r.inner_proto, r.inner_ip_version),
        (1, 4, 17, 6)
    );
    assert_eq!(
        (r.inner_src, r.inner_dst, r.inner_src_port, r.inner_dst_port),
        (src, dst, 6881, 51413)
    );

    // Echo requests and unreachables quoting ICMP are not forwarded.
    let mut quoting_icmp = frame.clone();
    quoting_icmp[14 + 40 + 8 + 6] = 58;
    assert!(h.records(&quoting_icmp).is_empty());
    assert_eq!(
        h.counters(),
        expected_counters(&[
            (counter::PACKETS, 3),
            (counter::IPV4, 1),
            (counter::IPV6, 2),
            (counter::REC_ICMP, 2),
            (counter::OTHER_L4, 1),
        ])
    );
}

/// A TCP segment between the two test hosts; `forward` picks the direction.
fn tcp_segment(forward: bool, ports: (u16, u16), seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst, sport, dport) = if forward {
        (V4_A, V4_B, ports.0, ports.1)
    } else {
        (V4_B, V4_A, ports.1, ports.0)
    };
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, seq, 64240)
        .ack(1);
    if flags & tcp_flag::FIN != 0 {
        b = b.fin();
    }
    if flags & tcp_flag::PSH != 0 {
        b = b.psh();
    }
    if flags & tcp_flag::RST != 0 {
        b = b.rst();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Frames exercising flow marking, each with the number of records it must produce: unmarked
/// payloads, an announce and its reply, half-close, a peer-wire flow through its budget, PEX
/// mid-session, and RST.
fn marked_flow_script() -> Vec<(Vec<u8>, usize)> {
    use sensor_ebpf::{FLOW_SEGMENTS, SMALL_SEGMENT};
    use tcp_flag::{FIN, PSH, RST};

    let announce = b"GET /announce?info_hash=%e4%be%9eM%b8v%e3%e3%17%97x%b0%3e%90b%97%be%5c%8d%be\
        &peer_id=-DE13F0-VnpZRF8ZP9iv&port=63448&compact=1 HTTP/1.1\r\nHost: t\r\n\r\n";
    let reply = b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n";
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0u8; 48]);
    let big = pattern(1400);
    let small = pattern(usize::from(SMALL_SEGMENT));

    // (frame, records expected from it)
    let mut script: Vec<(Vec<u8>, usize)> = vec![
        // Payload on a flow nothing marked, a web GET without info_hash, and a handshake
        // look-alike: none forwarded.
        (tcp_segment(true, (40000, 80), 1, PSH, b"hello"), 0),
        (
            tcp_segment(
                true,
                (40001, 80),
                1,
                PSH,
                b"GET /index.html HTTP/1.1\r\n\r\n",
            ),
            0,
        ),
        (
            tcp_segment(true, (40002, 6881), 1, PSH, b"\x13BitTorrent protocoX"),
            0,
        ),
        // An announce marks its flow; the reply and the server's FIN+data come along.
        (tcp_segment(true, (40003, 6969), 1, PSH, announce), 1),
        (tcp_segment(false, (40003, 6969), 1, PSH, reply), 1),
        (
            tcp_segment(
                false,
                (40003, 6969),
                1 + len32(reply.len()),
                FIN | PSH,
                b"d5:peers0:e\n",
            ),
            1,
        ),
        // One FIN ends one direction: the client may still send. Its own FIN (a header-only
        // record) unmarks the flow.
        (tcp_segment(true, (40003, 6969), 500, PSH, b"late"), 1),
        (tcp_segment(true, (40003, 6969), 504, FIN, b""), 1),
        (
            tcp_segment(true, (40003, 6969), 505, PSH, b"after both FINs"),
            0,
        ),
        // A peer-wire flow: the handshake and FLOW_SEGMENTS - 1 more full segments.
        (tcp_segment(true, (40004, 51413), 1, PSH, &handshake), 1),
    ];
    let mut seq = 1 + len32(handshake.len());
    for _ in 1..FLOW_SEGMENTS {
        script.push((tcp_segment(false, (40004, 51413), seq, 0, &big), 1));
        seq += len32(big.len());
    }
    // Past the budget: a large segment is dropped (counted), a small one still goes.
    script.push((tcp_segment(false, (40004, 51413), seq, 0, &big), 0));
    seq += len32(big.len());
    script.push((tcp_segment(false, (40004, 51413), seq, PSH, &small), 1));
    script.push((tcp_segment(true, (40004, 51413), 2000, PSH, &small[..1]), 1));
    // Mid-session: a PEX message opening a segment marks its flow (PEX-R2's first bytes); a
    // look-alike whose dict does not open with a length does not.
    let pex = b"\x00\x00\x00\xf8\x14\x01d5:added180:\xd8\x90\xe4\x64\x47\xc9";
    script.push((tcp_segment(false, (40005, 6881), 77, PSH, pex), 1));
    script.push((
        tcp_segment(false, (40006, 6881), 77, PSH, b"\x00\x00\x00\xf8\x14\x01dx"),
        0,
    ));
    // A bare RST unmarks at once.
    script.push((tcp_segment(true, (40005, 6881), 9, RST, b""), 1));
    script.push((tcp_segment(false, (40005, 6881), 500, PSH, b"xyz"), 0));
    script
}

#[test]
fn tcp_payloads_are_forwarded_for_marked_flows_only() {
    use sensor::capture::pcap::Prefilter;
    use sensor::capture::record::{decode, MonotonicClock};
    use sensor::event::{EventLine, Timestamp};

    if !privileged("tcp_payloads_are_forwarded_for_marked_flows_only") {
        return;
    }

    let script = marked_flow_script();
    let mut h = Harness::new(XdpConfig::default());
    let mut offline = Prefilter::new(sensor_ebpf::DEFAULT_SNAPLEN);
    let clock = MonotonicClock::identity();
    let strip = |mut line: EventLine| {
        line.ts.clear();
        line
    };
    for (i, (frame, expected)) in script.iter().enumerate() {
        let records = h.records(frame);
        assert_eq!(records.len(), *expected, "frame {i}");
        let mirror = offline.frame(frame, Timestamp::from_nanos(1)).unwrap();
        assert_eq!(mirror.is_some(), *expected == 1, "offline, frame {i}");
        if let (Some(record), Some(mirror)) = (records.first(), mirror) {
            let live = decode(record, &clock).unwrap();
            let line = strip(EventLine::from(&live));
            assert_eq!(line, strip(EventLine::from(&mirror)), "frame {i}");
            // The payload itself, not just its length, reached userspace.
            let tcp_payload = &frame[14 + 20 + 20..];
            assert_eq!(line.head.len(), 2 * tcp_payload.len(), "frame {i}");
        }
    }
    let forwarded = script.iter().filter(|(_, n)| *n == 1).count() as u64;
    let frames = script.len() as u64;
    let expected = expected_counters(&[
        (counter::PACKETS, frames),
        (counter::IPV4, frames),
        (counter::REC_FIN, 2),
        (counter::REC_RST, 1),
        (counter::REC_TCP_DATA, forwarded - 3),
        (counter::TCP_OTHER, 6),
        (counter::TCP_OVER_BUDGET, 1),
        (counter::FLOWS_MARKED, 3),
        (counter::FLOWS_ENDED, 2),
    ]);
    assert_eq!(h.counters(), expected);
    let mut mirrored = offline.counters;
    mirrored.0[counter::PACKETS as usize] = frames;
    assert_eq!(without_bytes(mirrored), expected);
    // Record bytes, by kind, as the kernel counted them (the offline path never sees the
    // frames' bytes: the caller counts those).
    let mut kernel = h.all_counters();
    kernel.0[counter::BYTES_SEEN as usize] = 0;
    assert_eq!(kernel, mirrored);
}

/// A UDP datagram between V4_A:`a` and V4_B:`b`, in either direction.
fn udp_between(a: u16, b: u16, a_to_b: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let (src, dst, sp, dp) = if a_to_b {
        (V4_A, V4_B, a, b)
    } else {
        (V4_B, V4_A, b, a)
    };
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sp, dp)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// A uTP packet (BEP 29): type, connection id 7, sequence number, no extension.
fn utp_packet(kind: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![kind << 4 | 1, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(payload);
    p
}

/// UDP traffic of every class the policy tells apart: coordination messages, a uTP
/// connection from its SYN through handshake, budget, piece data and PEX to its FINs, an
/// encrypted uTP connection, QUIC, DNS.
fn udp_policy_script() -> Vec<Vec<u8>> {
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0; 48]);
    let mut pex = vec![0, 0, 0, 60, 20, 1];
    pex.extend_from_slice(b"d5:added12:");
    pex.extend_from_slice(&[198, 51, 100, 1, 0x1a, 0xe1, 198, 51, 100, 2, 0x1a, 0xe2]);
    pex.push(b'e');
    pex.resize(64, b'x');
    let piece = pattern(1400);
    let mut connect = vec![0, 0, 4, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0];
    connect.extend_from_slice(&[1, 2, 3, 4]);
    let mut connect_resp = vec![0, 0, 0, 0, 1, 2, 3, 4];
    connect_resp.extend_from_slice(&[0x5a; 8]);
    let mut mdns = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    mdns.extend_from_slice(b"\x0b_googlecast\x04_tcp\x05local\x00\x00\x0c\x00\x01");
    let mut s = vec![
        udp_between(
            40000,
            6881,
            true,
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        ),
        udp_between(40001, 6969, true, &connect),
        // The tracker's connect response goes (its flow was marked by the request); the same
        // shape from a tracker nobody asked, and an mDNS query (ID and flags zero), do not.
        udp_between(40001, 6969, false, &connect_resp),
        udp_between(40005, 6969, false, &connect_resp),
        udp_between(5353, 5353, true, &mdns),
        udp_between(
            40002,
            6771,
            true,
            b"BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\n\r\n",
        ),
        udp_between(
            40003,
            443,
            true,
            &[&[0xc3, 0, 0, 0, 1][..], &pattern(1200)].concat(),
        ),
        udp_between(
            40004,
            53,
            true,
            &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1],
        ),
        // uTP: SYN, STATE, the handshake each way, then the budget.
        udp_between(50000, 6881, true, &utp_packet(4, 100, &[])),
        udp_between(50000, 6881, false, &utp_packet(2, 500, &[])),
        udp_between(50000, 6881, true, &utp_packet(0, 101, &handshake)),
        udp_between(50000, 6881, false, &utp_packet(0, 500, &handshake)),
    ];
    for i in 0..10 {
        s.push(udp_between(
            50000,
            6881,
            false,
            &utp_packet(0, 501 + i, &piece),
        ));
    }
    s.push(udp_between(50000, 6881, false, &utp_packet(0, 511, &pex)));
    s.push(udp_between(50000, 6881, true, &utp_packet(1, 102, &[])));
    s.push(udp_between(50000, 6881, false, &utp_packet(1, 512, &[])));
    s.push(udp_between(50000, 6881, false, &utp_packet(0, 513, &piece)));
    // An encrypted (MSE) uTP connection: nothing of its DATA goes.
    s.push(udp_between(
        50001,
        6881,
        true,
        &utp_packet(0, 1, &pattern(96)),
    ));
    s
}

/// The kernel and the offline pre-filter forward the same UDP records, with the same counters
/// (bytes included), under the classified policy with and without metadata records.
#[test]
fn udp_policy_in_the_kernel_mirrors_the_offline_path() {
    use sensor::capture::pcap::{FilterConfig, Prefilter};
    use sensor::capture::record::{decode, MonotonicClock};
    use sensor::event::{EventLine, Timestamp};
    use sensor_ebpf::udp_policy;

    if !privileged("udp_policy_in_the_kernel_mirrors_the_offline_path") {
        return;
    }
    let script = udp_policy_script();
    let clock = MonotonicClock::identity();
    let strip = |mut line: EventLine| {
        line.ts.clear();
        line
    };
    for policy in [udp_policy::CLASSIFIED, udp_policy::CLASSIFIED_META] {
        let config = XdpConfig {
            udp_policy: policy,
            ..XdpConfig::default()
        };
        let mut h = Harness::new(config);
        let mut offline = Prefilter::with_config(FilterConfig {
            snaplen: config.snaplen,
            udp_policy: policy,
        });
        let mut seen = 0u64;
        let mut forwarded = 0;
        for (i, frame) in script.iter().enumerate() {
            seen += frame.len() as u64;
            let records = h.records(frame);
            let mirror = offline.frame(frame, Timestamp::from_nanos(1)).unwrap();
            assert_eq!(
                records.len(),
                usize::from(mirror.is_some()),
                "frame {i}, policy {policy}"
            );
            if let (Some(record), Some(mirror)) = (records.first(), mirror) {
                forwarded += 1;
                let live = strip(EventLine::from(&decode(record, &clock).unwrap()));
                assert_eq!(live, strip(EventLine::from(&mirror)), "frame {i}");
            }
        }
        let mut mirrored = offline.counters;
        mirrored.0[counter::PACKETS as usize] = script.len() as u64;
        mirrored.0[counter::BYTES_SEEN as usize] = seen;
        assert_eq!(h.all_counters(), mirrored, "policy {policy}");
        // What the script is made to show: KRPC, the tracker connect and its response, LSD,
        // the uTP SYN, STATE, both handshakes (the second renews the budget), the budget's 7
        // pieces, 3 bare headers, the PEX, both FINs go; the unasked tracker's response, the
        // mDNS query, QUIC, DNS, the piece after the FINs and the MSE payload do not (or go
        // as metadata).
        let meta = if policy == udp_policy::CLASSIFIED_META {
            6
        } else {
            0
        };
        assert_eq!(forwarded, 4 + 4 + 7 + 3 + 1 + 2 + meta, "policy {policy}");
        assert_eq!(mirrored.get(counter::UTP_HEADER_ONLY), 3);
        assert_eq!(mirrored.get(counter::UDP_UNCLASSIFIED), 6 - meta);
        assert_eq!(mirrored.get(counter::REC_UDP_META), meta);
        // Marked: the tracker flow and the uTP connection; ended: the uTP connection.
        assert_eq!(
            (
                mirrored.get(counter::FLOWS_MARKED),
                mirrored.get(counter::FLOWS_ENDED)
            ),
            (2, 1)
        );
    }
}

/// XDP cost per frame class, in ns per frame from BPF_PROG_TEST_RUN (the kernel's average over
/// `repeat` runs), under the full and the classified UDP policy, in one run. A measurement, not a check (machines are noisy): `cargo test -p
/// sensor-tests --test xdp_prog -- --ignored --nocapture xdp_cost`, as root.
#[test]
#[ignore = "a measurement; run by hand as root"]
fn xdp_cost_per_frame_class() {
    use sensor_ebpf::udp_policy;

    if !privileged("xdp_cost_per_frame_class") {
        return;
    }
    let mut syn = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(V4_A, V4_B, 64)
        .tcp(51413, 6881, 1000, 64240)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    let krpc = udp_between(
        40000,
        6881,
        true,
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    );
    // uTP data of a connection never marked (its handshake is not in the run), and of a
    // marked one past its budget (a bare header goes).
    let utp_data = udp_between(50000, 6881, false, &utp_packet(0, 9, &pattern(1400)));
    let mut handshake = b"\x13BitTorrent protocol".to_vec();
    handshake.extend_from_slice(&[0; 48]);
    let marking = udp_between(50001, 6881, true, &utp_packet(0, 1, &handshake));
    let marked_data = udp_between(50001, 6881, false, &utp_packet(0, 9, &pattern(1400)));
    let quic = udp_between(
        40003,
        443,
        true,
        &[&[0xc3, 0, 0, 0, 1][..], &pattern(1200)].concat(),
    );
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&MAC_A);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    // An mDNS query: the BEP 15 response shape, on a flow no request marked.
    let mut mdns = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    mdns.extend_from_slice(b"\x0b_googlecast\x04_tcp\x05local\x00\x00\x0c\x00\x01");
    let mdns = udp_between(5353, 5353, true, &mdns);
    let classes: [(&str, &[u8]); 7] = [
        ("TCP SYN", &syn),
        ("UDP KRPC", &krpc),
        ("uTP data, unmarked flow", &utp_data),
        ("uTP data, marked flow past budget", &marked_data),
        ("QUIC-like UDP", &quic),
        ("mDNS query (BEP 15 response shape, unmarked flow)", &mdns),
        ("non-IP (ARP)", &arp),
    ];
    let repeat = 200_000;
    println!("| frame class | full UDP policy (ns/frame) | classified (ns/frame) |");
    println!("|---|---:|---:|");
    let mut rows: Vec<(String, Vec<u128>)> = Vec::new();
    for policy in [udp_policy::FULL, udp_policy::CLASSIFIED] {
        // A large ring, drained between classes, so no run meets a full ring.
        let mut h = Harness::new(XdpConfig {
            udp_policy: policy,
            ring_bytes: 1 << 30,
            ..XdpConfig::default()
        });
        h.run(&marking);
        for _ in 0..sensor_ebpf::UTP_FULL_PACKETS {
            h.run(&marked_data);
        }
        h.drain();
        for (i, (name, frame)) in classes.iter().enumerate() {
            let result = h
                .sensor
                .program()
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat,
                    ..Default::default()
                })
                .expect("BPF_PROG_TEST_RUN");
            assert_eq!(result.return_value, XDP_PASS);
            h.drain();
            if rows.len() <= i {
                rows.push(((*name).to_string(), Vec::new()));
            }
            rows[i].1.push(result.duration.as_nanos());
        }
    }
    for (name, ns) in rows {
        println!("| {name} | {} | {} |", ns[0], ns[1]);
    }
}
