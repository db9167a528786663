//! BEP 15 parsing and the per-flow state machine on arbitrary datagram sequences, through the
//! coordination entry point: no panic, bounded state, predictions only for the receiver.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::udp_tracker::{self, MAX_ENTRIES};
use sensor::bt::{Coordination, CoordinationConfig};
use sensor::event::{PacketEvent, Timestamp, Transport, UdpDatagram};

const HOSTS: [&str; 4] = [
    "10.0.0.201:63448",
    "198.51.100.1:6969",
    "[2001:db8::10]:63448",
    "[2001:db8::1]:6969",
];

fuzz_target!(|data: &[u8]| {
    // The pure parsers on the whole input.
    let _ = udp_tracker::parse_request(data);
    for v6 in [false, true] {
        let _ = udp_tracker::parse_response(data, data.len(), v6);
        let _ = udp_tracker::parse_response(data, data.len().saturating_add(97), v6);
    }

    // Then as datagrams: [control][length][bytes]... Control bit 0 picks the direction, bit 1
    // the address family, the high nibble advances the clock in seconds.
    let mut config = CoordinationConfig::default();
    config.udp_tracker.max_pending = 3;
    config.udp_tracker.max_flows = 2;
    let mut c = Coordination::new(&config);
    let hosts: Vec<SocketAddr> = HOSTS.iter().map(|h| h.parse().unwrap()).collect();
    let mut rest = data;
    let mut now = 0u64;
    let mut out = Vec::new();
    while let [ctrl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        now += u64::from(ctrl >> 4) * 10;
        let family = usize::from(ctrl & 2);
        let (src, dst) = if ctrl & 1 == 0 {
            (hosts[family], hosts[family + 1])
        } else {
            (hosts[family + 1], hosts[family])
        };
        let udp = UdpDatagram {
            payload_len: payload.len() as u16,
            head: payload,
        };
        let ev = PacketEvent {
            ts: Timestamp::from_secs(now),
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Udp(udp),
        };
        out.clear();
        c.on_udp(&ev, &udp, &mut out, &mut Vec::new());
        assert!(out.len() <= 2 * MAX_ENTRIES.max(sensor::bt::dht::MAX_ENTRIES));
        // A uTP SYN predicts for its sender; every other channel for the receiver.
        for p in out
            .iter()
            .filter(|p| p.channel != sensor::predict::Channel::Utp)
        {
            assert_eq!(p.host, dst.ip(), "the learner is the receiver");
            assert_ne!(p.peer.port(), 0);
        }
    }
    let t = c
        .channel::<sensor::bt::udp_tracker::UdpTracker>()
        .expect("registered")
        .stats();
    assert!(t.pending.len <= 3 && t.flows.len <= 2);
    assert_eq!(t.counts.seen, t.counts.parsed + t.counts.rejected_total());
    assert!(t.announce_responses <= t.announce_requests);
    assert!(t.connect_responses <= t.connect_requests);
});
