//! End to end through the kernel: captures replayed into a veth pair in a lab namespace, the
//! `sensor` binary attached to the other end. Checks that XDP saw exactly what was sent, that
//! record counts equal what tshark finds in the capture, that nothing was dropped, that
//! `/metrics` says the same, and that the live event stream equals the offline one.
//!
//! The default tests replay the synthetic demo capture (`sensor_tests::synth`); the same checks
//! on third-party captures live in the `corpus` module (see `sensor_tests::corpus_dir`).
//!
//! Needs root, tcpreplay and tshark (`cargo xtask setup` installs them).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sensor::agent::RunSummary;
use sensor::event::EventLine;
use sensor_tests::lab::{self, Lab, SensorProcess};
use sensor_tests::privilege::privileged;

fn metric(m: &std::collections::HashMap<String, f64>, series: &str) -> u64 {
    lab::count(
        *m.get(series)
            .unwrap_or_else(|| panic!("{series} missing from /metrics")),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn read_events(path: &Path) -> Vec<EventLine> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut e: EventLine = serde_json::from_str(l).unwrap();
            e.ts.clear(); // the live clock is the replay's, not the capture's
            e
        })
        .collect()
}

/// Replays `pcap` at `pps` and checks every invariant; returns the tcpreplay stats.
fn replay_and_check(original: &Path, pps: u32, mode: &str, tag: &str) -> lab::ReplayStats {
    assert!(original.exists(), "{} missing", original.display());
    let pcap = &lab::mtu_safe_copy(original, scratch("").parent().unwrap()).expect("tcprewrite");
    let lab = Lab::new().expect("create lab namespace");
    let summary_path = scratch(&format!("{tag}-summary.json"));
    let live_events = scratch(&format!("{tag}-live.jsonl"));
    let binary = lab::sensor_binary(false).expect("build sensor");
    let sensor = SensorProcess::start(
        &lab,
        &binary,
        &[
            "--xdp-mode",
            mode,
            "--summary",
            summary_path.to_str().unwrap(),
            "--events",
            live_events.to_str().unwrap(),
        ],
    )
    .expect("start sensor");

    let stats = lab.replay(pcap, Some(pps), 1).expect("tcpreplay");
    assert_eq!(stats.failed, 0, "tcpreplay failed to send some packets");

    // Wait until the agent has consumed every record the kernel emitted.
    let metrics =
        lab::wait_caught_up(&lab, stats.packets, Duration::from_secs(20)).expect("catch up");
    check_coordination_metrics(&lab, pcap);
    check_exposition(&lab, stats.packets);
    check_no_capabilities(sensor.pid());

    let rx_packets = lab.rx_packets(&lab.rx).unwrap();
    let status = sensor.stop().expect("stop sensor");
    assert!(status.success(), "sensor exit: {status}");
    assert!(
        !lab.has_xdp(&lab.rx).unwrap(),
        "XDP still attached after the sensor exited"
    );

    let summary: RunSummary =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(
        summary.xdp_by_iface.get(&lab.rx),
        Some(&summary.xdp),
        "one interface: its counters are the total"
    );
    check_summary(&summary, &stats, rx_packets, pcap);
    check_metrics(&metrics, &summary);
    check_offline_path(&binary, pcap, &summary, &live_events, tag);

    eprintln!(
        "{tag}: {} packets in {:.2} s = {:.0} pps ({mode} XDP), {} records, ring drops {}",
        stats.packets,
        stats.seconds,
        stats.pps,
        summary.consumed.total(),
        summary.xdp["ring_full"]
    );
    stats
}

/// `promtool check metrics` on a live scrape: what a Prometheus operator runs first. `None`
/// when promtool is missing (`cargo xtask setup` installs it; under `cargo xtask test` it must
/// be there).
fn promtool_check(text: &str) -> Option<String> {
    use std::io::Write as _;
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("SENSOR_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
                "promtool missing (cargo xtask setup installs it): {e}"
            );
            eprintln!("promtool not installed: live scrape not linted");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics on a live scrape: {report}\n{text}"
    );
    Some(report)
}

/// The live endpoint speaks both formats, the classic one passes promtool, and the kernel
/// counters carry the interface the sensor is attached to.
fn check_exposition(lab: &Lab, sent: u64) {
    let (head, classic) = lab
        .http_request(lab::METRICS_PORT, "/metrics", &[("Accept", "text/plain")])
        .unwrap();
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    if promtool_check(&classic).is_some() {
        eprintln!("promtool check metrics: live scrape clean");
    }
    assert!(
        classic.contains(&format!(
            "sensor_xdp_packets_total{{iface=\"{}\"}} {sent}\n",
            lab.rx
        )),
        "no per-interface packet count in:\n{classic}"
    );
    for family in [
        "sensor_build_info{",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(classic.contains(family), "{family} missing");
    }
    // Prometheus's own Accept header gets OpenMetrics.
    let (head, openmetrics) = lab
        .http_request(
            lab::METRICS_PORT,
            "/metrics",
            &[(
                "Accept",
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            )],
        )
        .unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));
    assert!(openmetrics.contains("# TYPE sensor_xdp_packets counter\n"));
}

/// Waits (at most 5 s) for the drop that follows the attach: `SensorProcess::start` returns
/// once XDP is attached, a moment before.
fn wait_for_drop(pid: u32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = format!("/proc/{pid}/status");
    while !std::fs::read_to_string(&status)
        .unwrap()
        .contains("NoNewPrivs:\t1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no capability drop within 5 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every thread of the running sensor holds no capability at all, and cannot gain any.
fn check_no_capabilities(pid: u32) {
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path().join("status"))
        .collect();
    assert!(tasks.len() >= 2, "the agent runs threads: {tasks:?}");
    for status in std::iter::once(PathBuf::from(format!("/proc/{pid}/status"))).chain(tasks) {
        let text = std::fs::read_to_string(&status).unwrap();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("{name} missing from {}", status.display()))
                .trim()
                .to_string()
        };
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                field(set),
                "0000000000000000",
                "{set} of {}",
                status.display()
            );
        }
        assert_eq!(field("NoNewPrivs"), "1", "{}", status.display());
    }
}

/// Coordination parsing is exported, and reaches the counts the offline path finds in the
/// file (the engine publishes from the drain timer, so this holds once traffic stops).
fn check_coordination_metrics(lab: &Lab, pcap: &Path) {
    let offline = {
        let mut coordination = sensor::bt::Coordination::default();
        let (mut learnt, mut retracted) = (Vec::new(), Vec::new());
        sensor::capture::pcap::prefilter_file(pcap, 1472, |ev| match &ev.transport {
            sensor::event::Transport::Udp(udp) => {
                coordination.on_udp(ev, udp, &mut learnt, &mut retracted);
            }
            sensor::event::Transport::Tcp(seg) => {
                coordination.on_tcp(ev, seg, &mut learnt, &mut retracted);
            }
            sensor::event::Transport::Icmp(_) => {}
        })
        .unwrap();
        coordination
            .counts()
            .into_iter()
            .map(|(name, c)| (name, [c.seen, c.parsed, c.rejected_total()]))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = lab::parse_metrics(&lab.http_get(lab::METRICS_PORT, "/metrics").unwrap());
        // Every channel the offline path counts has its series, under the same name.
        let live: Vec<_> = offline
            .iter()
            .map(|&(channel, _)| {
                let series = ["seen", "parsed", "rejected"].map(|outcome| {
                    lab::metric(&m, &format!("sensor_coordination_messages_total{{channel=\"{channel}\",outcome=\"{outcome}\"}}"))
                });
                (channel, series)
            })
            .collect();
        if live == offline {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "coordination metrics {live:?} vs offline {offline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The run summary: XDP saw exactly the frames sent, lost none, and its records equal
/// tshark's reading of the capture.
fn check_summary(summary: &RunSummary, stats: &lab::ReplayStats, rx_packets: u64, pcap: &Path) {
    let xdp = |name: &str| summary.xdp[name];

    // XDP saw exactly the frames sent, no more, no fewer.
    assert_eq!(
        xdp("packets"),
        stats.packets,
        "XDP packets vs tcpreplay sent"
    );
    assert_eq!(rx_packets, stats.packets, "veth RX vs tcpreplay sent");
    // Nothing lost between kernel and agent.
    assert_eq!(xdp("ring_full"), 0, "ring drops");
    assert_eq!(xdp("load_errors"), 0);
    assert_eq!(summary.decode_errors, 0);
    let records = [
        "records_syn",
        "records_synack",
        "records_rst",
        "records_fin",
        "records_udp",
        "records_icmp",
        "records_tcp_data",
        "records_udp_meta",
    ];
    assert_eq!(
        summary.consumed.total(),
        records.iter().map(|r| xdp(r)).sum::<u64>()
    );
    // Every frame ends in exactly one place: a record, a skip reason, or a counted loss.
    let outcomes = [
        "non_ip",
        "fragments",
        "parse_errors",
        "tcp_other",
        "tcp_over_budget",
        "udp_empty",
        "udp_unclassified",
        "other_l4",
        "ring_full",
        "load_errors",
    ];
    assert_eq!(
        xdp("packets"),
        records
            .iter()
            .chain(outcomes.iter())
            .map(|k| xdp(k))
            .sum::<u64>(),
        "frame accounting: {:?}",
        summary.xdp
    );

    // Record counts equal tshark's reading of the same capture.
    let expected = lab::tshark_counts(pcap).expect("tshark");
    assert_eq!(expected.frames, stats.packets);
    let actual = lab::TsharkCounts {
        frames: xdp("packets"),
        syn: xdp("records_syn"),
        synack: xdp("records_synack"),
        rst: xdp("records_rst"),
        fin: xdp("records_fin"),
        // Every UDP datagram with a payload: forwarded, as metadata, or withheld by the
        // classified policy (`udp_unclassified`).
        udp: xdp("records_udp") + xdp("records_udp_meta") + xdp("udp_unclassified"),
        icmp: xdp("records_icmp"),
    };
    assert_eq!(actual, expected, "XDP records vs tshark");
    assert_eq!(summary.consumed.syn, expected.syn);
    assert_eq!(
        summary.consumed.udp,
        xdp("records_udp") + xdp("records_udp_meta")
    );
}

/// `/metrics` reported the same counters as the summary, and the engine evicted nothing.
fn check_metrics(metrics: &std::collections::HashMap<String, f64>, summary: &RunSummary) {
    // /metrics reported the same counters.
    for (name, value) in &summary.xdp {
        let series = match name.as_str() {
            "packets" => "sensor_xdp_packets_total".to_string(),
            "ipv4" | "ipv6" => format!("sensor_xdp_ip_packets_total{{version=\"{}\"}}", &name[3..]),
            "ring_full" => "sensor_xdp_ring_full_drops_total".to_string(),
            "load_errors" => "sensor_xdp_load_errors_total".to_string(),
            "udp_truncated" => "sensor_xdp_udp_truncated_total".to_string(),
            "flows_marked" => "sensor_xdp_flows_marked_total".to_string(),
            "flows_ended" => "sensor_xdp_flows_ended_total".to_string(),
            "utp_header_only" => "sensor_xdp_utp_header_only_total".to_string(),
            "bytes_seen" => "sensor_xdp_bytes_seen_total".to_string(),
            "bytes_forwarded" => "sensor_xdp_bytes_forwarded_total".to_string(),
            n if n.starts_with("bytes_") => {
                format!("sensor_xdp_record_bytes_total{{kind=\"{}\"}}", &n[6..])
            }
            "tcp_over_budget" => {
                "sensor_xdp_skipped_total{reason=\"tcp_flow_over_budget\"}".to_string()
            }
            n if n.starts_with("records_") => {
                format!("sensor_xdp_records_total{{kind=\"{}\"}}", &n[8..])
            }
            "non_ip" | "fragments" | "parse_errors" | "tcp_other" | "udp_empty"
            | "udp_unclassified" | "other_l4" => {
                let reason = match name.as_str() {
                    "fragments" => "fragment",
                    "parse_errors" => "parse_error",
                    "tcp_other" => "tcp_no_syn_rst_fin",
                    n => n,
                };
                format!("sensor_xdp_skipped_total{{reason=\"{reason}\"}}")
            }
            other => panic!("counter {other} has no metric"),
        };
        assert_eq!(metric(metrics, &series), *value, "{series}");
    }

    // The engine's tables are exported, and nothing was evicted at this scale.
    let engine = sensor::engine::Engine::new(sensor::engine::EngineConfig::default(), ()).unwrap();
    for (table, _) in engine.tables() {
        let series = format!("sensor_table_evictions_total{{table=\"{table}\"}}");
        assert_eq!(metric(metrics, &series), 0, "{series}");
    }
}

/// The offline path over the file gives the same counters and the same events.
fn check_offline_path(
    binary: &Path,
    pcap: &Path,
    summary: &RunSummary,
    live_events: &Path,
    tag: &str,
) {
    let offline_events = scratch(&format!("{tag}-offline.jsonl"));
    let out = Command::new(binary)
        .args([
            "prefilter",
            "--json",
            "--events",
            offline_events.to_str().unwrap(),
        ])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut offline: std::collections::BTreeMap<String, u64> =
        serde_json::from_slice(&out.stdout).unwrap();
    // What only a file can tell (cut frames, unknown link types) has no XDP counterpart.
    for key in [
        "frames_cut",
        "bytes_not_captured",
        "frames_unsupported_link",
    ] {
        assert!(offline.remove(key).is_some(), "{key} missing");
    }
    assert_eq!(offline, summary.xdp, "offline pre-filter counters vs XDP");
    let (mut live, mut off) = (read_events(live_events), read_events(&offline_events));
    assert_eq!(live.len(), off.len());
    // One veth queue keeps order, but compare as multisets so the check does not depend on it.
    live.sort_by_key(|e| serde_json::to_string(e).unwrap());
    off.sort_by_key(|e| serde_json::to_string(e).unwrap());
    assert!(live == off, "live and offline events differ");
}

#[test]
fn replay_synthetic_capture_native() {
    if !privileged("replay_synthetic_capture_native") {
        return;
    }
    // The demo capture: VLAN and QinQ tags, IPv6 extension headers, fragments, ARP, ICMP.
    let pcap = scratch("demo.pcap");
    sensor_tests::synth::demo_capture()
        .write_pcap_file(&pcap)
        .unwrap();
    replay_and_check(&pcap, 20_000, "native", "synthetic");
}

/// The attached sensor holds no capability, on any thread, yet still reads its kernel counters
/// (a `bpf()` call on a map fd it holds), serves metrics, and detaches on SIGTERM (closing its
/// bpf_link).
/// Two interfaces attached (`--iface a --iface b`), traffic replayed into the second only:
/// its counters move, the first's stay at zero, per interface on `/metrics` (which promtool
/// still passes) and in the summary, whose totals are their sum.
#[test]
fn kernel_counters_are_kept_per_interface() {
    if !privileged("kernel_counters_are_kept_per_interface") {
        return;
    }
    let lab = Lab::new().expect("create lab namespace");
    // Names unique inside the lab's own namespace.
    let (quiet, busy_tx, busy) = (lab.rx.clone(), "sxtb", "sxrb");
    lab.add_pair(busy_tx, busy).expect("second veth pair");
    let binary = lab::sensor_binary(false).expect("build sensor");
    let summary_path = scratch("ifaces-summary.json");
    // `SensorProcess::start` gives `--iface <lab.rx>` first: the quiet one.
    let sensor = SensorProcess::start(
        &lab,
        &binary,
        &["--iface", busy, "--summary", summary_path.to_str().unwrap()],
    )
    .expect("start sensor");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lab.has_xdp(busy).unwrap() {
        assert!(std::time::Instant::now() < deadline, "{busy} not attached");
        std::thread::sleep(Duration::from_millis(50));
    }

    let pcap = scratch("ifaces.pcap");
    let mut capture = sensor_tests::synth::demo_capture();
    capture.packets.truncate(300);
    capture.write_pcap_file(&pcap).unwrap();
    let pcap = lab::mtu_safe_copy(&pcap, scratch("").parent().unwrap()).unwrap();
    let stats = lab
        .replay_on(busy_tx, &pcap, Some(2000), 1)
        .expect("tcpreplay");
    assert_eq!(stats.failed, 0);
    lab::wait_caught_up(&lab, stats.packets, Duration::from_secs(20)).expect("catch up");

    let (_, text) = lab
        .http_request(lab::METRICS_PORT, "/metrics", &[("Accept", "text/plain")])
        .unwrap();
    if promtool_check(&text).is_some() {
        eprintln!("promtool check metrics: two-interface scrape clean");
    }
    let value = |series: String| -> u64 {
        let line = text
            .lines()
            .find(|l| l.rsplit_once(' ').is_some_and(|(s, _)| s == series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"));
        line.rsplit_once(' ').unwrap().1.parse().unwrap()
    };
    assert_eq!(
        value(format!("sensor_xdp_packets_total{{iface=\"{busy}\"}}")),
        stats.packets
    );
    assert_eq!(
        value(format!("sensor_xdp_packets_total{{iface=\"{quiet}\"}}")),
        0
    );
    let syn = |iface: &str| {
        value(format!(
            "sensor_xdp_records_total{{iface=\"{iface}\",kind=\"syn\"}}"
        ))
    };
    assert!(syn(busy) > 0, "the demo capture holds SYNs");
    assert_eq!(syn(&quiet), 0);
    assert!(
        !text.contains("iface=\"unknown\""),
        "frames counted as unknown"
    );

    let status = sensor.stop().expect("stop sensor");
    assert!(status.success(), "sensor exit: {status}");
    let summary: RunSummary =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary.ifaces, [quiet.clone(), busy.to_string()]);
    let by_iface = &summary.xdp_by_iface;
    assert_eq!(by_iface.len(), 2, "{by_iface:?}");
    assert_eq!(by_iface[busy]["packets"], stats.packets);
    assert!(by_iface[&quiet].values().all(|&v| v == 0), "{by_iface:?}");
    assert_eq!(
        by_iface[busy], summary.xdp,
        "the total is the busy interface's"
    );
}

#[test]
fn the_attached_sensor_holds_no_capabilities() {
    if !privileged("the_attached_sensor_holds_no_capabilities") {
        return;
    }
    let lab = Lab::new().expect("create lab namespace");
    let binary = lab::sensor_binary(false).expect("build sensor");
    let summary_path = scratch("caps-summary.json");
    let sensor = SensorProcess::start(
        &lab,
        &binary,
        &["--summary", summary_path.to_str().unwrap()],
    )
    .expect("start sensor");
    wait_for_drop(sensor.pid());
    check_no_capabilities(sensor.pid());

    // A few frames through the veth: the counters, read without capabilities, see them.
    let pcap = scratch("caps.pcap");
    let mut capture = sensor_tests::synth::demo_capture();
    capture.packets.truncate(50);
    capture.write_pcap_file(&pcap).unwrap();
    let pcap = lab::mtu_safe_copy(&pcap, scratch("").parent().unwrap()).unwrap();
    let stats = lab.replay(&pcap, Some(1000), 1).expect("tcpreplay");
    let m = lab::wait_caught_up(&lab, stats.packets, Duration::from_secs(20)).expect("catch up");
    assert_eq!(metric(&m, "sensor_xdp_packets_total"), stats.packets);

    let exit = sensor.stop().expect("stop sensor");
    assert!(exit.success(), "sensor exit: {exit}");
    assert!(
        !lab.has_xdp(&lab.rx).unwrap(),
        "XDP still attached after the sensor exited without capabilities"
    );
    // The final counters were read and written after the drop too.
    let summary: RunSummary =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(summary.xdp["packets"], stats.packets);
}

/// The capabilities `deploy/sensor.service` grants are enough to load and attach as an
/// unprivileged user (uid 65534, through `setpriv`, as systemd's `AmbientCapabilities` does),
/// and none of them is left once attached.
#[test]
fn the_units_capabilities_suffice_and_none_is_left_after_attaching() {
    if !privileged("the_units_capabilities_suffice_and_none_is_left_after_attaching") {
        return;
    }
    let unit = include_str!("../../deploy/sensor.service");
    let setting = |key: &str| -> Vec<String> {
        unit.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} missing from the unit"))
            .split_whitespace()
            .map(|c| format!("+{}", c.to_ascii_lowercase().trim_start_matches("cap_")))
            .collect()
    };
    let caps = setting("AmbientCapabilities");
    assert_eq!(caps, setting("CapabilityBoundingSet"));
    let caps = caps.join(",");
    // The unprivileged user must be able to execute the binary wherever the checkout is.
    let binary = lab::sensor_binary(false).expect("build sensor");
    let dir = std::env::temp_dir().join(format!("sensor-unit-caps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("sensor");
    std::fs::copy(&binary, &copy).unwrap();
    for path in [&dir, &copy] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let lab = Lab::new().expect("create lab namespace");
    let (inh, amb, bnd) = (
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        format!("--bounding-set=-all,{caps}"),
    );
    let wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &inh,
        &amb,
        &bnd,
    ];
    let sensor = SensorProcess::start_wrapped(&lab, &wrapper, &copy, &[])
        .expect("the unit's capabilities did not let the sensor load and attach");
    wait_for_drop(sensor.pid());
    let status = std::fs::read_to_string(format!("/proc/{}/status", sensor.pid())).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
        "{status}"
    );
    check_no_capabilities(sensor.pid());

    let pcap = scratch("unit-caps.pcap");
    let mut capture = sensor_tests::synth::demo_capture();
    capture.packets.truncate(50);
    capture.write_pcap_file(&pcap).unwrap();
    let pcap = lab::mtu_safe_copy(&pcap, scratch("").parent().unwrap()).unwrap();
    let stats = lab.replay(&pcap, Some(1000), 1).expect("tcpreplay");
    let m = lab::wait_caught_up(&lab, stats.packets, Duration::from_secs(20)).expect("catch up");
    assert_eq!(metric(&m, "sensor_xdp_packets_total"), stats.packets);
    let exit = sensor.stop().expect("stop sensor");
    assert!(exit.success(), "sensor exit: {exit}");
    assert!(!lab.has_xdp(&lab.rx).unwrap(), "XDP still attached");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// (note, msg) of every notice in a JSON-lines file, sorted.
fn notices(path: &Path) -> Vec<(String, String)> {
    sensor_tests::notice_keys(&std::fs::read_to_string(path).unwrap())
}

/// Replays `original` at its own timing into a sensor and checks that the live notices equal
/// `analyze`'s over the file: the engine's packet time then matches the file's, so the verdicts
/// must be identical.
fn notices_agree_at_capture_speed(original: &Path, tag: &str) {
    let binary = lab::sensor_binary(false).expect("build sensor");
    let engine_args = ["--suppress", "none", "--threshold", "3"];
    let pcap = lab::mtu_safe_copy(original, scratch("").parent().unwrap()).unwrap();
    let offline = scratch(&format!("{tag}-offline-notices.jsonl"));
    let out = Command::new(&binary)
        .arg("analyze")
        .args(engine_args)
        .arg("--json")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&offline, &out.stdout).unwrap();

    let lab = Lab::new().unwrap();
    let live = scratch(&format!("{tag}-live-notices.jsonl"));
    let mut args = vec!["--notices", live.to_str().unwrap()];
    args.extend(engine_args);
    let sensor = SensorProcess::start(&lab, &binary, &args).unwrap();
    let stats = lab.replay_timed(&pcap).unwrap();
    lab::wait_caught_up(&lab, stats.packets, Duration::from_secs(20)).unwrap();
    assert!(sensor.stop().unwrap().success());

    let (live, offline) = (notices(&live), notices(&offline));
    let name = original.display();
    assert!(
        !offline.is_empty(),
        "{name}: the test needs notices to compare"
    );
    assert_eq!(live, offline, "{name}: live vs offline notices");
    eprintln!("{tag}: {} notices agree live and offline", live.len());
}

#[test]
fn replay_of_the_synthetic_scans_at_capture_speed_gives_the_same_notices_as_the_file() {
    if !privileged(
        "replay_of_the_synthetic_scans_at_capture_speed_gives_the_same_notices_as_the_file",
    ) {
        return;
    }
    // The demo capture's ten seconds around its VLAN-tagged scanner (an address scan of 60
    // hosts on 23/tcp, then 200 ports of one host), with the BitTorrent host's traffic of the
    // same seconds: short enough to replay at its own timing.
    let mut capture = sensor_tests::synth::demo_capture();
    let start = capture.packets[0].ts;
    capture.packets.retain(|p| {
        let t = p.ts.checked_sub(start).expect("time-ordered").as_secs_f64();
        (69.0..79.0).contains(&t)
    });
    let pcap = scratch("demo-scans.pcap");
    capture.write_pcap_file(&pcap).unwrap();
    notices_agree_at_capture_speed(&pcap, "synthetic-scans");
}

/// The same checks on third-party captures.
mod corpus {
    use super::{notices_agree_at_capture_speed, privileged, replay_and_check};
    use sensor_tests::corpus;

    #[test]
    fn replay_transmission_capture_native() {
        if !privileged("replay_transmission_capture_native") {
            return;
        }
        // Real BitTorrent traffic: 7723 frames, DHT/uTP/UDP tracker UDP plus TCP handshakes.
        replay_and_check(
            &corpus("ntop-nDPI/bittorrent_transmission.pcapng"),
            20_000,
            "native",
            "transmission",
        );
    }

    #[test]
    fn replay_scan_capture_generic_mode() {
        if !privileged("replay_scan_capture_generic_mode") {
            return;
        }
        // A real nmap SYN scan, through generic (skb) XDP this time.
        replay_and_check(
            &corpus("MakCyber007-Task-1/nmap_tcp_syn_scan_capture.pcap"),
            20_000,
            "skb",
            "nmap",
        );
    }

    #[test]
    fn replay_at_capture_speed_gives_the_same_notices_as_the_file() {
        if !privileged("replay_at_capture_speed_gives_the_same_notices_as_the_file") {
            return;
        }
        // Short real scans, replayed at their own timing.
        for (rel, tag) in [
            ("zeek-zeek/nmap-vsn.pcap", "nmap-vsn"),
            ("markofu-pcaps/portscan.pcap", "portscan"),
        ] {
            notices_agree_at_capture_speed(&corpus(rel), tag);
        }
    }
}
