//! KRPC parsing and the DHT tracker on arbitrary datagrams: a reason or a message, never a
//! panic, and never more endpoints than the per-message cap.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::dht::{self, DhtConfig, DhtTracker, MAX_ENTRIES};
use sensor::event::{PacketEvent, Timestamp, Transport, UdpDatagram};
use sensor::predict::{Channel, PeerTransport};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = dht::parse(data) {
        for over_ipv4 in [true, false] {
            let mut n = 0u64;
            let c = msg.for_each_peer(over_ipv4, MAX_ENTRIES, |_| n += 1);
            assert_eq!(c.decoded, n);
            assert!(n as usize <= MAX_ENTRIES);
        }
        let mut n = 0u64;
        let c = msg.for_each_node(7, |_| n += 1);
        assert_eq!(c.decoded, n);
        assert!(n <= 7);
        assert!(msg.tid.len() <= dht::MAX_TID_LEN);
        let _ = msg.values().count();
    }

    // The same bytes as a query and as its response, over IPv4 and IPv6.
    let Some(head) = data.get(..data.len().min(usize::from(u16::MAX))) else {
        return;
    };
    let mut tracker = DhtTracker::new(DhtConfig {
        max_pending: 4,
        ..Default::default()
    });
    let pairs: [(&str, &str); 4] = [
        ("192.0.2.1:6881", "198.51.100.2:6881"),
        ("198.51.100.2:6881", "192.0.2.1:6881"),
        ("[2001:db8::1]:6881", "[2001:db8::2]:6881"),
        ("[2001:db8::2]:6881", "[2001:db8::1]:6881"),
    ];
    for (i, (src, dst)) in pairs.into_iter().enumerate() {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        let udp = UdpDatagram {
            payload_len: head.len() as u16,
            head,
        };
        let ev = PacketEvent {
            ts: Timestamp::from_secs(i as u64),
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Udp(udp),
        };
        let mut out = Vec::new();
        tracker.on_udp(&ev, &udp, &mut out);
        assert!(out.len() <= 2 * MAX_ENTRIES);
        for p in &out {
            assert_eq!(p.host, dst.ip(), "the learner is the receiver");
            assert_ne!(p.peer.port(), 0);
            assert_ne!(p.peer.ip(), dst.ip());
            if p.channel == Channel::DhtNodes {
                assert_eq!(p.transport, PeerTransport::Udp);
            } else {
                assert_eq!(p.channel, Channel::Dht);
            }
        }
    }
    let s = tracker.stats();
    assert_eq!(s.counts.seen, 4);
    assert_eq!(s.counts.parsed + s.counts.rejected_total(), 4);
    assert!(s.pending.len <= 4);
});
