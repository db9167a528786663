//! `cargo xtask bench`: measures, in one run, the XDP program's cost per path, the offline
//! pre-filter's throughput, and a top-speed replay through a veth pair with its drop count, and
//! writes them to BENCHMARKS.md. Machines are small and noisy: read the ratios, not the digits.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::programs::{TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use sensor::agent::RunSummary;
use sensor::capture::pcap;
use sensor::capture::xdp::{XdpConfig, XdpSensor};
use sensor_ebpf::counter;
use sensor_tests::lab::{self, Lab, SensorProcess};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

fn frame(kind: &str) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC, MAC).ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64);
    let mut out = Vec::new();
    match kind {
        "ack" => b.tcp(40000, 80, 1, 1000).ack(1).write(&mut out, &[]),
        "data" => b
            .tcp(40000, 80, 1, 1000)
            .ack(1)
            .write(&mut out, &[0u8; 1200]),
        // The first run marks the flow; every later one is a small segment of a marked
        // peer-wire flow, forwarded whatever the budget.
        "peer_wire" => {
            let mut hs = b"\x13BitTorrent protocol".to_vec();
            hs.resize(68, 0);
            b.tcp(40000, 6881, 1, 1000)
                .ack(1)
                .psh()
                .write(&mut out, &hs)
        }
        "syn" => b.tcp(40000, 80, 1, 1000).syn().write(&mut out, &[]),
        "udp64" => b.udp(6881, 6881).write(&mut out, &[7u8; 64]),
        "udp1400" => b.udp(6881, 6881).write(&mut out, &[7u8; 1400]),
        _ => unreachable!(),
    }
    .expect("build frame");
    out
}

/// Average ns per run of the XDP program on `frame`, over `repeat` runs in the kernel.
fn xdp_cost(frame: &[u8], repeat: u32) -> anyhow::Result<(f64, u64)> {
    // The full UDP policy, so the UDP rows measure a record of each size (their payloads carry
    // no coordination, which the classified default withholds; `xdp_cost_per_frame_class` in
    // `tests/tests/xdp_prog.rs` compares the policies).
    let mut sensor = XdpSensor::load(&XdpConfig {
        ring_bytes: 64 << 20,
        udp_policy: sensor_ebpf::udp_policy::FULL,
        ..XdpConfig::default()
    })?;
    // BPF_PROG_TEST_RUN runs frames as arriving on the loopback device: give it a counter
    // block as `sensor run` gives each attached interface, so the lookup is the deployed one.
    sensor.set_ifaces(&["lo".into()])?;
    let counters = sensor.take_counters()?;
    let result = sensor.program().test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    })?;
    let dropped = counters.read()?.total().get(counter::RING_FULL);
    Ok((result.duration.as_nanos() as f64, dropped))
}

/// Captures of the corpus measured offline.
const CORPUS_CAPTURES: [&str; 3] = [
    "goncalo-rodrigues-360BitScoping/model_streams__2_torrents-11.3k_each__MERGED.pcap",
    REPLAYED,
    "MakCyber007-Task-1/nmap_tcp_syn_scan_capture.pcap",
];

/// The corpus capture also replayed through veth.
const REPLAYED: &str = "ntop-nDPI/bittorrent_transmission.pcapng";

/// The captures to measure, as (label, path): the corpus's, or, when it is absent (said in one
/// line), the synthetic demo capture written to `scratch`.
fn captures(scratch: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = sensor_tests::corpus_dir();
    if dir.is_dir() {
        return Ok(CORPUS_CAPTURES
            .iter()
            .map(|rel| ((*rel).to_string(), sensor_tests::corpus(rel)))
            .collect());
    }
    eprintln!(
        "bench: corpus not found at {} (set SENSOR_CORPUS); measuring the synthetic demo capture only",
        dir.display()
    );
    let path = scratch.join("demo.pcap");
    sensor_tests::synth::demo_capture().write_pcap_file(&path)?;
    Ok(vec![("synthetic demo capture".to_string(), path)])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--flood") {
        // A child of the flood section, alone in its process for a meaningful peak RSS.
        return flood_child(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--live") {
        // The live section alone (sender, sustained record rate, flood), spliced into the file.
        return sensor_tests::live::bench_live_main(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some("--tools") {
        // The side-by-side section alone (needs no root): markdown on stdout.
        let scratch = std::env::temp_dir().join(format!("sensor-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        let mut md = String::new();
        tools(&mut md, &captures(&scratch)?)?;
        print!("{md}");
        return Ok(());
    }
    let out_path = args
        .get(1)
        .map_or_else(|| "BENCHMARKS.md".into(), PathBuf::from);
    let mut md = String::new();
    writeln!(md, "# Benchmarks\n")?;
    writeln!(
        md,
        "Written by `cargo xtask bench` on {} ({} CPUs, kernel {}). One run; compare ratios within it.\n",
        date(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    )?;

    xdp_costs(&mut md)?;

    let scratch = std::env::temp_dir().join(format!("sensor-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let captures = captures(&scratch)?;
    offline_throughput(&mut md, &captures)?;
    tools(&mut md, &captures)?;
    forwarded_share(&mut md)?;
    veth_replay(&mut md, &captures, &scratch)?;
    flood(&mut md)?;
    md.push_str(&sensor_tests::live::LiveBench::new(lab::sensor_binary(true)?, scratch).section()?);
    std::fs::write(&out_path, md)?;
    eprintln!("bench: wrote {}", out_path.display());
    Ok(())
}

fn date() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// 1. XDP program cost per path (BPF_PROG_TEST_RUN with repeat: program time only).
fn xdp_costs(md: &mut String) -> anyhow::Result<()> {
    writeln!(
        md,
        "## XDP program cost per frame (BPF_PROG_TEST_RUN, repeat)\n"
    )?;
    writeln!(
        md,
        "| path | ns/frame | × bare ACK | ring drops |\n|---|---:|---:|---:|"
    )?;
    let mut base = None;
    for (name, label, repeat) in [
        ("ack", "TCP bare ACK (not forwarded)", 200_000),
        (
            "data",
            "TCP 1200 B data, unmarked flow (flow lookup, not forwarded)",
            200_000,
        ),
        (
            "peer_wire",
            "TCP 68 B data, marked flow → 116 B record",
            100_000,
        ),
        ("syn", "TCP SYN → 48 B record", 200_000),
        ("udp64", "UDP 64 B → 96 B record (full UDP policy)", 100_000),
        (
            "udp1400",
            "UDP 1400 B → 1432 B record (full UDP policy)",
            20_000,
        ),
    ] {
        let (ns, drops) = xdp_cost(&frame(name), repeat)?;
        let base_ns = *base.get_or_insert(ns);
        writeln!(md, "| {label} | {ns:.0} | {:.2} | {drops} |", ns / base_ns)?;
        eprintln!("bench: xdp {name}: {ns:.0} ns");
    }
    Ok(())
}

/// 2. Offline: the pre-filter alone, then the whole engine (parsers, tracker, detector).
fn offline_throughput(md: &mut String, captures: &[(String, PathBuf)]) -> anyhow::Result<()> {
    writeln!(md, "\n## Offline analysis (single thread)\n")?;
    writeln!(
        md,
        "| capture | frames | MB | pre-filter frames/s | pre-filter MB/s | `analyze` frames/s | `analyze` MB/s |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for (rel, path) in captures {
        let bytes = std::fs::metadata(path)
            .with_context(|| path.display().to_string())?
            .len();
        let passes = 20;
        // One untimed pass, so neither measurement pays for a cold page cache.
        pcap::prefilter_file(path, sensor_ebpf::DEFAULT_SNAPLEN, |_| {})?;
        let started = Instant::now();
        let mut frames = 0;
        for _ in 0..passes {
            let (counters, _) = pcap::prefilter_file(path, sensor_ebpf::DEFAULT_SNAPLEN, |_| {})?;
            frames = counters.get(counter::PACKETS);
        }
        let filter_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        for _ in 0..passes {
            let config = sensor::engine::EngineConfig::default();
            sensor::analyze::analyze(
                std::slice::from_ref(path),
                sensor_ebpf::DEFAULT_SNAPLEN,
                config,
                None::<sensor::engine::Collect>,
            )?;
        }
        let engine_s = started.elapsed().as_secs_f64();
        let (f, b) = ((frames * passes) as f64, (bytes * passes) as f64);
        writeln!(
            md,
            "| `{rel}` | {frames} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            bytes as f64 / 1e6,
            f / filter_s,
            b / filter_s / 1e6,
            f / engine_s,
            b / engine_s / 1e6
        )?;
    }
    Ok(())
}

/// 3. Top-speed replay through a veth pair: sender-bound, but every frame accounted for.
fn veth_replay(
    md: &mut String,
    captures: &[(String, PathBuf)],
    scratch: &Path,
) -> anyhow::Result<()> {
    writeln!(
        md,
        "\n## veth replay at top speed (tcpreplay, native XDP, release agent)\n"
    )?;
    let (replayed, original) = captures
        .iter()
        .find(|(label, _)| label == REPLAYED)
        .unwrap_or(&captures[0]);
    let pcap = lab::mtu_safe_copy(original, scratch)?;
    let binary = lab::sensor_binary(true)?;
    let lab = Lab::new()?;
    let summary_path = scratch.join("summary.json");
    let sensor = SensorProcess::start(
        &lab,
        &binary,
        &[
            "--xdp-mode",
            "native",
            "--summary",
            summary_path.to_str().unwrap(),
        ],
    )?;
    let loops = 20;
    let replay = lab.replay(&pcap, None, loops)?;
    lab::wait_caught_up(&lab, replay.packets, Duration::from_mins(1))?;
    sensor.stop()?;
    let summary: RunSummary = serde_json::from_slice(&std::fs::read(&summary_path)?)?;
    writeln!(
        md,
        "| frames sent | seconds | sender pps | XDP frames | records | ring drops | decoded |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|")?;
    let records: u64 = summary
        .xdp
        .iter()
        .filter(|(k, _)| k.starts_with("records_"))
        .map(|(_, v)| v)
        .sum();
    writeln!(
        md,
        "| {} | {:.2} | {:.0} | {} | {} | {} | {} |",
        replay.packets,
        replay.seconds,
        replay.pps,
        summary.xdp["packets"],
        records,
        summary.xdp["ring_full"],
        summary.consumed.total()
    )?;
    writeln!(
        md,
        "\n{loops} passes over `{replayed}`. tcpreplay is the bottleneck \
         here (one AF_PACKET send per frame), so this shows accounting under load, not XDP's ceiling; \
         the table above gives the program's own cost."
    )?;
    drop(lab);
    Ok(())
}

/// Tables measured per entry by the flood section, with what one entry is.
const FLOOD_TABLES: [(&str, &str); 7] = [
    ("connections", "a pending SYN"),
    ("scan_sources", "a Bro source with one failed attempt"),
    ("trw_sources", "a TRW source with one failed first contact"),
    ("trw_friendly", "a TRW friendly remote"),
    ("ppr_sources", "a PPR source with one pair"),
    ("predictions", "one predicted peer for each host"),
    ("predictions_one_host", "predicted peers of one host"),
];

/// `bench --flood entry TABLE N` prints one entry's bytes; `bench --flood run` the 2 M-SYN
/// flood's report as JSON; `bench --flood section` the markdown section of all of them.
fn flood_child(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("entry") => {
            let table = args.get(1).context("table")?;
            let n: u32 = args.get(2).context("count")?.parse()?;
            let bytes = sensor_tests::flood::entry_bytes(table, n).context("unknown table")?;
            println!("{bytes:.0}");
        }
        Some("run") => {
            let r = sensor_tests::flood::run_big_flood(sensor::engine::Suppress::All, 20);
            let tables: Vec<_> = r
                .tables
                .iter()
                .map(|(name, len, evicted)| serde_json::json!([name, len, evicted]))
                .collect();
            let v = serde_json::json!({
                "spoofed": r.spoofed,
                "seconds": r.seconds,
                "peak_rss_kib": r.peak_rss_kib,
                "rss_before_kib": r.rss_before_kib,
                "address_scans": r.address_scans,
                "failed_attempts": r.failed_attempts,
                "evicted_as_failed": r.evicted_as_failed,
                "tables": tables,
            });
            println!("{v}");
        }
        Some("section") => {
            // The flood section alone, as `cargo xtask bench` writes it (needs no root).
            let mut md = String::new();
            flood(&mut md)?;
            print!("{md}");
        }
        _ => anyhow::bail!(
            "usage: bench --flood entry TABLE N | bench --flood run | bench --flood section"
        ),
    }
    Ok(())
}

fn flood_child_output(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--flood")
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "bench --flood {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Memory under a SYN flood: bytes per entry of each table, then 2 M spoofed SYNs hiding a
/// 300-target scan through the engine at the default caps, each in a process of its own.
fn flood(md: &mut String) -> anyhow::Result<()> {
    eprintln!("bench: flood");
    writeln!(
        md,
        "\n## Memory under a SYN flood (release, in memory, one process per row)\n\n\
         Bytes per entry: RSS growth while 1,000,000 entries are added to one uncapped table, \
         divided by 1,000,000 (`sensor_tests::flood::entry_bytes`).\n\n\
         | table | one entry | bytes |\n|---|---|---:|"
    )?;
    for (table, what) in FLOOD_TABLES {
        let bytes = flood_child_output(&["entry", table, "1000000"])?;
        writeln!(md, "| `{table}` | {what} | {bytes} |")?;
    }
    let v: serde_json::Value = serde_json::from_str(&flood_child_output(&["run"])?)?;
    writeln!(
        md,
        "\n2,000,000 spoofed-source SYNs in 10 s of packet time, with a 300-address port-445 \
         scan interleaved, `--suppress all --threshold 20`, default caps \
         (`sensor_tests::flood::run_big_flood`): {:.1} s, peak RSS {} MiB (bound {} MiB), \
         scanner AddressScan notices {}, {} pending attempts reported as failed on eviction.\n\n\
         | table | entries at the end | evicted |\n|---|---:|---:|",
        v["seconds"].as_f64().unwrap_or(0.0),
        v["peak_rss_kib"].as_u64().unwrap_or(0) / 1024,
        sensor_tests::flood::ENGINE_BOUND_MIB,
        v["address_scans"],
        v["evicted_as_failed"],
    )?;
    for t in v["tables"].as_array().into_iter().flatten() {
        if t[1].as_u64() > Some(0) || t[2].as_u64() > Some(0) {
            writeln!(
                md,
                "| `{}` | {} | {} |",
                t[0].as_str().unwrap_or(""),
                t[1],
                t[2]
            )?;
        }
    }
    Ok(())
}

/// The lab's output directory: `SENSOR_LAB`, default `/var/tmp/lab` (where its README puts runs).
fn lab_dir() -> PathBuf {
    std::env::var_os("SENSOR_LAB").map_or_else(|| PathBuf::from("/var/tmp/lab"), PathBuf::from)
}

/// Where the lab's captures are (`SENSOR_LAB`, default `/var/tmp/lab`): the BitTorrent-heavy
/// ones are compared side by side when present.
fn lab_captures() -> Vec<(String, PathBuf)> {
    let dir = lab_dir();
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("bt-heavy-"))
        .map(|e| e.path().join("bt-heavy.pcap"))
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.strip_prefix(&dir).unwrap_or(&p).display().to_string();
            (format!("lab {name}"), p)
        })
        .collect();
    out.sort();
    out
}

/// One child's cost: wall time, CPU time (user + system) and peak RSS, from `wait4`'s rusage.
#[derive(Clone, Copy, Debug)]
struct Cost {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
}

/// Runs `cmd` to its end with its output discarded; its cost as the kernel accounts it.
fn measure(cmd: &mut std::process::Command) -> anyhow::Result<Cost> {
    use std::process::Stdio;
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{cmd:?}"))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let mut status = 0;
    // SAFETY: all-zero bytes are a valid `rusage` (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not yet reaped (std's `Child` never waited for it);
    // `status` and `usage` are valid for writes.
    let reaped = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    let wall = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        reaped == pid,
        "wait4 {cmd:?}: {}",
        std::io::Error::last_os_error()
    );
    anyhow::ensure!(
        libc::WIFEXITED(status) && matches!(libc::WEXITSTATUS(status), 0 | 2),
        "{cmd:?} failed (wait status {status})"
    );
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Cost {
        wall,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// A second `sensor` binary to compare the engine with, in the same run (`SENSOR_BENCH_BEFORE`,
/// e.g. a build of the previous head): its `analyze` becomes one more tool, the last.
fn before_binary() -> Option<PathBuf> {
    std::env::var_os("SENSOR_BENCH_BEFORE").map(PathBuf::from)
}

/// The tools compared, as (label, command line) for one capture.
fn tool_commands(sensor: &Path, file: &Path) -> Vec<(&'static str, std::process::Command)> {
    use std::process::Command;
    let mut analyze = Command::new(sensor);
    analyze.arg("analyze").arg(file);
    let mut prefilter = Command::new(sensor);
    prefilter.arg("prefilter").arg(file);
    let mut cat = Command::new("cat");
    cat.arg(file);
    // The BitTorrent dissectors (peer wire over TCP, Mainline DHT, and uTP, whose heuristic
    // is off by default) with fields of each, so that tshark dissects what the sensor reads.
    let mut tshark = Command::new("tshark");
    tshark
        .args(["-n", "-r"])
        .arg(file)
        .args(["--enable-heuristic", "bt_utp_udp", "-T", "fields"])
        .args(["-e", "bt-dht.ip", "-e", "bt-dht.port", "-e", "bt-utp.type"])
        .args(["-e", "bittorrent.msg.type", "-e", "bittorrent.extended.id"]);
    let mut ndpi = Command::new("ndpiReader");
    ndpi.arg("-q").arg("-i").arg(file);
    let mut tools = vec![
        ("`sensor analyze`", analyze),
        ("`sensor prefilter`", prefilter),
        ("`cat`", cat),
        ("`tshark` (BitTorrent fields)", tshark),
        ("`ndpiReader`", ndpi),
    ];
    if let Some(before) = before_binary() {
        let mut cmd = Command::new(before);
        cmd.arg("analyze").arg(file);
        tools.push(("`sensor analyze` (before)", cmd));
    }
    tools
}

/// 2b. `sensor analyze` beside the pre-filter, `cat`, tshark and nDPI on the same files, in one
/// run: wall time, CPU time and peak RSS of each child (`wait4`). Each tool runs `reps` times
/// in turn (`SENSOR_BENCH_REPS`, default 5), and the least wall time and the least CPU time
/// over the runs are reported, each the run least disturbed by the other tenants of a noisy
/// machine (the peak RSS is the largest).
fn tools(md: &mut String, shared: &[(String, PathBuf)]) -> anyhow::Result<()> {
    let reps: usize = std::env::var("SENSOR_BENCH_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let sensor = std::env::current_exe()?.with_file_name("sensor");
    anyhow::ensure!(
        sensor.is_file(),
        "{} not built (cargo build --release -p sensor)",
        sensor.display()
    );
    let mut files = lab_captures();
    files.extend(shared.iter().cloned());
    writeln!(
        md,
        "\n## Side by side: the engine, the pre-filter, `cat`, tshark, nDPI\n"
    )?;
    writeln!(
        md,
        "Each tool reads the same file, output discarded; wall and CPU time (user + system) and \
         peak RSS of the child from `wait4`; the least wall and the least CPU time of {reps} runs \
         each (the largest RSS). tshark: \
         `-T fields` on `bt-dht.ip`, `bt-dht.port`, `bt-utp.type`, `bittorrent.msg.type`, \
         `bittorrent.extended.id` with the uTP heuristic on; `ndpiReader -q -i`.\n"
    )?;
    writeln!(
        md,
        "| capture | MB | tool | wall s | CPU s | max RSS MiB | wall × prefilter | CPU × prefilter |\n|---|---:|---|---:|---:|---:|---:|---:|"
    )?;
    let mut summary = Vec::new();
    for (name, file) in &files {
        let mb = std::fs::metadata(file)?.len() as f64 / 1e6;
        // Warm the page cache so that no tool pays for the first read.
        measure(std::process::Command::new("cat").arg(file))?;
        let mut best: Vec<Option<Cost>> = vec![None; tool_commands(&sensor, file).len()];
        for _ in 0..reps {
            for (i, (_, mut cmd)) in tool_commands(&sensor, file).into_iter().enumerate() {
                let cost = match measure(&mut cmd) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("bench: {e:#}");
                        continue;
                    }
                };
                best[i] = Some(best[i].map_or(cost, |b| Cost {
                    wall: b.wall.min(cost.wall),
                    cpu: b.cpu.min(cost.cpu),
                    rss_mib: b.rss_mib.max(cost.rss_mib),
                }));
            }
        }
        let labels: Vec<&str> = tool_commands(&sensor, file)
            .iter()
            .map(|(l, _)| *l)
            .collect();
        let pre = best[1];
        for (label, cost) in labels.iter().zip(&best) {
            let Some(c) = cost else {
                writeln!(md, "| {name} | {mb:.1} | {label} | not run | | | | |")?;
                continue;
            };
            let (wx, cx) = pre.map_or((f64::NAN, f64::NAN), |p| (c.wall / p.wall, c.cpu / p.cpu));
            writeln!(
                md,
                "| {name} | {mb:.1} | {label} | {:.3} | {:.3} | {:.1} | {wx:.1} | {cx:.1} |",
                c.wall, c.cpu, c.rss_mib
            )?;
            eprintln!(
                "bench: {name} {label}: {:.3} s wall, {:.3} s CPU",
                c.wall, c.cpu
            );
        }
        if let (Some(a), Some(p)) = (best[0], best[1]) {
            summary.push((
                name.clone(),
                a,
                p,
                best[3],
                best[4],
                best.get(5).copied().flatten(),
            ));
        }
    }
    let with_before = before_binary().is_some();
    writeln!(
        md,
        "\n| capture | analyze ÷ prefilter (wall) | analyze ÷ prefilter (CPU) | tshark ÷ analyze (wall) | tshark ÷ analyze (CPU) | ndpiReader ÷ analyze (wall) |{}\n|---|---:|---:|---:|---:|---:|{}",
        if with_before {
            " before: analyze ÷ prefilter (wall) | before: (CPU) |"
        } else {
            ""
        },
        if with_before { "---:|---:|" } else { "" }
    )?;
    let ratio = |x: Option<Cost>, by: Cost, cpu: bool| {
        x.map_or_else(
            || "n/a".to_string(),
            |x| {
                let (a, b) = if cpu {
                    (x.cpu, by.cpu)
                } else {
                    (x.wall, by.wall)
                };
                format!("{:.1}", a / b)
            },
        )
    };
    for (name, a, p, tshark, ndpi, before) in summary {
        let before_cols = if with_before {
            format!(
                " {} | {} |",
                ratio(before, p, false),
                ratio(before, p, true)
            )
        } else {
            String::new()
        };
        writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {} | {} | {} |{before_cols}",
            a.wall / p.wall,
            a.cpu / p.cpu,
            ratio(tshark, a, false),
            ratio(tshark, a, true),
            ratio(ndpi, a, false),
        )?;
    }
    Ok(())
}

/// Lab captures (`/var/tmp/lab/*/*.pcap`, where the lab writes them) and the corpus's
/// background captures whose forwarded share the bench reports.
const BACKGROUND_CAPTURES: [&str; 5] = [
    "OISF-suricata-verify/tls-subjectaltname/input.pcap",
    "chrissanders-packets/http_espn.pcapng",
    "ntop-nDPI/alexa-app.pcapng",
    "ntop-nDPI/teams.pcap",
    "ntop-nDPI/wechat.pcap",
];

/// The share of the wire's bytes the pre-filter puts in the ring (record bytes), with every
/// UDP payload forwarded and with the classified UDP policy, per capture.
fn forwarded_share(md: &mut String) -> anyhow::Result<()> {
    use sensor::capture::pcap::FilterConfig;
    use sensor_ebpf::udp_policy;

    writeln!(
        md,
        "\n## Forwarded share of wire bytes (offline pre-filter, record bytes)\n"
    )?;
    writeln!(
        md,
        "Records are exactly their header (32 bytes for IPv4, 56 for IPv6), their kind's \
         fields (16 more for TCP; ICMP records are 104 bytes) and the payload bytes copied. \
         The last four columns split the classified policy's share by record kind.\n"
    )?;
    writeln!(
        md,
        "| capture | wire bytes | forwarded, full UDP | share | forwarded, classified UDP | share | UDP | TCP SYN/FIN/RST | TCP data | ICMP |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    let lab_root = lab_dir();
    if let Ok(dirs) = std::fs::read_dir(&lab_root) {
        let mut lab: Vec<PathBuf> = dirs
            .filter_map(Result::ok)
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
            .collect();
        lab.sort();
        paths.extend(lab.into_iter().map(|p| {
            let name = p
                .strip_prefix(&lab_root)
                .unwrap_or(&p)
                .display()
                .to_string();
            (format!("lab {name}"), p)
        }));
    }
    if sensor_tests::corpus_dir().is_dir() {
        paths.extend(
            BACKGROUND_CAPTURES
                .iter()
                .map(|rel| ((*rel).to_string(), sensor_tests::corpus(rel))),
        );
    }
    for (name, path) in paths {
        let policy = |udp_policy| FilterConfig {
            snaplen: sensor_ebpf::DEFAULT_SNAPLEN,
            udp_policy,
        };
        let (full, _) = pcap::prefilter_file(&path, policy(udp_policy::FULL), |_| {})?;
        let (classified, _) = pcap::prefilter_file(&path, policy(udp_policy::CLASSIFIED), |_| {})?;
        let wire = full.get(counter::BYTES_SEEN).max(1);
        #[allow(clippy::cast_precision_loss)] // a percentage
        let pct = |n: u64| 100.0 * n as f64 / wire as f64;
        writeln!(
            md,
            "| {name} | {wire} | {} | {:.1}% | {} | {:.1}% | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            full.get(counter::BYTES_FORWARDED),
            pct(full.get(counter::BYTES_FORWARDED)),
            classified.get(counter::BYTES_FORWARDED),
            pct(classified.get(counter::BYTES_FORWARDED)),
            pct(classified.get(counter::BYTES_UDP) + classified.get(counter::BYTES_UDP_META)),
            pct(classified.get(counter::BYTES_TCP)),
            pct(classified.get(counter::BYTES_TCP_DATA)),
            pct(classified.get(counter::BYTES_ICMP)),
        )?;
    }
    Ok(())
}
