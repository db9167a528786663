use super::*;
use crate::bt::channel::{Learnt, Sender};
use crate::bt::test_support::{datagram, Datagram};

// R1: nDPI `bt_search.pcap` frame 1 (BEP 14's format, 192.168.0.102:6771 →
// 239.192.152.143:6771, 119 bytes, no cookie, uppercase hex).
const R1: &[u8] = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 61197\r\nInfohash: ED4F1085E885F98F9A69B70EE89EB988B8FD9115\r\n\r\n\r\n";
const GROUP: &str = "239.192.152.143:6771";
const ANNOUNCER: &str = "192.168.0.102:6771";

fn feed(t: &mut Lsd, d: &Datagram) -> Vec<PredictedPeer> {
    let (ev, udp) = d.event();
    let mut out = Vec::new();
    if looks_like_lsd(ev.dst, udp.head) {
        t.on_udp(&ev, &udp, &mut out);
    }
    out
}

fn note(t: &mut Lsd, host: &str, ts_s: u64) -> Vec<PredictedPeer> {
    let mut out = Vec::new();
    t.note_host(host.parse().unwrap(), Timestamp::from_secs(ts_s), &mut out);
    out
}

/// (host, peer, transport) of each prediction.
fn triples(out: &[PredictedPeer]) -> Vec<String> {
    out.iter()
        .map(|p| {
            assert_eq!(p.channel, Channel::Lsd);
            format!("{} {} {:?}", p.host, p.peer, p.transport)
        })
        .collect()
}

fn announce(port: u16, ih: &str) -> Vec<u8> {
    format!(
        "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: {port}\r\nInfohash: {ih}\r\ncookie: 1a2b\r\n\r\n\r\n"
    )
    .into_bytes()
}

const IH: &str = "ed4f1085e885f98f9a69b70ee89eb988b8fd9115";

#[test]
fn spec_r1_announce() {
    assert_eq!(R1.len(), 119);
    assert!(looks_like_lsd(GROUP.parse().unwrap(), R1));
    let a = parse(R1).unwrap();
    assert_eq!(a.port, 61197);
    assert_eq!(a.host, Some(&b"239.192.152.143:6771"[..]));
    assert_eq!(a.cookie, None);
    assert_eq!(
        a.infohashes_hex(),
        [&b"ED4F1085E885F98F9A69B70EE89EB988B8FD9115"[..]]
    );
    let ih: Vec<[u8; 20]> = a.infohashes().collect();
    assert_eq!(ih[0][..4], [0xed, 0x4f, 0x10, 0x85]);
    assert_eq!(ih[0][19], 0x15);
    assert_eq!(a.invalid_infohashes, 0);
}

// Expected numbers of the capture tests come from tshark 4.0.17:
// `tshark -r FILE -Y 'udp.dstport==6771 && !icmp' -T fields -e ip.src -e ipv6.src -e ip.dst
//  -e ipv6.dst | sort | uniq -c`, and the payloads read with `-e udp.payload | xxd -r -p`.

#[test]
fn two_announcers_learn_each_other() {
    let mut t = Lsd::new(LsdConfig::default());
    let a = datagram("10.1.2.3:6771", GROUP, 0, &announce(51413, IH));
    let b = datagram("10.1.2.4:40000", GROUP, 5, &announce(6881, IH));
    assert!(feed(&mut t, &a).is_empty());
    assert_eq!(
        triples(&feed(&mut t, &b)),
        [
            "10.1.2.4 10.1.2.3:51413 Tcp",
            "10.1.2.4 10.1.2.3:51413 Udp",
            "10.1.2.3 10.1.2.4:6881 Tcp",
            "10.1.2.3 10.1.2.4:6881 Udp",
        ]
    );
    // IPv6: the /64 of a link-local announcer.
    let v6 = datagram(
        "[fe80::1]:6771",
        "[ff15::efc0:988f]:6771",
        6,
        &announce(7000, IH),
    );
    assert!(feed(&mut t, &v6).is_empty());
    assert_eq!(
        triples(&note(&mut t, "fe80::2", 7))[0],
        "fe80::2 [fe80::1]:7000 Tcp"
    );
    assert!(note(&mut t, "fe80:0:0:1::2", 7).is_empty(), "another /64");
}

#[test]
fn members_and_announces_expire() {
    let mut t = Lsd::new(LsdConfig::default());
    feed(
        &mut t,
        &datagram("10.1.2.3:6771", GROUP, 0, &announce(51413, IH)),
    );
    note(&mut t, "10.1.2.9", 1);
    // Past announce_ttl (600 s) a new member is not given the old announce.
    assert!(note(&mut t, "10.1.2.10", 700).is_empty());
    // Past host_ttl (1800 s) a member is not predicted for by a new announce; one seen
    // since is.
    let out = feed(
        &mut t,
        &datagram("10.1.2.3:6771", GROUP, 1_900, &announce(51413, IH)),
    );
    assert_eq!(
        triples(&out),
        [
            "10.1.2.10 10.1.2.3:51413 Tcp",
            "10.1.2.10 10.1.2.3:51413 Udp"
        ]
    );
    // A member that went stale and returns is new again: it gets the live announce.
    assert_eq!(note(&mut t, "10.1.2.9", 1_901).len(), 2);
    // An idle segment leaves the table.
    t.expire(Timestamp::from_secs(10_000));
    assert_eq!(t.stats().segments.len, 0);
    assert_eq!(t.stats().segments.expired, 1);
}

#[test]
fn state_and_work_are_bounded() {
    let mut t = Lsd::new(LsdConfig {
        max_segments: 2,
        max_hosts_per_segment: 8,
        max_announcers_per_segment: 4,
        ..Default::default()
    });
    feed(
        &mut t,
        &datagram("10.1.2.3:6771", GROUP, 0, &announce(51413, IH)),
    );
    for i in 0..100 {
        note(&mut t, &format!("10.1.2.{}", 10 + i), 1);
    }
    assert_eq!(t.stats().hosts_evicted, 100 + 1 - 8);
    // Each announce predicts for at most 8 - 1 members; each new member gets at most 4
    // announces.
    for port in 1000..1010u16 {
        let out = feed(
            &mut t,
            &datagram("10.1.2.3:6771", GROUP, 2, &announce(port, IH)),
        );
        assert!(out.len() <= 2 * 7, "{}", out.len());
    }
    assert_eq!(t.stats().announcers_evicted, 11 - 4);
    assert!(note(&mut t, "10.1.2.250", 3).len() <= 2 * 4);
    // A third segment evicts the oldest.
    for net in ["10.9.0.1:6771", "10.9.1.1:6771"] {
        feed(&mut t, &datagram(net, GROUP, 4, &announce(51413, IH)));
    }
    let s = t.stats();
    assert_eq!((s.segments.len, s.segments.evicted), (2, 1));
}

#[test]
fn malformed_announces_are_rejected_with_a_reason() {
    let head = "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n";
    let ok = |extra: &str| format!("{head}{extra}\r\n\r\n");
    let ih = format!("Infohash: {IH}\r\n");
    let cases: Vec<(String, Result<u16, Reject>)> = vec![
        (ok(&format!("Port: 6881\r\n{ih}")), Ok(6881)),
        (ok(&format!("port:6881 \r\n{ih}")), Ok(6881)),
        (ok(&format!("PORT: 65534\r\n{ih}")), Ok(65534)),
        (ok(&format!("Port: 1\r\n{ih}")), Ok(1)),
        (ok(&format!("Port: 0\r\n{ih}")), Err(Reject::BadPort)),
        (ok(&format!("Port: 65535\r\n{ih}")), Err(Reject::BadPort)),
        (ok(&format!("Port: 99999\r\n{ih}")), Err(Reject::BadPort)),
        (
            ok(&format!("Port: 000006881\r\n{ih}")),
            Err(Reject::BadPort),
        ),
        (ok(&format!("Port: +6881\r\n{ih}")), Err(Reject::BadPort)),
        (ok(&format!("Port: 68a1\r\n{ih}")), Err(Reject::BadPort)),
        (
            ok(&format!("Port: 6881 6882\r\n{ih}")),
            Err(Reject::BadPort),
        ),
        (ok(&format!("Port:\r\n{ih}")), Err(Reject::BadPort)),
        (ok(&ih), Err(Reject::MissingPort)),
        (
            ok(&format!("Port: 1\r\nPort: 2\r\n{ih}")),
            Err(Reject::DuplicatePort),
        ),
        (ok("Port: 6881\r\n"), Err(Reject::NoInfohash)),
        (
            ok("Port: 6881\r\nInfohash: 0000000000000000000000000000000000000000\r\n"),
            Err(Reject::NoInfohash),
        ),
        (
            ok("Port: 6881\r\nInfohash: ed4f1085e885f98f9a69b70ee89eb988b8fd911\r\n"),
            Err(Reject::NoInfohash),
        ),
        (
            ok("Port: 6881\r\nInfohash: gd4f1085e885f98f9a69b70ee89eb988b8fd9115\r\n"),
            Err(Reject::NoInfohash),
        ),
        (
            format!("bt-search * HTTP/1.1\r\nPort: 6881\r\n{ih}\r\n"),
            Ok(6881),
        ),
        (
            format!("BT-SEARCHING * HTTP/1.1\r\nPort: 6881\r\n{ih}\r\n"),
            Err(Reject::BadMethod),
        ),
        (
            format!("BT-SEARCH * HTTP/2.0\r\nPort: 6881\r\n{ih}\r\n"),
            Err(Reject::NotHttp),
        ),
        (
            format!("BT-SEARCH *\r\nPort: 6881\r\n{ih}\r\n"),
            Err(Reject::NotHttp),
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nPort 6881\r\n{ih}\r\n"),
            Err(Reject::NotHttp),
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\nX: a\0b\r\n{ih}\r\n"),
            Err(Reject::NotHttp),
        ),
        (
            format!("BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\n{ih}"),
            Err(Reject::Unterminated),
        ),
        (
            format!("{head}Port: 6881\r\n{ih}{}\r\n", "X: y\r\n".repeat(40)),
            Err(Reject::TooManyHeaders),
        ),
    ];
    for (raw, want) in &cases {
        assert_eq!(parse(raw.as_bytes()).map(|a| a.port), *want, "{raw:?}");
    }
}

#[test]
fn several_infohashes_and_the_header_cap() {
    let head = "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n";
    let ih = format!("Infohash: {IH}\r\n");
    // Several infohashes, one invalid and skipped; obs-text in a cookie is accepted.
    let mut raw = format!("{head}Port: 6881\r\n{ih}Infohash: xyz\r\nInfohash: ").into_bytes();
    raw.extend_from_slice(b"0123456789abcdef0123456789ABCDEF01234567\r\ncookie: \xff\xfe\r\n\r\n");
    let a = parse(&raw).unwrap();
    assert_eq!((a.infohashes().count(), a.invalid_infohashes), (2, 1));
    assert_eq!(a.cookie, Some(&b"\xff\xfe"[..]));
    // The most infohashes a header array holds.
    let many = format!(
        "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n{}\r\n",
        ih.repeat(MAX_HEADERS - 1)
    );
    assert_eq!(
        parse(many.as_bytes()).unwrap().infohashes().count(),
        MAX_HEADERS - 1
    );
}

#[test]
fn channel_counts_rejects_and_truncation() {
    let mut t = Lsd::new(LsdConfig::default());
    let mut d = datagram(ANNOUNCER, GROUP, 0, &R1[..60]);
    d.payload_len = u16::try_from(R1.len()).unwrap();
    feed(&mut t, &d);
    feed(&mut t, &datagram(ANNOUNCER, GROUP, 0, &R1[..60]));
    feed(&mut t, &datagram("0.0.0.0:6771", GROUP, 0, R1));
    feed(
        &mut t,
        &datagram("[::1]:6771", "[ff15::efc0:988f]:6771", 0, R1),
    );
    feed(&mut t, &datagram("224.0.0.1:6771", GROUP, 0, R1));
    let s = t.stats();
    assert_eq!(s.counts.seen, 5);
    assert_eq!(
        s.counts.rejected,
        [
            ("incomplete", 1),
            ("unterminated", 1),
            ("unusable_source", 3)
        ]
        .into()
    );
    assert_eq!(s.segments.len, 0);
    for cut in 0..=R1.len() {
        let _ = parse(&R1[..cut]);
    }
}

#[test]
fn precheck_and_segments() {
    let group: SocketAddr = GROUP.parse().unwrap();
    assert!(looks_like_lsd(group, b"bt-search * HTTP/1.1\r\n"));
    assert!(looks_like_lsd("192.168.38.255:6771".parse().unwrap(), R1));
    assert!(!looks_like_lsd("239.192.152.143:6772".parse().unwrap(), R1));
    assert!(!looks_like_lsd(group, b"BT-SEARC"));
    assert!(!looks_like_lsd(group, b"NOTIFY * HTTP/1.1\r\n"));
    assert!(is_group(group.ip()) && is_group("ff15::efc0:988f".parse().unwrap()));
    let seg = |ip: &str, p4, p6| segment_of(ip.parse().unwrap(), p4, p6).to_string();
    assert_eq!(seg("192.168.38.130", 24, 64), "192.168.38.0");
    assert_eq!(seg("10.10.0.34", 26, 64), "10.10.0.0");
    assert_eq!(seg("10.10.0.34", 0, 64), "0.0.0.0");
    assert_eq!(seg("10.10.0.34", 99, 64), "10.10.0.34");
    assert_eq!(seg("fe80::8629:e03c:a198:19e0", 24, 64), "fe80::");
    assert_eq!(seg("2001:db8:1:2:3::4", 24, 48), "2001:db8:1::");
    assert_eq!(seg("2001:db8::4", 24, 200), "2001:db8::4");
}

#[test]
fn reject_names_are_stable() {
    assert_eq!(Reject::Incomplete.as_str(), "incomplete");
    assert_eq!(Reject::NotHttp.as_str(), "not_http");
    assert_eq!(Reject::Unterminated.as_str(), "unterminated");
    assert_eq!(Reject::TooManyHeaders.as_str(), "too_many_headers");
    assert_eq!(Reject::BadMethod.as_str(), "bad_method");
    assert_eq!(Reject::MissingPort.as_str(), "missing_port");
    assert_eq!(Reject::DuplicatePort.as_str(), "duplicate_port");
    assert_eq!(Reject::BadPort.as_str(), "bad_port");
    assert_eq!(Reject::NoInfohash.as_str(), "no_infohash");
    assert_eq!(Reject::UnusableSource.as_str(), "unusable_source");
}

mod corpus {
    use super::*;
    use crate::bt::test_support::udp_datagrams;

    fn replay(rel: &str) -> (Lsd, Vec<PredictedPeer>) {
        let mut t = Lsd::new(LsdConfig::default());
        let mut out = Vec::new();
        for d in udp_datagrams(rel) {
            out.extend(feed(&mut t, &d));
        }
        (t, out)
    }

    #[test]
    fn bt_search_capture() {
        // Two identical announces (LSD-R1) to the IPv4 group, the only host of its segment:
        // nobody to predict for.
        let all = udp_datagrams("ntop-nDPI/bt_search.pcap");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].head, R1);
        let (t, out) = replay("ntop-nDPI/bt_search.pcap");
        let s = t.stats();
        assert_eq!((s.counts.seen, s.counts.parsed), (2, 2));
        assert_eq!((s.to_group, s.not_to_group, s.infohashes), (2, 0, 2));
        assert_eq!((s.hosts_added, s.segments.len), (1, 1));
        assert!(out.is_empty());
    }

    #[test]
    fn mercury_and_vut_captures_with_cookies_ipv6_and_broadcast_copies() {
        // mercury bittorrent.pcap: 9 announces of 10.10.0.34 (port 53808, lowercase infohash,
        // cookie 7e16ba75): 3 to the IPv4 group, 1 to 10.10.0.63 (the broadcast of its /26), 3
        // from fe80::19e7:f29:9efa:a829 and 2 from ::1 to the IPv6 group. The loopback copies
        // name no dialable peer.
        let (t, out) = replay("cisco-mercury/bittorrent.pcap");
        let s = t.stats();
        assert_eq!((s.counts.seen, s.counts.parsed), (9, 7));
        assert_eq!(s.counts.rejected, [("unusable_source", 2)].into());
        assert_eq!((s.to_group, s.not_to_group), (6, 1));
        assert_eq!((s.hosts_added, s.segments.len), (2, 2));
        assert!(out.is_empty());
        let d = udp_datagrams("cisco-mercury/bittorrent.pcap")
            .into_iter()
            .find(|d| d.dst.port() == PORT)
            .unwrap();
        let a = parse(&d.head).unwrap();
        assert_eq!((a.port, a.cookie), (53808, Some(&b"7e16ba75"[..])));
        assert_eq!(
            a.infohashes_hex(),
            [&b"6af7c9da45ab32cfcdd83cf63477f85736547613"[..]]
        );
        // VUT-PDS small.pcap (qBittorrent): 42 announces of port 8999 over two infohashes: 15
        // to the IPv4 group and 2 to 192.168.38.255 from 192.168.38.130, 15 from
        // fe80::8629:e03c:a198:19e0 and 10 from ::1 to the IPv6 group.
        let (t, out) = replay("terezaburianova-VUT-PDS/small.pcap");
        let s = t.stats();
        assert_eq!((s.counts.seen, s.counts.parsed), (42, 32));
        assert_eq!(s.counts.rejected, [("unusable_source", 10)].into());
        assert_eq!((s.to_group, s.not_to_group, s.infohashes), (30, 2, 32));
        assert!(out.is_empty());
    }

    #[test]
    fn members_of_the_segment_learn_the_announced_port() {
        let all = udp_datagrams("ntop-nDPI/bt_search.pcap");
        let t0 = all[0].ts.as_secs();
        let mut t = Lsd::new(LsdConfig::default());
        // Before any announce no segment is tracked: BitTorrent hosts are not remembered.
        assert!(note(&mut t, "192.168.0.7", t0 - 1).is_empty());
        assert_eq!(t.stats().segments.len, 0);
        assert!(feed(&mut t, &all[0]).is_empty());
        // A member seen after the announce gets it then; a host of another /24 does not.
        let late = note(&mut t, "192.168.0.7", t0 + 1);
        assert_eq!(
            triples(&late),
            [
                "192.168.0.7 192.168.0.102:61197 Tcp",
                "192.168.0.7 192.168.0.102:61197 Udp"
            ]
        );
        assert!(note(&mut t, "192.168.1.7", t0 + 1).is_empty());
        assert!(note(&mut t, "192.168.0.7", t0 + 2).is_empty(), "once");
        // The next announce predicts for every live member but the announcer.
        note(&mut t, "192.168.0.8", t0 + 3);
        let mut second = all[1].clone();
        second.ts = Timestamp::from_secs(t0 + 4);
        let out = feed(&mut t, &second);
        assert_eq!(out.len(), 4);
        assert!(out
            .iter()
            .all(|p| p.peer.to_string() == "192.168.0.102:61197" && p.host != p.peer.ip()));
        let s = t.stats();
        assert_eq!((s.predicted, s.predicted_late), (8, 4));
        assert_eq!(s.hosts_added, 3);
    }
}

#[test]
fn through_the_channel_trait() {
    let mut c: Box<dyn crate::bt::channel::Channel> = Box::new(Lsd::new(LsdConfig::default()));
    assert_eq!(c.name(), "lsd");
    let mut predictions = Vec::new();
    let mut retracted = Vec::new();
    let d = datagram(ANNOUNCER, GROUP, 100, R1);
    let (ev, udp) = d.event();
    assert!(c.claims(&ev, &udp));
    let mut out = Learnt {
        predictions: &mut predictions,
        retracted: &mut retracted,
    };
    // The announcer is recorded by the channel itself.
    assert_eq!(c.on_udp(&ev, &udp, &mut out), Sender::Unknown);
    assert!(out.predictions.is_empty());
    // Another host of the segment shows itself a BitTorrent client: it learns the port.
    c.on_bittorrent_host(
        "192.168.0.7".parse().unwrap(),
        Timestamp::from_secs(101),
        &mut out,
    );
    assert_eq!(
        triples(&predictions),
        [
            "192.168.0.7 192.168.0.102:61197 Tcp",
            "192.168.0.7 192.168.0.102:61197 Udp"
        ]
    );
    let not_group = datagram(ANNOUNCER, "192.168.0.1:6772", 102, R1);
    let (ev, udp) = not_group.event();
    assert!(!c.claims(&ev, &udp));
    let mut counts = Vec::new();
    c.counts(&mut |name, n| counts.push((name, n.seen, n.parsed)));
    assert_eq!(counts, [("lsd", 1, 1)]);
    let mut tables = Vec::new();
    c.tables(&mut |name, t| tables.push((name, t.len)));
    assert_eq!(tables, [("lsd_segments", 1)]);
    assert_eq!(c.stats_json()["hosts_added"], 2);
    c.expire(Timestamp::from_secs(100_000));
    let t = c.downcast_ref::<Lsd>().unwrap();
    assert_eq!(t.stats().segments.len, 0);
}
