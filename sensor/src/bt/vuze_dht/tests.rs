use super::*;
use std::net::Ipv4Addr;

use crate::bt::channel::{Learnt, Sender};
use crate::bt::test_support::{datagram, unhex, Datagram};

// Derived from BiglyBT's `serialise` code: connection id 9a3b5c7d1e2f4a6b, transaction id
// 00c0ffee, requester 192.0.2.99:11273, protocol version 50 (D1..D3, legacy) or 55 (D4, D5).
const D1: &str = "9a3b5c7d1e2f4a6b 00000406 00c0ffee 32 00 00000000 32 04c00002632c09 11223344
    0000018bcfe56800 14 0f1e2d3c4b5a69788796a5b4c3d2e1f001122334 00 10";
const D2: &str = "00000407 00c0ffee 9a3b5c7d1e2f4a6b 32 00 00000000 55667788 00 01 01 0002
    00000001 0000018bcfe540f0 0007 35313431333b43 01 32 04c00002142c09 01 00 ff
    00000001 0000018bcfe519e0 0016 3230332e302e3131332e37373a363838313b36383832 01 32
    04c00002159c40 02 00 ff";
const D3: &str = "00000405 00c0ffef 9a3b5c7d1e2f4a6b 32 00 00000000 55667788 0badf00d 00000001
    000f4240 01 01 10 3f800000 40000000 40400000 40800000 0002 01 32 04c000021e2c09 01 32
    04c000021f1ae1";
const D4: &str = "9a3b5c7d1e2f4a6b 00000406 00c0ffee 37 00 00000004 37 04c00002632c09 11223344
    0000018bcfe56800 00 00 14 0f1e2d3c4b5a69788796a5b4c3d2e1f001122334 00 10";
/// D5 is "D2 with header `... 37 00 00000004 55667788 00 00 0003` and value/contact
/// protocol-version bytes 0x37": built here from D2 by exactly those substitutions.
fn d5() -> Vec<u8> {
    let d2 = unhex(D2);
    let mut v = unhex("00000407 00c0ffee 9a3b5c7d1e2f4a6b 37 00 00000004 55667788 00 00 0003");
    let mut body = d2[26..].to_vec();
    // Originator contacts `01 32 04 ...` of the two values.
    for at in [5 + 4 + 8 + 2 + 7, 5 + 33 + 4 + 8 + 2 + 22] {
        assert_eq!(&body[at..at + 3], &[1, 0x32, 4]);
        body[at + 1] = 0x37;
    }
    v.extend_from_slice(&body);
    v
}

const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f001122334";
const REQUESTER: &str = "192.0.2.99:11273";
const RESPONDER: &str = "192.0.2.1:11273";
const CONN: u64 = 0x9a3b_5c7d_1e2f_4a6b;

fn legacy() -> VuzeDht {
    VuzeDht::new(VuzeDhtConfig {
        min_version: 50,
        ..Default::default()
    })
}

fn feed(t: &mut VuzeDht, d: &Datagram) -> Vec<PredictedPeer> {
    let (ev, udp) = d.event();
    let mut out = Vec::new();
    t.on_udp(&ev, &udp, &mut out);
    out
}

fn request(hex: &str, ts: u64) -> Datagram {
    datagram(REQUESTER, RESPONDER, ts, &unhex(hex))
}

fn reply(bytes: &[u8], ts: u64) -> Datagram {
    datagram(RESPONDER, REQUESTER, ts, bytes)
}

fn targets(out: &[PredictedPeer], transport: PeerTransport) -> Vec<String> {
    out.iter()
        .filter(|p| p.transport == transport)
        .map(|p| {
            assert_eq!(p.channel, Channel::AzureusDht);
            assert_eq!(p.host.to_string(), "192.0.2.99");
            p.peer.to_string()
        })
        .collect()
}

fn contact(version: u8, addr: &str) -> Contact {
    Contact {
        version,
        addr: addr.parse().unwrap(),
    }
}

/// The expected values of D2/D5, field by field.
fn check_spec_values(values: Values<'_>, contact_version: u8, v: u8) {
    let vs: Vec<_> = values.iter().collect();
    assert_eq!(vs.len(), 2);
    assert_eq!(values.len(), 2);
    let expect = [
        (
            0x18bcfe540f0u64,
            &b"51413;C"[..],
            "192.0.2.20:11273",
            0x01u8,
        ),
        (
            0x18bcfe519e0,
            &b"203.0.113.77:6881;6882"[..],
            "192.0.2.21:40000",
            0x02,
        ),
    ];
    for (got, (created, bytes, origin, flags)) in vs.iter().zip(expect) {
        assert_eq!(got.version, 1);
        assert_eq!(got.created_ms, created);
        assert_eq!(got.bytes, bytes);
        assert_eq!(got.originator, contact(contact_version, origin));
        assert_eq!(got.flags, flags);
        assert_eq!(got.life_hours, (v >= 23).then_some(0));
        assert_eq!(got.replication_control, Some(0xff));
    }
    // As BiglyBT's `DHTTrackerPlugin` reads these two values.
    let p1 = parse_peer_value(vs[0].bytes).unwrap();
    assert_eq!(
        p1,
        PeerValue {
            ip: None,
            tcp_port: 51413,
            crypto_required: true,
            i2p: false,
            udp_port: None
        }
    );
    let (tcp, udp) = p1.endpoints(&vs[0]);
    assert_eq!(
        (tcp.to_string(), udp.to_string()),
        ("192.0.2.20:51413".into(), "192.0.2.20:11273".into())
    );
    let p2 = parse_peer_value(vs[1].bytes).unwrap();
    assert_eq!(p2.ip, Some(Ipv4Addr::new(203, 0, 113, 77)));
    assert_eq!((p2.tcp_port, p2.udp_port), (6881, Some(6882)));
    assert!(!p2.crypto_required);
    let (tcp, udp) = p2.endpoints(&vs[1]);
    assert_eq!(
        (tcp.to_string(), udp.to_string()),
        ("203.0.113.77:6881".into(), "203.0.113.77:6882".into())
    );
}

const SPEC_TCP: [&str; 2] = ["192.0.2.20:51413", "203.0.113.77:6881"];
const SPEC_UDP: [&str; 2] = ["192.0.2.20:11273", "203.0.113.77:6882"];

#[test]
fn spec_d1_find_value_request_v50() {
    let raw = unhex(D1);
    assert_eq!(raw.len(), 65);
    assert!(looks_like_vuze(&raw));
    let Message::Request(q) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        q.header,
        RequestHeader {
            connection_id: CONN,
            action: Action::RequestFindValue,
            txid: 0x00c0_ffee,
            version: 50,
            vendor: 0,
            network: 0,
            originator_version: 50,
            originator: REQUESTER.parse().unwrap(),
            instance: 0x1122_3344,
            time_ms: 1_700_000_000_000,
            flags: None,
            flags2: None,
        }
    );
    assert_eq!(
        q.body,
        RequestBody::FindValue(FindValueRequest {
            key: &unhex(KEY),
            flags: 0,
            max_values: 16
        })
    );
    assert_eq!(q.trailing, 0);
}

#[test]
fn spec_d2_find_value_reply_with_values_v50() {
    let raw = unhex(D2);
    assert_eq!(raw.len(), 112);
    assert!(looks_like_vuze(&raw));
    let Message::Reply(r) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(
        r.header,
        ReplyHeader {
            action: Action::ReplyFindValue,
            txid: 0x00c0_ffee,
            connection_id: CONN,
            version: 50,
            vendor: 0,
            network: 0,
            instance: 0x5566_7788,
            flags: None,
            flags2: None,
            processing_time_ms: None,
        }
    );
    let ReplyBody::FindValue(f) = r.body else {
        panic!()
    };
    assert!(!f.has_continuation);
    let FindValueResult::Values {
        diversification,
        values,
    } = f.result
    else {
        panic!()
    };
    assert_eq!(diversification, 1);
    check_spec_values(values, 0x32, 50);
    assert_eq!(r.trailing, 0);
    assert!(r.contacts().is_none());

    // Through the tracker, answering D1: the expected targets for 192.0.2.99.
    let mut t = legacy();
    assert!(feed(&mut t, &request(D1, 0)).is_empty());
    let out = feed(&mut t, &reply(&raw, 1));
    assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
    assert_eq!(targets(&out, PeerTransport::Udp), SPEC_UDP);
    let s = t.stats();
    assert_eq!((s.requests, s.find_value_requests), (1, 1));
    assert_eq!(
        (s.replies, s.value_replies, s.matched, s.unmatched),
        (1, 1, 1, 0)
    );
    assert_eq!((s.values.decoded, s.predicted_peers), (2, 4));
    assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
    assert_eq!(s.pending.len, 0);
}

#[test]
fn spec_d3_find_node_reply_v50() {
    let raw = unhex(D3);
    assert_eq!(raw.len(), 77);
    assert!(looks_like_vuze(&raw));
    let Message::Reply(r) = parse(&raw).unwrap() else {
        panic!()
    };
    assert_eq!(r.header.action, Action::ReplyFindNode);
    assert_eq!(r.header.txid, 0x00c0_ffef);
    assert_eq!(r.header.connection_id, CONN);
    assert_eq!((r.header.version, r.header.network), (50, 0));
    let ReplyBody::FindNode(f) = r.body else {
        panic!()
    };
    assert_eq!(
        (f.spoof_id, f.node_status, f.estimated_size),
        (0x0bad_f00d, 1, 1_000_000)
    );
    let pos: Vec<_> = f.positions.iter().collect();
    assert_eq!(pos.len(), 1);
    assert_eq!(pos[0].kind, 1);
    assert_eq!(pos[0].vivaldi(), Some([1.0, 2.0, 3.0, 4.0]));
    let cs: Vec<_> = f.contacts.iter().collect();
    assert_eq!(
        cs,
        [
            contact(0x32, "192.0.2.30:11273"),
            contact(0x32, "192.0.2.31:6881")
        ]
    );
    // No request with txid 00c0ffef in the vectors: unmatched, still predicts (UDP only).
    let mut t = legacy();
    let out = feed(&mut t, &reply(&raw, 0));
    assert_eq!(
        targets(&out, PeerTransport::Udp),
        ["192.0.2.30:11273", "192.0.2.31:6881"]
    );
    assert!(targets(&out, PeerTransport::Tcp).is_empty());
    let s = t.stats();
    assert_eq!(
        (s.find_node_replies, s.unmatched, s.predicted_contacts),
        (1, 1, 2)
    );
    assert_eq!(s.contacts.decoded, 2);
}

#[test]
fn spec_d4_find_value_request_v55_biglybt() {
    let raw = unhex(D4);
    assert_eq!(raw.len(), 67);
    assert!(looks_like_vuze(&raw));
    let q = parse_request(&raw).unwrap();
    assert_eq!(q.header.action, Action::RequestFindValue);
    assert_eq!((q.header.connection_id, q.header.txid), (CONN, 0x00c0_ffee));
    assert_eq!((q.header.version, q.header.vendor), (55, 0));
    assert_eq!((q.header.network, q.header.originator_version), (4, 55));
    assert_eq!(q.header.originator, REQUESTER.parse().unwrap());
    assert_eq!(
        (q.header.instance, q.header.time_ms),
        (0x1122_3344, 1_700_000_000_000)
    );
    assert_eq!((q.header.flags, q.header.flags2), (Some(0), Some(0)));
    let RequestBody::FindValue(f) = q.body else {
        panic!()
    };
    assert_eq!((f.key, f.flags, f.max_values), (&unhex(KEY)[..], 0, 16));
}

#[test]
fn spec_d5_find_value_reply_v55_with_processing_time() {
    let raw = d5();
    assert_eq!(raw.len(), 116);
    assert!(looks_like_vuze(&raw));
    let r = parse_reply(&raw).unwrap();
    assert_eq!(r.header.action, Action::ReplyFindValue);
    assert_eq!((r.header.txid, r.header.connection_id), (0x00c0_ffee, CONN));
    assert_eq!(
        (r.header.version, r.header.vendor, r.header.network),
        (55, 0, 4)
    );
    assert_eq!(r.header.instance, 0x5566_7788);
    assert_eq!((r.header.flags, r.header.flags2), (Some(0), Some(0)));
    assert_eq!(r.header.processing_time_ms, Some(3));
    check_spec_values(r.values().unwrap(), 0x37, 55);

    // Default config: the v50 vectors are dropped as current BiglyBT drops them; D4/D5
    // give the expected targets.
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    let mut out = Vec::new();
    for d in [
        request(D1, 0),
        reply(&unhex(D2), 1),
        reply(&unhex(D3), 2),
        request(D4, 3),
        reply(&raw, 4),
    ] {
        out.extend(feed(&mut t, &d));
    }
    assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
    assert_eq!(targets(&out, PeerTransport::Udp), SPEC_UDP);
    let s = t.stats();
    assert_eq!(s.counts.seen, 5);
    assert_eq!(s.counts.parsed, 2);
    assert_eq!(
        s.counts.rejected,
        std::collections::BTreeMap::from([("old_version", 3)])
    );
    assert_eq!((s.matched, s.unmatched), (1, 0));
}

#[test]
fn every_truncation_is_rejected() {
    for v in [unhex(D1), unhex(D2), unhex(D3), unhex(D4), d5()] {
        assert!(parse(&v).is_ok());
        for cut in 0..v.len() {
            assert!(parse(&v[..cut]).is_err(), "prefix {cut} of {v:02x?} parsed");
        }
    }
    // Snap-truncated datagrams are not parsed at all.
    let mut d = reply(&d5(), 0);
    d.payload_len += 10;
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    assert!(feed(&mut t, &d).is_empty());
    assert_eq!(t.stats().counts.rejected.get("incomplete"), Some(&1));
}

#[test]
fn malformed_headers_are_rejected_with_a_reason() {
    let d1 = unhex(D1);
    let d5 = d5();
    let edit = |v: &[u8], at: usize, b: &[u8]| {
        let mut v = v.to_vec();
        v[at..at + b.len()].copy_from_slice(b);
        v
    };
    let cases: Vec<(Vec<u8>, Reject)> = vec![
        // Request connection id without the MSB (so read as a reply: a bad action).
        (edit(&d1, 0, &[0x1a]), Reject::BadAction),
        // A reply echoing a connection id without the MSB.
        (edit(&d5, 8, &[0x1a]), Reject::BadConnectionId),
        // Actions: out of range, a reply code in a request, a request code in a reply.
        (edit(&d1, 8, &[0, 0, 4, 0x10]), Reject::BadAction),
        (edit(&d1, 8, &[0, 0, 4, 0x07]), Reject::BadAction),
        (edit(&d5, 0, &[0, 0, 4, 0x06]), Reject::BadAction),
        (edit(&d5, 0, &[0, 0, 3, 0xff]), Reject::BadAction),
        // Versions outside 15..=127.
        (edit(&d1, 16, &[14]), Reject::UnsupportedVersion),
        (edit(&d1, 16, &[0x80]), Reject::UnsupportedVersion),
        (edit(&d5, 16, &[0xff]), Reject::UnsupportedVersion),
        // Originator address length 5, then 0.
        (edit(&d1, 23, &[5]), Reject::BadAddress),
        (edit(&d1, 23, &[0]), Reject::BadAddress),
        // Key length 65.
        (edit(&d1, 42, &[65]), Reject::TooLong),
        // First value: length 513 (max 512), then its originator contact of type 2.
        (edit(&d5, 35 + 12, &[0x02, 0x01]), Reject::TooLong),
        (edit(&d5, 35 + 21, &[2]), Reject::BadContactType),
        // Value count the datagram cannot hold.
        (edit(&d5, 33, &[0xff, 0xff]), Reject::BadCount),
    ];
    for (raw, want) in cases {
        assert_eq!(parse(&raw).err(), Some(want), "{raw:02x?}");
    }
    // The request-side MSB test on its own.
    assert_eq!(
        parse_request(&edit(&d1, 0, &[0x1a])).err(),
        Some(Reject::BadConnectionId)
    );
    assert_eq!(parse_reply(&d1).err(), Some(Reject::BadAction));
}

#[test]
fn hostile_counts_are_bounded() {
    // D3 announcing 65,535 contacts with 2 present, or 255 network positions.
    let d3 = unhex(D3);
    let mut raw = d3.clone();
    raw[57..59].copy_from_slice(&[0xff, 0xff]);
    assert_eq!(parse(&raw).err(), Some(Reject::BadCount));
    let mut raw = d3.clone();
    raw[38] = 0xff;
    assert_eq!(parse(&raw).err(), Some(Reject::BadCount));
    // 7,000 real contacts (a 63 KB datagram): all validated, predictions capped.
    let mut big = d3[..57].to_vec();
    big.extend_from_slice(&7_000u16.to_be_bytes());
    for i in 0..7_000u32 {
        big.extend_from_slice(&[
            1,
            0x37,
            4,
            10,
            0,
            i.to_be_bytes()[2],
            i.to_be_bytes()[3],
            0x1a,
            0xe1,
        ]);
    }
    let r = parse_reply(&big).unwrap();
    assert_eq!(r.contacts().unwrap().iter().count(), 7_000);
    let mut t = legacy();
    let out = feed(&mut t, &reply(&big, 0));
    assert_eq!(out.len(), MAX_ENTRIES);
    let c = t.stats().contacts;
    assert_eq!(
        (c.decoded, c.capped),
        (MAX_ENTRIES as u64, 7_000 - MAX_ENTRIES as u64)
    );
}

#[test]
fn peer_value_syntax_is_strict() {
    let pv = |ip: Option<&str>, tcp_port, crypto_required, i2p, udp_port| PeerValue {
        ip: ip.map(|i| i.parse().unwrap()),
        tcp_port,
        crypto_required,
        i2p,
        udp_port,
    };
    let ok = [
        ("51413;C", pv(None, 51413, true, false, None)),
        (
            "203.0.113.77:6881;6882",
            pv(Some("203.0.113.77"), 6881, false, false, Some(6882)),
        ),
        ("6881", pv(None, 6881, false, false, None)),
        ("1", pv(None, 1, false, false, None)),
        ("65535;CI;1", pv(None, 65535, true, true, Some(1))),
        (
            "10.0.0.1:6881;I",
            pv(Some("10.0.0.1"), 6881, false, true, None),
        ),
        ("6881;X", pv(None, 6881, false, false, None)),
    ];
    for (s, want) in ok {
        assert_eq!(parse_peer_value(s.as_bytes()), Some(want), "{s}");
    }
    for bad in [
        "",
        "0",
        "65536",
        "123456",
        "6881;",
        ";6881",
        "6881;C;",
        "6881;6882;C",
        "6881;C;D",
        "6881;1;2",
        "6881;0",
        "6881;70000",
        "+6881",
        "-1",
        " 6881",
        "6881 ",
        "a:6881",
        "example.com:6881",
        "2001:db8::1:6881",
        "[2001:db8::1]:6881",
        "1.2.3:6881",
        "1.2.3.4:",
        "1.2.3.4:0",
        ":6881",
        "6881;C1",
        "6881;\u{e9}",
        "d1:ae",
        "\u{0}\u{1}\u{2}",
    ] {
        assert_eq!(parse_peer_value(bad.as_bytes()), None, "{bad:?}");
    }
    assert_eq!(parse_peer_value(&[0xff, 0x36]), None);
}

/// D5 with the first value's bytes replaced (same length, 7 bytes).
fn d5_with_first_value(bytes: [u8; 7]) -> Vec<u8> {
    let mut v = d5();
    v[35 + 14..35 + 21].copy_from_slice(&bytes);
    v
}

#[test]
fn non_torrent_values_are_counted_not_used() {
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    feed(&mut t, &request(D4, 0));
    let out = feed(&mut t, &reply(&d5_with_first_value(*b"\x00\x01binar"), 1));
    assert_eq!(targets(&out, PeerTransport::Tcp), ["203.0.113.77:6881"]);
    let s = t.stats();
    assert_eq!((s.values.decoded, s.non_torrent_values), (2, 1));
    assert_eq!(s.predicted_peers, 2);
}

#[test]
fn learner_and_port_zero_are_dropped() {
    // First value at the learner's own originator address (`192.0.2.99:51413` would not
    // fit in 7 bytes: the override is absent, so its originator contact is patched to
    // 192.0.2.99); second value's TCP port 0 is no value at all.
    let mut raw = d5();
    raw[35 + 24..35 + 28].copy_from_slice(&[192, 0, 2, 99]);
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    feed(&mut t, &request(D4, 0));
    let out = feed(&mut t, &reply(&raw, 1));
    assert_eq!(targets(&out, PeerTransport::Tcp), ["203.0.113.77:6881"]);
    assert_eq!(t.stats().values.own_address, 1);

    // Unmatched, the request's originator is unknown; the learner's address still counts.
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    let out = feed(&mut t, &reply(&raw, 1));
    assert_eq!(out.len(), 2);

    // The request's originator address (the requester's external address behind NAT) is
    // the learner too: a value there is its own registration.
    let mut nat = unhex(D4);
    nat[24..28].copy_from_slice(&[198, 51, 100, 7]);
    let mut raw = d5();
    raw[35 + 24..35 + 28].copy_from_slice(&[198, 51, 100, 7]);
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    feed(&mut t, &datagram(REQUESTER, RESPONDER, 0, &nat));
    let out = feed(&mut t, &reply(&raw, 1));
    assert_eq!(targets(&out, PeerTransport::Tcp), ["203.0.113.77:6881"]);
    assert_eq!(t.stats().values.own_address, 1);

    // An originator on port 0 with no explicit UDP port: TCP only.
    let mut raw = d5();
    raw[35 + 28..35 + 30].copy_from_slice(&[0, 0]);
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    let out = feed(&mut t, &reply(&raw, 1));
    assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
    assert_eq!(targets(&out, PeerTransport::Udp), ["203.0.113.77:6882"]);
}

#[test]
fn replies_match_by_pair_txid_and_connection_id() {
    let d5 = d5();
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    feed(&mut t, &request(D4, 0));
    // Another connection id, then another responder: not the pending request.
    let mut other_conn = d5.clone();
    other_conn[15] ^= 1;
    feed(&mut t, &reply(&other_conn, 1));
    feed(&mut t, &datagram("192.0.2.2:11273", REQUESTER, 1, &d5));
    // A FIND_NODE reply with that txid does not answer a FIND_VALUE request.
    let mut d3 = unhex(D3);
    d3[7] = 0xee;
    d3[16..22].copy_from_slice(&[55, 0, 0, 0, 0, 4]);
    let d3_v55 = {
        let mut v = d3[..26].to_vec();
        v.extend_from_slice(&[0, 0, 0, 1]);
        v.extend_from_slice(&d3[26..]);
        v
    };
    assert!(parse_reply(&d3_v55).is_ok());
    feed(&mut t, &reply(&d3_v55, 1));
    let s = t.stats();
    assert_eq!((s.matched, s.unmatched), (0, 3));
    assert_eq!((s.connection_id_mismatch, s.action_mismatch), (1, 1));
    assert_eq!(s.pending.len, 1);
    // The right one matches once; a duplicate is unmatched.
    assert_eq!(feed(&mut t, &reply(&d5, 2)).len(), 4);
    feed(&mut t, &reply(&d5, 2));
    let s = t.stats();
    assert_eq!((s.matched, s.unmatched, s.pending.len), (1, 4, 0));
    // An error reply answers any request.
    feed(&mut t, &request(D4, 3));
    let mut err = d5[..30].to_vec();
    err[3] = 0x08;
    err.extend_from_slice(&[0, 0, 0, 3]);
    assert!(feed(&mut t, &reply(&err, 4)).is_empty());
    let s = t.stats();
    assert_eq!((s.matched, s.error_replies, s.pending.len), (2, 1, 0));
}

#[test]
fn continuation_keeps_the_request_open() {
    let mut cont = d5();
    cont[30] = 1;
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    feed(&mut t, &request(D4, 0));
    assert_eq!(feed(&mut t, &reply(&cont, 1)).len(), 4);
    assert_eq!(t.stats().pending.len, 1);
    assert_eq!(feed(&mut t, &reply(&d5(), 2)).len(), 4);
    let s = t.stats();
    assert_eq!((s.matched, s.continued, s.pending.len), (2, 1, 0));
}

#[test]
fn unmatched_replies_can_be_ignored() {
    let mut t = VuzeDht::new(VuzeDhtConfig {
        predict_unmatched: false,
        ..Default::default()
    });
    assert!(feed(&mut t, &reply(&d5(), 0)).is_empty());
    feed(&mut t, &request(D4, 1));
    assert_eq!(feed(&mut t, &reply(&d5(), 2)).len(), 4);
    let s = t.stats();
    assert_eq!((s.unmatched_ignored, s.matched, s.counts.parsed), (1, 1, 3));
}

#[test]
fn pending_requests_expire_and_are_capped() {
    let mut t = VuzeDht::new(VuzeDhtConfig {
        max_pending: 4,
        ..Default::default()
    });
    feed(&mut t, &request(D4, 0));
    feed(&mut t, &reply(&d5(), 61));
    let s = t.stats();
    assert_eq!((s.matched, s.unmatched, s.pending.expired), (0, 1, 1));
    for i in 0..10u8 {
        let mut q = unhex(D4);
        q[15] = i;
        feed(&mut t, &datagram(REQUESTER, RESPONDER, 100, &q));
    }
    // One requester holds at most its share: the rest is refused, not evicted.
    assert_eq!((t.stats().pending.len, t.stats().pending.evicted), (1, 0));
    assert_eq!(t.pending.fair_stats().host_share, 9);
    t.expire(Timestamp::from_secs(1_000));
    assert_eq!(t.stats().pending.len, 0);
    // Requests without a reply (DATA) are not remembered.
    let mut data = unhex(D4);
    data[11] = 0x0b;
    feed(&mut t, &datagram(REQUESTER, RESPONDER, 1_000, &data));
    assert_eq!(t.stats().pending.len, 0);
    assert_eq!(t.stats().requests, 12);
}

#[test]
fn ipv6_originator_and_trailing_bytes() {
    // D4 with a 16-byte originator address (offsets after 23 shift by 12) and 2 bytes
    // after max_values.
    let d4 = unhex(D4);
    let mut v = d4[..23].to_vec();
    v.extend_from_slice(&unhex("10 20010db8000000000000000000000063 2c09"));
    v.extend_from_slice(&d4[30..]);
    v.extend_from_slice(&[0xaa, 0xbb]);
    let q = parse_request(&v).unwrap();
    assert_eq!(q.header.originator, "[2001:db8::63]:11273".parse().unwrap());
    assert_eq!(q.header.instance, 0x1122_3344);
    assert_eq!((q.header.flags, q.header.flags2), (Some(0), Some(0)));
    assert_eq!(q.trailing, 2);
    let mut t = VuzeDht::new(VuzeDhtConfig::default());
    feed(&mut t, &datagram(REQUESTER, RESPONDER, 0, &v));
    assert_eq!(t.stats().trailing_bytes, 1);
}

#[test]
fn shape_check_follows_f5() {
    for v in [unhex(D1), unhex(D2), unhex(D3), unhex(D4), d5()] {
        assert!(looks_like_vuze(&v));
    }
    let d1 = unhex(D1);
    assert!(!looks_like_vuze(&d1[..41]));
    assert!(!looks_like_vuze(&unhex(D3)[..25]));
    // BEP 15 connect request and responses, KRPC, uTP SYN.
    for other in [
        unhex("0000041727101980 00000000 12345678 00000000000000000000000000000000000000"),
        unhex("00000001 12345678 0000070800000005000000030a0000011ae1 000000000000"),
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe".to_vec(),
        unhex("4100530210eeb2f0000000000000000000e7f5000000000000000000000000000000"),
    ] {
        assert!(!looks_like_vuze(&other), "{other:02x?}");
    }
}

#[test]
fn through_coordination() {
    use crate::bt::Coordination;
    let mut c = Coordination::default();
    let mut out = Vec::new();
    for d in [request(D4, 0), reply(&d5(), 1)] {
        let (ev, udp) = d.event();
        c.on_udp(&ev, &udp, &mut out, &mut Vec::new());
    }
    assert_eq!(targets(&out, PeerTransport::Tcp), SPEC_TCP);
    let vuze = c.channel::<VuzeDht>().unwrap().stats();
    assert_eq!((vuze.counts.seen, vuze.matched), (2, 1));
    // No other channel claimed a Vuze datagram.
    let others: u64 = c
        .counts()
        .iter()
        .filter(|(name, _)| *name != "vuze_dht")
        .map(|(_, k)| k.seen)
        .sum();
    assert_eq!(others, 0);
}

#[test]
fn reject_names_are_stable() {
    assert_eq!(Reject::Incomplete.as_str(), "incomplete");
    assert_eq!(Reject::Truncated.as_str(), "truncated");
    assert_eq!(Reject::BadConnectionId.as_str(), "bad_connection_id");
    assert_eq!(Reject::BadAction.as_str(), "bad_action");
    assert_eq!(Reject::UnsupportedVersion.as_str(), "unsupported_version");
    assert_eq!(Reject::OldVersion.as_str(), "old_version");
    assert_eq!(Reject::BadAddress.as_str(), "bad_address");
    assert_eq!(Reject::BadContactType.as_str(), "bad_contact_type");
    assert_eq!(Reject::TooLong.as_str(), "too_long");
    assert_eq!(Reject::BadCount.as_str(), "bad_count");
}

mod corpus {
    use super::*;
    use crate::bt::test_support::udp_datagrams;

    #[test]
    fn other_channels_captures_hold_no_vuze_shape() {
        // CATALOG.md: no Vuze DHT traffic in any shared capture, so every match would be a
        // false positive (a datagram another channel, or nobody, should read).
        let mut datagrams = 0;
        let mut f5_only = 0;
        for rel in [
            "ntop-nDPI/bittorrent_transmission.pcapng",
            "terezaburianova-VUT-PDS/small.pcap",
            "goncalo-rodrigues-360BitScoping/small_torrent.pcap",
            "goncalo-rodrigues-360BitScoping/model_streams__in_the_middle__MERGED.pcap",
            "goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap",
            "goncalo-rodrigues-360BitScoping/model_streams__2_torrents-11.3k_each__MERGED.pcap",
            "ntop-nDPI/bittorrent_utp.pcap",
            "ntop-nDPI/bt_search.pcap",
            "ntop-nDPI/gnutella.pcap",
            "ntop-nDPI/wechat.pcap",
            "ntop-nDPI/teams.pcap",
            "ntop-nDPI/alexa-app.pcapng",
            "ntop-nDPI/ethereum.pcap",
            "ntop-nDPI/lru_ipv6_caches.pcapng",
            "spaiter-BitTorrentBlocker/torrent-dht.pcap",
            "OISF-suricata-verify/bittorrent-dht/input.pcap",
            "OISF-suricata-verify/tls-subjectaltname/input.pcap",
            "cisco-mercury/bittorrent.pcap",
            "arkime-arkime/bt-udp.pcap",
            "markofu-pcaps/UDP_SCAN.pcap",
            "esnet-security-curated-pcaps/udp_0_1000_20190821.pcap",
            "stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap",
            "markofu-pcaps/xscan_capture.pcap",
        ] {
            for d in udp_datagrams(rel) {
                datagrams += 1;
                assert!(!looks_like_vuze(&d.head), "{rel}: {d:?}");
                assert!(parse(&d.head).is_err(), "{rel}: {d:?}");
                // The framing test alone, without the version byte (reported, not asserted).
                let h = &d.head;
                let be32 = |at: usize| crate::bt::wire::be32_at(h, at);
                let req = h.len() >= 42
                    && h[0] & 0x80 != 0
                    && be32(8).is_some_and(|a| (1024..=1039).contains(&a));
                let rep = h.len() >= 26
                    && h[8] & 0x80 != 0
                    && be32(0).is_some_and(|a| {
                        [1025, 1027, 1029, 1031, 1032, 1033, 1037, 1039].contains(&a)
                    });
                f5_only += u64::from(req || rep);
            }
        }
        assert!(datagrams > 10_000, "{datagrams}");
        eprintln!("{datagrams} datagrams, 0 Vuze-shaped; F5 without the version test: {f5_only}");
    }
}

#[test]
fn through_the_channel_trait() {
    let mut c: Box<dyn crate::bt::channel::Channel> =
        Box::new(VuzeDht::new(VuzeDhtConfig::default()));
    assert_eq!(c.name(), "vuze_dht");
    let mut predictions = Vec::new();
    let mut retracted = Vec::new();
    let d4 = request(D4, 0);
    let d5 = reply(&d5(), 1);
    // A v50 request decodes but current clients drop it: no BitTorrent sender.
    let d1 = request(D1, 2);
    let mut senders = Vec::new();
    for d in [&d4, &d5, &d1] {
        let (ev, udp) = d.event();
        assert!(c.claims(&ev, &udp));
        let mut out = Learnt {
            predictions: &mut predictions,
            retracted: &mut retracted,
        };
        senders.push(c.on_udp(&ev, &udp, &mut out));
    }
    assert_eq!(
        senders,
        [Sender::BitTorrent, Sender::BitTorrent, Sender::Unknown]
    );
    assert_eq!(targets(&predictions, PeerTransport::Tcp), SPEC_TCP);
    assert_eq!(targets(&predictions, PeerTransport::Udp), SPEC_UDP);
    let krpc = datagram(
        REQUESTER,
        RESPONDER,
        3,
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
    );
    let (ev, udp) = krpc.event();
    assert!(!c.claims(&ev, &udp));
    let mut counts = Vec::new();
    c.counts(&mut |name, n| counts.push((name, n.seen, n.parsed)));
    assert_eq!(counts, [("vuze_dht", 3, 2)]);
    let mut tables = Vec::new();
    c.tables(&mut |name, t| tables.push((name, t.len)));
    assert_eq!(tables, [("vuze_dht_requests", 0)]);
    assert_eq!(c.stats_json()["matched"], 1);
    c.expire(Timestamp::from_secs(1_000));
    let t = c.downcast_ref::<VuzeDht>().unwrap();
    assert_eq!(t.stats().counts.rejected.get("old_version"), Some(&1));
}
