//! uTP header parsing and the SYN predictor on arbitrary datagrams: a reason or a header, never
//! a panic; a bounded extension chain; at most one prediction, always for the sender.
//!
//! Then the same bytes as a sequence of datagrams through `Coordination::on_udp` (the uTP
//! stream reader and the peer wire behind it): any types, connection ids, sequence numbers
//! (wrapping, duplicated, far), cuts and clock steps; no panic, the tables and held bytes
//! stay within their bounds, nothing is delivered that was not offered, predictions go to
//! the sender (uTP SYN) or the receiver (peer wire), and expiry releases everything.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::utp::{self, Type, Utp, UtpConfig, HEADER_LEN, MAX_EXTENSIONS, MAX_WINDOW};
use sensor::bt::utp_stream::UtpStreamConfig;
use sensor::bt::{Coordination, CoordinationConfig};
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

    sequences(data);
});

/// Endpoints of the datagram sequences: two pairs sharing one host, and IPv6.
const ENDPOINTS: [(&str, &str); 3] = [
    ("10.1.44.184:52372", "198.18.14.100:36772"),
    ("10.1.44.184:52372", "203.0.113.9:6881"),
    ("[2001:db8::1]:6881", "[2001:db8::2]:51413"),
];

/// Ops `[ctrl][seq hi][seq lo][len][len bytes]`: ctrl bits 0-2 the packet type (5-7: the
/// bytes are the whole datagram), 3-4 the connection id (X, X+1, X-1, X+2), 5 the direction,
/// 6 cut by the snap length (half the bytes captured), 7 a 3 s clock step; bits 3-4 also pick
/// the endpoint pair for raw datagrams.
fn sequences(data: &[u8]) {
    const X: u16 = 0xfffe;
    let streams = UtpStreamConfig {
        max_conns: 3,
        max_syns: 3,
        max_pending: 4,
        max_pending_bytes: 2000,
        ..Default::default()
    };
    let mut c = Coordination::new(&CoordinationConfig {
        utp_streams: streams.clone(),
        ..Default::default()
    });
    let (mut out, mut retracted) = (Vec::new(), Vec::new());
    let mut now = 1_000_000_000u64;
    let mut offered = 0u64;
    let mut rest = data;
    while let [ctrl, s0, s1, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += if ctrl & 0x80 != 0 {
            3_000_000_000
        } else {
            1_000_000
        };
        let kind = ctrl & 7;
        let pick = usize::from(ctrl >> 3 & 3);
        let (a, b) = ENDPOINTS[if kind >= 5 { pick % 3 } else { 0 }];
        let (mut src, mut dst): (SocketAddr, SocketAddr) = (a.parse().unwrap(), b.parse().unwrap());
        if ctrl & 0x20 != 0 {
            std::mem::swap(&mut src, &mut dst);
        }
        let datagram = if kind >= 5 {
            bytes.to_vec()
        } else {
            let id = X.wrapping_add([0, 1, 0xffff, 2][pick]);
            let mut p = vec![kind << 4 | 1, 0];
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 1]);
            p.extend_from_slice(&(if kind == 4 { 0u32 } else { 9 }).to_be_bytes());
            p.extend_from_slice(&[0, 1, 0, 0, *s0, *s1, 0, 0]);
            p.extend_from_slice(bytes);
            p
        };
        let Ok(payload_len) = u16::try_from(datagram.len()) else {
            continue;
        };
        let head = if ctrl & 0x40 != 0 {
            &datagram[..datagram.len() / 2]
        } else {
            &datagram[..]
        };
        if utp::looks_like_utp(head) {
            offered += head.len() as u64;
        }
        let udp = UdpDatagram { payload_len, head };
        let ev = PacketEvent {
            ts: Timestamp::from_nanos(now),
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Udp(udp),
        };
        out.clear();
        c.on_udp(&ev, &udp, &mut out, &mut retracted);
        for p in &out {
            match p.channel {
                Channel::Utp => assert_eq!(p.host, src.ip(), "a SYN predicts for its sender"),
                Channel::Pex | Channel::PeerWire => {
                    assert_eq!(p.host, dst.ip(), "the peer wire predicts for the receiver")
                }
                other => panic!("{other:?} from a uTP sequence"),
            }
        }
        let s = c.utp_stream_stats();
        assert!(s.conns.len <= streams.max_conns as u64);
        assert!(s.syns_table.len <= streams.max_syns as u64);
        assert!(s.held_bytes <= streams.max_pending_bytes as u64);
        assert!(s.delivered_bytes <= offered);
    }
    c.expire(Timestamp::from_nanos(now + 3_600_000_000_000));
    let s = c.utp_stream_stats();
    assert_eq!((s.conns.len, s.syns_table.len, s.held_bytes), (0, 0, 0));
}
