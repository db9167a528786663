use super::*;
use crate::bt::channel::{Learnt, Sender};
use crate::bt::test_support::{datagram, unhex, Datagram};

const S1: &[u8] =
    b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee1:t2:aa1:y1:re";
const S2: &[u8] = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
const D1: &[u8] = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:wantl2:n42:n6ee1:q9:get_peers1:t2:aa1:y1:qe";
const D2: &str =
    "64323a6970363ac63364071ae1313a7264323a696432303a6162636465666768696a3031323334353637
    3839353a6e6f64657335323a6d6e6f707172737475767778797a313233343536c00002011ae141424344
    45464748494a4b4c4d4e4f5051525354c0000202c8d5363a6e6f6465733633383a55565758595a616263
    6465666768696a6b6c6d6e20010db80000000000000000000000011ae1353a746f6b656e383a616f6575
    736e7468363a76616c7565736c363ac000020a1ae231383a20010db800000000000000000000000a1ae2
    6565313a74323a6161313a79313a7265";
const R1: &str =
    "64313a6164323a696432303af7f6007cea13506e514de7ecbc94f2ae517115f8393a696e666f5f686173
    6832303af7f601d8a6276f762c2c3df274af2827f8d1f1de65313a71393a6765745f7065657273313a74
    323a0e61313a76343a4c540101313a79313a7165";
const R2: &str =
    "64313a7264323a696432303a841944062ef3c488cabdc678968efa6b7267956c353a746f6b656e32303ab9f6
    3322ce7c8090c86f4342dad1591d6558ee4f363a76616c7565736c31383a9451acea4a125effd9dbb000c34a
    4f694a126565313a74343abb020000313a79313a7265";

const Q: &str = "192.0.2.50:6881";
const R: &str = "203.0.113.9:51413";

fn peers(msg: &Message<'_>, over_ipv4: bool) -> (Vec<String>, EntryCounts) {
    let mut v = Vec::new();
    let n = msg.for_each_peer(over_ipv4, MAX_ENTRIES, |a| v.push(a.to_string()));
    (v, n)
}

fn nodes(msg: &Message<'_>) -> (Vec<String>, EntryCounts) {
    let mut v = Vec::new();
    let n = msg.for_each_node(MAX_ENTRIES, |a| v.push(a.to_string()));
    (v, n)
}

fn feed(t: &mut DhtTracker, d: &Datagram) -> Vec<PredictedPeer> {
    let (ev, udp) = d.event();
    let mut out = Vec::new();
    t.on_udp(&ev, &udp, &mut out);
    out
}

fn targets(out: &[PredictedPeer], channel: Channel, transport: PeerTransport) -> Vec<String> {
    out.iter()
        .filter(|p| p.channel == channel && p.transport == transport)
        .map(|p| p.peer.to_string())
        .collect()
}

fn query(t: &[u8]) -> Vec<u8> {
    let mut q =
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers1:t"
            .to_vec();
    q.extend_from_slice(format!("{}:", t.len()).as_bytes());
    q.extend_from_slice(t);
    q.extend_from_slice(b"1:y1:qe");
    q
}

fn response(t: &[u8]) -> Vec<u8> {
    let mut r =
        b"d1:rd2:id20:mnopqrstuvwxyz1234565:token2:tk6:valuesl6:\xc6\x33\x64\x01\x1a\xe1ee1:t"
            .to_vec();
    r.extend_from_slice(format!("{}:", t.len()).as_bytes());
    r.extend_from_slice(t);
    r.extend_from_slice(b"1:y1:re");
    r
}

#[test]
fn spec_s1_values_response() {
    let m = parse(S1).unwrap();
    assert_eq!(m.tid, b"aa");
    let Body::Response(r) = m.body else { panic!() };
    assert_eq!(r.id, b"abcdefghij0123456789");
    assert_eq!(r.token, Some(&b"aoeusnth"[..]));
    assert_eq!(r.values, Some(2));
    let (p, n) = peers(&m, true);
    assert_eq!(p, ["97.120.106.101:11893", "105.100.104.116:28269"]);
    assert_eq!(n.decoded, 2);
}

#[test]
fn spec_s2_announce_peer_uses_the_source_port() {
    let m = parse(S2).unwrap();
    let Body::Query(q) = m.body else { panic!() };
    assert_eq!(q.method, Method::AnnouncePeer);
    assert_eq!(q.info_hash, Some(b"mnopqrstuvwxyz123456"));
    assert_eq!((q.port, q.implied_port), (Some(6881), true));
    assert_eq!(q.announced_port(40000), Some(40000));
    assert_eq!(q.token, Some(&b"aoeusnth"[..]));
    // It predicts inbound connections only.
    let mut t = DhtTracker::new(DhtConfig::default());
    assert!(feed(&mut t, &datagram(Q, R, 0, S2)).is_empty());
    assert_eq!(t.stats().announce_peer_queries, 1);
}

#[test]
fn spec_s3_short_nodes_hold_no_entry() {
    let raw = b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:v4:UT011:y1:re";
    let m = parse(raw).unwrap();
    assert_eq!(m.version, Some(&b"UT01"[..]));
    let (v, n) = nodes(&m);
    assert!(v.is_empty());
    assert_eq!((n.decoded, n.malformed), (0, 1));
}

#[test]
fn spec_d1_get_peers_with_want() {
    let m = parse(D1).unwrap();
    let Body::Query(q) = m.body else { panic!() };
    assert_eq!(
        (q.method, q.method_name),
        (Method::GetPeers, &b"get_peers"[..])
    );
    assert_eq!(q.id, b"abcdefghij0123456789");
    assert_eq!(q.info_hash, Some(b"mnopqrstuvwxyz123456"));
    assert_eq!(q.announced_port(1), None);
}

#[test]
fn spec_d2_hybrid_values_nodes_nodes6_and_bep42_ip() {
    let raw = unhex(D2);
    assert_eq!(raw.len(), 226);
    assert!(looks_like_krpc(&raw), "opens with d2:ip");
    let m = parse(&raw).unwrap();
    assert_eq!(m.external, Some("198.51.100.7:6881".parse().unwrap()));
    let mut t = DhtTracker::new(DhtConfig::default());
    let out = feed(&mut t, &datagram(R, "192.0.2.77:6881", 0, &raw));
    let tcp = targets(&out, Channel::Dht, PeerTransport::Tcp);
    assert_eq!(tcp, ["192.0.2.10:6882", "[2001:db8::a]:6882"]);
    assert_eq!(targets(&out, Channel::Dht, PeerTransport::Udp), tcp);
    assert_eq!(
        targets(&out, Channel::DhtNodes, PeerTransport::Udp),
        ["192.0.2.1:6881", "192.0.2.2:51413", "[2001:db8::1]:6881"]
    );
    assert!(targets(&out, Channel::DhtNodes, PeerTransport::Tcp).is_empty());
    assert!(out.iter().all(|p| p.host.to_string() == "192.0.2.77"));
    assert!(out
        .iter()
        .all(|p| p.peer.ip().to_string() != "198.51.100.7"));
    let s = t.stats();
    assert_eq!(
        (s.unmatched, s.predicted_peers, s.predicted_nodes),
        (1, 4, 3)
    );
}

#[test]
fn spec_r1_libtorrent_query_with_binary_tid() {
    let raw = unhex(R1);
    assert_eq!(raw.len(), 104);
    let m = parse(&raw).unwrap();
    assert_eq!(m.tid, b"\x0ea");
    assert_eq!(m.version, Some(&b"LT\x01\x01"[..]));
    assert!(matches!(
        m.body,
        Body::Query(Query {
            method: Method::GetPeers,
            ..
        })
    ));
}

#[test]
fn spec_r2_single_18_byte_value_depends_on_family() {
    let raw = unhex(R2);
    assert_eq!(raw.len(), 110);
    let m = parse(&raw).unwrap();
    assert_eq!(m.tid, b"\xbb\x02\x00\x00");
    let (v4, _) = peers(&m, true);
    assert_eq!(
        v4,
        [
            "148.81.172.234:18962",
            "94.255.217.219:45056",
            "195.74.79.105:18962"
        ]
    );
    let (v6, _) = peers(&m, false);
    assert_eq!(v6, ["[9451:acea:4a12:5eff:d9db:b000:c34a:4f69]:18962"]);
}

#[test]
fn unsorted_keys_are_accepted() {
    let raw = b"d1:t2:aa1:y1:r1:rd2:id20:abcdefghij01234567896:valuesl6:axje.ueee";
    assert!(looks_like_krpc(raw));
    let m = parse(raw).unwrap();
    assert_eq!(peers(&m, true).0, ["97.120.106.101:11893"]);
}

#[test]
fn malformed_input_is_rejected_with_a_reason() {
    let id = "2:id20:abcdefghij0123456789";
    let cases: &[(String, Reject)] = &[
        ("le".into(), Reject::NotDict),
        ("d1:y1:re".into(), Reject::MissingTid),
        ("d1:ti1e1:y1:qe".into(), Reject::BadTid),
        (format!("d1:t17:{}1:y1:qe", "x".repeat(17)), Reject::BadTid),
        ("d1:t2:aa1:y1:xe".into(), Reject::BadType),
        ("d1:t2:aae".into(), Reject::BadType),
        ("d1:t2:aa1:y1:re".into(), Reject::MissingBody),
        ("d1:r3:abc1:t2:aa1:y1:re".into(), Reject::MissingBody),
        (
            "d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe".into(),
            Reject::BadId,
        ),
        (
            format!("d1:ad{id}4:porti70000ee1:q4:ping1:t2:aa1:y1:qe"),
            Reject::BadPort,
        ),
        (
            format!("d1:ad{id}4:porti-1ee1:q4:ping1:t2:aa1:y1:qe"),
            Reject::BadPort,
        ),
        (
            format!("d1:ad{id}9:info_hash3:abce1:q4:ping1:t2:aa1:y1:qe"),
            Reject::BadInfoHash,
        ),
        (
            format!("d1:rd{id}6:values6:axje.ue1:t2:aa1:y1:re"),
            Reject::WrongType,
        ),
        (
            format!("d1:rd{id}6:valuesli6eee1:t2:aa1:y1:re"),
            Reject::WrongType,
        ),
        (
            format!("d1:rd{id}5:nodesi1ee1:t2:aa1:y1:re"),
            Reject::WrongType,
        ),
        (
            format!("d2:ip5:abcde1:rd{id}e1:t2:aa1:y1:re"),
            Reject::BadIp,
        ),
        (
            format!("d1:rd{id}e1:t2:aa1:t2:bb1:y1:re"),
            Reject::DuplicateKey,
        ),
        (format!("d1:rd{id}e1:t2:aa1:y1:reXX"), Reject::TrailingData),
        ("d1:t4294967296:aa1:y1:re".into(), Reject::LengthBeyondEnd),
        ("d1:t99999999999999999999999:aae".into(), Reject::Syntax),
        ("d1:ti01e1:y1:qe".into(), Reject::Syntax),
        ("d1:t2:aa1:xi-0e1:y1:qe".into(), Reject::Syntax),
        ("d1:t2:aai1e1:y1:qe".into(), Reject::Syntax),
        ("d1:t2:aa1:xi12".into(), Reject::Truncated),
        ("d1:t2:aa12".into(), Reject::Truncated),
        ("d1:t2:aa1:y1:q".into(), Reject::Truncated),
    ];
    for (raw, want) in cases {
        assert_eq!(parse(raw.as_bytes()).err(), Some(*want), "{raw}");
    }
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    for v in [unhex(D2), unhex(R2), S1.to_vec(), S2.to_vec()] {
        for cut in 0..v.len() {
            let r = parse(&v[..cut]);
            assert!(r.is_err(), "prefix {cut} parsed");
        }
    }
}

#[test]
fn deep_nesting_is_rejected() {
    let mut raw = b"d1:a".to_vec();
    raw.extend(std::iter::repeat_n(b'l', 10_000));
    raw.extend(std::iter::repeat_n(b'e', 10_000));
    raw.extend_from_slice(b"1:t2:aa1:y1:qe");
    assert_eq!(parse(&raw).err(), Some(Reject::TooDeep));
    // Within the cap, unknown nested values are fine.
    let ok = b"d1:ad2:id20:abcdefghij01234567891:xlllleeeee1:q4:ping1:t2:aa1:y1:qe";
    assert!(parse(ok).is_ok());
}

#[test]
fn bad_value_lengths_are_counted_not_used() {
    let raw = b"d1:rd2:id20:abcdefghij01234567896:valuesl6:axje.u7:1234567ee1:t2:aa1:y1:re";
    let m = parse(raw).unwrap();
    let (p, n) = peers(&m, true);
    assert_eq!(p, ["97.120.106.101:11893"]);
    assert_eq!((n.decoded, n.malformed), (1, 1));
    // A single string over IPv4 must be whole C4 entries.
    let raw = b"d1:rd2:id20:abcdefghij01234567896:valuesl7:1234567ee1:t2:aa1:y1:re";
    let (p, n) = peers(&parse(raw).unwrap(), true);
    assert!(p.is_empty());
    assert_eq!((n.decoded, n.malformed), (0, 1));
    // Over IPv6 a lone 7-byte string is just malformed too.
    let (p, n) = peers(&parse(raw).unwrap(), false);
    assert!(p.is_empty());
    assert_eq!(n.malformed, 1);
}

#[test]
fn ten_thousand_entries_are_capped() {
    let mut raw = b"d1:rd2:id20:abcdefghij01234567895:nodes260000:".to_vec();
    for i in 0..10_000u32 {
        raw.extend_from_slice(&[b'n'; 20]);
        raw.extend_from_slice(&[10, 0, i.to_be_bytes()[2], i.to_be_bytes()[3], 0x1a, 0xe1]);
    }
    raw.extend_from_slice(b"e1:t2:aa1:y1:re");
    let msg = parse(&raw).unwrap();
    let (listed, counts) = nodes(&msg);
    assert_eq!(
        (listed.len(), counts.decoded, counts.capped),
        (256, 256, 9_744)
    );
    // Through the tracker (a datagram is at most 64 KiB: 2,000 nodes).
    let mut raw = b"d1:rd2:id20:abcdefghij01234567895:nodes52000:".to_vec();
    for i in 0..2_000u32 {
        raw.extend_from_slice(&[b'n'; 20]);
        raw.extend_from_slice(&[10, 0, i.to_be_bytes()[2], i.to_be_bytes()[3], 0x1a, 0xe1]);
    }
    raw.extend_from_slice(b"e1:t2:aa1:y1:re");
    let mut tracker = DhtTracker::new(DhtConfig::default());
    let out = feed(&mut tracker, &datagram(R, Q, 0, &raw));
    assert_eq!(out.len(), MAX_ENTRIES);
    assert_eq!(tracker.stats().nodes.capped, 1_744);

    let mut raw = b"d1:rd2:id20:abcdefghij01234567896:valuesl".to_vec();
    for i in 0..10_000u32 {
        raw.extend_from_slice(b"6:");
        raw.extend_from_slice(&[10, 1, i.to_be_bytes()[2], i.to_be_bytes()[3], 0x1a, 0xe1]);
    }
    raw.extend_from_slice(b"ee1:t2:aa1:y1:re");
    let (p, n) = peers(&parse(&raw).unwrap(), true);
    assert_eq!((p.len(), n.capped), (256, 9_744));
}

#[test]
fn learner_and_port_zero_are_dropped() {
    // Values: the learner itself, port 0, the learner's BEP 42 address, one real peer.
    let mut raw =
        b"d2:ip6:\xc6\x33\x64\x07\x1a\xe11:rd2:id20:abcdefghij01234567896:valuesl".to_vec();
    for peer in [
        [192, 0, 2, 50, 0x1a, 0xe1],
        [203, 0, 113, 1, 0, 0],
        [198, 51, 100, 7, 0x1a, 0xe2],
        [203, 0, 113, 2, 0x1a, 0xe1],
    ] {
        raw.extend_from_slice(b"6:");
        raw.extend_from_slice(&peer);
    }
    raw.extend_from_slice(b"ee1:t2:aa1:y1:re");
    let mut t = DhtTracker::new(DhtConfig::default());
    let out = feed(&mut t, &datagram(R, Q, 0, &raw));
    assert_eq!(
        targets(&out, Channel::Dht, PeerTransport::Tcp),
        ["203.0.113.2:6881"]
    );
    let v = t.stats().values;
    assert_eq!((v.decoded, v.own_address, v.unusable), (4, 2, 1));
}

#[test]
fn responses_match_queries_by_querier_responder_and_tid() {
    let mut t = DhtTracker::new(DhtConfig::default());
    assert!(feed(&mut t, &datagram(Q, R, 0, &query(b"aa"))).is_empty());
    // Another transaction id, then another responder: not the pending query.
    assert_eq!(feed(&mut t, &datagram(R, Q, 1, &response(b"ab"))).len(), 2);
    assert_eq!(
        feed(
            &mut t,
            &datagram("203.0.113.10:51413", Q, 1, &response(b"aa"))
        )
        .len(),
        2
    );
    assert_eq!((t.stats().matched, t.stats().unmatched), (0, 2));
    assert_eq!(t.stats().pending.len, 1);
    // The right one matches once; a duplicate is unmatched.
    let out = feed(&mut t, &datagram(R, Q, 2, &response(b"aa")));
    assert_eq!(
        targets(&out, Channel::Dht, PeerTransport::Tcp),
        ["198.51.100.1:6881"]
    );
    assert_eq!(out[0].host.to_string(), "192.0.2.50");
    feed(&mut t, &datagram(R, Q, 2, &response(b"aa")));
    let s = t.stats();
    assert_eq!((s.matched, s.unmatched, s.pending.len), (1, 3, 0));
}

#[test]
fn unmatched_responses_can_be_ignored() {
    let mut t = DhtTracker::new(DhtConfig {
        predict_unmatched: false,
        ..Default::default()
    });
    assert!(feed(&mut t, &datagram(R, Q, 0, &response(b"aa"))).is_empty());
    feed(&mut t, &datagram(Q, R, 1, &query(b"ab")));
    assert_eq!(feed(&mut t, &datagram(R, Q, 2, &response(b"ab"))).len(), 2);
    let s = t.stats();
    assert_eq!((s.unmatched_ignored, s.matched, s.counts.parsed), (1, 1, 3));
}

#[test]
fn pending_queries_expire_and_are_capped() {
    let mut t = DhtTracker::new(DhtConfig {
        max_pending: 4,
        ..Default::default()
    });
    feed(&mut t, &datagram(Q, R, 0, &query(b"aa")));
    feed(&mut t, &datagram(R, Q, 61, &response(b"aa")));
    let s = t.stats();
    assert_eq!((s.matched, s.unmatched, s.pending.expired), (0, 1, 1));
    for i in 0..10u8 {
        feed(&mut t, &datagram(Q, R, 100, &query(&[b'q', i])));
    }
    // One querier holds at most its share (an eighth of the table, at least one): the rest
    // is refused and counted, nothing is evicted.
    assert_eq!(t.stats().pending.len, 1);
    assert_eq!(t.stats().pending.evicted, 0);
    assert_eq!(t.pending.fair_stats().host_share, 9);
    feed(&mut t, &datagram(R, Q, 101, &response(&[b'q', 0])));
    feed(&mut t, &datagram(R, Q, 101, &response(&[b'q', 9])));
    assert_eq!((t.stats().matched, t.stats().unmatched), (1, 2));
    t.expire(Timestamp::from_secs(1_000));
    assert_eq!(t.stats().pending.len, 0);
}

#[test]
fn snap_truncated_datagrams_are_incomplete() {
    let mut d = datagram(R, Q, 0, S1);
    d.payload_len += 100;
    let mut t = DhtTracker::new(DhtConfig::default());
    assert!(feed(&mut t, &d).is_empty());
    assert_eq!(t.stats().counts.rejected.get("incomplete"), Some(&1));
}

#[test]
fn precheck_is_cheap_and_selective() {
    assert!(looks_like_krpc(S1) && looks_like_krpc(S2) && looks_like_krpc(D1));
    assert!(!looks_like_krpc(b"d1:rd2:id20:abcdefghij0123456789ee"));
    assert!(!looks_like_krpc(b"\x41\x00\x12\x34 1:y1:q padding"));
    assert!(!looks_like_krpc(b"dx:y1:y1:qe......"));
    assert!(!looks_like_krpc(b""));
}

#[test]
fn reject_names_are_stable() {
    assert_eq!(Reject::Incomplete.as_str(), "incomplete");
    assert_eq!(Reject::Truncated.as_str(), "truncated");
    assert_eq!(Reject::LengthBeyondEnd.as_str(), "length_beyond_end");
    assert_eq!(Reject::TrailingData.as_str(), "trailing_data");
    assert_eq!(Reject::TooDeep.as_str(), "too_deep");
    assert_eq!(Reject::DuplicateKey.as_str(), "duplicate_key");
    assert_eq!(Reject::Syntax.as_str(), "syntax");
    assert_eq!(Reject::NotDict.as_str(), "not_dict");
    assert_eq!(Reject::MissingTid.as_str(), "missing_tid");
    assert_eq!(Reject::BadTid.as_str(), "bad_tid");
    assert_eq!(Reject::BadType.as_str(), "bad_type");
    assert_eq!(Reject::MissingBody.as_str(), "missing_body");
    assert_eq!(Reject::BadId.as_str(), "bad_id");
    assert_eq!(Reject::BadInfoHash.as_str(), "bad_info_hash");
    assert_eq!(Reject::BadPort.as_str(), "bad_port");
    assert_eq!(Reject::BadIp.as_str(), "bad_ip");
    assert_eq!(Reject::WrongType.as_str(), "wrong_type");
}

#[test]
fn through_the_channel_trait() {
    let mut c: Box<dyn crate::bt::channel::Channel> =
        Box::new(DhtTracker::new(DhtConfig::default()));
    assert_eq!(c.name(), "dht");
    let mut predictions = Vec::new();
    let mut retracted = Vec::new();
    for (d, n) in [
        (datagram(Q, R, 0, &query(b"aa")), 0),
        (datagram(R, Q, 1, &response(b"aa")), 2),
    ] {
        let (ev, udp) = d.event();
        assert!(c.claims(&ev, &udp));
        let mut out = Learnt {
            predictions: &mut predictions,
            retracted: &mut retracted,
        };
        // A query or a response: its sender is a DHT node either way.
        assert_eq!(c.on_udp(&ev, &udp, &mut out), Sender::BitTorrent);
        assert_eq!(predictions.len(), n);
    }
    assert_eq!(
        targets(&predictions, Channel::Dht, PeerTransport::Tcp),
        ["198.51.100.1:6881"]
    );
    assert!(retracted.is_empty());
    let utp = datagram(
        Q,
        R,
        2,
        &unhex("41 00 5302 10eeb2f0 00000000 00000000 e7f5 0000"),
    );
    let (ev, udp) = utp.event();
    assert!(!c.claims(&ev, &udp));
    let mut counts = Vec::new();
    c.counts(&mut |name, n| counts.push((name, n.seen, n.parsed)));
    assert_eq!(counts, [("dht", 2, 2)]);
    feed_query_and_expire(c.as_mut());
    let t = c.downcast_ref::<DhtTracker>().unwrap();
    assert_eq!((t.stats().matched, t.stats().pending.expired), (1, 1));
    assert_eq!(c.stats_json()["matched"], 1);
}

/// A query left pending shows in `dht_queries` until it expires.
fn feed_query_and_expire(c: &mut dyn crate::bt::channel::Channel) {
    let d = datagram(Q, R, 3, &query(b"ab"));
    let (ev, udp) = d.event();
    let (mut p, mut r) = (Vec::new(), Vec::new());
    c.on_udp(
        &ev,
        &udp,
        &mut Learnt {
            predictions: &mut p,
            retracted: &mut r,
        },
    );
    let mut tables = Vec::new();
    c.tables(&mut |name, t| tables.push((name, t.len)));
    assert_eq!(tables, [("dht_queries", 1)]);
    c.expire(Timestamp::from_secs(1_000));
    let mut tables = Vec::new();
    c.tables(&mut |name, t| tables.push((name, t.len, t.expired)));
    assert_eq!(tables, [("dht_queries", 0, 1)]);
}

mod corpus {
    use super::*;
    use crate::bt::test_support::udp_datagrams;

    #[test]
    fn real_datagrams_from_captures() {
        // Suricata frame 8 is S1 (BEP 5's "response with peers") with `1:v4:UT12`;
        // BitTorrentBlocker holds R2.
        let sv = udp_datagrams("OISF-suricata-verify/bittorrent-dht/input.pcap");
        let m = parse(&sv[7].head).unwrap();
        assert_eq!(m.version, Some(&b"UT12"[..]));
        assert_eq!(
            peers(&m, true).0,
            ["97.120.106.101:11893", "105.100.104.116:28269"]
        );
        // Frame 15 has no `t`; frame 4 is an error [201, "A Generic Error Ocurred"].
        assert_eq!(parse(&sv[14].head).unwrap_err(), Reject::MissingTid);
        let e = parse(&sv[3].head).unwrap();
        assert_eq!(
            e.body,
            Body::Error(KrpcError {
                code: Some(201),
                message: Some(b"A Generic Error Ocurred")
            })
        );
        let bb = udp_datagrams("spaiter-BitTorrentBlocker/torrent-dht.pcap");
        let r2 = unhex(R2);
        assert!(bb.iter().any(|d| d.head == r2));
        // Every KRPC datagram of the transmission capture parses.
        let tr = udp_datagrams("ntop-nDPI/bittorrent_transmission.pcapng");
        let krpc: Vec<_> = tr.iter().filter(|d| looks_like_krpc(&d.head)).collect();
        assert_eq!(krpc.len(), 323);
        assert!(krpc.iter().all(|d| parse(&d.head).is_ok()));
    }
}

/// The tree decoder's reading of KRPC (`torrust-tracker-contrib-bencode`, as `parse` did before
/// it read in one pass), kept as the reference the one-pass `parse` must agree with.
mod tree_reference {
    use std::net::SocketAddr;

    use bencode::ext::BRefAccessExt;
    use bencode::{BRefAccess, BencodeRef};

    use super::super::{compact, Body, KrpcError, Method, Query, Reject, Response, MAX_TID_LEN};
    use super::*;
    use crate::bt::test_support::{self, XorShift};

    type Dict<'s, 'a> = &'s dyn bencode::BDictAccess<&'a [u8], BencodeRef<'a>>;

    /// (tid, version, external, body, values) or the reason.
    type Outcome<'a> = Result<
        (
            &'a [u8],
            Option<&'a [u8]>,
            Option<SocketAddr>,
            Body<'a>,
            Vec<&'a [u8]>,
        ),
        Reject,
    >;

    fn bytes<'a>(d: Dict<'_, 'a>, key: &[u8]) -> Result<Option<&'a [u8]>, Reject> {
        d.lookup(key)
            .map(|v| v.bytes_ext().ok_or(Reject::WrongType))
            .transpose()
    }

    fn id20<'a>(d: Dict<'_, 'a>, key: &[u8], err: Reject) -> Result<Option<&'a [u8; 20]>, Reject> {
        d.lookup(key)
            .map(|v| v.bytes_ext().and_then(|b| b.try_into().ok()).ok_or(err))
            .transpose()
    }

    fn reference(payload: &[u8]) -> Outcome<'_> {
        let root = crate::bt::decode_bencode(payload, MAX_DEPTH)?;
        let top = root.dict().ok_or(Reject::NotDict)?;
        let tid = match top.lookup(b"t") {
            None => return Err(Reject::MissingTid),
            Some(t) => t.bytes_ext().ok_or(Reject::BadTid)?,
        };
        if tid.len() > MAX_TID_LEN {
            return Err(Reject::BadTid);
        }
        let y = top
            .lookup(b"y")
            .and_then(BRefAccessExt::bytes_ext)
            .ok_or(Reject::BadType)?;
        let mut values = Vec::new();
        let body = match y {
            b"q" => {
                let q = top
                    .lookup(b"q")
                    .and_then(BRefAccessExt::bytes_ext)
                    .ok_or(Reject::MissingBody)?;
                let a = top
                    .lookup(b"a")
                    .and_then(|a| a.dict())
                    .ok_or(Reject::MissingBody)?;
                let id = id20(a, b"id", Reject::BadId)?.ok_or(Reject::BadId)?;
                let port = a
                    .lookup(b"port")
                    .map(|p| {
                        p.int()
                            .and_then(|p| u16::try_from(p).ok())
                            .ok_or(Reject::BadPort)
                    })
                    .transpose()?;
                let implied_port = match a.lookup(b"implied_port") {
                    None => false,
                    Some(v) => v.int().ok_or(Reject::WrongType)? != 0,
                };
                Body::Query(Query {
                    method: Method::from_name(q),
                    method_name: q,
                    id,
                    info_hash: id20(a, b"info_hash", Reject::BadInfoHash)?,
                    target: id20(a, b"target", Reject::WrongType)?,
                    port,
                    implied_port,
                    token: bytes(a, b"token")?,
                })
            }
            b"r" => {
                let r = top
                    .lookup(b"r")
                    .and_then(|r| r.dict())
                    .ok_or(Reject::MissingBody)?;
                let id = id20(r, b"id", Reject::BadId)?.ok_or(Reject::BadId)?;
                let count = match r.lookup(b"values") {
                    None => None,
                    Some(v) => {
                        let list = v.list().ok_or(Reject::WrongType)?;
                        for i in 0..list.len() {
                            values.push(
                                list.get(i)
                                    .and_then(BRefAccessExt::bytes_ext)
                                    .ok_or(Reject::WrongType)?,
                            );
                        }
                        Some(list.len())
                    }
                };
                Body::Response(Response {
                    id,
                    token: bytes(r, b"token")?,
                    values: count,
                    nodes: bytes(r, b"nodes")?.unwrap_or_default(),
                    nodes6: bytes(r, b"nodes6")?.unwrap_or_default(),
                })
            }
            b"e" => {
                let e = top
                    .lookup(b"e")
                    .and_then(|e| e.list())
                    .ok_or(Reject::MissingBody)?;
                Body::Error(KrpcError {
                    code: e.get(0).and_then(BRefAccess::int),
                    message: e.get(1).and_then(BRefAccessExt::bytes_ext),
                })
            }
            _ => return Err(Reject::BadType),
        };
        let version = bytes(top, b"v")?;
        let external = match bytes(top, b"ip").map_err(|_| Reject::BadIp)? {
            None => None,
            Some(b) => Some(compact(b).ok_or(Reject::BadIp)?),
        };
        Ok((tid, version, external, body, values))
    }

    fn one_pass(payload: &[u8]) -> Outcome<'_> {
        let m = parse(payload)?;
        let values = m.values().collect();
        Ok((m.tid, m.version, m.external, m.body, values))
    }

    fn agree(data: &[u8]) {
        assert_eq!(
            one_pass(data),
            reference(data),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }

    fn differential(data: &[u8], rng: &mut XorShift, rounds: usize) {
        test_support::differential(data, rng, rounds, agree);
    }

    #[test]
    fn one_pass_reads_what_the_tree_decoder_reads() {
        let mut rng = XorShift(0x5851_f42d_4c95_7f2d);
        let id = "2:id20:abcdefghij0123456789";
        let mut vectors: Vec<Vec<u8>> = [S1, S2, D1]
            .iter()
            .map(|v| v.to_vec())
            .chain([D2, R1, R2].iter().map(|h| unhex(h)))
            .collect();
        for extra in [
            format!(
                "d1:ad{id}6:target20:abcdefghij01234567894:porti1ee1:q9:find_node1:t1:x1:y1:qe"
            ),
            format!("d2:ip6:abcdef1:rd{id}5:nodes0:6:nodes60:6:valuesl0:i1eee1:t0:1:y1:re"),
            "d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:v2:xy1:y1:ee".into(),
            "d1:eli201ee1:t2:aa1:y1:ee".into(),
            format!("d1:ad{id}12:implied_porti0ee1:q4:ping1:r0:1:t2:aa1:y1:qe"),
            format!("d1:rd{id}e1:ad{id}e1:t2:aa1:y1:re"),
        ] {
            vectors.push(extra.into_bytes());
        }
        for v in &vectors {
            differential(v, &mut rng, 3_000);
        }
    }

    mod corpus {
        use super::*;
        use crate::bt::test_support::udp_datagrams;

        #[test]
        fn captured_krpc_is_read_as_the_tree_decoder_reads_it() {
            let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
            let mut parsed = 0;
            for rel in [
                "OISF-suricata-verify/bittorrent-dht/input.pcap",
                "spaiter-BitTorrentBlocker/torrent-dht.pcap",
                "ntop-nDPI/bittorrent_transmission.pcapng",
            ] {
                for d in udp_datagrams(rel) {
                    if looks_like_krpc(&d.head) {
                        parsed += usize::from(parse(&d.head).is_ok());
                        differential(&d.head, &mut rng, 50);
                    }
                }
            }
            assert!(parsed > 300, "{parsed}");
        }
    }
}
