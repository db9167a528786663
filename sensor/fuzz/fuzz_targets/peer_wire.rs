//! Peer wire parsing and the stateful channel on arbitrary inputs: a reason or a value, never a
//! panic; then operations (chunks in both directions split anywhere, gaps, closes, clock
//! advance) with bounded state, consistent counters, and every prediction for the receiver of
//! its chunk.
#![no_main]

use std::net::IpAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sensor::bt::peer_wire::{self, Check, Frame, PeerWire, PeerWireConfig, HANDSHAKE_LEN};
use sensor::bt::stream::{ConnKey, Dir, StreamChunk};
use sensor::event::Timestamp;
use sensor::predict::{Channel, PeerTransport};

const CONNS: [(&str, &str); 4] = [
    ("192.0.2.1:50000", "203.0.113.9:51413"),
    ("203.0.113.9:40000", "192.0.2.1:6881"),
    ("[2001:db8::1]:50000", "[2001:db8::2]:6881"),
    ("192.0.2.1:50001", "203.0.113.9:51413"),
];

const CONFIG: (usize, usize, usize, usize) = (3, 512, 1024, 7);

fuzz_target!(|data: &[u8]| {
    parsers(data);

    let (max_connections, max_message, max_buffered, max_entries) = CONFIG;
    let mut pw = PeerWire::new(PeerWireConfig {
        max_connections,
        connection_ttl: Duration::from_secs(60),
        max_message,
        max_buffered,
        max_entries,
        ..PeerWireConfig::default()
    });
    let conns: Vec<ConnKey> = CONNS
        .iter()
        .map(|(c, s)| ConnKey::tcp(c.parse().unwrap(), s.parse().unwrap()))
        .collect();

    // Operations: [control][length][bytes]... Control bits 0-1 pick the connection, bit 2 the
    // direction, bit 3 sets `gap`, bits 4-5 the operation (0 raw bytes, 1 a well-formed
    // message built from the bytes, 2 close, 3 expire), bits 6-7 advance the clock by 20 s
    // steps. Raw bytes are split at their first byte's value to exercise chunk boundaries.
    let mut rest = data;
    let mut now = 0u64;
    let mut chunks = 0u64;
    let (mut predicted, mut retracted) = (0u64, 0u64);
    let mut out = Vec::new();
    let mut ret = Vec::new();
    while let [ctrl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += u64::from(ctrl >> 6) * 20;
        let ts = Timestamp::from_secs(now);
        let conn = conns[usize::from(ctrl & 3)];
        let dir = if ctrl & 4 == 0 {
            Dir::ToServer
        } else {
            Dir::ToClient
        };
        let gap = ctrl & 8 != 0;
        let built;
        let payload: &[u8] = match (ctrl >> 4) & 3 {
            0 => bytes,
            1 => {
                built = template(bytes);
                &built
            }
            2 => {
                pw.on_close(conn, ts);
                continue;
            }
            _ => {
                pw.expire(ts);
                continue;
            }
        };
        let cut = usize::from(payload.first().copied().unwrap_or(0)).min(payload.len());
        let (a, b) = payload.split_at(cut);
        for (i, part) in [a, b].into_iter().enumerate() {
            out.clear();
            ret.clear();
            let chunk = StreamChunk {
                ts,
                conn,
                dir,
                gap: gap && i == 0,
                data: part,
            };
            pw.on_chunk(&chunk, &mut out, &mut ret);
            chunks += 1;
            predicted += out.len() as u64;
            retracted += ret.len() as u64;
            check(&chunk, &out, &ret);
        }
        let s = pw.stats();
        assert!(s.connections.len <= max_connections as u64);
        assert!(s.buffered_bytes <= max_buffered as u64);
    }

    let s = pw.stats();
    assert_eq!(s.chunks, chunks);
    assert_eq!(s.predicted_pex + s.predicted_peer_wire, predicted);
    assert_eq!(s.retracted, retracted);
    for c in [&s.ext_handshakes, &s.pex, &s.holepunch] {
        assert_eq!(c.seen, c.parsed + c.rejected_total());
    }
    assert!(s.pex_fallback <= s.pex.parsed);
    assert!(s.holepunch_connects <= s.holepunch.parsed);
    assert!(s.handshakes_extension <= s.handshakes);
    // Every entry decoded is predicted (twice) or dropped for a reason.
    let e = s.entries;
    assert_eq!(
        e.decoded,
        e.unusable + e.own_address + s.sender_listed + s.predicted_pex / 2
    );
    assert_eq!(
        s.dropped.decoded,
        s.dropped.unusable + s.dropped.own_address + s.retracted
    );
    // Dropping every connection gives every buffered byte back.
    pw.expire(Timestamp::MAX);
    let s = pw.stats();
    assert_eq!((s.buffered_bytes, s.connections.len), (0, 0));
});

/// The pure parsers on the raw input.
fn parsers(data: &[u8]) {
    if let Ok(h) = peer_wire::parse_handshake(data) {
        assert!(data.len() >= HANDSHAKE_LEN);
        assert_eq!(&data[28..48], h.info_hash);
    }
    for check in [Check::InSync, Check::Resync] {
        match peer_wire::frame(data, check) {
            Frame::Complete { id, payload } => {
                assert!(5 + payload.len() <= data.len());
                assert!(peer_wire::check_header(payload.len() as u32 + 1, id, check).is_ok());
            }
            Frame::NeedMore { needed } => assert!(needed > data.len()),
            Frame::KeepAlive => assert_eq!(&data[..4], [0; 4]),
            Frame::Invalid(_) => {}
        }
    }
    let _ = peer_wire::plausible_start(data);
    if let Ok(hs) = peer_wire::parse_ext_handshake(data) {
        assert!(hs.p != Some(0));
    }
    if let Ok(pex) = peer_wire::parse_pex(data) {
        let mut n = 0u64;
        let c = pex.for_each_added(5, |_, _| n += 1);
        assert_eq!(c.decoded, n);
        assert!(n <= 10);
        let mut d = 0u64;
        let c = pex.for_each_dropped(5, |_| d += 1);
        assert_eq!(c.decoded, d);
        assert!(d <= 10);
    }
    if let Ok(h) = peer_wire::parse_holepunch(data) {
        assert_eq!(data.len(), if h.addr.is_ipv4() { 12 } else { 24 });
    }
}

/// A well-formed piece of stream chosen by the first byte, so deep states are reachable.
fn template(bytes: &[u8]) -> Vec<u8> {
    let (kind, rest) = bytes.split_first().map_or((0, &[][..]), |(k, r)| (*k, r));
    let byte = |i: usize| rest.get(i).copied().unwrap_or(0);
    let message = |id: u8, payload: &[u8]| {
        let mut v = (payload.len() as u32 + 1).to_be_bytes().to_vec();
        v.push(id);
        v.extend_from_slice(payload);
        v
    };
    match kind % 6 {
        0 => {
            let mut v = b"\x13BitTorrent protocol".to_vec();
            v.extend_from_slice(&[0, 0, 0, 0, 0, 0x10, 0, byte(0)]);
            v[20] = byte(1) & 0x80;
            v.extend_from_slice(&[0x11; 40]);
            v
        }
        1 => {
            let hs = format!(
                "d1:md6:ut_pexi{}e12:ut_holepunchi{}ee1:pi{}e6:yourip4:",
                byte(0) % 5,
                byte(1) % 5,
                u16::from_be_bytes([byte(2), byte(3)])
            );
            let mut body = vec![0];
            body.extend_from_slice(hs.as_bytes());
            body.extend_from_slice(&[192, 0, 2, byte(4)]);
            body.push(b'e');
            message(20, &body)
        }
        2 => {
            // ut_pex with `added` and `dropped` taken from the input.
            let (added, dropped) = rest.split_at(rest.len() / 2);
            let mut body = vec![byte(0) % 5];
            body.extend_from_slice(format!("d5:added{}:", added.len()).as_bytes());
            body.extend_from_slice(added);
            body.extend_from_slice(format!("7:dropped{}:", dropped.len()).as_bytes());
            body.extend_from_slice(dropped);
            body.push(b'e');
            message(20, &body)
        }
        3 => message(9, &[byte(0), byte(1)]),
        4 => {
            let mut body = vec![byte(0) % 5, 1, 0];
            body.extend_from_slice(&[byte(1), byte(2), byte(3), byte(4), byte(5), byte(6)]);
            body.extend_from_slice(&[0; 4]);
            message(20, &body)
        }
        _ => message(byte(0) % 24, rest),
    }
}

/// Predictions are for the receiver of the chunk, never to it, never to port 0, on the
/// channels of the peer wire; PEX ones come as (TCP, uTP) pairs.
fn check(
    chunk: &StreamChunk<'_>,
    out: &[sensor::predict::PredictedPeer],
    ret: &[sensor::predict::RetractedPeer],
) {
    let (sender, receiver) = chunk.conn.endpoints(chunk.dir);
    let receiver: IpAddr = receiver.ip();
    for p in out {
        assert_eq!(p.host, receiver);
        assert_eq!(p.ts, chunk.ts);
        assert_ne!(p.peer.port(), 0);
        assert_ne!(p.peer.ip(), receiver);
        assert!(!p.peer.ip().is_unspecified());
        assert!(matches!(p.channel, Channel::Pex | Channel::PeerWire));
    }
    let pex: Vec<_> = out.iter().filter(|p| p.channel == Channel::Pex).collect();
    assert_eq!(pex.len() % 2, 0);
    for pair in pex.chunks(2) {
        assert_eq!(pair[0].transport, PeerTransport::Tcp);
        assert_eq!(pair[1].transport, PeerTransport::Udp);
        assert_eq!(pair[0].peer, pair[1].peer);
        assert_ne!(pair[0].peer.ip(), sender.ip());
    }
    for r in ret {
        assert_eq!(r.host, receiver);
        assert_eq!(r.channel, Channel::Pex);
        assert_ne!(r.peer.port(), 0);
    }
}
