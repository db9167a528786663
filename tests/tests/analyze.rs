//! The engine and the `analyze`/`peers` commands, offline (unprivileged): on the synthetic
//! demo capture (`sensor_tests::synth`), and in the `corpus` module on third-party captures
//! (see the corpus's CATALOG.md for what each holds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sensor::detect::{BroScanConfig, NoticeKind};
use sensor::engine::{Collect, Engine, EngineConfig, Suppress};
use sensor::predict::Channel;

/// The synthetic demo capture, written once per test binary.
fn demo_pcap() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("sensor-analyze-demo-{}.pcap", std::process::id()));
        sensor_tests::synth::demo_capture()
            .write_pcap_file(&path)
            .unwrap();
        path
    })
}

/// The synthetic capture's hosts: the BitTorrent client, which learns its peers from a UDP
/// tracker and the DHT, and the VLAN-tagged scanner.
const DEMO_BT_HOST: &str = "192.0.2.10";
const DEMO_SCANNER: &str = "192.0.2.66";

fn analyze_file(pcap: &Path, suppress: Suppress) -> Engine<Collect> {
    let config = EngineConfig {
        suppress,
        bro: BroScanConfig::with_first_threshold(20),
        ..EngineConfig::default()
    };
    let (engine, report) =
        sensor::analyze::analyze(&[pcap.to_path_buf()], 1472, config, Collect::default()).unwrap();
    assert!(report.damaged.is_empty(), "{:?}", report.damaged);
    engine
}

/// Notices about `src` of the address- or port-scan kinds.
fn flagged(e: &Engine<Collect>, src: &str) -> Vec<NoticeKind> {
    let src: std::net::IpAddr = src.parse().unwrap();
    e.sink
        .notices
        .iter()
        .filter(|n| n.src == src)
        .map(|n| n.note)
        .collect()
}

const ALL_MODES: [Suppress; 4] = [
    Suppress::None,
    Suppress::Predict,
    Suppress::Ppr,
    Suppress::All,
];

#[test]
fn synthetic_scanner_is_flagged_in_every_mode_and_the_bittorrent_host_only_by_the_baseline() {
    use NoticeKind::*;
    for mode in ALL_MODES {
        let e = analyze_file(demo_pcap(), mode);
        let notes = flagged(&e, DEMO_SCANNER);
        assert!(
            notes.contains(&AddressScan) && notes.contains(&PortScan),
            "{mode:?}: {notes:?}"
        );
        let bt = flagged(&e, DEMO_BT_HOST);
        if mode == Suppress::None {
            assert_eq!(bt, [AddressScan, ScanSummary, PortScanSummary]);
            assert!(e.sink.suppressed.is_empty());
        } else {
            assert!(bt.is_empty(), "{mode:?}: {:?}", e.sink.notices);
            // What the baseline raised is accounted for as suppressed, with a reason.
            assert!(!e.sink.suppressed.is_empty(), "{mode:?}");
        }
    }
    // Every failed connection of the BitTorrent host goes to a peer its tracker or the DHT
    // announced.
    let e = analyze_file(demo_pcap(), Suppress::All);
    let host: std::net::IpAddr = DEMO_BT_HOST.parse().unwrap();
    let by = |pred: &dyn Fn(Channel) -> bool| {
        e.sink
            .attempts
            .iter()
            .filter(|(o, p)| o.failed() && o.initiator().ip() == host && p.is_some_and(pred))
            .count()
    };
    assert_eq!(by(&|c| c == Channel::UdpTracker), 28);
    assert_eq!(by(&|c| c == Channel::Dht), 17);
}

#[test]
fn cli_json_notices_and_errors() {
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    let out = Command::new(&sensor)
        .args([
            "analyze",
            "--json",
            "--suppress",
            "none",
            "--threshold",
            "20",
        ])
        .arg(demo_pcap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 9);
    for key in ["ts", "note", "src", "peers", "ports", "msg"] {
        assert!(lines.iter().all(|l| !l[key].is_null()), "{key} missing");
    }
    assert!(lines[0]["ts"].is_f64());
    assert_eq!(lines[0]["note"], "AddressScan");
    assert_eq!(lines[0]["src"], DEMO_BT_HOST);
    assert_eq!(lines[0]["peers"], 20);

    // Not a capture: one line, exit 1, no panic.
    let notes = std::env::temp_dir().join(format!("sensor-notes-{}.txt", std::process::id()));
    std::fs::write(&notes, "hello\n").unwrap();
    let out = Command::new(&sensor)
        .args(["analyze"])
        .arg(&notes)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not a pcap or pcapng file"));

    // Truncated: partial results, a warning, exit 2.
    let bytes = std::fs::read(demo_pcap()).unwrap();
    let cut = std::env::temp_dir().join(format!("sensor-cut-{}.pcap", std::process::id()));
    std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
    let out = Command::new(&sensor)
        .args(["analyze", "--suppress", "none", "--threshold", "20"])
        .arg(&cut)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("has scanned 20 hosts"),
        "partial results"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
}

#[test]
fn zeek_logs_tsv_and_json() {
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    let dir = std::env::temp_dir().join(format!("sensor-logs-demo-{}", std::process::id()));
    let out = Command::new(&sensor)
        .args([
            "analyze",
            "--suppress",
            "none",
            "--threshold",
            "20",
            "--out",
        ])
        .arg(&dir)
        .arg(demo_pcap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout_notices = String::from_utf8(out.stdout).unwrap().lines().count();
    let notice = std::fs::read_to_string(dir.join("notice.log")).unwrap();
    assert!(notice.starts_with("#separator \\x09\n"));
    assert!(notice.contains(
        "\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tnote\tmsg\tsub\tsrc\tdst\tp\tn\tactions\tsuppress_for\tpeers\tports\n"
    ));
    let rows: Vec<&str> = notice.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(rows.len(), stdout_notices);
    assert!(rows[0].split('\t').nth(7) == Some("AddressScan"));
    // One attempts row per connection outcome; failed ones carry REJ/S0/SH/RSTOS0.
    let attempts = std::fs::read_to_string(dir.join("attempts.log")).unwrap();
    let failed = attempts
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| matches!(l.split('\t').nth(8), Some("S0" | "REJ" | "SH" | "RSTOS0")))
        .count();
    // The scanner's 258 failures and the BitTorrent host's 45.
    assert!(failed >= 303, "failed attempts: {failed}");
    // notice.log joins attempts.log on uid: each notice raised on a connection names one
    // that attempts.log has, with the same endpoints; summaries have none.
    assert!(notice.contains("\n#open\t20") && notice.contains("\n#close\t20"));
    let attempt_ids: std::collections::HashMap<&str, Vec<&str>> = attempts
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[1], f[2..7].to_vec())
        })
        .collect();
    let mut joined = 0;
    for row in &rows {
        let f: Vec<&str> = row.split('\t').collect();
        if f[7].ends_with("Summary") {
            assert_eq!(f[1], "-", "{row}");
            continue;
        }
        assert!(f[1].starts_with('C') && f[1].len() == 12, "{row}");
        assert_eq!(attempt_ids.get(f[1]), Some(&f[2..7].to_vec()), "{row}");
        joined += 1;
    }
    // AddressScan and LowPortTrolling, PortScan, AddressScan; then five summaries.
    assert_eq!(joined, 4);
    assert_eq!(rows.len(), 9);

    let json_dir = dir.join("json");
    let out = Command::new(&sensor)
        .args([
            "analyze",
            "--suppress",
            "none",
            "--threshold",
            "20",
            "--json-logs",
            "--out",
        ])
        .arg(&json_dir)
        .arg(demo_pcap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines = std::fs::read_to_string(json_dir.join("notice.log")).unwrap();
    assert_eq!(lines.lines().count(), stdout_notices);
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["ts"].is_f64() && v["note"].is_string() && v["src"].is_string());
    }
}

#[test]
fn peers_lists_predictions_and_coverage() {
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    // The generator announces 40 peers by the UDP tracker and 20 by the DHT to the IPv4 host,
    // each predicted for TCP (and for uTP).
    let out = Command::new(&sensor)
        .args(["peers", "--json"])
        .arg(demo_pcap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for l in &lines {
        for key in ["ts", "host", "peer", "port", "transport", "channel"] {
            assert!(!l[key].is_null(), "{key} missing in {l}");
        }
    }
    let tcp = |channel: &str| {
        lines
            .iter()
            .filter(|l| {
                l["host"] == DEMO_BT_HOST && l["channel"] == channel && l["transport"] == "tcp"
            })
            .count()
    };
    assert_eq!((tcp("udp_tracker"), tcp("dht")), (40, 20));

    // Coverage: every failed TCP handshake of the BitTorrent host was predicted, none of the
    // scanner's.
    let out = Command::new(&sensor)
        .args(["peers", "--stats"])
        .arg(demo_pcap())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |host: &str| {
        text.lines()
            .find(|l| l.starts_with(host))
            .unwrap_or_else(|| panic!("{host} row in {text}"))
            .to_string()
    };
    assert!(
        row(DEMO_BT_HOST).contains("100.0%"),
        "{}",
        row(DEMO_BT_HOST)
    );
    assert!(row(DEMO_SCANNER).contains(" 0.0%"), "{}", row(DEMO_SCANNER));
}

// Every format a user will hand it: cut frames, snap length 0, multi-section pcapng, unknown
// link types, paths that are no captures, and the exit status of each case, for every offline
// command. Captures are the demo capture rewritten by pcap-file's writers.

/// A scratch path for these tests.
fn fmt_scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The demo capture as a classic pcap of `datalink` with snap length `snaplen` (each frame
/// stored cut to it, its original length kept), frames rewritten by `convert`.
fn demo_as_pcap(
    name: &str,
    snaplen: u32,
    datalink: pcap_file::DataLink,
    convert: impl Fn(&[u8]) -> Vec<u8>,
) -> PathBuf {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let header = PcapHeader {
        snaplen,
        datalink,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for p in &sensor_tests::synth::demo_capture().packets {
        let frame = convert(&p.frame);
        let kept = &frame[..frame.len().min(snaplen as usize)];
        let orig_len = u32::try_from(frame.len()).unwrap();
        w.write_packet(&PcapPacket::new(p.ts, orig_len, kept))
            .unwrap();
    }
    let path = fmt_scratch(name);
    std::fs::write(&path, w.into_writer()).unwrap();
    path
}

/// An Ethernet frame as Linux cooked capture (SLL): the same protocol field, then the same
/// bytes after it (VLAN tags included).
fn as_sll(frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 1, 0, 6];
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&frame[12..]);
    out
}

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn sensor_run(args: &[&str], inputs: &[&Path]) -> Run {
    static SENSOR: OnceLock<PathBuf> = OnceLock::new();
    let sensor = SENSOR.get_or_init(|| sensor_tests::lab::sensor_binary(false).unwrap());
    let out = Command::new(sensor)
        .args(args)
        .args(inputs)
        .output()
        .unwrap();
    Run {
        status: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `analyze --json` notices (baseline, threshold 20), as JSON values.
fn json_notices(run: &Run) -> Vec<serde_json::Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const BASELINE: [&str; 6] = [
    "analyze",
    "--json",
    "--suppress",
    "none",
    "--threshold",
    "20",
];

fn prefilter_json(run: &Run) -> std::collections::BTreeMap<String, u64> {
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn cli_snap_length_cut_frames_keep_the_scan_notices() {
    let demo = sensor_tests::synth::demo_capture();
    let whole = sensor_run(&BASELINE, &[demo_pcap()]);
    assert_eq!(whole.status, Some(0), "{}", whole.stderr);
    let cut = demo_as_pcap(
        "s96.pcap",
        96,
        pcap_file::DataLink::ETHERNET,
        <[u8]>::to_vec,
    );
    let run = sensor_run(&BASELINE, &[&cut]);
    assert_eq!(
        run.status,
        Some(0),
        "cut frames are no damage: {}",
        run.stderr
    );
    let scanner = |run: &Run| -> Vec<serde_json::Value> {
        json_notices(run)
            .into_iter()
            .filter(|n| n["src"] == DEMO_SCANNER)
            .collect()
    };
    assert!(!scanner(&whole).is_empty());
    assert_eq!(scanner(&run), scanner(&whole), "the same scan notices");

    let frames = demo.packets.len() as u64;
    let (cut_frames, lost) = demo
        .packets
        .iter()
        .filter(|p| p.frame.len() > 96)
        .fold((0, 0), |(n, b), p| (n + 1, b + p.frame.len() as u64 - 96));
    assert!(cut_frames > 0);
    assert!(
        run.stderr.contains(&format!(
            "sensor: {frames} frames ({cut_frames} cut by a snap length, {lost} bytes not captured)"
        )),
        "{}",
        run.stderr
    );

    assert!(
        run.stderr.contains(&format!(
            "sensor: warning: {}: {cut_frames} frames cut by a snap length ({lost} bytes not \
             captured): coordination messages in the lost bytes cannot be read",
            cut.display()
        )),
        "{}",
        run.stderr
    );

    let pf = sensor_run(&["prefilter", "--json"], &[&cut]);
    assert_eq!(pf.status, Some(0));
    let counters = prefilter_json(&pf);
    assert_eq!(
        counters["packets"], frames,
        "every frame, not up to the first cut one"
    );
    assert_eq!(counters["frames_cut"], cut_frames);
    assert_eq!(counters["bytes_not_captured"], lost);
    assert_eq!(counters["frames_unsupported_link"], 0);
    assert!(
        counters["udp_truncated"] > 0,
        "cut datagrams are short, as in XDP"
    );

    let stats = sensor_run(&["peers", "--stats"], &[&cut]);
    assert_eq!(stats.status, Some(0));
    assert!(
        stats.stdout.contains(&format!(
            "capture: frames {frames}, frames_cut {cut_frames}, bytes_not_captured {lost}, \
             frames_unsupported_link 0"
        )),
        "{}",
        stats.stdout
    );

    // A header snap length of 0 means no limit: every frame, the same notices.
    let mut bytes = std::fs::read(demo_pcap()).unwrap();
    bytes[16..20].copy_from_slice(&[0; 4]);
    let zero = fmt_scratch("s0.pcap");
    std::fs::write(&zero, bytes).unwrap();
    let run = sensor_run(&BASELINE, &[&zero]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    assert_eq!(json_notices(&run), json_notices(&whole));
    assert!(run.stderr.contains(&format!("sensor: {frames} frames, ")));
}

/// `cat a.pcapng b.pcapng`: the demo capture's first half in a section of Ethernet with
/// microsecond timestamps, the rest in one of Linux SLL with nanosecond timestamps, both on
/// interface 0. The notices must be the demo capture's, at the same times.
#[test]
fn cli_multi_section_pcapng_keeps_each_sections_interfaces() {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use pcap_file::pcapng::PcapNgWriter;
    let demo = sensor_tests::synth::demo_capture();
    let half = demo.packets.len() / 2;
    let section = |packets: &[sensor_tests::synth::SynthPacket], ns: bool| {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        let (linktype, options) = if ns {
            (
                pcap_file::DataLink::LINUX_SLL,
                vec![InterfaceDescriptionOption::IfTsResol(9)],
            )
        } else {
            (pcap_file::DataLink::ETHERNET, vec![])
        };
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype,
            snaplen: 0,
            options,
        })
        .unwrap();
        for p in packets {
            let (raw, data) = if ns {
                (p.ts.as_nanos(), as_sll(&p.frame))
            } else {
                (p.ts.as_micros(), p.frame.clone())
            };
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                // pcap-file writes this Duration's nanoseconds as the raw count of units.
                timestamp: std::time::Duration::from_nanos(u64::try_from(raw).unwrap()),
                original_len: u32::try_from(data.len()).unwrap(),
                data: data.into(),
                options: vec![],
            })
            .unwrap();
        }
        w.into_inner()
    };
    let path = fmt_scratch("two-sections.pcapng");
    std::fs::write(
        &path,
        [
            section(&demo.packets[..half], false),
            section(&demo.packets[half..], true),
        ]
        .concat(),
    )
    .unwrap();
    let whole = sensor_run(&BASELINE, &[demo_pcap()]);
    let run = sensor_run(&BASELINE, &[&path]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    assert_eq!(json_notices(&run), json_notices(&whole));
    let pf = sensor_run(&["prefilter", "--json"], &[&path]);
    let reference = sensor_run(&["prefilter", "--json"], &[demo_pcap()]);
    assert_eq!(prefilter_json(&pf), prefilter_json(&reference));
}

#[test]
fn cli_unsupported_link_type_is_named_and_counted() {
    let path = demo_as_pcap(
        "user0.pcap",
        65535,
        pcap_file::DataLink::USER0,
        <[u8]>::to_vec,
    );
    let frames = sensor_tests::synth::demo_capture().packets.len() as u64;
    let run = sensor_run(&BASELINE, &[&path]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains(&format!(
            "sensor: warning: {}: link type 147 (USER0) is not supported: {frames} frames skipped",
            path.display()
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!(
        "sensor: {frames} frames ({frames} on an unsupported link type)"
    )));
    let pf = sensor_run(&["prefilter", "--json"], &[&path]);
    assert_eq!(pf.status, Some(0));
    let counters = prefilter_json(&pf);
    assert_eq!(counters["packets"], frames);
    assert_eq!(counters["non_ip"], frames, "every frame accounted for");
    assert_eq!(counters["frames_unsupported_link"], frames);
    assert!(pf.stderr.contains("link type 147 (USER0)"));
}

/// Exit status 1 for an input that cannot be read at all, 2 for a damaged one (1 wins), and
/// the readable inputs' results printed either way, in every offline command.
#[test]
fn cli_bad_inputs_exit_statuses() {
    let dir = fmt_scratch("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = fmt_scratch("missing.pcap");
    let garbage = fmt_scratch("garbage.pcap");
    std::fs::write(&garbage, "GET / HTTP/1.1\r\n\r\n").unwrap();
    let damaged = fmt_scratch("damaged.pcap");
    let bytes = std::fs::read(demo_pcap()).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() - 7]).unwrap();
    let labels = fmt_scratch("labels.csv");
    std::fs::write(&labels, format!("{DEMO_SCANNER},scanner,synthetic\n")).unwrap();
    let labels_arg = labels.to_str().unwrap();

    let commands: [&[&str]; 4] = [
        &["analyze"],
        &["peers"],
        &["prefilter"],
        &["eval", "--labels", labels_arg],
    ];
    for command in commands {
        let run = sensor_run(command, &[&dir]);
        assert_eq!(run.status, Some(1), "{command:?}");
        assert_eq!(
            run.stderr,
            format!(
                "sensor: {}: is a directory, not a capture file\n",
                dir.display()
            ),
            "{command:?}"
        );
        assert!(run.stdout.is_empty(), "{command:?}");

        let run = sensor_run(command, &[&missing]);
        assert_eq!(run.status, Some(1), "{command:?}");
        assert_eq!(
            run.stderr,
            format!("sensor: {}: no such file\n", missing.display()),
            "{command:?}"
        );

        let run = sensor_run(command, &[&garbage]);
        assert_eq!(run.status, Some(1), "{command:?}");
        assert!(
            run.stderr.contains("not a pcap or pcapng file"),
            "{command:?}"
        );
    }

    // A good file, then a bad one: the good file's results, then status 1.
    for command in [&["analyze"][..], &["peers"], &["prefilter"]] {
        let alone = sensor_run(command, &[demo_pcap()]);
        assert_eq!(alone.status, Some(0), "{command:?}");
        assert!(!alone.stdout.is_empty(), "{command:?}");
        for bad in [&garbage, &missing, &dir] {
            let run = sensor_run(command, &[demo_pcap(), bad]);
            assert_eq!(run.status, Some(1), "{command:?} {bad:?}");
            assert_eq!(
                run.stdout, alone.stdout,
                "{command:?} {bad:?}: results kept"
            );
            assert!(run.stderr.contains(&format!("sensor: {}: ", bad.display())));
        }
        // Damage alone: 2; damage and an unreadable input: 1.
        let run = sensor_run(command, &[demo_pcap(), &damaged]);
        assert_eq!(run.status, Some(2), "{command:?}");
        assert!(run.stderr.contains("warning"), "{command:?}");
        let run = sensor_run(command, &[&damaged, &garbage]);
        assert_eq!(run.status, Some(1), "{command:?}");
        assert!(
            run.stderr.contains("truncated"),
            "{command:?}: {}",
            run.stderr
        );
    }
    // The summary still comes after a good file and a bad one.
    let run = sensor_run(&["analyze"], &[demo_pcap(), &garbage]);
    let frames = sensor_tests::synth::demo_capture().packets.len();
    assert!(run.stderr.contains(&format!("sensor: {frames} frames, ")));

    // eval scores whole captures: a bad one anywhere fails the run before it starts.
    let run = sensor_run(&["eval", "--labels", labels_arg], &[demo_pcap(), &garbage]);
    assert_eq!(run.status, Some(1));
    assert!(run.stdout.is_empty());
    let run = sensor_run(&["eval", "--labels", labels_arg], &[demo_pcap()]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
}

/// Sources of the baseline's notices.
fn notice_sources(run: &Run) -> std::collections::BTreeSet<String> {
    json_notices(run)
        .iter()
        .map(|n| n["src"].as_str().unwrap().to_owned())
        .collect()
}

/// Allow-lists (Bro's skip_scan_sources and skip_scan_nets), from the command line and from a
/// config file: the skipped scanner raises nothing, every other notice stays.
#[test]
fn cli_allow_listed_scanner_raises_nothing() {
    let baseline = sensor_run(&BASELINE, &[demo_pcap()]);
    assert_eq!(baseline.status, Some(0), "{}", baseline.stderr);
    let all = json_notices(&baseline);
    let sources = notice_sources(&baseline);
    assert_eq!(
        sources,
        [DEMO_BT_HOST, DEMO_SCANNER].map(String::from).into(),
        "both flagged without an allow-list"
    );
    let others: Vec<_> = all.iter().filter(|n| n["src"] != DEMO_SCANNER).collect();
    let config = fmt_scratch("allow-list.toml");
    std::fs::write(
        &config,
        format!("[detection]\nskip-scan-sources = [\"{DEMO_SCANNER}\"]\n"),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for extra in [
        &["--skip-scan-sources", DEMO_SCANNER][..],
        &["--skip-scan-sources", "198.51.100.1,192.0.2.66"],
        &["--skip-scan-nets", "192.0.2.64/30"],
        &["--config", config],
    ] {
        let args: Vec<&str> = BASELINE.iter().chain(extra).copied().collect();
        let run = sensor_run(&args, &[demo_pcap()]);
        assert_eq!(run.status, Some(0), "{extra:?}: {}", run.stderr);
        let kept = json_notices(&run);
        assert_eq!(kept.iter().collect::<Vec<_>>(), others, "{extra:?}");
    }
    // A network that does not hold the scanner skips nothing.
    let args: Vec<&str> = BASELINE
        .iter()
        .chain(&["--skip-scan-nets", "192.0.2.68/30"])
        .copied()
        .collect();
    assert_eq!(json_notices(&sensor_run(&args, &[demo_pcap()])), all);
}

/// A config file gives the same results as the same options on the command line, and the
/// command line overrides it.
#[test]
fn cli_config_file_sets_analyze_options() {
    let config = fmt_scratch("analyze.toml");
    std::fs::write(
        &config,
        "[detection]\nsuppress = \"all\"\nthreshold = 20\n[analyze]\njson = true\nsuppress = \"none\"\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let baseline = sensor_run(&BASELINE, &[demo_pcap()]);
    let from_file = sensor_run(&["analyze", "--config", config], &[demo_pcap()]);
    assert_eq!(from_file.status, Some(0), "{}", from_file.stderr);
    assert_eq!(from_file.stdout, baseline.stdout);
    let overridden = sensor_run(
        &["analyze", "--config", config, "--suppress", "all"],
        &[demo_pcap()],
    );
    assert_eq!(
        notice_sources(&overridden),
        [DEMO_SCANNER.to_owned()].into()
    );
    let check = sensor_run(&["check-config", config], &[]);
    assert_eq!(check.status, Some(0), "{}", check.stderr);
    for line in [
        format!("suppress = \"none\"  # {config}:6 [analyze]"),
        format!("threshold = 20  # {config}:3 [detection]"),
    ] {
        assert!(
            check.stdout.lines().any(|l| l == line),
            "{line}: {}",
            check.stdout
        );
    }
}

/// Usage errors exit 64 and config file errors 78, apart from the inputs' 1 and 2; help and
/// version exit 0.
#[test]
fn cli_usage_and_config_errors_exit_statuses() {
    let demo = demo_pcap();
    for args in [
        &["analyze", "--bogus"][..],
        &["analyze", "--threshold", "many"],
        &["analyze", "--ppr-range", "0.75"],
        &["analyze", "--local-nets", "10.0.0.0/40"],
        &["eval", "--threshold", "20"],
        &["run"],
        &["frobnicate"],
    ] {
        let run = sensor_run(args, &[demo]);
        assert_eq!(run.status, Some(64), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("error: "),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}");
    }
    for args in [&["--help"][..], &["--version"], &["analyze", "--help"]] {
        let run = sensor_run(args, &[]);
        assert_eq!(run.status, Some(0), "{args:?}: {}", run.stderr);
        assert!(!run.stdout.is_empty(), "{args:?}");
    }
    let bad = fmt_scratch("bad.toml");
    std::fs::write(&bad, "[analyze]\nthreshold = 20\nsupress = \"none\"\n").unwrap();
    let bad = bad.to_str().unwrap();
    let expected = format!(
        "sensor: {bad}:3: [analyze] supress: unknown key: `sensor analyze --help` lists the options\n"
    );
    let run = sensor_run(&["analyze", "--config", bad], &[demo]);
    assert_eq!(run.status, Some(78));
    assert_eq!(run.stderr, expected);
    assert!(run.stdout.is_empty());
    let run = sensor_run(&["check-config", bad], &[]);
    assert_eq!(
        (run.status, run.stderr.as_str()),
        (Some(78), expected.as_str())
    );
    let run = sensor_run(&["check-config", "/nonexistent.toml"], &[]);
    assert_eq!(run.status, Some(78));
    assert!(
        run.stderr.starts_with("sensor: reading /nonexistent.toml"),
        "{}",
        run.stderr
    );
}

/// The same and more on third-party captures.
mod corpus {
    use super::*;
    use sensor_tests::corpus;

    fn analyze(rel: &str, suppress: Suppress) -> Engine<Collect> {
        analyze_file(&corpus(rel), suppress)
    }

    #[test]
    fn scanners_are_flagged_in_every_mode() {
        use NoticeKind::*;
        // (capture, scanner, a notice it must get); expectations from CATALOG.md's ground truth.
        let cases = [
            // nmap -sS of a /24: 1000 ports on each live host.
            (
                "MakCyber007-Task-1/nmap_tcp_syn_scan_capture.pcap",
                "192.168.1.6",
                PortScan,
            ),
            // nmap -sT, 1000 ports of one host.
            (
                "markofu-pcaps/TCP_CONNECT_SCAN.pcap",
                "192.168.1.10",
                PortScan,
            ),
            // nmap -sS, 1000 ports of one host.
            ("markofu-pcaps/TCP_SYN_SCAN.pcap", "192.168.1.10", PortScan),
            // masscan -p0-1000 of one host.
            (
                "esnet-security-curated-pcaps/tcp_0_1000_20190821.pcap",
                "172.31.15.102",
                PortScan,
            ),
            // Mirai-like horizontal scan of 136 hosts.
            (
                "stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap",
                "192.168.2.16",
                AddressScan,
            ),
        ];
        for (capture, scanner, must) in cases {
            for mode in ALL_MODES {
                let e = analyze(capture, mode);
                let notes = flagged(&e, scanner);
                assert!(notes.contains(&must), "{capture} {mode:?}: {notes:?}");
                assert!(
                    e.sink.suppressed.is_empty(),
                    "{capture} {mode:?}: nothing to suppress"
                );
            }
        }
        // The horizontal scan, notice by notice (Bro 1.5 with --threshold 20).
        let e = analyze(
            "stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap",
            Suppress::All,
        );
        let msgs: Vec<_> = e.sink.notices.iter().map(|n| n.msg.as_str()).collect();
        assert_eq!(
            msgs,
            [
                "192.168.2.16 has scanned 20 hosts (8080/tcp)",
                "shutdown threshold reached for 192.168.2.16",
                "192.168.2.16 has scanned 101 hosts (23/tcp)",
                "192.168.2.16 scanned a total of 136 hosts",
            ]
        );
    }

    #[test]
    fn gnutella_hosts_stay_flagged_with_suppression() {
        // Non-BitTorrent P2P: no coordination traffic explains their failures.
        for (capture, host) in [
            ("ntop-nDPI/gnutella.pcap", "10.0.2.15"),
            ("markofu-pcaps/gnutella.pcap", "10.1.4.176"),
        ] {
            for mode in ALL_MODES {
                let e = analyze(capture, mode);
                assert!(
                    flagged(&e, host).contains(&NoticeKind::AddressScan),
                    "{capture} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn transmission_host_is_not_flagged_with_suppression() {
        let host: std::net::IpAddr = "192.168.1.128".parse().unwrap();
        let e = analyze("ntop-nDPI/bittorrent_transmission.pcapng", Suppress::All);
        assert!(
            flagged(&e, "192.168.1.128").is_empty(),
            "{:?}",
            e.sink.notices
        );
        // CATALOG.md: 58 of the host's failed SYNs go to peers the DHT and UDP tracker announced.
        let by = |pred: &dyn Fn(Channel) -> bool| {
            e.sink
                .attempts
                .iter()
                .filter(|(o, p)| o.failed() && o.initiator().ip() == host && p.is_some_and(pred))
                .count()
        };
        assert_eq!(by(&|c| matches!(c, Channel::Dht | Channel::UdpTracker)), 58);
        // Its own uTP SYNs to the same ip:port predict 30 more (a TCP fallback after uTP); they
        // count because the host also has third-party predictions.
        assert_eq!(by(&|c| c == Channel::Utp), 30);
        // What the baseline raised is accounted for as suppressed, with a reason.
        assert!(!e.sink.suppressed.is_empty());
        // Prediction alone removes 88 failures but leaves an address scan (established
        // connections and unpredicted failures still count); PPR is what clears it.
        let e = analyze(
            "ntop-nDPI/bittorrent_transmission.pcapng",
            Suppress::Predict,
        );
        assert!(flagged(&e, "192.168.1.128").contains(&NoticeKind::AddressScan));
    }

    #[test]
    fn transmission_host_is_flagged_by_the_baseline() {
        let e = analyze("ntop-nDPI/bittorrent_transmission.pcapng", Suppress::None);
        let notes = flagged(&e, "192.168.1.128");
        assert_eq!(
            notes,
            [
                NoticeKind::AddressScan,
                NoticeKind::ShutdownThresh,
                NoticeKind::AddressScan,
                NoticeKind::ScanSummary,
                NoticeKind::PortScanSummary
            ]
        );
    }

    #[test]
    fn background_traffic_with_local_nets_raises_nothing() {
        let local_nets: Vec<_> = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
            .map(|n| n.parse().unwrap())
            .into();
        for capture in [
            "ntop-nDPI/alexa-app.pcapng",
            "ntop-nDPI/teams.pcap",
            "chrissanders-packets/http_espn.pcapng",
        ] {
            let mut bro = BroScanConfig::with_first_threshold(20);
            bro.local_nets = local_nets.clone();
            let config = EngineConfig {
                suppress: Suppress::None,
                bro,
                ..EngineConfig::default()
            };
            let (e, _) =
                sensor::analyze::analyze(&[corpus(capture)], 1472, config, Collect::default())
                    .unwrap();
            assert!(e.sink.notices.is_empty(), "{capture}: {:?}", e.sink.notices);
        }
        // Without local_nets Bro 1.5 treats every host as inbound, and established connections on
        // services outside Hot::allow_services count as peers: 20 HTTPS servers make an AddressScan.
        let e = analyze("ntop-nDPI/alexa-app.pcapng", Suppress::None);
        let msgs: Vec<_> = e.sink.notices.iter().map(|n| n.msg.as_str()).collect();
        assert_eq!(msgs, ["172.16.42.216 has scanned 20 hosts (443/tcp)"]);
    }

    #[test]
    fn cli_json_notices_and_errors() {
        let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
        let out = Command::new(&sensor)
            .args(["analyze", "--json", "--threshold", "20"])
            .arg(corpus(
                "stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap",
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        for key in ["ts", "note", "src", "peers", "ports", "msg"] {
            assert!(lines.iter().all(|l| !l[key].is_null()), "{key} missing");
        }
        assert!(lines[0]["ts"].is_f64());
        assert_eq!(lines[0]["note"], "AddressScan");
        assert_eq!(lines[0]["peers"], 20);

        // Not a capture: one line, exit 1, no panic.
        let notes = std::env::temp_dir().join(format!("sensor-notes-{}.txt", std::process::id()));
        std::fs::write(&notes, "hello\n").unwrap();
        let out = Command::new(&sensor)
            .args(["analyze"])
            .arg(&notes)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("not a pcap or pcapng file"));

        // Truncated: partial results, a warning, exit 2.
        let bytes = std::fs::read(corpus(
            "stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap",
        ))
        .unwrap();
        let cut = std::env::temp_dir().join(format!("sensor-cut-{}.pcap", std::process::id()));
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let out = Command::new(&sensor)
            .args(["analyze", "--threshold", "20"])
            .arg(&cut)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("has scanned 20 hosts"),
            "partial results"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    }

    #[test]
    fn zeek_logs_tsv_and_json() {
        let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
        let capture = corpus("ntop-nDPI/bittorrent_transmission.pcapng");
        let dir = std::env::temp_dir().join(format!("sensor-logs-{}", std::process::id()));
        let out = Command::new(&sensor)
            .args([
                "analyze",
                "--suppress",
                "none",
                "--threshold",
                "20",
                "--out",
            ])
            .arg(&dir)
            .arg(&capture)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout_notices = String::from_utf8(out.stdout).unwrap().lines().count();
        let notice = std::fs::read_to_string(dir.join("notice.log")).unwrap();
        assert!(notice.starts_with("#separator \\x09\n"));
        assert!(notice.contains(
        "\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tnote\tmsg\tsub\tsrc\tdst\tp\tn\tactions\tsuppress_for\tpeers\tports\n"
    ));
        let rows: Vec<&str> = notice.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(rows.len(), stdout_notices);
        assert!(rows[0].split('\t').nth(7) == Some("AddressScan"));
        // One attempts row per connection outcome; failed ones carry REJ/S0/SH/RSTOS0.
        let attempts = std::fs::read_to_string(dir.join("attempts.log")).unwrap();
        let failed = attempts
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| matches!(l.split('\t').nth(8), Some("S0" | "REJ" | "SH" | "RSTOS0")))
            .count();
        assert!(
            failed >= 93,
            "CATALOG: 93 RST-refused SYNs from the Transmission host; got {failed}"
        );

        let json_dir = dir.join("json");
        let out = Command::new(&sensor)
            .args([
                "analyze",
                "--suppress",
                "none",
                "--threshold",
                "20",
                "--json-logs",
                "--out",
            ])
            .arg(&json_dir)
            .arg(&capture)
            .output()
            .unwrap();
        assert!(out.status.success());
        for line in std::fs::read_to_string(json_dir.join("notice.log"))
            .unwrap()
            .lines()
        {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["ts"].is_f64() && v["note"].is_string() && v["src"].is_string());
        }
    }

    #[test]
    fn peers_lists_predictions_and_coverage() {
        let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
        // Suricata's DHT trace: one get_peers response with two compact peers (CATALOG.md), each
        // predicted for TCP and for uTP (UDP).
        let out = Command::new(&sensor)
            .args(["peers", "--json"])
            .arg(corpus("OISF-suricata-verify/bittorrent-dht/input.pcap"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        for l in &lines {
            for key in ["ts", "host", "peer", "port", "transport", "channel"] {
                assert!(!l[key].is_null(), "{key} missing in {l}");
            }
            assert_eq!(l["channel"], "dht");
            assert_eq!(l["host"], "190.0.0.1");
        }

        // Coverage on small_torrent: every failed TCP handshake of the client was predicted.
        let out = Command::new(&sensor)
            .args(["peers", "--stats"])
            .arg(corpus("goncalo-rodrigues-360BitScoping/small_torrent.pcap"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let row = text
            .lines()
            .find(|l| l.starts_with("192.168.0.102"))
            .expect("client row");
        assert!(row.contains("100.0%"), "{row}");
    }

    #[test]
    fn bittorrent_host_and_scanner_in_one_input() {
        // The Transmission capture followed by the Mirai-like scan, as one stream: suppression
        // must clear the BitTorrent host and only it.
        let config = EngineConfig {
            suppress: Suppress::All,
            bro: BroScanConfig::with_first_threshold(20),
            ..EngineConfig::default()
        };
        let inputs = [
            corpus("ntop-nDPI/bittorrent_transmission.pcapng"),
            corpus("stratosphereips-StratosphereLinuxIPS/test7-malicious.pcap"),
        ];
        let (e, _) = sensor::analyze::analyze(&inputs, 1472, config, Collect::default()).unwrap();
        assert!(flagged(&e, "192.168.1.128").is_empty());
        assert!(flagged(&e, "192.168.2.16").contains(&NoticeKind::AddressScan));
        assert!(flagged(&e, "192.168.2.16").contains(&NoticeKind::ShutdownThresh));
    }
}
