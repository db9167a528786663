//! The TCP stream reassembler on arbitrary segment sequences (both directions of a few
//! connections, any sequence numbers, gaps, cut segments, FIN/RST, clock jumps): no panic,
//! held state bounded, every delivered chunk non-empty, each direction's bytes delivered at
//! most once.
#![no_main]

use std::collections::HashMap;
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::stream::{Dir, StreamClass, StreamConfig, StreamEvent, TcpStreams};
use sensor::event::{PacketEvent, TcpFlags, TcpSegment, Timestamp, Transport};
use sensor_ebpf::tcp_flag::{ACK, FIN, PSH, RST};

const ENDPOINTS: [&str; 4] = [
    "10.0.0.1:40000",
    "10.0.0.2:6881",
    "10.0.0.1:40001",
    "[2001:db8::1]:51413",
];

fuzz_target!(|data: &[u8]| {
    let config = StreamConfig {
        max_conns: 2,
        max_pending: 3,
        max_pending_bytes: 600,
        ..Default::default()
    };
    let mut streams = TcpStreams::new(config);
    let eps: Vec<SocketAddr> = ENDPOINTS.iter().map(|e| e.parse().unwrap()).collect();
    let mut now = 0u64;
    let mut offered: HashMap<(SocketAddr, SocketAddr), u64> = HashMap::new();
    let mut delivered: HashMap<(SocketAddr, SocketAddr), u64> = HashMap::new();
    let mut rest = data;
    // [ctrl][seq: 2 bytes][len][payload bytes…]: ctrl bits 0-1 source, 2-3 destination,
    // 4 FIN, 5 RST, 6 cut (true length 3× the head), 7 a 2 s clock step.
    while let [ctrl, s0, s1, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (head, next) = tail.split_at(n);
        rest = next;
        if ctrl & 0x80 != 0 {
            now += 2_000_000_000;
        }
        now += 1_000;
        let (src, dst) = (eps[usize::from(ctrl & 3)], eps[usize::from(ctrl >> 2 & 3)]);
        if src == dst || src.is_ipv4() != dst.is_ipv4() {
            continue;
        }
        let mut flags = ACK | PSH;
        if ctrl & 0x10 != 0 {
            flags |= FIN;
        }
        if ctrl & 0x20 != 0 {
            flags |= RST;
        }
        let payload_len = if ctrl & 0x40 != 0 { 3 * n } else { n } as u16;
        let seg = TcpSegment {
            flags: TcpFlags(flags),
            seq: u32::from(u16::from_be_bytes([*s0, *s1])) << 4,
            ack: 0,
            window: 0,
            payload_len,
            head,
        };
        let ev = PacketEvent {
            ts: Timestamp::from_nanos(now),
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Tcp(seg),
        };
        *offered.entry((src, dst)).or_default() += head.len() as u64;
        streams.on_segment(&ev, &seg, |class, e| {
            assert!(matches!(
                class,
                StreamClass::HttpTracker | StreamClass::PeerWire
            ));
            if let StreamEvent::Chunk(c) = e {
                assert!(!c.data.is_empty());
                let (from, to) = c.conn.endpoints(c.dir);
                assert!(matches!(c.dir, Dir::ToServer | Dir::ToClient));
                *delivered.entry((from, to)).or_default() += c.data.len() as u64;
            }
        });
        let s = streams.stats();
        assert!(s.conns.len <= 2);
    }
    // Nothing is invented: a direction never gets more bytes than its segments carried.
    for (k, n) in &delivered {
        assert!(*n <= offered.get(k).copied().unwrap_or(0), "{k:?}");
    }
});
