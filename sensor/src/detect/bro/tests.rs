//! Tests of the scan.bro detector, with the test vectors of its notice sequences.

use super::*;
use std::net::Ipv4Addr;

const SRC: &str = "198.51.100.7";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The i-th distinct peer.
fn peer(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

/// A "random" high port, distinct for i < 55000 (7919 is prime to 55000), and in
/// 10000..65000 so no skip list applies to it.
fn hi_port(i: u32) -> u16 {
    10000 + ((i * 7919) % 55000) as u16
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn conn(ts: Timestamp, orig: IpAddr, resp: IpAddr, svc: Service, established: bool) -> ScanCheck {
    ScanCheck {
        ts,
        orig_h: orig,
        orig_p: Service::tcp(50000),
        resp_h: resp,
        resp_p: svc,
        established,
        reverse: false,
        ftp_data: false,
    }
}

fn kinds(v: &[ScanNotice]) -> Vec<(NoticeKind, String)> {
    v.iter().map(|n| (n.note, n.msg.clone())).collect()
}

/// Horizontal-scan test vector: failed SYNs from `src` to `n` distinct peers on distinct high
/// ports, 1 s apart, then EOF. Returns (notices during the run, notices at finish).
fn horizontal(cfg: BroScanConfig, src: IpAddr, n: u32) -> (Vec<ScanNotice>, Vec<ScanNotice>) {
    let mut b = BroScan::new(cfg);
    let mut out = Vec::new();
    for i in 1..=n {
        let c = conn(
            at(u64::from(i)),
            src,
            peer(i),
            Service::tcp(hi_port(i)),
            false,
        );
        b.check_into(&c, &mut out);
    }
    let mut fin = Vec::new();
    b.finish(at(u64::from(n) + 1), &mut fin);
    (out, fin)
}

fn addr_msg(n: u32, i: u32) -> (NoticeKind, String) {
    (
        NoticeKind::AddressScan,
        format!("{SRC} has scanned {n} hosts ({}/tcp)", hi_port(i)),
    )
}

fn shutdown_msg() -> (NoticeKind, String) {
    (
        NoticeKind::ShutdownThresh,
        format!("shutdown threshold reached for {SRC}"),
    )
}

fn summaries(peers: u32, ports: u32) -> Vec<(NoticeKind, String)> {
    let mut v = Vec::new();
    if peers >= 25 {
        v.push((
            NoticeKind::ScanSummary,
            format!("{SRC} scanned a total of {peers} hosts"),
        ));
    }
    if ports >= 20 {
        v.push((
            NoticeKind::PortScanSummary,
            format!("{SRC} scanned a total of {ports} ports"),
        ));
    }
    v
}

#[test]
fn vector_19_nothing() {
    let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 19);
    assert!(out.is_empty(), "{out:?}");
    assert!(fin.is_empty(), "{fin:?}");
}

#[test]
fn vector_20_one_address_scan() {
    let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 20);
    assert_eq!(kinds(&out), vec![addr_msg(20, 20)]);
    assert_eq!(out[0].ts, at(20));
    // The address branch runs before this connection's port is counted.
    assert_eq!((out[0].peers, out[0].ports), (20, 19));
    assert_eq!(out[0].p, Some(Service::tcp(hi_port(20))));
    assert_eq!(kinds(&fin), summaries(20, 20));
}

#[test]
fn vector_100_shutdown_preempts() {
    let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 100);
    assert_eq!(kinds(&out), vec![addr_msg(20, 20), shutdown_msg()]);
    assert_eq!(out[1].ts, at(100));
    assert_eq!(kinds(&fin), summaries(100, 100));
}

#[test]
fn vector_101_address_scan_at_101() {
    let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 101);
    assert_eq!(
        kinds(&out),
        vec![addr_msg(20, 20), shutdown_msg(), addr_msg(101, 101)]
    );
    assert_eq!(kinds(&fin), summaries(101, 101));
}

#[test]
fn vector_25_scan_summary() {
    let (out, fin) = horizontal(BroScanConfig::default(), ip(SRC), 25);
    assert_eq!(kinds(&out), vec![addr_msg(20, 20)]);
    assert_eq!(kinds(&fin), summaries(25, 25));
    assert_eq!((fin[0].peers, fin[0].ports), (25, 25));
    assert_eq!(fin[0].dst, None);
}

#[test]
fn vector_1001_continues_on_the_vector() {
    let (out, _) = horizontal(BroScanConfig::default(), ip(SRC), 1001);
    assert_eq!(
        kinds(&out),
        vec![
            addr_msg(20, 20),
            shutdown_msg(),
            addr_msg(101, 101),
            addr_msg(1000, 1000)
        ]
    );
}

fn local_cfg() -> BroScanConfig {
    BroScanConfig {
        local_nets: vec!["198.51.100.0/24".parse().unwrap()],
        ..BroScanConfig::default()
    }
}

#[test]
fn local_source_vectors() {
    for n in [19, 20, 99] {
        let (out, fin) = horizontal(local_cfg(), ip(SRC), n);
        assert!(out.is_empty(), "n={n}: {out:?}");
        assert_eq!(kinds(&fin), summaries(n, n));
    }
    for n in [100, 101] {
        let (out, fin) = horizontal(local_cfg(), ip(SRC), n);
        assert_eq!(kinds(&out), vec![addr_msg(100, 100)], "n={n}");
        assert_eq!(kinds(&fin), summaries(n, n));
    }
    let (out, _) = horizontal(local_cfg(), ip(SRC), 1000);
    assert_eq!(kinds(&out), vec![addr_msg(100, 100), addr_msg(1000, 1000)]);
}

#[test]
fn local_source_no_low_port_trolling() {
    let mut b = BroScan::new(local_cfg());
    let mut out = Vec::new();
    for p in 1..=200u16 {
        b.check_into(
            &conn(
                at(u64::from(p)),
                ip(SRC),
                ip("192.0.2.1"),
                Service::tcp(p),
                false,
            ),
            &mut out,
        );
    }
    b.finish(at(1000), &mut out);
    assert!(
        out.iter()
            .all(|n| n.note != NoticeKind::LowPortTrolling
                && n.note != NoticeKind::LowPortScanSummary)
    );
    // PortScan does not depend on outbound.
    assert!(out.iter().any(|n| n.note == NoticeKind::PortScan));
}

#[test]
fn neighbor_nets_exempt_from_shutdown() {
    let cfg = BroScanConfig {
        neighbor_nets: vec!["198.51.100.0/24".parse().unwrap()],
        ..BroScanConfig::default()
    };
    let (out, _) = horizontal(cfg, ip(SRC), 101);
    // Not outbound, so report_peer_scan applies, but with no ShutdownThresh the AddressScan
    // at 100 is not pre-empted.
    assert_eq!(kinds(&out), vec![addr_msg(20, 20), addr_msg(100, 100)]);
}

#[test]
fn established_allowed_service_is_not_a_peer() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 1..=30 {
        b.check_into(
            &conn(at(u64::from(i)), ip(SRC), peer(i), Service::tcp(80), true),
            &mut out,
        );
    }
    assert!(out.is_empty());
    assert_eq!(b.tracked_sources(), 0);
}

#[test]
fn established_bt_port_counts_as_peer_but_not_port() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 1..=25 {
        b.check_into(
            &conn(at(u64::from(i)), ip(SRC), peer(i), Service::tcp(6881), true),
            &mut out,
        );
    }
    assert_eq!(
        kinds(&out),
        vec![(
            NoticeKind::AddressScan,
            format!("{SRC} has scanned 20 hosts (6881/tcp)")
        )]
    );
    assert_eq!(out[0].ports, 0);
    assert_eq!(b.distinct_peers(ip(SRC)), 25);
    assert_eq!(b.distinct_ports(ip(SRC)), 0);
    let mut fin = Vec::new();
    b.finish(at(100), &mut fin);
    assert_eq!(kinds(&fin), summaries(25, 0));
}

#[test]
fn established_never_adds_ports_on_any_service() {
    let mut b = BroScan::default();
    for i in 1..=30u32 {
        b.check(&conn(
            at(u64::from(i)),
            ip(SRC),
            peer(i),
            Service::tcp(hi_port(i)),
            true,
        ));
    }
    assert_eq!(b.distinct_peers(ip(SRC)), 30);
    assert_eq!(b.distinct_ports(ip(SRC)), 0);
}

#[test]
fn failed_attempt_on_allowed_service_counts() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 1..=20 {
        b.check_into(
            &conn(at(u64::from(i)), ip(SRC), peer(i), Service::tcp(80), false),
            &mut out,
        );
    }
    assert_eq!(
        kinds(&out),
        vec![(
            NoticeKind::AddressScan,
            format!("{SRC} has scanned 20 hosts (80/tcp)")
        )]
    );
}

#[test]
fn repeat_peer_does_not_count() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 1..=40 {
        b.check_into(
            &conn(at(i), ip(SRC), peer(1), Service::tcp(6881), false),
            &mut out,
        );
    }
    assert!(out.is_empty());
    assert_eq!(b.distinct_peers(ip(SRC)), 1);
}

/// Vertical scan of one host on TCP ports `ports`, 1 s apart; returns (call number, notice).
fn vertical(
    cfg: BroScanConfig,
    ports: impl IntoIterator<Item = u16>,
) -> (BroScan, Vec<(u64, ScanNotice)>) {
    let mut b = BroScan::new(cfg);
    let mut got = Vec::new();
    for (k, p) in ports.into_iter().enumerate() {
        let k = k as u64 + 1;
        for n in b.check(&conn(
            at(k),
            ip(SRC),
            ip("192.0.2.1"),
            Service::tcp(p),
            false,
        )) {
            got.push((k, n));
        }
    }
    (b, got)
}

#[test]
fn vertical_scan_port_scan_thresholds() {
    // High ports only, so no low-port noise.
    let (mut b, got) = vertical(BroScanConfig::default(), 2000..2300);
    let ps: Vec<_> = got
        .iter()
        .filter(|(_, n)| n.note == NoticeKind::PortScan)
        .collect();
    // possible_scan_sources is entered at the 20th distinct port, and that same call adds the
    // first triple: 50 triples = 69th port, 250 triples = 269th port.
    assert_eq!(ps.len(), 2);
    assert_eq!(ps[0].0, 69);
    assert_eq!(
        ps[0].1.msg,
        format!("{SRC} has scanned 50 ports of 192.0.2.1")
    );
    assert_eq!(ps[0].1.dst, Some(ip("192.0.2.1")));
    assert_eq!(ps[1].0, 269);
    assert_eq!(
        ps[1].1.msg,
        format!("{SRC} has scanned 250 ports of 192.0.2.1")
    );
    assert_eq!(got.len(), 2, "no AddressScan for one peer");
    let mut fin = Vec::new();
    b.finish(at(1000), &mut fin);
    assert_eq!(kinds(&fin), summaries(1, 300));
}

#[test]
fn port_scan_needs_possible_source_first() {
    // 19 distinct ports never make a possible scan source.
    let (_, got) = vertical(
        BroScanConfig::default(),
        (2000..2019).chain(std::iter::repeat_n(2000, 100)),
    );
    assert!(got.is_empty());
}

#[test]
fn low_port_trolling_once_at_fifth_non_skipped() {
    // 20, 21, 22, 25 are troll_skip_service: the 5th distinct counted low port is 26.
    let (mut b, got) = vertical(BroScanConfig::default(), (18..=40).chain(18..=40));
    let lpt: Vec<_> = got
        .iter()
        .filter(|(_, n)| n.note == NoticeKind::LowPortTrolling)
        .collect();
    assert_eq!(lpt.len(), 1);
    assert_eq!(lpt[0].1.msg, format!("low port trolling {SRC} 26/tcp"));
    assert_eq!(lpt[0].1.p, Some(Service::tcp(26)));
    // 18..=40 minus the four skipped = 19 low ports ≥ lowport_summary_trigger.
    let mut fin = Vec::new();
    b.finish(at(1000), &mut fin);
    assert!(kinds(&fin).contains(&(
        NoticeKind::LowPortScanSummary,
        format!("{SRC} scanned a total of 19 low ports")
    )));
}

#[test]
fn low_port_trolling_not_for_neighbor() {
    let cfg = BroScanConfig {
        neighbor_nets: vec![ip(SRC).into()],
        ..BroScanConfig::default()
    };
    let (_, got) = vertical(cfg, 1..=30);
    assert!(got
        .iter()
        .all(|(_, n)| n.note != NoticeKind::LowPortTrolling));
}

#[test]
fn udp_is_never_a_low_port() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for p in 1..=100u16 {
        b.check_into(
            &conn(
                at(u64::from(p)),
                ip(SRC),
                ip("192.0.2.1"),
                Service::udp(p),
                false,
            ),
            &mut out,
        );
    }
    b.finish(at(1000), &mut out);
    assert!(
        out.iter()
            .all(|n| n.note != NoticeKind::LowPortTrolling
                && n.note != NoticeKind::LowPortScanSummary)
    );
    // They are still failed ports.
    assert!(kinds(&out).contains(&(
        NoticeKind::PortScanSummary,
        format!("{SRC} scanned a total of 100 ports")
    )));
}

#[test]
fn skip_lists() {
    let mut b = BroScan::new(local_cfg());
    let remote = ip("203.0.113.9");
    // Inbound ident is skipped.
    assert!(b
        .check(&conn(
            at(1),
            remote,
            ip("192.0.2.1"),
            Service::tcp(113),
            false
        ))
        .is_empty());
    assert_eq!(b.tracked_sources(), 0);
    // Outbound (local source) to allowed services, ftp and addl_web is skipped.
    for (i, p) in [80u16, 22, 443, 8080, 21, 25].into_iter().enumerate() {
        b.check(&conn(
            at(2 + i as u64),
            ip(SRC),
            peer(u32::try_from(i).unwrap()),
            Service::tcp(p),
            false,
        ));
    }
    b.check(&conn(at(10), ip(SRC), peer(50), Service::udp(53), false));
    assert_eq!(b.tracked_sources(), 0);
    // An inbound source to http is not skipped (skip_outbound_services is outbound only).
    b.check(&conn(
        at(11),
        remote,
        ip("192.0.2.1"),
        Service::tcp(80),
        false,
    ));
    assert_eq!(b.distinct_peers(remote), 1);
    // An outbound source to a BT port is tracked.
    b.check(&conn(at(12), ip(SRC), peer(1), Service::tcp(6881), false));
    assert_eq!(b.distinct_peers(ip(SRC)), 1);
    // skip_scan_sources.
    b.check(&conn(
        at(13),
        ip("255.255.255.255"),
        peer(1),
        Service::tcp(6881),
        false,
    ));
    assert_eq!(b.tracked_sources(), 2);
}

#[test]
fn skip_dest_server_ports_and_nets() {
    let mut cfg = BroScanConfig::default();
    cfg.skip_dest_server_ports
        .insert((ip("192.0.2.1"), Service::tcp(6881)));
    cfg.skip_scan_nets.push("203.0.113.0/24".parse().unwrap());
    let mut b = BroScan::new(cfg);
    b.check(&conn(
        at(1),
        ip(SRC),
        ip("192.0.2.1"),
        Service::tcp(6881),
        false,
    ));
    b.check(&conn(
        at(2),
        ip("203.0.113.5"),
        ip("192.0.2.2"),
        Service::tcp(6881),
        false,
    ));
    assert_eq!(b.tracked_sources(), 0);
    b.check(&conn(
        at(3),
        ip(SRC),
        ip("192.0.2.1"),
        Service::tcp(6882),
        false,
    ));
    assert_eq!(b.tracked_sources(), 1);
}

#[test]
fn reverse_and_ftp_data_service_selection() {
    let mut b = BroScan::default();
    // reverse: the scanner is resp_h and the service is orig_p.
    let c = ScanCheck {
        reverse: true,
        orig_p: Service::tcp(4444),
        resp_p: Service::tcp(33000),
        ..conn(at(1), peer(1), ip(SRC), Service::tcp(33000), false)
    };
    b.check(&c);
    assert_eq!(b.distinct_peers(ip(SRC)), 1);
    assert_eq!(b.distinct_ports(ip(SRC)), 1);
    // ftp-data is 20/tcp whatever the ports: troll-skipped, so no low port.
    let c = ScanCheck {
        ftp_data: true,
        ..conn(at(2), ip(SRC), peer(2), Service::tcp(40000), false)
    };
    b.check(&c);
    assert_eq!(b.distinct_ports(ip(SRC)), 2);
    assert_eq!(b.distinct_low_ports(ip(SRC)), 0);
    assert_eq!(
        b.srcs[&ip(SRC)]
            .distinct_low_ports
            .as_ref()
            .map(|x| x.v.len()),
        None
    );
    assert!(b.srcs[&ip(SRC)]
        .distinct_ports
        .as_ref()
        .unwrap()
        .v
        .contains(&Service::tcp(20)));
    assert!(b.srcs[&ip(SRC)]
        .distinct_ports
        .as_ref()
        .unwrap()
        .v
        .contains(&Service::tcp(4444)));
}

#[test]
fn backscatter() {
    // A flooded web server S answers spoofed SYNs with SYN-ACKs: Bro sees reverse
    // connections with S as the scanner, service = the victims' high ports.
    let server = ip(SRC);
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 1..=25u32 {
        let c = ScanCheck {
            ts: at(u64::from(i)),
            orig_h: peer(i),
            orig_p: Service::tcp(hi_port(i)),
            resp_h: server,
            resp_p: Service::tcp(80),
            established: false,
            reverse: true,
            ftp_data: false,
        };
        b.check_into(&c, &mut out);
        b.check_into(&c, &mut out); // tear-down call: same responder
    }
    assert_eq!(
        kinds(&out),
        vec![(
            NoticeKind::BackscatterSeen,
            format!("backscatter seen from {SRC} (20 hosts; 80/tcp)")
        )]
    );
    assert_eq!(out[0].p, Some(Service::tcp(80)));
    // Backscatter does not add peers; the failed attempts still add ports.
    assert_eq!(b.distinct_peers(server), 0);
    assert_eq!(b.distinct_ports(server), 25);
}

#[test]
fn reverse_from_non_backscatter_port_is_address_scan() {
    let mut b = BroScan::default();
    for i in 1..=5u32 {
        let c = ScanCheck {
            ts: at(u64::from(i)),
            orig_h: peer(i),
            orig_p: Service::tcp(hi_port(i)),
            resp_h: ip(SRC),
            resp_p: Service::tcp(6881),
            established: false,
            reverse: true,
            ftp_data: false,
        };
        b.check(&c);
    }
    assert_eq!(b.distinct_peers(ip(SRC)), 5);
}

#[test]
fn idle_expiry_emits_summaries_once() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 0..30u32 {
        b.check_into(
            &conn(
                at(u64::from(i)),
                ip(SRC),
                peer(i),
                Service::tcp(hi_port(i)),
                false,
            ),
            &mut out,
        );
    }
    assert_eq!(out.len(), 1); // AddressScan at 20
    out.clear();
    // Last access at t=29 s: idle > 15 min first holds at the t=930 s pass.
    let mut t = 0;
    while t <= 920 {
        b.expire(at(t), &mut out);
        t += 10;
    }
    assert!(out.is_empty(), "{out:?}");
    b.expire(at(930), &mut out);
    assert_eq!(kinds(&out), summaries(30, 30));
    assert_eq!(out[0].ts, at(930));
    assert_eq!((out[0].peers, out[0].ports), (30, 30));
    assert_eq!(b.distinct_peers(ip(SRC)), 0);
    // The threshold indexes live on (1 day), so the source is still tracked.
    assert_eq!(b.tracked_sources(), 1);
    out.clear();
    b.expire(at(940), &mut out);
    b.finish(at(950), &mut out);
    assert!(out.is_empty(), "summaries are emitted once: {out:?}");
}

#[test]
fn expiry_is_strictly_after_ttl() {
    let mut b = BroScan::default();
    for i in 0..30u32 {
        b.check(&conn(
            at(10),
            ip(SRC),
            peer(i),
            Service::tcp(hi_port(i)),
            false,
        ));
    }
    let mut out = Vec::new();
    b.expire(at(910), &mut out); // exactly 15 min idle: Bro's `access + ttl < now` is false
    assert!(out.is_empty());
    b.expire(at(910) + time::Duration::from_nanos(1), &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn active_every_10_minutes_never_expires() {
    let mut b = BroScan::default();
    let mut out = Vec::new();
    let mut t = 0;
    let mut next = 0;
    let mut i = 0u32;
    while t <= 10 * 3600 {
        if t == next {
            i += 1;
            b.check_into(
                &conn(at(t), ip(SRC), peer(i), Service::tcp(hi_port(i)), false),
                &mut out,
            );
            next += 600;
        }
        b.expire(at(t), &mut out);
        t += 10;
    }
    assert_eq!(i, 61);
    assert_eq!(
        kinds(&out),
        vec![addr_msg(20, 20)],
        "no summary while active"
    );
    assert_eq!(b.distinct_peers(ip(SRC)), 61);
    out.clear();
    b.finish(at(t), &mut out);
    assert_eq!(kinds(&out), summaries(61, 61));
}

#[test]
fn tables_expire_independently() {
    // Failed attempts build ports; later established BT connections keep only
    // distinct_peers fresh, so distinct_ports expires first.
    let mut b = BroScan::default();
    let mut out = Vec::new();
    for i in 0..20u32 {
        b.check_into(
            &conn(at(0), ip(SRC), peer(i), Service::tcp(hi_port(i)), false),
            &mut out,
        );
    }
    for k in 1..=20u32 {
        let c = conn(
            at(u64::from(k) * 60),
            ip(SRC),
            peer(1000 + k),
            Service::tcp(6881),
            true,
        );
        b.check_into(&c, &mut out);
    }
    out.clear();
    b.expire(at(910), &mut out);
    assert_eq!(
        kinds(&out),
        vec![(
            NoticeKind::PortScanSummary,
            format!("{SRC} scanned a total of 20 ports")
        )]
    );
    assert_eq!(b.distinct_peers(ip(SRC)), 40);
    out.clear();
    b.expire(at(1200 + 901), &mut out);
    assert_eq!(
        kinds(&out),
        vec![(
            NoticeKind::ScanSummary,
            format!("{SRC} scanned a total of 40 hosts")
        )]
    );
}

/// Runs `n` failed attempts from SRC to fresh peers (numbered from `base`) at time `t`.
fn burst(b: &mut BroScan, t: u64, base: u32, n: u32, out: &mut Vec<ScanNotice>) {
    for i in 1..=n {
        let c = conn(
            at(t),
            ip(SRC),
            peer(base + i),
            Service::tcp(hi_port(i)),
            false,
        );
        b.check_into(&c, out);
    }
}

#[test]
fn threshold_state_outlives_peer_expiry() {
    // shut_down_thresh_reached never expires and rps_idx lives 1 day, while distinct_peers
    // expires after 15 min idle. A returning source restarts its peer count from 0.
    let mut b = BroScan::default();
    let mut out = Vec::new();
    burst(&mut b, 0, 0, 100, &mut out); // AddressScan@20, ShutdownThresh@100; idx → 100
    b.expire(at(1000), &mut out);
    out.clear();
    burst(&mut b, 2000, 1000, 100, &mut out);
    // No AddressScan at 20 (idx points at 100), no second ShutdownThresh, so the
    // AddressScan due at 100 fires at exactly 100 this time.
    assert_eq!(kinds(&out), vec![addr_msg(100, 100)]);

    let mut b = BroScan::default();
    burst(&mut b, 0, 0, 101, &mut out); // ... AddressScan@101; idx → 1000
    b.expire(at(1000), &mut out);
    out.clear();
    burst(&mut b, 2000, 1000, 150, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(b.distinct_peers(ip(SRC)), 150);
}

#[test]
fn first_threshold_vectors() {
    assert_eq!(
        first_threshold_vector(5, &DEFAULT_REPORT_PEER_SCAN)[..4],
        [5, 20, 100, 1000]
    );
    assert_eq!(
        first_threshold_vector(150, &DEFAULT_REPORT_PEER_SCAN)[..3],
        [150, 1000, 10000]
    );
    assert_eq!(
        first_threshold_vector(20, &DEFAULT_REPORT_PEER_SCAN),
        DEFAULT_REPORT_PEER_SCAN.to_vec()
    );
    let c = BroScanConfig::with_first_threshold(5);
    assert_eq!(c.report_outbound_peer_scan, vec![5, 100, 1000, 10000]);
    assert_eq!(c.shut_down_thresh, 100);
    let c = BroScanConfig::with_first_threshold(150);
    assert_eq!(c.report_outbound_peer_scan, vec![150, 1000, 10000]);
}

#[test]
fn first_threshold_5() {
    let (out, _) = horizontal(BroScanConfig::with_first_threshold(5), ip(SRC), 1000);
    assert_eq!(
        kinds(&out),
        vec![
            addr_msg(5, 5),
            addr_msg(20, 20),
            shutdown_msg(),
            addr_msg(101, 101),
            addr_msg(1000, 1000)
        ]
    );
}

#[test]
fn first_threshold_150() {
    let (out, _) = horizontal(BroScanConfig::with_first_threshold(150), ip(SRC), 151);
    assert_eq!(kinds(&out), vec![shutdown_msg(), addr_msg(150, 150)]);
    assert_eq!(out[0].ts, at(100));
    let local = BroScanConfig {
        local_nets: vec![ip(SRC).into()],
        ..BroScanConfig::with_first_threshold(150)
    };
    let (out, _) = horizontal(local, ip(SRC), 151);
    assert_eq!(kinds(&out), vec![addr_msg(150, 150)]);
}

#[test]
fn memory_bound() {
    let cfg = BroScanConfig {
        max_sources: 10,
        ..BroScanConfig::default()
    };
    let mut b = BroScan::new(cfg);
    for s in 0..100u32 {
        let src = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + s));
        for k in 0..3u32 {
            b.check(&conn(
                at(u64::from(s)),
                src,
                peer(k),
                Service::tcp(6881),
                false,
            ));
            assert!(b.tracked_sources() <= 10);
        }
    }
    assert_eq!(b.tracked_sources(), 10);
    assert_eq!(b.evictions, 90);
    // The survivors are the 10 most recent, with their state intact.
    let last = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + 99));
    assert_eq!(b.distinct_peers(last), 3);
    assert_eq!(b.expiry.len(), 10);
}

#[test]
fn lru_keeps_recently_touched_sources() {
    let cfg = BroScanConfig {
        max_sources: 2,
        ..BroScanConfig::default()
    };
    let mut b = BroScan::new(cfg);
    let (a, c, d) = (ip("192.0.2.10"), ip("192.0.2.11"), ip("192.0.2.12"));
    b.check(&conn(at(1), a, peer(1), Service::tcp(6881), false));
    b.check(&conn(at(2), c, peer(1), Service::tcp(6881), false));
    b.check(&conn(at(3), a, peer(2), Service::tcp(6881), false)); // a is now the newest
    b.check(&conn(at(4), d, peer(1), Service::tcp(6881), false)); // evicts c
    assert_eq!(b.distinct_peers(a), 2);
    assert_eq!(b.distinct_peers(c), 0);
    assert_eq!(b.distinct_peers(d), 1);
    assert_eq!(b.evictions, 1);
}

#[test]
fn udp_suppression_and_pre_filter() {
    let cfg = BroScanConfig {
        suppress_udp_scan_checks: true,
        ..BroScanConfig::default()
    };
    let mut b = BroScan::new(cfg);
    b.check(&conn(at(1), ip(SRC), peer(1), Service::udp(6881), false));
    assert_eq!(b.tracked_sources(), 0);

    // addr_scan_trigger: the first peers only fill pre_distinct_peers; the peer that reaches
    // the trigger starts distinct_peers at 1.
    let cfg = BroScanConfig {
        addr_scan_trigger: 3,
        ..BroScanConfig::default()
    };
    let mut b = BroScan::new(cfg);
    for i in 1..=3 {
        b.check(&conn(
            at(u64::from(i)),
            ip(SRC),
            peer(i),
            Service::tcp(6881),
            false,
        ));
    }
    assert_eq!(b.distinct_peers(ip(SRC)), 1);
}

#[test]
fn ignore_scanners_threshold() {
    let cfg = BroScanConfig {
        ignore_scanners_threshold: 30,
        ..BroScanConfig::default()
    };
    let mut b = BroScan::new(cfg);
    let mut out = Vec::new();
    for i in 1..=40u32 {
        b.check_into(
            &conn(
                at(u64::from(i)),
                ip(SRC),
                peer(i),
                Service::tcp(hi_port(i)),
                false,
            ),
            &mut out,
        );
    }
    assert_eq!(kinds(&out), vec![addr_msg(20, 20)]);
    assert_eq!(b.distinct_peers(ip(SRC)), 0, "cleared at 31");
    // Ignored for 1 day (create expire), then tracked afresh.
    b.expire(at(86_400 + 31), &mut out);
    assert_eq!(b.tracked_sources(), 1);
    b.expire(at(86_400 + 32), &mut out);
    assert_eq!(b.tracked_sources(), 0);
    b.check(&conn(
        at(86_500),
        ip(SRC),
        peer(1),
        Service::tcp(6881),
        false,
    ));
    assert_eq!(b.distinct_peers(ip(SRC)), 1);
}

#[test]
fn state_is_dropped_after_a_day_idle() {
    let mut b = BroScan::default();
    for i in 1..=101u32 {
        b.check(&conn(
            at(0),
            ip(SRC),
            peer(i),
            Service::tcp(hi_port(i)),
            false,
        ));
    }
    let mut out = Vec::new();
    let mut t = 0;
    while t <= 86_400 + 20 {
        b.expire(at(t), &mut out);
        t += 10;
    }
    // Only shut_down_thresh_reached (no expiry in Bro) keeps it.
    assert_eq!(b.tracked_sources(), 1);
    assert!(b.srcs[&ip(SRC)].shut_down);
    assert!(b.expiry.is_empty());
}
