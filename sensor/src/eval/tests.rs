use std::net::SocketAddr;

use super::*;

/// The head of a labels file as the lab writes it: a header, quoted fields holding commas,
/// roles that are not scored, and rows naming a prefix rather than a host.
const LAB_LABELS: &str = r#"ip,role,client_or_tool,scan_type,rate,details
10.1.0.1,gateway,linux router (capture point),,,inside LAN interface br-in
198.18.7.107,tracker,opentracker (Debian 0.0~git20210823),,,"HTTP :6969/announce, UDP :6969"
10.1.44.184,bittorrent,transmission-daemon 3.00,,,listen 52372 (DHT on same port); started t=34s
10.1.37.229,bittorrent,"python-libtorrent 2.1.1 (PyPI wheel)",,,"listen 46355; tier1 udp://, tier2 http://"
10.1.101.15,scanner,masscan,horizontal,100 pps (--rate 100),"side=inside; targets=198.18.225.0/24,198.18.178.0/24; ports=80,443"
10.1.238.180,benign,curl,,,curl page fetches every 3-20 s
198.19.0.0/16,peer-population,lab peers (bin/natpeers.py),,,"announced via http-a, udp-a"
2001:db8::7,scanner,"nmap -sS, -T3",vertical,,
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn labels_parse_the_lab_format() {
    let l = Labels::parse(LAB_LABELS).unwrap();
    // The header and the prefix row are skipped; every address is kept.
    assert_eq!(l.len(), 7);
    let get = |s| l.get(ip(s)).unwrap();
    assert_eq!(get("10.1.44.184").role, Role::Bittorrent);
    assert_eq!(get("10.1.44.184").what, "transmission-daemon 3.00");
    // Quoted fields: the quotes go, the commas inside stay, and the row keeps its columns.
    assert_eq!(
        get("10.1.37.229").what,
        "python-libtorrent 2.1.1 (PyPI wheel)"
    );
    assert_eq!(get("2001:db8::7").role, Role::Scanner);
    assert_eq!(get("2001:db8::7").what, "nmap -sS, -T3");
    assert_eq!(get("10.1.101.15").role, Role::Scanner);
    assert_eq!(get("10.1.238.180").role, Role::Benign);
    // Unknown roles are kept, as written, and not scored.
    assert_eq!(get("10.1.0.1").role, Role::Other("gateway".into()));
    assert_eq!(
        get("198.18.7.107").role,
        Role::Other("tracker".into()),
        "a quoted field with commas later in the row does not shift the role"
    );
    assert!(l.get(ip("198.19.0.0")).is_none());
}

#[test]
fn labels_roles_ignore_case_and_serialise_as_written() {
    let l = Labels::parse("192.0.2.1, BitTorrent ,x\n192.0.2.2,Scanner\n192.0.2.3,Seed\n").unwrap();
    assert_eq!(l.get(ip("192.0.2.1")).unwrap().role, Role::Bittorrent);
    assert_eq!(l.get(ip("192.0.2.2")).unwrap().role, Role::Scanner);
    assert_eq!(l.get(ip("192.0.2.2")).unwrap().what, "");
    let seed = &l.get(ip("192.0.2.3")).unwrap().role;
    assert_eq!(*seed, Role::Other("Seed".into()));
    assert_eq!(serde_json::to_string(seed).unwrap(), r#""Seed""#);
    assert_eq!(
        serde_json::to_string(&Role::Bittorrent).unwrap(),
        r#""bittorrent""#
    );
}

#[test]
fn labels_without_hosts_are_an_error() {
    for text in [
        "",
        "\n\n",
        "ip,role,client_or_tool\n",
        "198.19.0.0/16,peer-population\n",
    ] {
        let err = Labels::parse(text).unwrap_err();
        assert!(
            err.to_string().contains("no labelled hosts"),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn labels_byte_order_mark_and_duplicates() {
    let l = Labels::parse("\u{feff}192.0.2.1,scanner,nmap\n192.0.2.1,scanner,nmap\n").unwrap();
    assert_eq!(l.len(), 1);
    let err = Labels::parse("192.0.2.1,scanner,nmap\n192.0.2.1,bittorrent,x\n").unwrap_err();
    assert!(err.to_string().contains("labelled again"), "{err}");
}

fn host(ip_: &str, role: Role, flagged: [(&'static str, Vec<bool>); 4]) -> HostResult {
    HostResult {
        capture: "c.pcap".into(),
        ip: ip(ip_),
        label: Label {
            role,
            what: String::new(),
        },
        flagged: flagged.into_iter().collect(),
        failed_tcp: 0,
        predicted_failed_tcp: 0,
        predicted_by_channel: BTreeMap::new(),
        minutes_to_100_predicted: None,
    }
}

#[test]
fn roc_counts_scanners_and_bittorrent_hosts_per_mode_and_threshold() {
    let (t, f) = (true, false);
    let hosts = [
        // Flagged at both thresholds in every mode.
        host(
            "192.0.2.1",
            Role::Scanner,
            [
                ("none", vec![t, t]),
                ("predict", vec![t, t]),
                ("ppr", vec![t, t]),
                ("all", vec![t, t]),
            ],
        ),
        // Flagged only at the low threshold.
        host(
            "192.0.2.2",
            Role::Scanner,
            [
                ("none", vec![t, f]),
                ("predict", vec![t, f]),
                ("ppr", vec![t, f]),
                ("all", vec![t, f]),
            ],
        ),
        // Flagged by the baseline at both, by PPR alone at the low one.
        host(
            "192.0.2.3",
            Role::Bittorrent,
            [
                ("none", vec![t, t]),
                ("predict", vec![f, f]),
                ("ppr", vec![t, f]),
                ("all", vec![f, f]),
            ],
        ),
        host(
            "192.0.2.4",
            Role::Bittorrent,
            [
                ("none", vec![t, f]),
                ("predict", vec![f, f]),
                ("ppr", vec![f, f]),
                ("all", vec![f, f]),
            ],
        ),
        host(
            "192.0.2.5",
            Role::Bittorrent,
            [
                ("none", vec![f, f]),
                ("predict", vec![f, f]),
                ("ppr", vec![f, f]),
                ("all", vec![f, f]),
            ],
        ),
        // Neither benign hosts nor other roles are scored, flagged or not.
        host(
            "192.0.2.6",
            Role::Benign,
            [
                ("none", vec![t, t]),
                ("predict", vec![t, t]),
                ("ppr", vec![t, t]),
                ("all", vec![t, t]),
            ],
        ),
        host(
            "192.0.2.7",
            Role::Other("seed".into()),
            [
                ("none", vec![t, t]),
                ("predict", vec![t, t]),
                ("ppr", vec![t, t]),
                ("all", vec![t, t]),
            ],
        ),
    ];
    let rows = roc(&hosts, &[10, 100]);
    let got: Vec<(&str, u64, u64, u64, u64, u64)> = rows
        .iter()
        .map(|r| (r.mode, r.threshold, r.tp, r.scanners, r.fp, r.bittorrent))
        .collect();
    assert_eq!(
        got,
        [
            ("none", 10, 2, 2, 2, 3),
            ("none", 100, 1, 2, 1, 3),
            ("predict", 10, 2, 2, 0, 3),
            ("predict", 100, 1, 2, 0, 3),
            ("ppr", 10, 2, 2, 1, 3),
            ("ppr", 100, 1, 2, 0, 3),
            ("all", 10, 2, 2, 0, 3),
            ("all", 100, 1, 2, 0, 3),
        ]
    );
    let none_10 = &rows[0];
    assert!((none_10.tpr - 1.0).abs() < 1e-12);
    assert!((none_10.fpr - 2.0 / 3.0).abs() < 1e-12);
    assert!((rows[1].tpr - 0.5).abs() < 1e-12);

    let report = EvalReport {
        thresholds: vec![10, 100],
        captures: vec!["c.pcap".into()],
        roc: rows,
        hosts: hosts.to_vec(),
    };
    let csv = report.roc_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "mode,threshold,tp,scanners,fp,bittorrent,tpr,fpr");
    assert_eq!(lines[1], "none,10,2,2,2,3,1.0000,0.6667");
    assert_eq!(lines.len(), 9);
}

#[test]
fn roc_without_hosts_of_a_role_has_zero_rates() {
    let hosts = [host(
        "192.0.2.1",
        Role::Scanner,
        [
            ("none", vec![true]),
            ("predict", vec![true]),
            ("ppr", vec![true]),
            ("all", vec![true]),
        ],
    )];
    for r in roc(&hosts, &[20]) {
        assert_eq!((r.tp, r.scanners, r.fp, r.bittorrent), (1, 1, 0, 0));
        assert!((r.tpr - 1.0).abs() < 1e-12 && r.fpr == 0.0);
    }
}

#[test]
fn predicted_connections_are_failed_matches_and_established_handshakes_to_announced_peers() {
    use crate::detect::ConnState;
    use crate::predict::{PredictedPeer, PredictionConfig};

    let table = Arc::new(PredictionTable::new(PredictionConfig::default()));
    let host = ip("192.0.2.10");
    let announced: SocketAddr = "203.0.113.7:51413".parse().unwrap();
    table.insert(&PredictedPeer {
        ts: Timestamp::from_secs(1),
        host,
        peer: announced,
        transport: PeerTransport::Tcp,
        channel: Channel::UdpTracker,
    });
    let mut sink = LaneSink {
        recorder: Some(Recorder {
            hosts: HashMap::new(),
            predictions: Arc::clone(&table),
        }),
        ..LaneSink::default()
    };
    let outcome = |secs, resp: &str, event, state, established| ConnOutcome {
        ts: Timestamp::from_secs(secs),
        orig: SocketAddr::new(host, 50000),
        resp: resp.parse().unwrap(),
        udp: false,
        event,
        state,
        established,
        reverse: false,
        uid: crate::detect::Uid::default(),
    };
    // A failed attempt the engine matched: predicted, and counted as a failed handshake.
    sink.attempt(
        &outcome(
            10,
            "203.0.113.8:6881",
            BroEvent::Attempt,
            ConnState::S0,
            false,
        ),
        Some(Channel::Dht),
    );
    // A failed attempt to a peer nobody announced.
    sink.attempt(
        &outcome(
            11,
            "203.0.113.9:6881",
            BroEvent::Rejected,
            ConnState::REJ,
            false,
        ),
        None,
    );
    // A handshake to the announced peer, then the same connection's later outcome.
    sink.attempt(
        &outcome(
            12,
            "203.0.113.7:51413",
            BroEvent::Established,
            ConnState::S1,
            true,
        ),
        None,
    );
    sink.attempt(
        &outcome(
            13,
            "203.0.113.7:51413",
            BroEvent::Reset,
            ConnState::RSTO,
            true,
        ),
        None,
    );
    // A handshake to a peer nobody announced.
    sink.attempt(
        &outcome(
            14,
            "203.0.113.10:80",
            BroEvent::Established,
            ConnState::S1,
            true,
        ),
        None,
    );
    let a = &sink.recorder.unwrap().hosts[&host];
    assert_eq!((a.failed_tcp, a.predicted_failed_tcp), (2, 1));
    assert_eq!(a.by_channel, BTreeMap::from([(Channel::Dht, 1)]));
    assert_eq!(
        a.predicted_at,
        [Timestamp::from_secs(10), Timestamp::from_secs(12)]
    );
}

#[test]
fn minutes_to_the_hundredth_predicted_connection() {
    let times: Vec<Timestamp> = (0..150)
        .map(|i| Timestamp::from_secs(600 + 6 * i))
        .collect();
    // The 1st at 600 s, the 100th at 600 + 6·99 s: 9.9 minutes.
    let m = minutes_to_target(&times[..PREDICTED_TARGET]).unwrap();
    assert!((m - 9.9).abs() < 1e-9, "{m}");
    assert_eq!(minutes_to_target(&times[..99]), None);
    assert_eq!(minutes_to_target(&[]), None);
}
