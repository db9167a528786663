//! HTTP tracker parsing and the connection tracker on arbitrary operation sequences: no panic,
//! bounded output and state, `seen == parsed + rejected`, and every prediction on the HTTP
//! tracker channel, for the connection's client, in TCP + uTP pairs, never to port 0.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sensor::bt::http_tracker::{
    self, HttpTracker, HttpTrackerConfig, Peer, MAX_CODINGS, MAX_INFLATED,
};
use sensor::bt::stream::{ConnKey, Dir, StreamChunk};
use sensor::event::Timestamp;
use sensor::predict::{Channel, PeerTransport, PredictedPeer};

const CONNS: [(&str, &str); 4] = [
    ("10.0.0.201:49842", "198.51.100.1:6969"),
    ("10.0.0.201:49843", "198.51.100.1:6969"),
    ("192.168.0.7:50000", "203.0.113.5:80"),
    ("[2001:db8::10]:40000", "[2001:db8::1]:6969"),
];

const ANNOUNCE: &[u8] = b"GET /announce?info_hash=%e4%be%9eM%b8v%e3%e3%17%97x%b0%3e%90b%97%be%5c%8d%be&peer_id=-DE13F0-VnpZRF8ZP9iv&port=63448&compact=1 HTTP/1.1\r\nHost: t\r\n\r\n";

/// Small caps so the fuzzer reaches them.
const MAX_SESSIONS: usize = 2;
const MAX_ENTRIES: usize = 8;

fuzz_target!(|data: &[u8]| {
    pure_parsers(data);

    // Then as operations: [control][length][bytes]... Control bits 0-2 pick the operation
    // (0 client bytes, 1 server bytes, 2 an announce request then the bytes, 3 a response with
    // a Content-Length and the bytes as body, 4 the bytes as a chunked body in two chunks,
    // 5 an HTTP/1.0 head then the bytes, 6 close, 7 expire), bit 3 marks a gap, bits 4-5 pick
    // the connection, bits 6-7 advance the clock (0, 1, 60 or 200 s).
    let mut t = HttpTracker::new(HttpTrackerConfig {
        max_sessions: MAX_SESSIONS,
        max_head: 512,
        max_body: 4096,
        max_inflated: 65_536,
        max_entries: MAX_ENTRIES,
        max_pending: 4,
        ..Default::default()
    });
    let conns: Vec<ConnKey> = CONNS
        .iter()
        .map(|(c, s)| ConnKey::tcp(c.parse().unwrap(), s.parse().unwrap()))
        .collect();
    let mut rest = data;
    let mut now = 0u64;
    let mut out: Vec<PredictedPeer> = Vec::new();
    while let [ctrl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        now += [0, 1, 60, 200][usize::from(ctrl >> 6)];
        let ts = Timestamp::from_secs(now);
        let conn = conns[usize::from(ctrl >> 4) & 3];
        let gap = ctrl & 8 != 0;
        let before = t.stats();
        out.clear();
        let mut chunk = |dir: Dir, gap: bool, payload: &[u8], out: &mut Vec<PredictedPeer>| {
            t.on_chunk(
                &StreamChunk {
                    ts,
                    conn,
                    dir,
                    gap,
                    data: payload,
                },
                out,
            )
        };
        match ctrl & 7 {
            0 => chunk(Dir::ToServer, gap, bytes, &mut out),
            1 => chunk(Dir::ToClient, gap, bytes, &mut out),
            2 => {
                chunk(Dir::ToServer, gap, ANNOUNCE, &mut out);
                chunk(Dir::ToServer, false, bytes, &mut out);
            }
            3 => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", bytes.len());
                chunk(Dir::ToClient, gap, head.as_bytes(), &mut out);
                chunk(Dir::ToClient, false, bytes, &mut out);
            }
            4 => {
                let (a, b) = bytes.split_at(bytes.len() / 2);
                let mut body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for part in [a, b] {
                    if !part.is_empty() {
                        body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        body.extend_from_slice(part);
                        body.extend_from_slice(b"\r\n");
                    }
                }
                body.extend_from_slice(b"0\r\n\r\n");
                // Split where the input's length byte says, to vary chunk boundaries.
                let cut = usize::from(*len).min(body.len());
                chunk(Dir::ToClient, gap, &body[..cut], &mut out);
                chunk(Dir::ToClient, false, &body[cut..], &mut out);
            }
            5 => {
                chunk(Dir::ToClient, gap, b"HTTP/1.0 200 OK\r\n\r\n", &mut out);
                chunk(Dir::ToClient, false, bytes, &mut out);
            }
            6 => t.on_close(conn, ts, &mut out),
            _ => t.expire(ts),
        }
        let s = t.stats();
        assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
        assert!(s.counts.seen >= before.counts.seen);
        assert!(s.sessions.len <= MAX_SESSIONS as u64);
        assert_eq!(s.predicted - before.predicted, out.len() as u64);
        // Only parsed replies predict, each at most MAX_ENTRIES peers, twice.
        let parsed = s.counts.parsed - before.counts.parsed;
        assert!(out.len() as u64 <= 2 * MAX_ENTRIES as u64 * parsed);
        check(&out, conn);
    }
});

/// Every prediction is a TCP + uTP pair on the HTTP tracker channel for the client.
fn check(out: &[PredictedPeer], conn: ConnKey) {
    assert_eq!(out.len() % 2, 0);
    for pair in out.chunks(2) {
        assert_eq!(pair[0].transport, PeerTransport::Tcp);
        assert_eq!(pair[1].transport, PeerTransport::Udp);
        assert_eq!(pair[0].peer, pair[1].peer);
    }
    for p in out {
        assert_eq!(p.channel, Channel::HttpTracker);
        assert_eq!(p.host, conn.client.ip());
        assert_ne!(p.peer.port(), 0);
        assert_ne!(p.peer.ip(), p.host);
        assert!(!p.peer.ip().is_unspecified());
    }
}

fn pure_parsers(data: &[u8]) {
    let _ = http_tracker::looks_like_announce(data);
    if let Ok(Some(r)) = http_tracker::parse_request(data) {
        assert!(r.len <= data.len());
        if r.announce {
            assert!(r.query.contains("info_hash=") && r.query.contains("peer_id="));
        }
    }
    if let Ok(Some(h)) = http_tracker::parse_response_head(data) {
        assert!(h.len <= data.len());
        assert!(h.codings.as_slice().len() <= MAX_CODINGS);
    }
    if let Ok((body, used)) = http_tracker::dechunk(data, 4096) {
        assert!(used <= data.len());
        assert!(body.len() <= 4096 && body.len() <= data.len());
    }
    // The same bytes as a gzip and a deflate body (codings taken from parsed heads).
    for head in [
        &b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\n\r\n",
    ] {
        let codings = http_tracker::parse_response_head(head)
            .unwrap()
            .unwrap()
            .codings;
        if let Ok(body) = http_tracker::decode_content(data, &codings, 65_536) {
            assert!(body.len() <= 65_536 && body.len() <= MAX_INFLATED);
            body_parser(&body);
        }
    }
    body_parser(data);
}

fn body_parser(data: &[u8]) {
    let Ok(reply) = http_tracker::parse_announce_body(data) else {
        return;
    };
    assert!(reply.failure.is_some() || reply.peers.is_some() || reply.peers6.is_some());
    let (mut addrs, mut names) = (0u64, 0u64);
    let c = reply.for_each_peer(7, |p| match p {
        Peer::Addr(_) => addrs += 1,
        Peer::Name { host, .. } => {
            assert!(!host.is_empty());
            names += 1;
        }
    });
    assert_eq!((c.entries.decoded, c.dns_names), (addrs, names));
    assert!(addrs + names <= 7);
    if let Some(ip) = reply.external_ip {
        let _: SocketAddr = SocketAddr::new(ip, 1);
    }
}
