//! `cargo xtask run`: the first thing a newcomer runs.
//!
//! Generates the bundled capture, makes a lab namespace with a veth pair, attaches the sensor
//! to one end, replays the capture into the other at a bounded rate, prints what the sensor
//! saw, and removes everything again, also on Ctrl-C or failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use sensor::agent::RunSummary;
use sensor::event::EventLine;
use sensor_tests::lab::{self, Lab, SensorProcess};
use sensor_tests::synth;

/// The XDP counters of frames that are not forwarded, one per skip reason: with the records,
/// the ring drops and the load errors they add up to every frame seen.
const NOT_FORWARDED: [&str; 7] = [
    "non_ip",
    "tcp_other",
    "tcp_over_budget",
    "udp_empty",
    "other_l4",
    "fragments",
    "parse_errors",
];

/// Replay rate: slow enough for any machine, fast enough to finish in about a second.
const REPLAY_PPS: u32 = 5_000;

fn main() -> ExitCode {
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("demo: cannot handle Ctrl-C ({e}); continuing");
    }
    let result = demo(&interrupted);
    // Everything the demo created is dropped by now: say so, checked, not assumed.
    let leftovers = lab_namespaces_of_this_process();
    match (&result, leftovers.is_empty()) {
        (_, false) => eprintln!("demo: WARNING: namespaces left behind: {leftovers:?}"),
        (_, true) => println!("Cleaned up: lab namespace and veth pair deleted."),
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn lab_namespaces_of_this_process() -> Vec<String> {
    let prefix = format!("{}{}-", lab::PREFIX, std::process::id());
    std::fs::read_dir("/var/run/netns")
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn check(interrupted: &AtomicBool) -> anyhow::Result<()> {
    if interrupted.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn demo(interrupted: &AtomicBool) -> anyhow::Result<()> {
    let swept = lab::sweep_stale()?;
    if !swept.is_empty() {
        println!(
            "Removed lab namespaces left by earlier runs: {}",
            swept.join(", ")
        );
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/demo");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let pcap = dir.join("demo.pcap");
    let capture = synth::demo_capture();
    capture.write_pcap_file(&pcap)?;
    let binary = lab::sensor_binary(true)?;
    check(interrupted)?;

    // The report below says what the sensor saw; its own log would interleave with it.
    if std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", "warn");
    }
    let lab = Lab::new()?;
    println!(
        "Lab: namespace {}, veth {} -> {} (no addresses, no routes)",
        lab.netns, lab.tx, lab.rx
    );
    let summary_path = dir.join("summary.json");
    let events_path = dir.join("events.jsonl");
    let notices_path = dir.join("notices.jsonl");
    let sensor = SensorProcess::start(
        &lab,
        &binary,
        &[
            "--xdp-mode",
            "native",
            "--summary",
            path(&summary_path)?,
            "--events",
            path(&events_path)?,
            "--notices",
            path(&notices_path)?,
        ],
    )?;
    println!(
        "Sensor attached to {} (native XDP); metrics on 127.0.0.1:{} inside the lab",
        lab.rx,
        lab::METRICS_PORT
    );
    check(interrupted)?;

    let replay = lab.replay(&pcap, Some(REPLAY_PPS), 1)?;
    check(interrupted)?;
    let metrics = lab::wait_caught_up(&lab, replay.packets, Duration::from_secs(20))?;
    let status = sensor.stop()?;
    if !status.success() {
        bail!("the sensor exited with {status}");
    }
    let summary: RunSummary = serde_json::from_slice(&std::fs::read(&summary_path)?)
        .with_context(|| format!("reading {}", summary_path.display()))?;
    report(
        &pcap,
        capture.packets.len(),
        &replay,
        &summary,
        &metrics,
        &events_path,
    )?;
    alarms(&summary, &notices_path)
}

/// The engine's verdicts.
fn alarms(s: &RunSummary, notices: &Path) -> anyhow::Result<()> {
    println!();
    println!(
        "Detection (Bro 1.5 scan.bro + prediction + PPR): {} failed attempts, {} to predicted peers",
        s.failed_attempts, s.predicted_failures
    );
    println!(
        "  {} alarms raised, {} suppressed ({} by prediction, {} by PPR)",
        s.notices,
        s.suppressed_predicted + s.suppressed_ppr,
        s.suppressed_predicted,
        s.suppressed_ppr
    );
    for line in std::fs::read_to_string(notices)?.lines() {
        let n: serde_json::Value = serde_json::from_str(line)?;
        let note = n["note"].as_str().unwrap_or("?");
        println!("  {note:<18} {}", n["msg"].as_str().unwrap_or("?"));
    }
    Ok(())
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

fn report(
    pcap: &Path,
    generated: usize,
    replay: &lab::ReplayStats,
    s: &RunSummary,
    metrics: &std::collections::HashMap<String, f64>,
    events: &Path,
) -> anyhow::Result<()> {
    let x = |k: &str| s.xdp.get(k).copied().unwrap_or(0);
    println!();
    println!(
        "Replayed {} ({generated} frames): {} sent in {:.2} s ({:.0} pps), {} failed",
        pcap.display(),
        replay.packets,
        replay.seconds,
        replay.pps,
        replay.failed
    );
    println!();
    println!("XDP pre-filter");
    println!(
        "  frames seen     {:>7}   (IPv4 {}, IPv6 {}, non-IP {})",
        x("packets"),
        x("ipv4"),
        x("ipv6"),
        x("non_ip")
    );
    let records: u64 = s
        .xdp
        .iter()
        .filter(|(k, _)| k.starts_with("records_"))
        .map(|(_, v)| v)
        .sum();
    println!(
        "  records         {:>7}   (SYN {}, SYN-ACK {}, RST {}, FIN {}, TCP data {}, UDP {}, ICMP unreachable {})",
        records,
        x("records_syn"),
        x("records_synack"),
        x("records_rst"),
        x("records_fin"),
        x("records_tcp_data"),
        x("records_udp"),
        x("records_icmp")
    );
    println!(
        "                            ({} UDP records hold only a prefix)",
        x("udp_truncated")
    );
    println!(
        "  not forwarded   {:>7}   (non-IP {}, TCP without SYN/RST/FIN {}, TCP flow over budget {}, empty UDP {}, other L4 {}, fragments {}, malformed {})",
        NOT_FORWARDED.iter().map(|k| x(k)).sum::<u64>(),
        x("non_ip"), x("tcp_other"), x("tcp_over_budget"), x("udp_empty"), x("other_l4"),
        x("fragments"), x("parse_errors")
    );
    println!("  ring drops      {:>7}", x("ring_full"));
    println!();
    let scraped = lab::metric(metrics, "sensor_xdp_packets_total");
    println!(
        "Agent: {} records decoded, {} undecodable; /metrics reported {} frames{}",
        s.consumed.total(),
        s.decode_errors,
        scraped,
        if scraped == x("packets") {
            " (matches)"
        } else {
            " (MISMATCH)"
        }
    );
    println!();
    syn_senders(events)?;
    Ok(())
}

#[derive(Default)]
struct Sender {
    syns: u64,
    hosts: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
    synacks_back: u64,
    rsts_back: u64,
}

/// Who sent SYNs to how many hosts and ports, and how often they were answered.
fn syn_senders(events: &Path) -> anyhow::Result<()> {
    let mut senders: BTreeMap<IpAddr, Sender> = BTreeMap::new();
    let text = std::fs::read_to_string(events)?;
    let lines: Vec<EventLine> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    for e in &lines {
        if e.kind == "syn" {
            let (src, dst): (SocketAddr, SocketAddr) = (e.src.parse()?, e.dst.parse()?);
            let s = senders.entry(src.ip()).or_default();
            s.syns += 1;
            s.hosts.insert(dst.ip());
            s.ports.insert(dst.port());
        }
    }
    for e in &lines {
        let dst: SocketAddr = e.dst.parse()?;
        if let Some(s) = senders.get_mut(&dst.ip()) {
            match e.kind.as_str() {
                "synack" => s.synacks_back += 1,
                "rst" => s.rsts_back += 1,
                _ => {}
            }
        }
    }
    let mut top: Vec<_> = senders.into_iter().collect();
    top.sort_by_key(|(_, s)| std::cmp::Reverse((s.hosts.len(), s.ports.len())));
    println!("Top SYN senders            SYNs  hosts  ports  SYN-ACKs back  RSTs back");
    for (ip, s) in top.iter().take(5) {
        println!(
            "  {:<22} {:>6} {:>6} {:>6} {:>14} {:>10}",
            ip.to_string(),
            s.syns,
            s.hosts.len(),
            s.ports.len(),
            s.synacks_back,
            s.rsts_back
        );
    }
    Ok(())
}
