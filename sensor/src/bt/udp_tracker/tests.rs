use super::*;

use crate::bt::channel::{Learnt, Sender};
use crate::bt::test_support::{datagram, unhex, Datagram};

// BEP 15 layouts filled with the values of libtorrent's fake tracker (`test/udp_tracker.cpp`:
// connection id 10, interval 1800, one leecher, one seeder, peer 127.0.0.2 or ::1 port 1337).
const D1: &str = "00000417271019800000000012345678";
const D2: &str = "0000000012345678000000000000000a";
const D3: &str = "000000000000000a0000000112345679
    e4be9e4db876e3e3179778b03e906297be5c8dbe 2d4445313346302d566e705a5246385a50396976
    0000000000000000 00000000728d0000 0000000000000000
    00000002 00000000 764ca003 000000c8 f7d8";
const D4: &str = "00000001123456790000070800000001000000017f0000020539";
const D5: &str = "0000000112345679000007080000000100000001000000000000000000000000000000010539";
const D6: &str = "0000000412345679000007080000000100000001000000000000000000000000000000010539";
const D7: &str = "0000000312345679756e7265676973746572656420746f7272656e74";

const HOST: &str = "10.0.0.201:63448";
const TRACKER: &str = "198.51.100.1:6969";
const HOST6: &str = "[2001:db8::10]:63448";
const TRACKER6: &str = "[2001:db8::1]:6969";

fn feed(t: &mut UdpTracker, d: &Datagram) -> Vec<PredictedPeer> {
    let (ev, udp) = d.event();
    let mut out = Vec::new();
    if shape(udp.head).is_some() {
        t.on_udp(&ev, &udp, &mut out);
    }
    out
}

fn up(ts: u64, hex: &str) -> Datagram {
    datagram(HOST, TRACKER, ts, &unhex(hex))
}

fn down(ts: u64, hex: &str) -> Datagram {
    datagram(TRACKER, HOST, ts, &unhex(hex))
}

fn peers(out: &[PredictedPeer], transport: PeerTransport) -> Vec<String> {
    out.iter()
        .filter(|p| p.transport == transport)
        .map(|p| {
            assert_eq!(p.channel, Channel::UdpTracker);
            p.peer.to_string()
        })
        .collect()
}

/// An announce request for `txid` with connection id 10 (D3's layout).
fn announce(txid: u32) -> String {
    let mut a = unhex(D3);
    a[12..16].copy_from_slice(&txid.to_be_bytes());
    hex::encode(a)
}

/// An announce response for `txid` listing 192.0.2.1:6881.
fn announced(txid: u32) -> String {
    format!("00000001{txid:08x}000007080000000100000001c00002011ae1")
}

#[test]
fn spec_d1_to_d4_connect_then_announce() {
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    assert_eq!(shape(&unhex(D1)), Some(Shape::ConnectRequest));
    assert!(feed(&mut t, &up(0, D1)).is_empty());
    assert!(feed(&mut t, &down(0, D2)).is_empty());
    let d3 = unhex(D3);
    let Request::Announce(a) = parse_request(&d3).unwrap() else {
        panic!()
    };
    assert_eq!(
        (a.connection_id, a.txid, a.event),
        (10, 0x1234_5679, Event::Started)
    );
    assert_eq!(a.peer_id, b"-DE13F0-VnpZRF8ZP9iv");
    assert_eq!(
        (a.left, a.num_want, a.port, a.key),
        (1_921_843_200, 200, 63448, 0x764c_a003)
    );
    assert_eq!(a.ip, Ipv4Addr::UNSPECIFIED);
    assert!(feed(&mut t, &up(1, D3)).is_empty());
    let out = feed(&mut t, &down(1, D4));
    assert_eq!(peers(&out, PeerTransport::Tcp), ["127.0.0.2:1337"]);
    assert_eq!(peers(&out, PeerTransport::Udp), ["127.0.0.2:1337"]);
    assert!(out.iter().all(|p| p.host.to_string() == "10.0.0.201"));
    let s = t.stats();
    assert_eq!((s.connect_requests, s.connect_responses), (1, 1));
    assert_eq!((s.announce_requests, s.announce_responses), (1, 1));
    assert_eq!((s.connection_id_verified, s.predicted), (1, 2));
    assert_eq!((s.counts.seen, s.counts.parsed), (4, 4));
    let d4 = unhex(D4);
    let Response::Announce(r) = parse_response(&d4, 26, false).unwrap() else {
        panic!()
    };
    assert_eq!(
        (r.interval, r.leechers, r.seeders, r.entries),
        (1800, 1, 1, 1)
    );
}

#[test]
fn spec_d5_d6_ipv6_entries_and_action_4() {
    for resp in [D5, D6] {
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        feed(&mut t, &datagram(HOST6, TRACKER6, 0, &unhex(D3)));
        let out = feed(&mut t, &datagram(TRACKER6, HOST6, 0, &unhex(resp)));
        assert_eq!(peers(&out, PeerTransport::Tcp), ["[::1]:1337"]);
        assert_eq!(out[0].host.to_string(), "2001:db8::10");
        assert_eq!(t.stats().connection_id_unseen, 1);
    }
    // Action 4 has no IPv4 layout.
    assert_eq!(
        parse_response(&unhex(D6), 38, false),
        Err(Reject::Action4OverIpv4)
    );
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    feed(&mut t, &up(0, D3));
    assert!(feed(&mut t, &down(0, D6)).is_empty());
    assert_eq!(t.stats().counts.rejected.get("action4_over_ipv4"), Some(&1));
}

#[test]
fn spec_d7_error_predicts_nothing() {
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    feed(&mut t, &up(0, D3));
    assert!(feed(&mut t, &down(0, D7)).is_empty());
    assert_eq!(
        parse_response(&unhex(D7), 28, false),
        Ok(Response::Error {
            txid: 0x1234_5679,
            message: b"unregistered torrent"
        })
    );
    assert_eq!(t.stats().errors, 1);
}

#[test]
fn announce_without_connect_is_accepted_mid_session() {
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    feed(&mut t, &up(0, &announce(7)));
    let out = feed(&mut t, &down(0, &announced(7)));
    assert_eq!(peers(&out, PeerTransport::Tcp), ["192.0.2.1:6881"]);
    assert_eq!(t.stats().connection_id_unseen, 1);
}

#[test]
fn connection_ids_must_match_the_trackers() {
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    feed(&mut t, &up(0, D1));
    feed(&mut t, &down(0, D2)); // connection id 10
    let mut other = unhex(&announce(8));
    other[7] = 11;
    feed(&mut t, &datagram(HOST, TRACKER, 1, &other));
    assert!(feed(&mut t, &down(1, &announced(8))).is_empty());
    let s = t.stats();
    assert_eq!(s.counts.rejected.get("connection_id_mismatch"), Some(&1));
    assert_eq!(s.counts.rejected.get("unmatched_transaction"), Some(&1));
    // Past its lifetime the id is forgotten: a later announce is accepted as unseen.
    feed(&mut t, &datagram(HOST, TRACKER, 200, &other));
    assert_eq!(feed(&mut t, &down(200, &announced(8))).len(), 2);
    assert_eq!(t.stats().connection_id_unseen, 1);
}

#[test]
fn responses_must_answer_a_pending_request() {
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    // No request on the flow: not even seen.
    assert!(feed(&mut t, &down(0, &announced(9))).is_empty());
    assert_eq!(t.stats().counts.seen, 0);
    feed(&mut t, &up(0, &announce(9)));
    // Another transaction id, another tracker, the wrong action.
    assert!(feed(&mut t, &down(0, &announced(10))).is_empty());
    assert!(feed(
        &mut t,
        &datagram("198.51.100.2:6969", HOST, 0, &unhex(&announced(9)))
    )
    .is_empty());
    feed(&mut t, &up(0, D1));
    assert!(feed(&mut t, &down(0, "0000000112345678000007080000000100000001")).is_empty());
    let s = t.stats();
    assert_eq!(s.counts.rejected.get("unmatched_transaction"), Some(&1));
    assert_eq!(s.counts.rejected.get("action_mismatch"), Some(&1));
    // The right one still matches, once.
    assert_eq!(feed(&mut t, &down(1, &announced(9))).len(), 2);
    assert!(feed(&mut t, &down(1, &announced(9))).is_empty());
    assert_eq!(
        t.stats().counts.rejected.get("unmatched_transaction"),
        Some(&2)
    );
}

#[test]
fn pending_requests_expire_and_are_capped() {
    let mut t = UdpTracker::new(UdpTrackerConfig {
        max_pending: 2,
        ..Default::default()
    });
    feed(&mut t, &up(0, &announce(1)));
    assert!(feed(&mut t, &down(61, &announced(1))).is_empty());
    assert_eq!(t.stats().pending.expired, 1);
    for txid in 10..15 {
        feed(&mut t, &up(100, &announce(txid)));
    }
    // One host holds at most its share (one of two here): the rest is refused, not evicted.
    assert_eq!((t.stats().pending.len, t.stats().pending.evicted), (1, 0));
    assert_eq!(t.pending.fair_stats().host_share, 4);
    assert!(feed(&mut t, &down(100, &announced(14))).is_empty());
    assert_eq!(feed(&mut t, &down(100, &announced(10))).len(), 2);
}

#[test]
fn malformed_packets_are_rejected_with_a_reason() {
    let d3 = unhex(D3);
    let mut bad_event = d3.clone();
    bad_event[83] = 7;
    assert_eq!(parse_request(&bad_event), Err(Reject::BadEvent));
    for (opts, ok) in [
        (&b""[..], true),
        (b"\x01\x01\x00garbage", true),
        (b"\x02\x03abc\x09\x01x\x00", true),
        (b"\x02\xffabc", false),
        (b"\x05", false),
    ] {
        let mut p = d3.clone();
        p.extend_from_slice(opts);
        assert_eq!(parse_request(&p).is_ok(), ok, "{opts:?}");
    }
    let mut url = d3.clone();
    url.extend_from_slice(b"\x02\x02/a\x01\x02\x03?b=\x00\x02\x01x");
    let Request::Announce(a) = parse_request(&url).unwrap() else {
        panic!()
    };
    assert_eq!(a.url_data().collect::<Vec<_>>(), [&b"/a"[..], b"?b="]);
    // Peers not a whole number of entries; lengths below the header.
    let mut d4 = unhex(D4);
    d4.push(0);
    assert_eq!(parse_response(&d4, d4.len(), false), Err(Reject::BadLength));
    assert_eq!(parse_response(&unhex(D4), 26, true), Err(Reject::BadLength));
    assert_eq!(parse_response(&d4[..12], 12, false), Err(Reject::BadLength));
    assert_eq!(parse_response(&d4[..12], 12, false), Err(Reject::BadLength));
    assert_eq!(
        parse_response(b"\0\0\0\x09\0\0\0\0", 8, false),
        Err(Reject::UnknownAction)
    );
    assert_eq!(
        parse_response(&unhex(D2)[..12], 12, false),
        Err(Reject::BadLength)
    );
    assert_eq!(parse_request(&unhex(D3)[..60]), Err(Reject::NotRequest));
}

#[test]
fn every_truncation_parses_or_fails_without_panic() {
    for hex in [D1, D2, D3, D4, D5, D6, D7] {
        let v = unhex(hex);
        for cut in 0..=v.len() {
            let _ = parse_request(&v[..cut]);
            for v6 in [false, true] {
                let _ = parse_response(&v[..cut], cut, v6);
                let _ = parse_response(&v[..cut], v.len() + 1000, v6);
            }
            let _ = shape(&v[..cut]);
        }
    }
}

#[test]
fn peers_past_the_snap_length_are_counted() {
    // An IPv6 response with 200 peers (3620 bytes) captured to 1472 bytes: 80 whole
    // entries in the head.
    let mut resp = unhex("0000000100000007000007080000000100000001");
    for i in 0..200u16 {
        resp.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        resp.extend_from_slice(&i.to_be_bytes());
        resp.extend_from_slice(&[0x1a, 0xe1]);
    }
    let mut d = datagram(TRACKER6, HOST6, 0, &resp[..1472]);
    d.payload_len = u16::try_from(resp.len()).unwrap();
    let mut t = UdpTracker::new(UdpTrackerConfig::default());
    feed(&mut t, &datagram(HOST6, TRACKER6, 0, &unhex(&announce(7))));
    let out = feed(&mut t, &d);
    assert_eq!(out.len(), 160);
    let p = t.stats().peers;
    assert_eq!((p.decoded, p.beyond_snap), (80, 120));
}

#[test]
fn shape_rejects_other_udp() {
    assert_eq!(shape(b""), None);
    assert_eq!(shape(b"\x41\x00\x12\x34\0\0\0\0"), None, "uTP SYN");
    assert_eq!(shape(&[0xff; 98]), None);
    assert_eq!(shape(&unhex(D3)), Some(Shape::Request));
    assert_eq!(shape(&unhex(D4)), Some(Shape::Response));
}

#[test]
fn reject_names_are_stable() {
    assert_eq!(Reject::Incomplete.as_str(), "incomplete");
    assert_eq!(Reject::NotRequest.as_str(), "not_request");
    assert_eq!(Reject::BadEvent.as_str(), "bad_event");
    assert_eq!(Reject::BadOptions.as_str(), "bad_options");
    assert_eq!(
        Reject::ConnectionIdMismatch.as_str(),
        "connection_id_mismatch"
    );
    assert_eq!(
        Reject::UnmatchedTransaction.as_str(),
        "unmatched_transaction"
    );
    assert_eq!(Reject::ActionMismatch.as_str(), "action_mismatch");
    assert_eq!(Reject::BadLength.as_str(), "bad_length");
    assert_eq!(Reject::Action4OverIpv4.as_str(), "action4_over_ipv4");
    assert_eq!(Reject::UnknownAction.as_str(), "unknown_action");
}

#[test]
fn through_the_channel_trait() {
    let mut c: Box<dyn crate::bt::channel::Channel> =
        Box::new(UdpTracker::new(UdpTrackerConfig::default()));
    assert_eq!(c.name(), "udp_tracker");
    let mut predictions = Vec::new();
    let mut retracted = Vec::new();
    let mut senders = Vec::new();
    for d in [up(0, D1), down(0, D2), up(1, D3), down(1, D4)] {
        let (ev, udp) = d.event();
        assert!(c.claims(&ev, &udp));
        let mut out = Learnt {
            predictions: &mut predictions,
            retracted: &mut retracted,
        };
        senders.push(c.on_udp(&ev, &udp, &mut out));
    }
    // Only the connect request singles out a BitTorrent client.
    assert_eq!(
        senders,
        [
            Sender::BitTorrent,
            Sender::Unknown,
            Sender::Unknown,
            Sender::Unknown
        ]
    );
    assert_eq!(peers(&predictions, PeerTransport::Tcp), ["127.0.0.2:1337"]);
    assert!(retracted.is_empty());
    let dns = datagram(
        HOST,
        "192.0.2.53:53",
        2,
        &unhex("1234 0100 0001 0000 0000 0000"),
    );
    let (ev, udp) = dns.event();
    assert!(!c.claims(&ev, &udp));
    let mut counts = Vec::new();
    c.counts(&mut |name, n| counts.push((name, n.seen, n.parsed)));
    assert_eq!(counts, [("udp_tracker", 4, 4)]);
    let mut tables = Vec::new();
    c.tables(&mut |name, t| tables.push((name, t.len)));
    // No request pending; one flow.
    assert_eq!(tables, [("udp_tracker_transactions", 1)]);
    assert_eq!(c.stats_json()["announce_responses"], 1);
    c.expire(Timestamp::from_secs(100_000));
    let t = c.downcast_ref::<UdpTracker>().unwrap();
    assert_eq!(t.stats().flows.len, 0);
}

mod corpus {
    use super::*;
    use crate::bt::test_support::udp_datagrams;

    #[test]
    fn real_exchange_with_bep41_options_and_a_port_0_self_entry() {
        // VUT-PDS small.pcap frames 242, 267, 269, 291: connect, its response, an announce with a
        // BEP 41 URLData option, its response.
        let flow: Vec<Datagram> = udp_datagrams("terezaburianova-VUT-PDS/small.pcap")
            .into_iter()
            .filter(|d| d.src.port() == 1337 || d.dst.port() == 1337)
            .take(4)
            .collect();
        assert_eq!(flow[0].head, unhex("000004172710198000000000905495a3"));
        assert_eq!(flow[1].head, unhex("00000000905495a3d27dca4a8b03beb5"));
        let Request::Announce(a) = parse_request(&flow[2].head).unwrap() else {
            panic!()
        };
        assert_eq!(flow[2].head.len(), 109);
        assert_eq!(
            (a.connection_id, a.txid, a.port),
            (0xd27d_ca4a_8b03_beb5, 0x28d5_3cbb, 0)
        );
        assert_eq!(a.url_data().collect::<Vec<_>>(), [&b"/announce"[..]]);
        let mut t = UdpTracker::new(UdpTrackerConfig::default());
        let mut out = Vec::new();
        for d in &flow {
            out.extend(feed(&mut t, d));
        }
        assert_eq!(
            peers(&out, PeerTransport::Tcp),
            [
                "185.203.56.27:55887",
                "140.211.167.14:25000",
                "136.158.35.251:51413",
                "109.247.154.151:49681",
                "107.134.245.177:51413",
                "76.182.68.238:8999"
            ]
        );
        let s = t.stats();
        assert_eq!((s.peers.decoded, s.peers.unusable), (7, 1));
        assert_eq!((s.announce_options, s.connection_id_verified), (1, 1));
    }

    #[test]
    fn real_scrape_exchange() {
        // small_torrent frames 183 (scrape request, one info_hash) and 189 (its response).
        let all = udp_datagrams("goncalo-rodrigues-360BitScoping/small_torrent.pcap");
        let req = all
            .iter()
            .find(|d| d.head.len() == 36 && d.head[8..12] == [0, 0, 0, 2]);
        let Request::Scrape(s) = parse_request(&req.unwrap().head).unwrap() else {
            panic!()
        };
        assert_eq!(s.info_hashes.len(), 20);
        let resp = all
            .iter()
            .find(|d| d.head.len() == 20 && d.head[..4] == [0, 0, 0, 2]);
        let Response::Scrape { entries, .. } =
            parse_response(&resp.unwrap().head, 20, false).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries.len(), 12);
    }
}
