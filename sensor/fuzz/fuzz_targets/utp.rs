//! uTP header parsing and the SYN predictor on arbitrary datagrams: a reason or a header, never
//! a panic; a bounded extension chain; at most one prediction, always for the sender.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::utp::{self, Type, Utp, UtpConfig, HEADER_LEN, MAX_EXTENSIONS, MAX_WINDOW};
use sensor::event::{PacketEvent, Timestamp, Transport, UdpDatagram};
use sensor::predict::{Channel, PeerTransport};

const PAIRS: [(&str, &str); 4] = [
    ("82.243.113.43:64969", "192.168.1.5:40959"),
    ("192.168.1.5:40959", "192.168.1.5:40959"),
    ("[2001:db8::1]:6881", "[2001:db8::2]:51413"),
    ("10.0.0.1:6881", "239.192.152.143:6771"),
];

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = utp::parse(data) {
        assert!(
            utp::looks_like_utp(data),
            "the pre-check never drops a parsable header"
        );
        assert!(h.payload_offset >= HEADER_LEN && h.payload_offset <= data.len());
        assert!(h.wnd_size <= MAX_WINDOW);
        let exts: Vec<_> = h.extensions().collect();
        assert!(exts.len() <= MAX_EXTENSIONS);
        let chain: usize = exts.iter().map(|e| 2 + e.data.len()).sum();
        assert_eq!(HEADER_LEN + chain, h.payload_offset);
        if h.kind == Type::Syn && utp::check_length(&h, data.len()).is_ok() {
            assert_eq!(h.payload_offset, data.len(), "a SYN has no payload");
        }
    }

    let Some(head) = data.get(..data.len().min(usize::from(u16::MAX) - 100)) else {
        return;
    };
    let mut t = Utp::new(UtpConfig::default());
    let mut offered = 0;
    for (i, (src, dst)) in PAIRS.into_iter().enumerate() {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        // As captured whole, and as the head of a longer datagram.
        for extra in [0u16, 100] {
            let udp = UdpDatagram {
                payload_len: head.len() as u16 + extra,
                head,
            };
            let ev = PacketEvent {
                ts: Timestamp::from_secs(i as u64),
                src,
                dst,
                vlan_depth: 0,
                transport: Transport::Udp(udp),
            };
            if !utp::looks_like_utp(head) {
                continue;
            }
            offered += 1;
            let mut out = Vec::new();
            let syn = t.on_udp(&ev, &udp, &mut out);
            assert!(out.len() <= 1);
            assert!(syn || out.is_empty());
            for p in &out {
                assert_eq!((p.host, p.peer), (src.ip(), dst));
                assert_eq!((p.transport, p.channel), (PeerTransport::Tcp, Channel::Utp));
                assert_ne!(p.peer.port(), 0);
                assert_ne!(p.peer.ip(), p.host);
            }
        }
    }
    let s = t.stats();
    assert_eq!(s.counts.seen, offered);
    assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
    assert_eq!(s.counts.parsed, s.data + s.fin + s.state + s.reset + s.syn);
    assert_eq!(s.syn, s.predicted + s.syn_unusable_target + s.syn_to_self);
});
