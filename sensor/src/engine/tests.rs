use super::*;
use crate::event::{TcpFlags, TcpSegment, Transport};
use sensor_ebpf::tcp_flag::SYN;
use std::net::SocketAddr;

const BT: &str = "192.0.2.10";

fn syn(ts_ms: u64, src: SocketAddr, dst: SocketAddr) -> PacketEvent<'static> {
    PacketEvent {
        ts: Timestamp::from_secs(1_700_000_000) + Duration::from_millis(ts_ms),
        src,
        dst,
        vlan_depth: 0,
        transport: Transport::Tcp(TcpSegment {
            flags: TcpFlags(SYN),
            seq: 1,
            ack: 0,
            window: 1,
            payload_len: 0,
            head: &[],
        }),
    }
}

/// 40 unanswered SYNs from `src`, each to a new peer on its own high port.
fn bittorrent_like(src: &str) -> Vec<PacketEvent<'static>> {
    (0..40u16)
        .map(|i| {
            let dst: SocketAddr = format!("203.0.113.{}:{}", i + 1, 20_000 + i * 337)
                .parse()
                .unwrap();
            syn(
                u64::from(i) * 500,
                format!("{src}:{}", 50_000 + i).parse().unwrap(),
                dst,
            )
        })
        .collect()
}

fn run(suppress: Suppress, predict: bool, events: &[PacketEvent<'static>]) -> Engine<Collect> {
    let config = EngineConfig {
        suppress,
        bro: BroScanConfig::with_first_threshold(20),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Collect::default()).unwrap();
    if predict {
        for e in events {
            engine.predict(&PredictedPeer {
                ts: e.ts,
                host: e.src.ip(),
                peer: e.dst,
                transport: PeerTransport::Tcp,
                channel: Channel::Synthetic,
            });
        }
    }
    for e in events {
        engine.event(e);
    }
    // Let the attempt timers of the last SYNs run out.
    let end = events.last().unwrap().ts + Duration::from_secs(10);
    engine.tick(end);
    engine.conns.advance(end, &mut engine.outcomes);
    engine.process_outcomes();
    engine.finish();
    engine
}

fn notes(v: &[ScanNotice]) -> Vec<&'static str> {
    v.iter().map(|n| n.note.as_str()).collect()
}

fn synack(ts_ms: u64, syn: &PacketEvent<'static>) -> PacketEvent<'static> {
    PacketEvent {
        ts: syn.ts + Duration::from_millis(ts_ms),
        src: syn.dst,
        dst: syn.src,
        vlan_depth: 0,
        transport: Transport::Tcp(TcpSegment {
            flags: TcpFlags(SYN | sensor_ebpf::tcp_flag::ACK),
            seq: 7,
            ack: 2,
            window: 1,
            payload_len: 0,
            head: &[],
        }),
    }
}

/// Each SYN answered 10 ms later: established connections.
fn answered(syns: &[PacketEvent<'static>]) -> Vec<PacketEvent<'static>> {
    syns.iter().flat_map(|s| [*s, synack(10, s)]).collect()
}

fn predicted_peers(engine: &mut Engine<Collect>, events: &[PacketEvent<'static>]) {
    for e in events {
        engine.predict(&PredictedPeer {
            ts: e.ts,
            host: e.src.ip(),
            peer: e.dst,
            transport: PeerTransport::Tcp,
            channel: Channel::Synthetic,
        });
    }
}

fn run_with(
    suppress: Suppress,
    predicted: &[PacketEvent<'static>],
    events: &[PacketEvent<'static>],
) -> Engine<Collect> {
    let config = EngineConfig {
        suppress,
        bro: BroScanConfig::with_first_threshold(20),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Collect::default()).unwrap();
    predicted_peers(&mut engine, predicted);
    for e in events {
        engine.event(e);
    }
    engine.finish();
    engine
}

/// Bro counts an established connection on a service outside `allow_services` as a
/// distinct peer; to an announced peer it is BitTorrent all the same, and leaves the
/// counters with prediction on.
#[test]
fn established_connections_to_predicted_peers_leave_the_counters() {
    let syns = bittorrent_like(BT);
    let events = answered(&syns);
    let e = run_with(Suppress::None, &syns, &events);
    assert_eq!(notes(&e.sink.notices), ["AddressScan", "ScanSummary"]);
    assert_eq!(e.stats.failed_attempts, 0);
    for mode in [Suppress::Predict, Suppress::All] {
        let e = run_with(mode, &syns, &events);
        assert!(e.sink.notices.is_empty(), "{mode:?}: {:?}", e.sink.notices);
        // Every attempt is reported with the channel that predicted it.
        assert!(e.sink.attempts.iter().all(|(_, p)| p.is_some()));
    }
}

/// Every failure predicted, yet the detector still counts established connections to
/// peers nobody announced (incoming peers' addresses, say): PPR judges those, the attempts
/// the detector counted, and vouches for their peer-to-peer shape.
#[test]
fn ppr_judges_what_the_detector_counted_when_every_failure_is_predicted() {
    let failed = bittorrent_like(BT);
    let other: Vec<_> = (0..25u16)
        .map(|i| {
            let dst = format!("198.51.100.{}:{}", i + 1, 30_000 + i * 211);
            let src = format!("{BT}:{}", 40_000 + i);
            syn(
                30_000 + u64::from(i) * 500,
                src.parse().unwrap(),
                dst.parse().unwrap(),
            )
        })
        .collect();
    let mut events = failed.clone();
    events.extend(answered(&other));
    let e = run_with(Suppress::Predict, &failed, &events);
    assert_eq!(
        notes(&e.sink.notices)[0],
        "AddressScan",
        "25 established peers count"
    );
    let e = run_with(Suppress::All, &failed, &events);
    assert!(e.sink.notices.is_empty(), "{:?}", e.sink.notices);
    let reasons: Vec<_> = e
        .sink
        .suppressed
        .iter()
        .map(|(n, r)| (n.note.as_str(), *r))
        .collect();
    // The baseline's AddressScan (during the predicted failures), then the filtered
    // detector's (at its 20th established peer), which PPR vouched for.
    assert_eq!(
        &reasons[..2],
        [
            ("AddressScan", SuppressReason::Predicted),
            ("AddressScan", SuppressReason::Ppr)
        ]
    );
}

/// 300 targets on port 445, every one "announced" (a forged DHT reply, say): the sweep's
/// shape stands, and so does the alarm. The same for a vertical sweep of one host.
#[test]
fn predictions_never_hide_a_scan_shape() {
    let scanner = "192.0.2.66";
    let horizontal: Vec<_> = (0..300u16)
        .map(|i| {
            let dst = format!("198.51.{}.{}:445", 100 + i / 250, 1 + i % 250);
            let src = format!("{scanner}:{}", 40_000 + i);
            syn(
                u64::from(i) * 100,
                src.parse().unwrap(),
                dst.parse().unwrap(),
            )
        })
        .collect();
    let vertical: Vec<_> = (1..=300u16)
        .map(|port| {
            let dst = format!("198.51.100.7:{port}");
            let src = format!("{scanner}:{}", 40_000 + port);
            syn(
                u64::from(port) * 100,
                src.parse().unwrap(),
                dst.parse().unwrap(),
            )
        })
        .collect();
    for (sweep, note) in [(&horizontal, "AddressScan"), (&vertical, "PortScan")] {
        let baseline = run_with(Suppress::None, &[], sweep);
        for mode in [Suppress::Predict, Suppress::Ppr, Suppress::All] {
            let e = run_with(mode, sweep, sweep);
            assert!(
                notes(&e.sink.notices).contains(&note),
                "{mode:?}: {:?}",
                e.sink.notices
            );
            assert_eq!(
                notes(&e.sink.notices),
                notes(&baseline.sink.notices),
                "{mode:?}: the same alarms as without prediction"
            );
        }
    }
}

/// Live, on a quiet link: the scan's last SYNs become attempts when their timers run out,
/// not when an unrelated frame arrives, stamped as the next packet would have had them.
#[test]
fn a_quiet_link_still_raises_the_notice_on_time() {
    let scan: Vec<_> = (0..20u16)
        .map(|i| {
            let dst = format!("198.51.100.{}:445", i + 1);
            let src = format!("192.0.2.66:{}", 40_000 + i);
            syn(
                u64::from(i) * 10,
                src.parse().unwrap(),
                dst.parse().unwrap(),
            )
        })
        .collect();
    let config = EngineConfig {
        suppress: Suppress::None,
        bro: BroScanConfig::with_first_threshold(20),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Collect::default()).unwrap();
    for e in &scan {
        engine.event(e);
    }
    assert!(
        engine.sink.notices.is_empty(),
        "no outcome before the attempt timers"
    );
    let last = scan.last().unwrap().ts;
    engine.advance_to(last + Duration::from_secs(4));
    assert!(
        engine.sink.notices.is_empty(),
        "4 s: still inside tcp_attempt_delay"
    );
    engine.advance_to(last + Duration::from_secs(6));
    assert_eq!(notes(&engine.sink.notices), ["AddressScan"]);
    // The 20th attempt's timer: its SYN time plus Bro's 5 s, whenever the clock moved.
    assert_eq!(engine.sink.notices[0].ts, last + Duration::from_secs(5));
    // Packet time never goes back.
    engine.advance_to(last);
    assert_eq!(engine.now, last + Duration::from_secs(6));
}

#[test]
fn baseline_flags_the_bittorrent_host() {
    let e = run(Suppress::None, true, &bittorrent_like(BT));
    assert_eq!(
        notes(&e.sink.notices),
        ["AddressScan", "ScanSummary", "PortScanSummary"]
    );
    assert!(e.sink.notices[0]
        .msg
        .starts_with("192.0.2.10 has scanned 20 hosts"));
    assert_eq!(e.stats.failed_attempts, 40);
    assert_eq!(
        e.stats.predicted_failures, 40,
        "labelled even when not suppressed"
    );
    assert!(e.sink.suppressed.is_empty());
}

#[test]
fn prediction_removes_predicted_failures_and_says_so() {
    let e = run(Suppress::Predict, true, &bittorrent_like(BT));
    assert!(e.sink.notices.is_empty(), "{:?}", e.sink.notices);
    let reasons: Vec<_> = e
        .sink
        .suppressed
        .iter()
        .map(|(n, r)| (n.note.as_str(), *r))
        .collect();
    assert_eq!(
        reasons,
        [
            ("AddressScan", SuppressReason::Predicted),
            ("ScanSummary", SuppressReason::Predicted),
            ("PortScanSummary", SuppressReason::Predicted)
        ]
    );
    // Unpredicted, the same host is still flagged with prediction on.
    let e = run(Suppress::Predict, false, &bittorrent_like(BT));
    assert_eq!(
        notes(&e.sink.notices),
        ["AddressScan", "ScanSummary", "PortScanSummary"]
    );
}

#[test]
fn ppr_suppresses_bittorrent_shape_but_not_a_horizontal_scan() {
    // Without BitTorrent evidence the same shape is not suppressed (it could be Gnutella).
    let e = run(Suppress::Ppr, false, &bittorrent_like(BT));
    assert_eq!(
        notes(&e.sink.notices),
        ["AddressScan", "ScanSummary", "PortScanSummary"]
    );
    // With it (one peer announced to the host, on another port), PPR suppresses.
    let mut events = bittorrent_like(BT);
    events.truncate(40);
    let config = EngineConfig {
        suppress: Suppress::Ppr,
        bro: BroScanConfig::with_first_threshold(20),
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Collect::default()).unwrap();
    engine.predict(&PredictedPeer {
        ts: events[0].ts,
        host: BT.parse().unwrap(),
        peer: "198.51.100.99:51413".parse().unwrap(),
        transport: PeerTransport::Tcp,
        channel: Channel::Synthetic,
    });
    for ev in &events {
        engine.event(ev);
    }
    engine.finish();
    let e = engine;
    assert!(e.sink.notices.is_empty(), "{:?}", e.sink.notices);
    assert!(e
        .sink
        .suppressed
        .iter()
        .all(|(_, r)| *r == SuppressReason::Ppr));
    assert_eq!(e.stats.suppressed_ppr, 3);

    let scan: Vec<_> = (1..=40u16)
        .map(|i| {
            let dst: SocketAddr = format!("198.51.100.{i}:23").parse().unwrap();
            syn(
                u64::from(i) * 10,
                format!("192.0.2.66:{}", 40_000 + i).parse().unwrap(),
                dst,
            )
        })
        .collect();
    let e = run(Suppress::All, false, &scan);
    assert_eq!(notes(&e.sink.notices), ["AddressScan", "ScanSummary"]);
    assert!(e.sink.suppressed.is_empty());
}

#[test]
fn table_drops_are_published() {
    use std::sync::atomic::Ordering::Relaxed;
    let mut config = EngineConfig {
        suppress: Suppress::None,
        ..EngineConfig::default()
    };
    config.conn.max_conns = 5;
    let gauges = Arc::new(TableGauges::default());
    let mut engine = Engine::new(config, Collect::default()).unwrap();
    engine.export_tables(gauges.clone());
    for e in bittorrent_like(BT).iter().take(20) {
        engine.event(e);
    }
    engine.finish();
    let connections = gauges.table("connections").unwrap();
    assert_eq!(connections.entries.load(Relaxed), 5);
    assert_eq!(
        connections.evicted.load(Relaxed),
        15,
        "every eviction is counted"
    );
    let (name, t) = engine.tables()[0];
    assert_eq!(
        (name, t.len, t.evicted, t.expired),
        ("connections", 5, 15, 0)
    );
    // Every table and every channel has its row, once.
    let names: Vec<&str> = gauges.tables().iter().map(|t| t.name).collect();
    assert_eq!(
        names,
        engine.tables().iter().map(|t| t.0).collect::<Vec<_>>()
    );
    assert_eq!(
        gauges.channels().len(),
        engine.coordination().counts().len()
    );
}

/// The README's counter list names every table and channel label `/metrics` exports.
#[test]
fn readme_lists_every_table_and_channel() {
    let readme = include_str!("../../../README.md");
    let metrics = &readme[readme.find("### Metrics").expect("metrics section")..];
    let engine = Engine::new(EngineConfig::default(), Collect::default()).unwrap();
    let channels = engine.coordination().counts();
    let names = engine
        .tables()
        .into_iter()
        .map(|t| t.0)
        .chain(channels.into_iter().map(|c| c.0));
    for name in names {
        assert!(
            metrics.contains(&format!("`{name}`")),
            "README misses `{name}`"
        );
    }
    // Every list and reason of the coordination drops too.
    for (_, list, reason, _) in engine.coordination().drops() {
        for word in [list, reason] {
            assert!(
                metrics.contains(&format!("`{word}`")),
                "README misses `{word}`"
            );
        }
    }
}

#[test]
fn trw_detector_flags_after_four_failures() {
    let config = EngineConfig {
        detector: DetectorKind::Trw,
        suppress: Suppress::None,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Collect::default()).unwrap();
    for e in bittorrent_like(BT).iter().take(6) {
        engine.event(e);
    }
    engine.tick(Timestamp::from_secs(1_700_000_020));
    engine.conns.advance(engine.now, &mut engine.outcomes);
    engine.process_outcomes();
    assert_eq!(notes(&engine.sink.notices), ["TRWAddressScan"]);
}
