//! Vuze DHT parsing and the request/reply tracker on arbitrary operation sequences: no panic,
//! bounded state and work, predictions only for the requester on the Azureus DHT channel.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::vuze_dht::{self, Message, VuzeDht, VuzeDhtConfig, MAX_ENTRIES};
use sensor::event::{PacketEvent, Timestamp, Transport, UdpDatagram};
use sensor::predict::{Channel, PeerTransport};

const HOSTS: [&str; 4] = [
    "192.0.2.99:11273",
    "192.0.2.1:11273",
    "[2001:db8::63]:11273",
    "[2001:db8::1]:11273",
];
const MAX_PENDING: usize = 3;

/// A v55 header (request: FIND_VALUE from an IPv4 originator; reply: `action`) with the given
/// transaction and connection ids; the fuzzer supplies the body.
fn header(request: bool, action: u32, txid: u8, conn: u8) -> Vec<u8> {
    let conn_id = [0x9a, 0x3b, 0x5c, 0x7d, 0x1e, 0x2f, 0x4a, conn];
    let txid = [0, 0xc0, 0xff, txid];
    let mut h = Vec::new();
    if request {
        h.extend_from_slice(&conn_id);
        h.extend_from_slice(&action.to_be_bytes());
        h.extend_from_slice(&txid);
        h.extend_from_slice(&[55, 0, 0, 0, 0, 4, 55, 4, 192, 0, 2, 99, 0x2c, 0x09]);
        h.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0]);
        h.extend_from_slice(&[0, 0]);
    } else {
        h.extend_from_slice(&action.to_be_bytes());
        h.extend_from_slice(&txid);
        h.extend_from_slice(&conn_id);
        h.extend_from_slice(&[55, 0, 0, 0, 0, 4, 0x55, 0x66, 0x77, 0x88, 0, 0, 0, 3]);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    check_parsers(data);
    drive_channel(data);
});

/// The pure parsers: whatever they accept is consistent.
fn check_parsers(data: &[u8]) {
    // The pure parsers on the whole input.
    if let Ok(m) = vuze_dht::parse(data) {
        match m {
            Message::Request(q) => {
                assert!(q.header.connection_id >> 63 == 1);
                assert!(q.header.action.is_request());
                assert!(q.trailing <= data.len());
            }
            Message::Reply(r) => {
                assert!(r.header.connection_id >> 63 == 1);
                assert!(!r.header.action.is_request());
                if let Some(c) = r.contacts() {
                    assert_eq!(c.iter().count(), c.len());
                    assert!(c.len() * 9 <= data.len());
                }
                if let Some(v) = r.values() {
                    assert_eq!(v.iter().count(), v.len());
                    for value in v.iter() {
                        assert!(value.bytes.len() <= vuze_dht::MAX_VALUE_LEN);
                    }
                }
            }
        }
        assert!(
            vuze_dht::looks_like_vuze(data),
            "every message passes the shape check"
        );
    }
    if let Some(v) = vuze_dht::parse_peer_value(data) {
        assert_ne!(v.tcp_port, 0);
        assert_ne!(v.udp_port, Some(0));
    }
}

/// The channel over a sequence of datagrams cut from `data`: bounded state, predictions for
/// the learner only, every datagram counted once.
fn drive_channel(data: &[u8]) {
    // As operations: [control][length][bytes]... Control bits 0-1 pick the operation (0 a
    // raw datagram, 1 a FIND_VALUE request with the bytes as body, 2 a FIND_VALUE reply, 3 a
    // FIND_NODE reply with the bytes as body), bit 2 the direction, bit 3 the address family,
    // bit 4 the connection id, bit 5 the transaction id, bits 6-7 advance the clock by 40 s
    // (the pending TTL is 60 s).
    let mut t = VuzeDht::new(VuzeDhtConfig {
        max_pending: MAX_PENDING,
        ..Default::default()
    });
    let hosts: Vec<SocketAddr> = HOSTS.iter().map(|h| h.parse().unwrap()).collect();
    let mut rest = data;
    let mut now = 0u64;
    let mut offered = 0;
    let mut out = Vec::new();
    while let [ctrl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += u64::from(ctrl >> 6) * 40;
        let (txid, conn) = ((ctrl >> 5) & 1, (ctrl >> 4) & 1);
        let templated;
        let payload = match ctrl & 3 {
            0 => bytes,
            op => {
                let action = [0, 1030, 1031, 1029][usize::from(op)];
                let mut p = header(op == 1, action, txid, conn);
                p.extend_from_slice(bytes);
                templated = p;
                &templated[..]
            }
        };
        let family = usize::from(ctrl & 8) / 4;
        let (src, dst) = if ctrl & 4 == 0 {
            (hosts[family], hosts[family + 1])
        } else {
            (hosts[family + 1], hosts[family])
        };
        if !vuze_dht::looks_like_vuze(payload) {
            continue;
        }
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
        offered += 1;
        out.clear();
        let parsed = t.on_udp(&ev, &udp, &mut out);
        assert!(parsed || out.is_empty());
        assert!(out.len() <= 2 * MAX_ENTRIES);
        for p in &out {
            assert_eq!(p.channel, Channel::AzureusDht);
            assert_eq!(
                p.host,
                dst.ip(),
                "the learner is the requester, the reply's receiver"
            );
            assert_ne!(p.peer.port(), 0);
            assert_ne!(p.peer.ip(), dst.ip());
            assert!(!p.peer.ip().is_unspecified());
            assert!(matches!(
                p.transport,
                PeerTransport::Tcp | PeerTransport::Udp
            ));
        }
        assert!(t.stats().pending.len <= MAX_PENDING as u64);
    }
    let s = t.stats();
    assert_eq!(s.counts.seen, offered);
    assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
    assert!(s.pending.len <= MAX_PENDING as u64);
    assert!(s.matched + s.unmatched == s.replies);
    assert!(s.predicted_peers <= 2 * s.values.decoded);
    assert!(s.predicted_contacts <= s.contacts.decoded);
}
