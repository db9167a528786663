//! LSD announce parsing and the segment tracker on arbitrary operation sequences: no panic,
//! bounded state and work, predictions only for other members of the announcer's segment.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use sensor::bt::lsd::{self, Lsd, LsdConfig, MAX_HEADERS};
use sensor::event::{PacketEvent, Timestamp, Transport, UdpDatagram};
use sensor::predict::{Channel, PeerTransport};

const HOSTS: [&str; 8] = [
    "192.168.0.102",
    "192.168.0.7",
    "192.168.0.8",
    "192.168.1.9",
    "10.0.0.1",
    "fe80::1",
    "fe80::2",
    "::1",
];

const CAPS: (usize, usize, usize) = (2, 3, 2);

fuzz_target!(|data: &[u8]| {
    check_parsers(data);
    drive_channel(data);
});

/// The pure parsers: whatever they accept is consistent.
fn check_parsers(data: &[u8]) {
    // The pure parser on the whole input.
    if let Ok(a) = lsd::parse(data) {
        assert!((1..u16::MAX).contains(&a.port));
        let hex = a.infohashes_hex();
        assert!(!hex.is_empty() && hex.len() <= MAX_HEADERS);
        assert!(hex
            .iter()
            .all(|h| h.len() == 40 && h.iter().all(u8::is_ascii_hexdigit)));
        assert_eq!(a.infohashes().count(), hex.len());
    }
}

/// The channel over a sequence of datagrams cut from `data`: bounded state, predictions for
/// the learner only, every datagram counted once.
fn drive_channel(data: &[u8]) {
    // As operations: [control][length][bytes]... Control bits 0-1 pick the operation
    // (0 raw datagram to the group, 1 a well-formed announce whose port is the first two bytes,
    // 2 BitTorrent traffic from the host, 3 expire), bits 2-4 the host, bits 5-7 advance the
    // clock by 100 s steps.
    let (max_segments, max_hosts, max_announcers) = CAPS;
    let mut t = Lsd::new(LsdConfig {
        max_segments,
        max_hosts_per_segment: max_hosts,
        max_announcers_per_segment: max_announcers,
        ..Default::default()
    });
    let hosts: Vec<IpAddr> = HOSTS.iter().map(|h| h.parse().unwrap()).collect();
    let mut rest = data;
    let mut now = 0u64;
    let mut offered = 0;
    let mut out = Vec::new();
    while let [ctrl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += u64::from(ctrl >> 5) * 100;
        let ts = Timestamp::from_secs(now);
        let host = hosts[usize::from(ctrl >> 2) & 7];
        let group = if host.is_ipv4() {
            "239.192.152.143:6771"
        } else {
            "[ff15::efc0:988f]:6771"
        };
        let templated;
        let payload = match ctrl & 3 {
            0 => bytes,
            1 => {
                let port = u16::from_be_bytes([
                    bytes.first().copied().unwrap_or(0),
                    bytes.get(1).copied().unwrap_or(0),
                ]);
                templated = format!(
                    "BT-SEARCH * HTTP/1.1\r\nHost: {group}\r\nPort: {port}\r\n\
                     Infohash: ED4F1085E885F98F9A69B70EE89EB988B8FD9115\r\n\r\n\r\n"
                );
                templated.as_bytes()
            }
            2 => {
                out.clear();
                t.note_host(host, ts, &mut out);
                assert!(out.len() <= 2 * max_announcers);
                check(&out, host, None);
                continue;
            }
            _ => {
                t.expire(ts);
                continue;
            }
        };
        let src = SocketAddr::new(host, 6771);
        let dst: SocketAddr = group.parse().unwrap();
        let udp = UdpDatagram {
            payload_len: payload.len() as u16,
            head: payload,
        };
        let ev = PacketEvent {
            ts,
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Udp(udp),
        };
        if !lsd::looks_like_lsd(dst, payload) {
            continue;
        }
        offered += 1;
        out.clear();
        t.on_udp(&ev, &udp, &mut out);
        // Other members, plus the announcer's own late predictions.
        assert!(out.len() <= 2 * (max_hosts + max_announcers));
        check(&out, host, Some(src.ip()));
    }
    let s = t.stats();
    assert_eq!(s.counts.seen, offered);
    assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
    assert!(s.segments.len <= max_segments as u64);
    assert!(s.predicted_late <= s.predicted);
}

/// Every prediction is on the LSD channel, in pairs, for a member of the announcer's segment
/// other than the announced peer.
fn check(out: &[sensor::predict::PredictedPeer], sender: IpAddr, announcer: Option<IpAddr>) {
    assert_eq!(out.len() % 2, 0);
    for pair in out.chunks(2) {
        assert_eq!(pair[0].transport, PeerTransport::Tcp);
        assert_eq!(pair[1].transport, PeerTransport::Udp);
        assert_eq!((pair[0].host, pair[0].peer), (pair[1].host, pair[1].peer));
    }
    for p in out {
        assert_eq!(p.channel, Channel::Lsd);
        assert_ne!(p.host, p.peer.ip());
        assert_ne!(p.peer.port(), 0);
        assert!(!p.host.is_loopback() && !p.peer.ip().is_loopback());
        assert_eq!(p.host.is_ipv4(), p.peer.ip().is_ipv4());
        // Late predictions go to the sender; an announce's to others, for the announcer.
        if Some(p.peer.ip()) != announcer {
            assert_eq!(p.host, sender);
        }
    }
}
