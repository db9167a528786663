use super::announce::contains;
use super::framing::MAX_CHUNK_LINE;
use super::*;
use crate::bt::stream::{StreamClass, StreamEvent};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;

// ---- Connection steps as the stream layer hands them over ----

/// One step of a connection as the stream layer would hand it over.
#[derive(Clone, Debug)]
enum Item {
    Chunk {
        ts: Timestamp,
        dir: Dir,
        gap: bool,
        data: Vec<u8>,
    },
    Close(Timestamp),
}

fn drive(t: &mut HttpTracker, conn: ConnKey, items: &[Item]) -> Vec<PredictedPeer> {
    let mut out = Vec::new();
    for i in items {
        match i {
            Item::Chunk { ts, dir, gap, data } => t.on_chunk(
                &StreamChunk {
                    ts: *ts,
                    conn,
                    dir: *dir,
                    gap: *gap,
                    data,
                },
                &mut out,
            ),
            Item::Close(ts) => t.on_close(conn, *ts, &mut out),
        }
    }
    out
}

fn assert_split_invariant(conn: ConnKey, items: &[Item]) {
    let run = |items: &[Item]| {
        let mut t = HttpTracker::new(HttpTrackerConfig::default());
        let out = drive(&mut t, conn, items);
        (out, t.stats())
    };
    let whole = run(items);
    for (which, item) in items.iter().enumerate() {
        let Item::Chunk { ts, dir, gap, data } = item else {
            continue;
        };
        for cut in 0..=data.len() {
            let mut v = items[..which].to_vec();
            v.push(Item::Chunk {
                ts: *ts,
                dir: *dir,
                gap: *gap,
                data: data[..cut].to_vec(),
            });
            v.push(Item::Chunk {
                ts: *ts,
                dir: *dir,
                gap: false,
                data: data[cut..].to_vec(),
            });
            v.extend_from_slice(&items[which + 1..]);
            assert_eq!(run(&v), whole, "chunk {which} cut at {cut}");
        }
    }
    let bytes: Vec<Item> = items
        .iter()
        .flat_map(|i| match i {
            Item::Chunk { ts, dir, gap, data } => data
                .iter()
                .enumerate()
                .map(|(k, b)| Item::Chunk {
                    ts: *ts,
                    dir: *dir,
                    gap: *gap && k == 0,
                    data: vec![*b],
                })
                .collect::<Vec<_>>(),
            Item::Close(_) => vec![i.clone()],
        })
        .collect();
    assert_eq!(run(&bytes), whole, "byte by byte");
}

// ---- Synthetic exchanges ----

const CLIENT: &str = "10.0.0.201:49842";
const SERVER: &str = "198.51.100.1:6969";
const ANNOUNCE: &[u8] = b"GET /announce?info_hash=%e4%be%9eM%b8v%e3%e3%17%97x%b0%3e%90b%97%be%5c%8d%be&peer_id=-DE13F0-VnpZRF8ZP9iv&port=63448&compact=1 HTTP/1.1\r\nHost: tracker.example\r\nAccept-Encoding: gzip\r\n\r\n";
const SCRAPE: &[u8] = b"GET /scrape?info_hash=%e4%be%9eM%b8v%e3%e3%17%97x%b0%3e%90b%97%be%5c%8d%be HTTP/1.1\r\nHost: tracker.example\r\n\r\n";

// Reply bodies of libtorrent's `test/test_tracker.cpp` (`parse_peers4`, `parse_hostname_peers`,
// `parse_external_ip`; S4 after BEP 7) and a chunked reply whose chunk boundary falls inside
// the `peers` string (D2, constructed per RFC 9112 §7.1).
const S1: &[u8] = b"d5:peers12:\x01\x02\x03\x04\x30\x10\x09\x08\x07\x06\x20\x10e";
const S3: &[u8] = b"d5:peersld7:peer id20:aaaaaaaaaaaaaaaaaaaa2:ip13:test_hostname4:porti1000eed7:peer id20:bbbbabaababababababa2:ip12:another_host4:porti1001eeee";
const S4: &[u8] = b"d8:intervali1800e5:peers6:iiiipp6:peers618:iiiiiiiiiiiiiiiippe";
const S5: &[u8] = b"d5:peers0:11:external ip4:\x01\x02\x03\x04e";
const D2: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\nd8:intervali1800e5:peers12:\x01\x02\x03\r\na\r\n\x040\x10\t\x08\x07\x06 \x10e\r\n0\r\n\r\n";

fn s2() -> Vec<u8> {
    let mut b = b"d6:peers636:".to_vec();
    b.extend_from_slice(&crate::bt::test_support::unhex(
        "20010db8000000000000000000000001 3010 20010db8000000000000000000000002 2010",
    ));
    b.push(b'e');
    b
}

fn conn() -> ConnKey {
    ConnKey::tcp(CLIENT.parse().unwrap(), SERVER.parse().unwrap())
}

fn at(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn up(data: &[u8]) -> Item {
    Item::Chunk {
        ts: at(1),
        dir: Dir::ToServer,
        gap: false,
        data: data.to_vec(),
    }
}

fn down(data: &[u8]) -> Item {
    Item::Chunk {
        ts: at(2),
        dir: Dir::ToClient,
        gap: false,
        data: data.to_vec(),
    }
}

fn down_gap(data: &[u8]) -> Item {
    Item::Chunk {
        ts: at(2),
        dir: Dir::ToClient,
        gap: true,
        data: data.to_vec(),
    }
}

/// `HTTP/1.1 200` with a Content-Length and `extra` header lines.
fn ok_with(extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn ok(body: &[u8]) -> Vec<u8> {
    ok_with("", body)
}

fn run_with(config: HttpTrackerConfig, items: &[Item]) -> (Vec<PredictedPeer>, HttpTrackerStats) {
    let mut t = HttpTracker::new(config);
    let out = drive(&mut t, conn(), items);
    (out, t.stats())
}

fn run(items: &[Item]) -> (Vec<PredictedPeer>, HttpTrackerStats) {
    run_with(HttpTrackerConfig::default(), items)
}

/// TCP predictions as `ip:port`, checking each has its uTP twin right after it, on this
/// channel, for the client.
fn tcp_peers(out: &[PredictedPeer], learner: &str) -> Vec<String> {
    assert_eq!(out.len() % 2, 0);
    let host: IpAddr = learner.parse().unwrap();
    out.chunks(2)
        .map(|pair| {
            assert_eq!(pair[0].transport, PeerTransport::Tcp);
            assert_eq!(pair[1].transport, PeerTransport::Udp);
            assert_eq!(pair[0].peer, pair[1].peer);
            for p in pair {
                assert_eq!(p.channel, Channel::HttpTracker);
                assert_eq!(p.host, host);
            }
            pair[0].peer.to_string()
        })
        .collect()
}

fn body_peers(body: &[u8]) -> (Vec<String>, PeerCounts) {
    let reply = parse_announce_body(body).unwrap();
    let mut v = Vec::new();
    let n = reply.for_each_peer(MAX_ENTRIES, |p| {
        v.push(match p {
            Peer::Addr(a) => a.to_string(),
            Peer::Name { host, port } => {
                format!("{}:{port}", String::from_utf8_lossy(host))
            }
        });
    });
    (v, n)
}

fn rejected(s: &HttpTrackerStats) -> BTreeMap<&'static str, u64> {
    s.counts.rejected.clone()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

// ---- Pure parsers ----

#[test]
fn recognises_announce_requests() {
    assert!(looks_like_announce(ANNOUNCE));
    assert!(
        looks_like_announce(SCRAPE),
        "the cheap test is only a pre-filter"
    );
    assert!(!looks_like_announce(
        b"GET / HTTP/1.1\r\nX: info_hash=1\r\n\r\n"
    ));
    assert!(!looks_like_announce(
        b"POST /announce?info_hash=1&peer_id=2 HTTP/1.1\r\n"
    ));
    assert!(!looks_like_announce(b"GET "));
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', MAX_REQUEST_LINE));
    long.extend_from_slice(b"?info_hash=1");
    assert!(!looks_like_announce(&long), "bounded scan");

    let r = parse_request(ANNOUNCE).unwrap().unwrap();
    assert_eq!((r.method, r.path, r.version), ("GET", "/announce", 1));
    assert!(r.announce);
    assert_eq!((r.port, r.compact), (Some(63448), Some(true)));
    assert_eq!((r.framing, r.len), (Framing::Empty, ANNOUNCE.len()));
    let r = parse_request(SCRAPE).unwrap().unwrap();
    assert!(!r.announce && r.path == "/scrape" && r.port.is_none());
    assert_eq!(parse_request(&ANNOUNCE[..40]), Ok(None));
    assert_eq!(
        parse_request(b"\x13BitTorrent protocol"),
        Err(Reject::NotHttp)
    );
    let post = b"POST /x?info_hash=a&peer_id=b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    let r = parse_request(post).unwrap().unwrap();
    assert!(r.announce);
    assert_eq!(r.framing, Framing::Length(5));
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
        Err(Reject::BadFraming)
    );
    // `info_hash` without a value, or only inside another parameter, is no announce.
    for q in [
        "info_hash&peer_id=1",
        "xinfo_hash=1&peer_id=1",
        "info_hash=1&peer_id",
    ] {
        let req = format!("GET /a?{q} HTTP/1.1\r\n\r\n");
        assert!(
            !parse_request(req.as_bytes()).unwrap().unwrap().announce,
            "{q}"
        );
    }
}

#[test]
fn response_heads_and_framing() {
    let h = parse_response_head(D2).unwrap().unwrap();
    assert_eq!((h.version, h.status, h.reason), (1, 200, "OK"));
    assert_eq!(h.framing, Framing::Chunked);
    assert!(h.codings.as_slice().is_empty());
    assert_eq!(h.body_framing(true), Framing::Empty);
    let h = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Encoding: x-gzip\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.framing, Framing::UntilClose);
    assert_eq!(h.codings.as_slice(), [Coding::Gzip]);
    let h = parse_response_head(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\nContent-Encoding: br\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        (h.framing, h.body_framing(false)),
        (Framing::Length(10), Framing::Empty)
    );
    assert!(h.codings.unsupported);
    // Transfer-Encoding wins over Content-Length; a coding after chunked ends framing by
    // length (read until close).
    let h = parse_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.framing, Framing::Chunked);
    assert_eq!(h.codings.as_slice(), [Coding::Gzip]);
    let h = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.framing, Framing::UntilClose);
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert_eq!(parse_response_head(bad), Err(Reject::BadLength));
    }
    assert_eq!(parse_response_head(b"HTTP/1.1 200"), Ok(None));
    assert_eq!(parse_response_head(b"d5:peers"), Err(Reject::NotHttp));
    let many = (0..=MAX_HEADERS)
        .map(|i| format!("X-{i}: 1\r\n"))
        .collect::<Vec<_>>()
        .concat();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(
        parse_response_head(many.as_bytes()),
        Err(Reject::TooManyHeaders)
    );
}

#[test]
fn dechunker_spec_d2_and_errors() {
    let h = parse_response_head(D2).unwrap().unwrap();
    let (body, used) = dechunk(&D2[h.len..], MAX_BODY).unwrap();
    let mut want = b"d8:intervali1800e".to_vec();
    want.extend_from_slice(&S1[1..]);
    assert_eq!(body, want);
    assert_eq!(h.len + used, D2.len());
    // Extensions, a trailer and bare LFs are accepted; the bytes after the body are not
    // consumed.
    let (body, used) = dechunk(b"3;ext=1\r\nabc\n0\nX-T: 1\r\n\r\nHTTP", 100).unwrap();
    assert_eq!((&body[..], used), (&b"abc"[..], 25));
    for (bad, why) in [
        (&b"\r\n"[..], Reject::BadChunk),
        (b"zz\r\n", Reject::BadChunk),
        (b"3\r\nabcX", Reject::BadChunk),
        (b"10000000000000000\r\n", Reject::BadChunk),
        (b"3\r\nab", Reject::Incomplete),
        (b"5\r\nabcde\r\n0\r\n\r\n", Reject::BodyTooLarge),
    ] {
        assert_eq!(dechunk(bad, 4).map(|_| ()), Err(why), "{bad:?}");
    }
    let mut long = vec![b'1'; 1];
    long.extend(std::iter::repeat_n(b' ', MAX_CHUNK_LINE));
    assert_eq!(dechunk(&long, 4).map(|_| ()), Err(Reject::BadChunk));
}

#[test]
fn spec_s1_s4_compact_peers() {
    let (p, n) = body_peers(S1);
    assert_eq!(p, ["1.2.3.4:12304", "9.8.7.6:8208"]);
    assert_eq!((n.entries.decoded, n.entries.malformed), (2, 0));
    let (p, _) = body_peers(&s2());
    assert_eq!(p, ["[2001:db8::1]:12304", "[2001:db8::2]:8208"]);
    let (p, _) = body_peers(S4);
    assert_eq!(
        p,
        [
            "105.105.105.105:28784",
            "[6969:6969:6969:6969:6969:6969:6969:6969]:28784"
        ]
    );
    assert_eq!(parse_announce_body(S4).unwrap().interval, Some(1800));
    // `parse_peers6_invalid_length`: flagged, the whole entry still read.
    let mut bad = b"d6:peers619:".to_vec();
    bad.extend_from_slice(&[1; 19]);
    bad.push(b'e');
    let (p, n) = body_peers(&bad);
    assert_eq!(p, ["[101:101:101:101:101:101:101:101]:257"]);
    assert_eq!((n.entries.decoded, n.entries.malformed), (1, 1));

    // Through the tracker: TCP and uTP for the client.
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(S4))]);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        [
            "105.105.105.105:28784",
            "[6969:6969:6969:6969:6969:6969:6969:6969]:28784"
        ]
    );
    assert_eq!((s.counts.seen, s.counts.parsed, s.predicted), (1, 1, 4));
    assert_eq!(s.entries.decoded, 2);
}

#[test]
fn spec_s3_hostnames_are_counted_not_predicted() {
    let (p, n) = body_peers(S3);
    assert_eq!(p, ["test_hostname:1000", "another_host:1001"]);
    assert_eq!((n.dns_names, n.entries.decoded), (2, 0));
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(S3))]);
    assert!(out.is_empty());
    assert_eq!((s.counts.parsed, s.dns_names, s.entries.decoded), (1, 2, 0));
}

#[test]
fn spec_s5_external_ip_is_the_learner() {
    let r = parse_announce_body(S5).unwrap();
    assert_eq!(r.external_ip, Some("1.2.3.4".parse().unwrap()));
    assert_eq!(r.peers, Some(PeersField::Compact(b"")));
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(S5))]);
    assert!(out.is_empty());
    assert_eq!((s.counts.parsed, s.entries.decoded), (1, 0));
    // With entries: the learner as the tracker sees it, the learner's own address, port 0
    // and another peer.
    let body = b"d11:external ip4:\x01\x02\x03\x045:peers24:\x01\x02\x03\x04\x1a\xe1\x0a\x00\x00\xc9\x1a\xe1\x05\x06\x07\x08\x00\x00\x05\x06\x07\x08\x1a\xe1e";
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
    assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
    let e = s.entries;
    assert_eq!((e.decoded, e.own_address, e.unusable), (4, 2, 1));
}

#[test]
fn spec_d2_chunk_boundary_inside_peers() {
    let items = [up(ANNOUNCE), down(D2)];
    let (out, s) = run(&items);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        ["1.2.3.4:12304", "9.8.7.6:8208"]
    );
    assert_eq!((s.counts.seen, s.counts.parsed), (1, 1));
    assert_split_invariant(conn(), &items);
}

// ---- Connection handling ----

#[test]
fn keep_alive_two_responses_in_one_chunk() {
    let a = ok(S1);
    let b = ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e");
    let mut two_req = ANNOUNCE.to_vec();
    two_req.extend_from_slice(ANNOUNCE);
    let mut two_resp = a.clone();
    two_resp.extend_from_slice(&b);
    let items = [up(&two_req), down(&two_resp)];
    let (out, s) = run(&items);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        ["1.2.3.4:12304", "9.8.7.6:8208", "5.6.7.8:6881"]
    );
    assert_eq!((s.requests, s.responses, s.counts.parsed), (2, 2, 2));
    assert_eq!(s.unmatched_responses, 0);
    assert_split_invariant(conn(), &items);
    // One request, response, then the next, on the same connection.
    let (out2, _) = run(&[up(ANNOUNCE), down(&a), up(ANNOUNCE), down(&b)]);
    assert_eq!(
        out2.iter().map(|p| p.peer).collect::<Vec<_>>(),
        out.iter().map(|p| p.peer).collect::<Vec<_>>()
    );
}

#[test]
fn pipelined_scrape_between_announces() {
    let scrape_reply = ok(b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1e10:incompletei2eeee");
    let mut reqs = ANNOUNCE.to_vec();
    reqs.extend_from_slice(SCRAPE);
    reqs.extend_from_slice(ANNOUNCE);
    let mut resps = ok(S1);
    resps.extend_from_slice(&scrape_reply);
    resps.extend_from_slice(&ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e"));
    let items = [up(&reqs), down(&resps)];
    let (out, s) = run(&items);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        ["1.2.3.4:12304", "9.8.7.6:8208", "5.6.7.8:6881"]
    );
    assert_eq!((s.announce_requests, s.non_announce_requests), (2, 1));
    assert_eq!(
        (s.counts.seen, s.counts.parsed, s.non_announce_responses),
        (2, 2, 1)
    );
    assert_split_invariant(conn(), &items);
}

#[test]
fn non_announce_pair_is_framed_not_read() {
    // The scrape reply would be rejected as a tracker reply; it is never read as one.
    let scrape_reply = ok(b"d5:filesd20:aaaaaaaaaaaaaaaaaaaad8:completei1eeee");
    let (out, s) = run(&[up(SCRAPE), down(&scrape_reply)]);
    assert!(out.is_empty());
    assert_eq!(s.counts.seen, 0);
    assert_eq!((s.requests, s.non_announce_requests), (1, 1));
    assert_eq!((s.responses, s.non_announce_responses), (1, 1));
    // A body with peers is not read either when it answers something else.
    let (out, _) = run(&[up(b"GET /favicon.ico HTTP/1.1\r\n\r\n"), down(&ok(S1))]);
    assert!(out.is_empty());
}

#[test]
fn gap_mid_response_drops_it_and_resyncs() {
    let first = ok(S1);
    let second = ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e");
    let mut two_req = ANNOUNCE.to_vec();
    two_req.extend_from_slice(ANNOUNCE);
    // The first response loses bytes mid-body; the chunk after the hole holds its tail,
    // which is skipped; the next chunk starts the second response.
    let (out, s) = run(&[
        up(&two_req),
        down(&first[..first.len() - 10]),
        down_gap(&first[first.len() - 4..]),
        down(&second),
    ]);
    assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
    assert_eq!(rejected(&s), BTreeMap::from([("gap", 1)]));
    assert_eq!((s.counts.seen, s.counts.parsed, s.gaps), (2, 1, 1));
    assert_eq!(s.desync_bytes, 4);
    // Outstanding requests were forgotten: the second reply is read as unmatched.
    assert_eq!(s.unmatched_responses, 1);
    // A gap whose chunk starts a response resynchronises at once.
    let (out, s) = run(&[up(&two_req), down(&first[..20]), down_gap(&second)]);
    assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
    assert_eq!((s.counts.parsed, s.counts.rejected_total()), (1, 1));
    // Without any announce on the connection, an unmatched reply is not read.
    let (out, s) = run(&[up(SCRAPE), down_gap(&second)]);
    assert!(out.is_empty());
    assert_eq!(s.counts.seen, 0);
}

#[test]
fn gap_in_requests_resyncs_at_a_request_line() {
    let mut gap = up(&ANNOUNCE[30..]);
    if let Item::Chunk { gap: g, .. } = &mut gap {
        *g = true;
    }
    let mut resync = up(ANNOUNCE);
    if let Item::Chunk { gap: g, .. } = &mut resync {
        *g = true;
    }
    let (out, s) = run(&[
        up(SCRAPE),
        gap,
        resync,
        down(&ok(b"d5:filese")),
        down(&ok(S1)),
    ]);
    assert_eq!(tcp_peers(&out, "10.0.0.201").len(), 2);
    assert_eq!(
        (s.gaps, s.requests, s.desync_bytes),
        (2, 2, (ANNOUNCE.len() - 30) as u64)
    );
}

#[test]
fn oversized_body_is_framed_and_counted() {
    let config = HttpTrackerConfig {
        max_body: 20,
        ..Default::default()
    };
    let mut reqs = ANNOUNCE.to_vec();
    reqs.extend_from_slice(ANNOUNCE);
    let mut resps = ok(S4);
    resps.extend_from_slice(&ok(b"d5:peers6:\x05\x06\x07\x08\x1a\xe1e"));
    let (out, s) = run_with(config, &[up(&reqs), down(&resps)]);
    // The next response on the connection is still found.
    assert_eq!(tcp_peers(&out, "10.0.0.201"), ["5.6.7.8:6881"]);
    assert_eq!(rejected(&s), BTreeMap::from([("body_too_large", 1)]));
    assert_eq!(s.over_cap_bytes, S4.len() as u64);
    // Inflated past the cap (a 2 MiB body of zeros, 2 KiB compressed).
    let bomb = gzip(&vec![0u8; 2 << 20]);
    assert!(bomb.len() < MAX_BODY);
    let (out, s) = run(&[
        up(ANNOUNCE),
        down(&ok_with("Content-Encoding: gzip\r\n", &bomb)),
    ]);
    assert!(out.is_empty());
    assert_eq!(rejected(&s), BTreeMap::from([("inflated_too_large", 1)]));
    // Head past its cap.
    let long = format!("HTTP/1.1 200 OK\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let (_, s) = run(&[up(ANNOUNCE), down(long.as_bytes())]);
    assert_eq!(rejected(&s), BTreeMap::from([("head_too_large", 1)]));
}

#[test]
fn entries_past_the_cap_are_counted() {
    let mut body = b"d5:peers15000:".to_vec();
    for i in 0..2500u32 {
        body.extend_from_slice(&(0x0b00_0000 + i).to_be_bytes());
        body.extend_from_slice(&[0x1a, 0xe1]);
    }
    body.push(b'e');
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(&body))]);
    assert_eq!(out.len(), 2 * MAX_ENTRIES);
    assert_eq!((s.entries.decoded, s.entries.capped), (2000, 500));
    assert_eq!(out[0].peer.to_string(), "11.0.0.0:6881");
}

#[test]
fn malformed_bodies_are_rejected_with_a_reason() {
    for (body, why) in [
        (&b"d5:peers"[..], Reject::Truncated),
        (b"d5:peers6:abce", Reject::LengthBeyondEnd),
        (b"i3e", Reject::NotDict),
        (b"d8:intervali1800ee", Reject::NotTrackerReply),
        (b"d5:peersi3ee", Reject::WrongType),
        (b"d6:peers6i3ee", Reject::WrongType),
        (b"d14:failure reasoni1ee", Reject::WrongType),
        (b"d5:peers0:5:peers0:e", Reject::DuplicateKey),
        (b"d5:peers0:eXYZ", Reject::TrailingData),
        (b"d5:peersllllllllllleeeeeeeeeee", Reject::TooDeep),
        (b"<html>", Reject::Syntax),
        (b"", Reject::Truncated),
    ] {
        assert_eq!(parse_announce_body(body).map(|_| ()), Err(why), "{body:?}");
        let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
        assert!(out.is_empty());
        assert_eq!(rejected(&s), BTreeMap::from([(why.as_str(), 1)]));
    }
    // Unsorted keys and trailing whitespace are fine.
    let (p, _) = body_peers(b"d8:intervali5e5:peers6:\x05\x06\x07\x08\x1a\xe18:completei1ee\r\n");
    assert_eq!(p, ["5.6.7.8:6881"]);
    // A failure reason: parsed, no peers even if some are listed.
    let (out, s) = run(&[
        up(ANNOUNCE),
        down(&ok(
            b"d14:failure reason9:not found5:peers6:\x05\x06\x07\x08\x1a\xe1e",
        )),
    ]);
    assert!(out.is_empty());
    assert_eq!((s.counts.parsed, s.failures), (1, 1));
}

#[test]
fn compact_peers_with_trailing_bytes() {
    let body = b"d5:peers13:\x01\x02\x03\x04\x30\x10\x09\x08\x07\x06\x20\x10\xffe";
    let (p, n) = body_peers(body);
    assert_eq!(p, ["1.2.3.4:12304", "9.8.7.6:8208"]);
    assert_eq!((n.entries.decoded, n.entries.malformed), (2, 1));
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
    assert_eq!(out.len(), 4);
    assert_eq!((s.entries.decoded, s.entries.malformed), (2, 1));
}

#[test]
fn dict_list_entries_of_every_kind() {
    let body = b"d5:peersl\
        d2:ip7:1.2.3.44:porti6881ee\
        d2:ip11:2001:db8::14:porti6882ee\
        d2:ip13:[2001:db8::2]4:porti6883ee\
        d2:ip15:tracker.example4:porti6884ee\
        d2:ip7:1.2.3.44:porti70000ee\
        d2:ip7:1.2.3.44:porti-1ee\
        d4:porti1ee\
        d2:ipi1e4:porti1ee\
        d2:ip4:a b!4:porti1ee\
        d2:ip7:1.2.3.44:porti0ee\
        i5e\
        ee";
    let (p, n) = body_peers(body);
    assert_eq!(
        p,
        [
            "1.2.3.4:6881",
            "[2001:db8::1]:6882",
            "[2001:db8::2]:6883",
            "tracker.example:6884",
            "1.2.3.4:0"
        ]
    );
    assert_eq!(
        (n.entries.decoded, n.dns_names, n.entries.malformed),
        (4, 1, 6)
    );
    let (out, s) = run(&[up(ANNOUNCE), down(&ok(body))]);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        ["1.2.3.4:6881", "[2001:db8::1]:6882", "[2001:db8::2]:6883"]
    );
    assert_eq!(
        (s.dns_names, s.entries.unusable, s.entries.malformed),
        (1, 1, 6)
    );
}

#[test]
fn read_until_close_and_closed_early() {
    let mut resp = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    resp.extend_from_slice(S1);
    let items = [up(ANNOUNCE), down(&resp), Item::Close(at(3))];
    let (out, s) = run(&items[..2]);
    assert!(
        out.is_empty() && s.counts.seen == 0,
        "complete only at the close"
    );
    let (out, s) = run(&items);
    assert_eq!(tcp_peers(&out, "10.0.0.201").len(), 2);
    assert_eq!(out[0].ts, at(3));
    assert_eq!((s.counts.parsed, s.sessions.len), (1, 0));
    assert_split_invariant(conn(), &items);
    // A length not reached, a head not finished, a request unanswered.
    let full = ok(S1);
    for cut in [full.len() - 1, 10] {
        let (out, s) = run(&[up(ANNOUNCE), down(&full[..cut]), Item::Close(at(3))]);
        assert!(out.is_empty());
        assert_eq!(rejected(&s), BTreeMap::from([("closed_early", 1)]));
    }
    let (_, s) = run(&[up(ANNOUNCE), Item::Close(at(3))]);
    assert_eq!((s.unanswered_requests, s.counts.seen), (1, 0));
}

#[test]
fn content_codings() {
    let mut zlib_enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib_enc.write_all(S1).unwrap();
    let zlib = zlib_enc.finish().unwrap();
    let mut deflate_enc =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflate_enc.write_all(S1).unwrap();
    let raw = deflate_enc.finish().unwrap();
    let gz = gzip(S1);
    for (header, body) in [
        ("Content-Encoding: deflate\r\n", &zlib),
        ("Content-Encoding: deflate\r\n", &raw),
        ("Content-Encoding: x-gzip\r\n", &gz),
        ("Content-Encoding: identity, GZIP\r\n", &gz),
    ] {
        let (out, s) = run(&[up(ANNOUNCE), down(&ok_with(header, body))]);
        assert_eq!(tcp_peers(&out, "10.0.0.201").len(), 2, "{header}");
        assert_eq!(s.counts.parsed, 1);
    }
    // Two codings, undone last first.
    let twice = gzip(&zlib);
    let (out, _) = run(&[
        up(ANNOUNCE),
        down(&ok_with("Content-Encoding: deflate, gzip\r\n", &twice)),
    ]);
    assert_eq!(out.len(), 4);
    // gzip inside chunked, with a trailer.
    let mut chunked =
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let (a, b) = gz.split_at(7);
    for part in [a, b] {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\nX-Trailer: 1\r\n\r\n");
    let items = [up(ANNOUNCE), down(&chunked), up(ANNOUNCE), down(&ok(S1))];
    let (out, s) = run(&items);
    assert_eq!(out.len(), 8);
    assert_eq!(s.counts.parsed, 2);
    assert_split_invariant(conn(), &items);
    for (header, why) in [
        ("Content-Encoding: br\r\n", "unsupported_encoding"),
        ("Content-Encoding: gzip\r\n", "bad_encoding"),
    ] {
        let (_, s) = run(&[up(ANNOUNCE), down(&ok_with(header, S1))]);
        assert_eq!(rejected(&s), BTreeMap::from([(why, 1)]));
    }
    // Truncated gzip (no trailer).
    let (_, s) = run(&[
        up(ANNOUNCE),
        down(&ok_with("Content-Encoding: gzip\r\n", &gz[..gz.len() - 8])),
    ]);
    assert_eq!(rejected(&s), BTreeMap::from([("bad_encoding", 1)]));
}

#[test]
fn interim_head_and_bodiless_responses() {
    // 100 Continue does not answer the request; HEAD's response has no body whatever its
    // length says; 204 has none either.
    let mut resps = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
    resps.extend_from_slice(&ok(S1));
    let (out, s) = run(&[up(ANNOUNCE), down(&resps)]);
    assert_eq!(out.len(), 4);
    assert_eq!(s.responses, 1);
    let mut reqs = b"HEAD /announce HTTP/1.1\r\n\r\n".to_vec();
    reqs.extend_from_slice(ANNOUNCE);
    let mut resps = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n".to_vec();
    resps.extend_from_slice(&ok(S1));
    let (out, s) = run(&[up(&reqs), down(&resps)]);
    assert_eq!(out.len(), 4);
    assert_eq!((s.responses, s.non_announce_responses), (2, 1));
    let mut reqs = ANNOUNCE.to_vec();
    reqs.extend_from_slice(ANNOUNCE);
    let mut resps = b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
    resps.extend_from_slice(&ok(S1));
    let (out, s) = run(&[up(&reqs), down(&resps)]);
    assert_eq!(out.len(), 4);
    assert_eq!(rejected(&s), BTreeMap::from([("truncated", 1)]));
    // A request with a body (POST) is skipped by its length.
    let mut reqs = b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ".to_vec();
    reqs.extend_from_slice(ANNOUNCE);
    let (out, s) = run(&[up(&reqs), down(&ok(b"d1:xi1ee")), down(&ok(S1))]);
    assert_eq!(out.len(), 4);
    assert_eq!((s.requests, s.announce_requests, s.bad_requests), (2, 1, 0));
}

#[test]
fn not_http_flows_and_orphans_are_ignored() {
    let handshake = b"\x13BitTorrent protocol\0\0\0\0\0\x10\0\x05";
    let (out, s) = run(&[up(handshake), down(&ok(S1)), up(ANNOUNCE), down(&ok(S1))]);
    assert!(out.is_empty());
    assert_eq!((s.flows, s.not_http_flows, s.requests), (1, 1, 0));
    let (out, s) = run(&[down(&ok(S1))]);
    assert!(out.is_empty());
    assert_eq!((s.orphan_chunks, s.flows, s.sessions.len), (1, 0, 0));
    // A tracker answering garbage: rejected, and nothing read until a new `HTTP/`.
    let (_, s) = run(&[up(ANNOUNCE), down(b"SSH-2.0-OpenSSH\r\n\r\n")]);
    assert_eq!(rejected(&s), BTreeMap::from([("not_http", 1)]));
    // An unreadable request is still answered.
    let (out, s) = run(&[up(b"GET /a b c HTTP/1.1\r\n\r\n"), down(&ok(S1))]);
    assert!(out.is_empty());
    assert_eq!((s.bad_requests, s.non_announce_responses), (1, 1));
}

#[test]
fn sessions_are_bounded_and_expire() {
    let mut t = HttpTracker::new(HttpTrackerConfig {
        max_sessions: 2,
        ..Default::default()
    });
    let mut out = Vec::new();
    // Three clients (one host alone would be held to its share, one session of two).
    for port in 1..=3u16 {
        let c = ConnKey::tcp(
            SocketAddr::new(format!("10.0.0.{}", 200 + port).parse().unwrap(), port),
            SERVER.parse().unwrap(),
        );
        t.on_chunk(
            &StreamChunk {
                ts: at(1),
                conn: c,
                dir: Dir::ToServer,
                gap: false,
                data: ANNOUNCE,
            },
            &mut out,
        );
    }
    let s = t.stats();
    // Full: the third connection is refused, the two tracked ones stay.
    assert_eq!((s.sessions.len, s.sessions.evicted, s.flows), (2, 0, 2));
    assert_eq!(s.sessions_refused, 1);
    assert_eq!(s.fair.table_full, 1);
    // Activity keeps a session alive; idleness expires it.
    let c = ConnKey::tcp(
        SocketAddr::new("10.0.0.202".parse().unwrap(), 2),
        SERVER.parse().unwrap(),
    );
    t.on_chunk(
        &StreamChunk {
            ts: at(100),
            conn: c,
            dir: Dir::ToServer,
            gap: false,
            data: b"",
        },
        &mut out,
    );
    t.on_chunk(
        &StreamChunk {
            ts: at(100),
            conn: c,
            dir: Dir::ToClient,
            gap: false,
            data: b"HTTP/1.1 100 Continue\r\n\r\n",
        },
        &mut out,
    );
    t.expire(at(200));
    let s = t.stats();
    assert_eq!((s.sessions.len, s.sessions.expired), (1, 1));
    let resp = ok(S1);
    t.on_chunk(
        &StreamChunk {
            ts: at(200),
            conn: c,
            dir: Dir::ToClient,
            gap: false,
            data: &resp,
        },
        &mut out,
    );
    assert_eq!(out.len(), 4);
    t.expire(at(1000));
    assert_eq!(t.stats().sessions.len, 0);
}

#[test]
fn pipelining_depth_is_capped() {
    let reqs: Vec<u8> = ANNOUNCE.repeat(MAX_PENDING + 2);
    let (_, s) = run(&[up(&reqs)]);
    assert_eq!(
        (s.requests, s.pending_overflow),
        (MAX_PENDING as u64 + 2, 2)
    );
}

#[test]
fn parsers_never_panic_on_cuts_and_flips() {
    let gz = ok_with("Content-Encoding: gzip\r\n", &gzip(S3));
    let inputs: [&[u8]; 7] = [ANNOUNCE, D2, S1, S3, S4, S5, &gz];
    for v in inputs {
        for cut in 0..=v.len() {
            for w in [&v[..cut], &v[cut..]] {
                let _ = looks_like_announce(w);
                let _ = parse_request(w);
                let _ = parse_response_head(w);
                let _ = dechunk(w, 64);
                let _ = decode_content(
                    w,
                    &Codings {
                        len: 1,
                        ..Default::default()
                    },
                    64,
                );
                if let Ok(r) = parse_announce_body(w) {
                    let _ = r.for_each_peer(3, |_| {});
                }
            }
            let mut flipped = v.to_vec();
            flipped[cut.min(v.len() - 1)] ^= 0x5a;
            let (_, s) = run(&[up(ANNOUNCE), down(&flipped), Item::Close(at(3))]);
            assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
        }
    }
}

// ---- Through the registered channel interface ----

fn on_stream(ch: &mut dyn channel::Channel, event: &StreamEvent<'_>, out: &mut Vec<PredictedPeer>) {
    let mut retracted = Vec::new();
    ch.on_stream(
        event,
        &mut Learnt {
            predictions: out,
            retracted: &mut retracted,
        },
    );
    assert!(retracted.is_empty());
}

#[test]
fn announces_through_the_channel_trait() {
    let mut ch: Box<dyn channel::Channel> =
        Box::new(HttpTracker::new(HttpTrackerConfig::default()));
    assert_eq!(ch.name(), "http_tracker");
    assert_eq!(ch.stream_class(), Some(StreamClass::HttpTracker));
    // At the times `up` and `down` give.
    let chunk = |dir, data| {
        StreamEvent::Chunk(StreamChunk {
            ts: if dir == Dir::ToServer { at(1) } else { at(2) },
            conn: conn(),
            dir,
            gap: false,
            data,
        })
    };
    let ended = |dir| StreamEvent::Ended {
        conn: conn(),
        dir,
        ts: at(2),
    };
    let mut out = Vec::new();
    // A length-framed reply, then a reply read until the server's FIN.
    let mut until_close = b"HTTP/1.0 200 OK\r\n\r\n".to_vec();
    until_close.extend_from_slice(S5);
    let mut two = ANNOUNCE.to_vec();
    two.extend_from_slice(ANNOUNCE);
    on_stream(&mut *ch, &chunk(Dir::ToServer, &two), &mut out);
    let reply = ok(S1);
    on_stream(&mut *ch, &chunk(Dir::ToClient, &reply), &mut out);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        ["1.2.3.4:12304", "9.8.7.6:8208"]
    );
    on_stream(&mut *ch, &chunk(Dir::ToClient, &until_close), &mut out);
    // The client's FIN ends nothing; the server's ends the body.
    on_stream(&mut *ch, &ended(Dir::ToServer), &mut out);
    assert_eq!(out.len(), 4);
    on_stream(&mut *ch, &ended(Dir::ToClient), &mut out);
    assert_eq!(out.len(), 4);
    let t = ch.downcast_ref::<HttpTracker>().unwrap();
    let s = t.stats();
    assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
    assert_eq!(s.sessions.len, 0);
    // The same through the inherent methods.
    let (direct, _) = run(&[
        up(&two),
        down(&reply),
        down(&until_close),
        Item::Close(at(2)),
    ]);
    assert_eq!(out, direct);
    let mut counts = Vec::new();
    ch.counts(&mut |name, c| counts.push((name, c.seen, c.parsed)));
    assert_eq!(counts, [("http_tracker", 2, 2)]);
    let mut tables = Vec::new();
    ch.tables(&mut |name, t| tables.push((name, t.len)));
    assert_eq!(tables, [("http_tracker_sessions", 0)]);
    assert_eq!(ch.stats_json()["announce_requests"], 2);
    assert_eq!(
        ch.summary().as_deref(),
        Some("http tracker: 2 announces, 2 responses, 0 failure replies, 0 DNS-name peers skipped")
    );
    // Closed also ends a read-until-close body.
    on_stream(&mut *ch, &chunk(Dir::ToServer, ANNOUNCE), &mut out);
    on_stream(&mut *ch, &chunk(Dir::ToClient, &until_close), &mut out);
    let closed = StreamEvent::Closed {
        conn: conn(),
        ts: at(3),
    };
    on_stream(&mut *ch, &closed, &mut out);
    let t = ch.downcast_ref::<HttpTracker>().unwrap();
    assert_eq!((t.stats().counts.parsed, t.stats().sessions.len), (3, 0));
    ch.expire(at(1000));
}

#[test]
fn reject_names_are_the_metric_labels() {
    for (r, name) in [
        (Reject::NotHttp, "not_http"),
        (Reject::HeadTooLarge, "head_too_large"),
        (Reject::TooManyHeaders, "too_many_headers"),
        (Reject::BadLength, "bad_length"),
        (Reject::BadChunk, "bad_chunk"),
        (Reject::BadFraming, "bad_framing"),
        (Reject::HttpStatus, "http_status"),
        (Reject::Gap, "gap"),
        (Reject::ClosedEarly, "closed_early"),
        (Reject::Incomplete, "incomplete"),
        (Reject::BodyTooLarge, "body_too_large"),
        (Reject::UnsupportedEncoding, "unsupported_encoding"),
        (Reject::BadEncoding, "bad_encoding"),
        (Reject::InflatedTooLarge, "inflated_too_large"),
        (Reject::Truncated, "truncated"),
        (Reject::LengthBeyondEnd, "length_beyond_end"),
        (Reject::TrailingData, "trailing_data"),
        (Reject::TooDeep, "too_deep"),
        (Reject::DuplicateKey, "duplicate_key"),
        (Reject::Syntax, "syntax"),
        (Reject::NotDict, "not_dict"),
        (Reject::NotTrackerReply, "not_tracker_reply"),
        (Reject::WrongType, "wrong_type"),
    ] {
        assert_eq!(r.as_str(), name);
    }
}

/// Tests on third-party captures (the corpus, see [`crate::test_support`]).
mod corpus {
    use super::*;
    use crate::test_support::corpus;
    use std::collections::HashMap;

    // ---- Captured TCP flows (the pre-filter does not hand TCP payloads to tests yet) ----

    #[derive(Clone, Debug)]
    struct Flow {
        conn: ConnKey,
        items: Vec<Item>,
    }

    impl Flow {
        /// The client's first payload.
        fn first_request(&self) -> &[u8] {
            self.items
                .iter()
                .find_map(|i| match i {
                    Item::Chunk {
                        dir: Dir::ToServer,
                        data,
                        ..
                    } => Some(&data[..]),
                    _ => None,
                })
                .unwrap_or_default()
        }

        /// The kernel pre-filter's rule: `GET ` and `info_hash=` in the first 512 bytes.
        fn marked(&self) -> bool {
            let p = self.first_request();
            p.starts_with(b"GET ") && contains(&p[..p.len().min(512)], b"info_hash=")
        }
    }

    #[derive(Default)]
    struct Building {
        order: usize,
        ends: Option<(SocketAddr, SocketAddr)>,
        syn_sender: Option<SocketAddr>,
        next: HashMap<SocketAddr, u32>,
        /// (time, sender, bytes lost before, bytes) per payload segment.
        raw: Vec<(Timestamp, SocketAddr, bool, Vec<u8>)>,
        close: Option<Timestamp>,
    }

    impl Building {
        /// The SYN sender, else the first `GET` sender, else the first payload's sender.
        fn client(&self) -> Option<SocketAddr> {
            self.syn_sender
                .or_else(|| {
                    self.raw
                        .iter()
                        .find(|r| r.3.starts_with(b"GET "))
                        .map(|r| r.1)
                })
                .or_else(|| self.raw.first().map(|r| r.1))
        }
    }

    /// Every TCP flow of a capture: payload segments in capture order, retransmitted bytes
    /// removed by sequence number, a jump forward marked as a gap; closed after its last
    /// segment (or its first FIN/RST if later). Flows are returned in the order they started.
    fn tcp_flows(rel: &str) -> Vec<Flow> {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let mut flows: HashMap<(SocketAddr, SocketAddr), Building> = HashMap::new();
        crate::capture::pcap::read_frames(&corpus(rel), |ts, frame| {
            let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                return;
            };
            let (src, dst) = match &p.net {
                Some(NetSlice::Ipv4(ip)) => (
                    IpAddr::V4(ip.header().source_addr()),
                    IpAddr::V4(ip.header().destination_addr()),
                ),
                Some(NetSlice::Ipv6(ip)) => (
                    IpAddr::V6(ip.header().source_addr()),
                    IpAddr::V6(ip.header().destination_addr()),
                ),
                _ => return,
            };
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                return;
            };
            let src = SocketAddr::new(src, tcp.source_port());
            let dst = SocketAddr::new(dst, tcp.destination_port());
            let key = if src < dst { (src, dst) } else { (dst, src) };
            let order = flows.len();
            let f = flows.entry(key).or_insert_with(|| Building {
                order,
                ends: Some(key),
                ..Default::default()
            });
            f.segment(ts, src, tcp);
        })
        .unwrap();
        let mut out: Vec<(usize, Flow)> = flows
            .into_values()
            .filter(|b| !b.raw.is_empty())
            .map(|b| (b.order, b.into_flow()))
            .collect();
        out.sort_by_key(|(o, _)| *o);
        out.into_iter().map(|(_, f)| f).collect()
    }

    impl Building {
        /// One TCP segment `src` sent.
        fn segment(&mut self, ts: Timestamp, src: SocketAddr, tcp: &etherparse::TcpSlice<'_>) {
            let seq = tcp.sequence_number();
            if tcp.syn() {
                if !tcp.ack() {
                    self.syn_sender = Some(src);
                }
                self.next.insert(src, seq.wrapping_add(1));
            }
            let payload = tcp.payload();
            if !payload.is_empty() {
                let (mut data, mut gap) = (payload, false);
                if let Some(&next) = self.next.get(&src) {
                    let off = i64::from(seq.wrapping_sub(next).cast_signed());
                    if off < 0 {
                        let dup = usize::try_from(-off).unwrap();
                        if dup >= data.len() {
                            return;
                        }
                        data = &data[dup..];
                    } else {
                        gap = off > 0;
                    }
                }
                self.next
                    .insert(src, seq.wrapping_add(u32::try_from(payload.len()).unwrap()));
                self.raw.push((ts, src, gap, data.to_vec()));
            }
            if (tcp.fin() || tcp.rst()) && self.close.is_none() {
                self.close = Some(ts);
            }
        }

        /// The flow's chunks in capture order, closed after its last segment (or its first
        /// FIN/RST if later).
        fn into_flow(self) -> Flow {
            let (a, z) = self.ends.unwrap();
            let client = self.client().unwrap();
            let server = if client == a { z } else { a };
            let last = self.raw.iter().map(|r| r.0).max().unwrap();
            let mut items: Vec<Item> = self
                .raw
                .into_iter()
                .map(|(ts, src, gap, data)| Item::Chunk {
                    ts,
                    dir: if src == client {
                        Dir::ToServer
                    } else {
                        Dir::ToClient
                    },
                    gap,
                    data,
                })
                .collect();
            items.push(Item::Close(self.close.map_or(last, |c| c.max(last))));
            Flow {
                conn: ConnKey::tcp(client, server),
                items,
            }
        }
    }

    fn replay(flows: &[Flow]) -> (HttpTrackerStats, Vec<PredictedPeer>) {
        let mut t = HttpTracker::new(HttpTrackerConfig::default());
        let mut out = Vec::new();
        for f in flows {
            out.extend(drive(&mut t, f.conn, &f.items));
        }
        (t.stats(), out)
    }

    fn marked_flows(rel: &str) -> Vec<Flow> {
        tcp_flows(rel).into_iter().filter(Flow::marked).collect()
    }

    /// The same flow with chunk `which` cut at every byte, then every chunk cut into single
    /// bytes, gives the same predictions and counters as the flow as captured.
    // ---- Real captures (a gzip reply of Zeek's `tracker.pcap`, a chunked gzip dict list of
    // the 360BitScoping captures, and more) ----

    #[test]
    fn real_r1_gzip_reply_of_an_ubuntu_tracker() {
        let flows = marked_flows("zeek-zeek/tracker.pcap");
        assert_eq!(flows.len(), 1);
        let f = &flows[0];
        assert_eq!(f.conn.client, "10.0.0.201:49842".parse().unwrap());
        let req = parse_request(f.first_request()).unwrap().unwrap();
        assert!(req.announce);
        assert_eq!((req.port, req.compact), (Some(63448), Some(true)));

        // The body as decoded by hand (gunzip, then bencode).
        let Some(Item::Chunk { data: resp, .. }) = f.items.iter().find(|i| {
            matches!(
                i,
                Item::Chunk {
                    dir: Dir::ToClient,
                    ..
                }
            )
        }) else {
            panic!("no response")
        };
        let h = parse_response_head(resp).unwrap().unwrap();
        assert_eq!(
            (h.version, h.status, h.framing),
            (0, 200, Framing::Length(397))
        );
        let body = decode_content(&resp[h.len..], &h.codings, MAX_INFLATED).unwrap();
        assert_eq!(body.len(), 431);
        assert!(body.starts_with(b"d8:completei4499e12:crypto_flags50:"));

        let (s, out) = replay(&flows);
        let peers = tcp_peers(&out, "10.0.0.201");
        assert_eq!(peers.len(), 50);
        assert_eq!(
            peers[..3],
            [
                "177.1.173.218:51413",
                "5.39.80.148:51413",
                "24.68.62.150:51413"
            ]
        );
        assert_eq!(peers[49], "104.181.106.223:51413");
        // 47 distinct (zlib + a bencode decoder outside this crate).
        let distinct: std::collections::BTreeSet<_> = peers.iter().collect();
        assert_eq!(distinct.len(), 47);
        assert_eq!((s.counts.seen, s.counts.parsed, s.predicted), (1, 1, 100));
        assert_eq!((s.requests, s.announce_requests, s.responses), (1, 1, 1));
        assert_eq!(s.entries.decoded, 50);
        assert_split_invariant(f.conn, &f.items);
    }

    #[test]
    fn real_r2_chunked_gzip_dict_list() {
        // Marked flows (tshark): streams 13 and 37 announce, 15 scrapes; each announce is
        // answered chunked + gzip with the same two dict-list peers.
        let flows =
            marked_flows("goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap");
        assert_eq!(flows.len(), 3);
        let (s, out) = replay(&flows);
        assert_eq!(
            tcp_peers(&out, "194.210.230.86"),
            [
                "185.21.216.147:62271",
                "2.236.132.125:46251",
                "185.21.216.147:62271",
                "2.236.132.125:46251"
            ]
        );
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!((s.announce_requests, s.non_announce_requests), (2, 1));
        assert_eq!((s.responses, s.non_announce_responses), (3, 1));
        assert_eq!(
            (s.entries.decoded, s.dns_names, s.unanswered_requests),
            (4, 0, 0)
        );
        for f in &flows {
            assert_split_invariant(f.conn, &f.items);
        }
    }

    #[test]
    fn real_plain_reply_lists_the_learner_itself() {
        // tcoppi test.txt.pcap: two announces by 10.0.0.3 (port 6943), HTTP/1.0 with a length;
        // each reply lists 10.0.0.3:6943, 10.0.0.3:6917 and 10.0.0.2:52833 (tshark
        // `http.file_data`), and 10.0.0.3 connects to 10.0.0.2:52833 next (frame 11).
        let flows = marked_flows("tcoppi-BittorrentReconstituter/test.txt.pcap");
        assert_eq!(flows.len(), 2);
        let (s, out) = replay(&flows);
        assert_eq!(
            tcp_peers(&out, "10.0.0.3"),
            ["10.0.0.2:52833", "10.0.0.2:52833"]
        );
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!((s.entries.decoded, s.entries.own_address), (6, 4));
        for f in &flows {
            assert_split_invariant(f.conn, &f.items);
        }
    }

    #[test]
    fn real_libtorrent_swarms_of_the_reconstituter_captures() {
        // tshark `tcp.payload` of the responses, decoded outside this crate: codemonkey lists
        // [10.0.0.3:6992, 10.0.0.2:52833] twice; lookaway lists 10.0.0.3 four times and
        // 10.0.0.2:52833, twice, then an empty `peers`. 10.0.0.3 is the learner.
        for (rel, announces, decoded, own) in [
            ("tcoppi-BittorrentReconstituter/codemonkey.pcap", 2, 4, 2),
            ("tcoppi-BittorrentReconstituter/lookaway.pcap", 3, 10, 8),
        ] {
            let (s, out) = replay(&marked_flows(rel));
            assert_eq!(
                tcp_peers(&out, "10.0.0.3"),
                ["10.0.0.2:52833", "10.0.0.2:52833"],
                "{rel}"
            );
            assert_eq!((s.counts.seen, s.counts.parsed), (announces, announces));
            assert_eq!((s.entries.decoded, s.entries.own_address), (decoded, own));
        }
    }

    #[test]
    fn real_redirect_is_counted_not_read() {
        // nDPI bt-http.pcapng: Transmission's announce answered `307 Temporary Redirect`
        // (HTTP/1.1, no length, `Connection: close`); the server never closes in the capture.
        let flows = marked_flows("ntop-nDPI/bt-http.pcapng");
        assert_eq!(flows.len(), 1);
        let (s, out) = replay(&flows);
        assert!(out.is_empty());
        assert_eq!(s.counts.seen, 1);
        assert_eq!(rejected(&s), BTreeMap::from([("http_status", 1)]));
        assert_eq!((s.announce_requests, s.responses), (1, 1));
        assert_split_invariant(flows[0].conn, &flows[0].items);
    }

    #[test]
    fn every_tcp_flow_of_a_busy_capture() {
        // Not only the marked flows: OCSP and Windows Update over HTTP (HEAD, keep-alive, 206
        // bodies), peer-wire connections, IPv6. Only the two announces predict.
        let flows = tcp_flows("goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap");
        assert!(flows.len() > 20);
        let (s, out) = replay(&flows);
        assert_eq!(tcp_peers(&out, "194.210.230.86").len(), 4);
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert!(s.not_http_flows > 0);
        assert!(s.non_announce_responses > 1);
        assert_eq!(s.announce_requests, 2);
        for rel in [
            "tcoppi-BittorrentReconstituter/codemonkey2.pcap",
            "ntop-nDPI/bittorrent.pcap",
            "ntop-nDPI/tls_torrent.pcapng",
        ] {
            let (s, out) = replay(&tcp_flows(rel));
            assert_eq!(s.counts.seen, s.counts.parsed + s.counts.rejected_total());
            assert_eq!(out.len() as u64, s.predicted, "{rel}");
        }
    }
}

/// A burst of one-segment announces (spoofed sources) larger than the session table cannot
/// flush a real client's pending reply: a full table admits no new session instead.
#[test]
fn a_flood_of_requests_does_not_evict_a_pending_reply() {
    let mut t = HttpTracker::new(HttpTrackerConfig::default());
    let cap = HttpTrackerConfig::default().max_sessions;
    assert!(drive(&mut t, conn(), &[up(ANNOUNCE)]).is_empty());
    for i in 0..cap + 100 {
        let [a, b] = u16::try_from(i).unwrap().to_be_bytes();
        let spoofed = SocketAddr::from(([198, 18, a, b], 40_000));
        let flood = ConnKey::tcp(spoofed, SERVER.parse().unwrap());
        drive(&mut t, flood, &[up(ANNOUNCE)]);
    }
    let out = drive(&mut t, conn(), &[down(&ok(S1))]);
    assert_eq!(
        tcp_peers(&out, "10.0.0.201"),
        ["1.2.3.4:12304", "9.8.7.6:8208"]
    );
    let s = t.stats();
    assert_eq!(
        s.sessions_refused, 101,
        "the table held the client and cap - 1 others"
    );
    assert_eq!(s.sessions.evicted, 0);
}

/// The tree decoder's reading of announce replies (`torrust-tracker-contrib-bencode`, as
/// `parse_announce_body` did before it read in one pass), kept as the reference the one-pass
/// parser must agree with.
mod tree_reference {
    use std::net::IpAddr;

    use bencode::ext::BRefAccessExt;
    use bencode::BRefAccess;

    use super::*;
    use crate::bt::test_support::{mutate, XorShift};

    /// (failure, warning, interval, peers, peers6, external ip, the peers read and counts).
    type Reading<'a> = (
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Option<i64>,
        Option<PeersField<'a>>,
        Option<&'a [u8]>,
        Option<IpAddr>,
        Vec<String>,
        PeerCounts,
    );

    /// What `parse_announce_body` made of one dict of a `peers` list (BEP 3: `ip`, an address
    /// literal or a DNS name, and `port`), as text.
    fn entry(e: &bencode::BencodeRef<'_>) -> Option<(String, bool)> {
        let d = e.dict()?;
        let ip = d.lookup(b"ip")?.bytes_ext()?;
        let port = u16::try_from(d.lookup(b"port")?.int()?).ok()?;
        let text = std::str::from_utf8(ip).ok()?;
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(addr) = bare.parse::<IpAddr>() {
            Some((SocketAddr::new(addr, port).to_string(), true))
        } else if (1..=253).contains(&ip.len())
            && ip
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'))
        {
            Some((format!("{text}:{port}"), false))
        } else {
            None
        }
    }

    /// Whole entries of a compact string, at most `budget`, as `for_each_peer` reads them.
    fn compact(
        s: &[u8],
        stride: usize,
        budget: &mut usize,
        out: &mut Vec<String>,
        n: &mut PeerCounts,
    ) {
        n.entries.malformed += u64::from(!s.len().is_multiple_of(stride));
        let total = s.len() / stride;
        let take = total.min(*budget);
        *budget -= take;
        n.entries.capped += (total - take) as u64;
        for e in s.chunks_exact(stride).take(take) {
            n.entries.decoded += 1;
            out.push(match <&[u8; 6]>::try_from(e) {
                Ok(c4) => crate::bt::wire::compact_v4(c4).to_string(),
                Err(_) => crate::bt::wire::compact_v6(e.try_into().unwrap()).to_string(),
            });
        }
    }

    const MAX: usize = 40;

    fn reference(body: &[u8]) -> Result<Reading<'_>, Reject> {
        let body = body.trim_ascii_end();
        let root = crate::bt::decode_bencode(body, MAX_DEPTH)?;
        let top = root.dict().ok_or(Reject::NotDict)?;
        let string = |key: &[u8]| -> Result<Option<&[u8]>, Reject> {
            top.lookup(key)
                .map(|v| v.bytes_ext().ok_or(Reject::WrongType))
                .transpose()
        };
        let failure = string(b"failure reason")?;
        let peers6 = string(b"peers6")?;
        let (mut out, mut n, mut budget) = (Vec::new(), PeerCounts::default(), MAX);
        let peers = match top.lookup(b"peers") {
            None => None,
            Some(v) => Some(match (v.bytes_ext(), v.list()) {
                (Some(s), _) => {
                    compact(s, 6, &mut budget, &mut out, &mut n);
                    PeersField::Compact(s)
                }
                (None, Some(l)) => {
                    let take = l.len().min(budget);
                    budget -= take;
                    n.entries.capped += (l.len() - take) as u64;
                    for i in 0..take {
                        match l.get(i).and_then(entry) {
                            Some((text, addr)) => {
                                if addr {
                                    n.entries.decoded += 1;
                                } else {
                                    n.dns_names += 1;
                                }
                                out.push(text);
                            }
                            None => n.entries.malformed += 1,
                        }
                    }
                    PeersField::List(l.len())
                }
                (None, None) => return Err(Reject::WrongType),
            }),
        };
        if failure.is_none() && peers.is_none() && peers6.is_none() {
            return Err(Reject::NotTrackerReply);
        }
        if let Some(s) = peers6 {
            compact(s, 18, &mut budget, &mut out, &mut n);
        }
        let warning = top
            .lookup(b"warning message")
            .and_then(BRefAccessExt::bytes_ext);
        let interval = top.lookup(b"interval").and_then(BRefAccess::int);
        let external_ip = top
            .lookup(b"external ip")
            .and_then(BRefAccessExt::bytes_ext)
            .and_then(|b| match b.len() {
                4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                _ => None,
            });
        Ok((
            failure,
            warning,
            interval,
            peers,
            peers6,
            external_ip,
            out,
            n,
        ))
    }

    fn one_pass(body: &[u8]) -> Result<Reading<'_>, Reject> {
        let r = parse_announce_body(body)?;
        let mut peers = Vec::new();
        let counts = r.for_each_peer(MAX, |p| {
            peers.push(match p {
                Peer::Addr(a) => a.to_string(),
                Peer::Name { host, port } => format!("{}:{port}", String::from_utf8_lossy(host)),
            });
        });
        Ok((
            r.failure,
            r.warning,
            r.interval,
            r.peers,
            r.peers6,
            r.external_ip,
            peers,
            counts,
        ))
    }

    fn agree(body: &[u8]) {
        let shown = String::from_utf8_lossy(body);
        assert_eq!(one_pass(body), reference(body), "{shown:?}");
    }

    #[test]
    fn one_pass_reads_what_the_tree_decoder_reads() {
        let mut rng = XorShift(0x7c15_9e37_79b9_4a7f);
        let mut many = b"d5:peersl".to_vec();
        for i in 0..50 {
            many.extend_from_slice(
                format!("d2:ip10:192.0.2.{:02}4:porti{}ee", i, 6000 + i).as_bytes(),
            );
        }
        many.extend_from_slice(b"e6:peers618:iiiiiiiiiiiiiiiippe");
        let vectors: [&[u8]; 7] = [
            S1,
            S3,
            S4,
            S5,
            b"d8:intervali1800e5:peersld2:ip9:192.0.2.14:porti6881eed2:ip6:[::1]4:porti1eed4:porti2e2:ip8:a.b-c_d1eee14:failure reason2:no15:warning message2:hie",
            b"d5:peersld2:ipi1e4:porti1eed2:ip3:x y4:porti1eeli1eee6:peers60:e",
            &many,
        ];
        for v in vectors {
            agree(v);
            for cut in 0..v.len() {
                agree(&v[..cut]);
            }
            for _ in 0..3_000 {
                agree(&mutate(v, &mut rng));
            }
        }
    }
}
