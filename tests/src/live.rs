//! Floods against the live agent: `sensor run` attached (native XDP) to a veth in a lab
//! namespace, [`crate::blast`] sending into the other end. Shared by `tests/tests/live_flood.rs`
//! and the live section of the benchmark (`bench --live`).
//!
//! Every frame is accounted for, from the sender to the engine: frames handed to the kernel =
//! frames that left the sending veth + frames it dropped; frames XDP ran on = records + skipped
//! + ring drops + load errors; records put in the ring = records decoded + decode errors.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sensor::agent::RunSummary;

use crate::blast::{self, LinkStats, Spec};
use crate::lab::{self, Lab, SensorProcess};

/// One flood against a fresh agent.
#[derive(Clone, Debug)]
pub struct AgentRun {
    pub binary: PathBuf,
    pub spec: Spec,
    /// Extra `sensor run` arguments (engine options, `--ring-bytes`; a worker count when the
    /// agent has one).
    pub args: Vec<String>,
    /// After the flood, wait (at most `notice_wait`) for an AddressScan notice from this
    /// source before stopping the agent.
    pub wait_notice_from: Option<IpAddr>,
    pub notice_wait: Duration,
    /// How long the agent may take to drain what was delivered.
    pub catch_up: Duration,
    pub scratch: PathBuf,
}

/// What one run measured.
#[derive(Debug)]
pub struct AgentReport {
    pub sent: blast::Stats,
    /// Counter changes of the sending end and of the end the agent is attached to.
    pub tx: LinkStats,
    pub rx: LinkStats,
    pub summary: RunSummary,
    /// Peak resident set of the agent process (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// CPU time of the agent process (every thread, user and system) once it had caught up.
    pub cpu_seconds: f64,
    /// From the first frame sent until the agent had decoded every record the kernel emitted.
    pub drain_seconds: f64,
    /// From SIGTERM until the agent exited (it reports pending attempts first).
    pub stop_seconds: f64,
    /// Every notice the agent wrote (`--notices`), as JSON.
    pub notices: Vec<serde_json::Value>,
}

impl AgentReport {
    pub fn xdp(&self, name: &str) -> u64 {
        self.summary.xdp.get(name).copied().unwrap_or(0)
    }

    /// Records lost to full rings: with several workers every copy, in any ring.
    pub fn ring_drops(&self) -> u64 {
        if self.summary.ring_drops.is_empty() {
            self.xdp("ring_full")
        } else {
            self.summary.ring_drops.iter().sum()
        }
    }

    /// Records put in the rings: with several workers, a record for two counts twice.
    pub fn ring_records(&self) -> u64 {
        if self.summary.ring_records.is_empty() {
            self.records()
        } else {
            self.summary.ring_records.iter().sum()
        }
    }

    /// Frames whose record reached its (first) ring.
    pub fn records(&self) -> u64 {
        self.summary
            .xdp
            .iter()
            .filter(|(k, _)| k.starts_with("records_"))
            .map(|(_, v)| v)
            .sum()
    }

    /// Records decoded per second, first frame sent to last record decoded.
    #[allow(clippy::cast_precision_loss)]
    pub fn record_rate(&self) -> f64 {
        self.summary.consumed.total() as f64 / self.drain_seconds.max(1e-9)
    }

    /// Notices of `kind` raised for `src`.
    pub fn notices_for(&self, src: IpAddr, kind: &str) -> usize {
        let src = src.to_string();
        self.notices
            .iter()
            .filter(|n| n["src"].as_str() == Some(&src) && n["note"].as_str() == Some(kind))
            .count()
    }

    /// Every frame accounted for, sender to engine; each broken identity as a message.
    pub fn accounting_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let mut check = |what: &str, left: u64, right: u64| {
            if left != right {
                errors.push(format!("{what}: {left} ≠ {right}"));
            }
        };
        check(
            "frames handed to the kernel = left the sending veth + dropped there",
            self.sent.sent(),
            self.tx.tx_packets + self.tx.tx_dropped,
        );
        check(
            "frames that left the sending veth = XDP runs on the peer",
            self.tx.tx_packets,
            self.xdp("packets"),
        );
        let skipped: u64 = [
            "non_ip",
            "fragments",
            "parse_errors",
            "tcp_other",
            "tcp_over_budget",
            "udp_empty",
            "other_l4",
        ]
        .iter()
        .map(|k| self.xdp(k))
        .sum();
        check(
            "XDP runs = records + skipped + ring drops + load errors",
            self.xdp("packets"),
            self.records() + skipped + self.xdp("ring_full") + self.xdp("load_errors"),
        );
        check(
            "records in the rings = decoded + decode errors",
            self.ring_records(),
            self.summary.consumed.total() + self.summary.decode_errors,
        );
        errors
    }

    /// One line for logs.
    pub fn line(&self) -> String {
        format!(
            "sent {} in {:.2} s ({:.0} pps, sender CPU {:.2} s), XDP {} frames, {} records, \
             ring drops {}, decoded {} ({:.0} records/s until drained), peak RSS {} MiB, \
             exit {:.1} s after SIGTERM",
            self.sent.sent(),
            self.sent.seconds,
            self.sent.pps(),
            self.sent.cpu_seconds,
            self.xdp("packets"),
            self.records(),
            self.ring_drops(),
            self.summary.consumed.total(),
            self.record_rate(),
            self.peak_rss_kib / 1024,
            self.stop_seconds
        )
    }
}

/// Runs one flood against a fresh agent in a fresh lab (both removed afterwards, also on
/// failure).
pub fn run(r: &AgentRun) -> anyhow::Result<AgentReport> {
    std::fs::create_dir_all(&r.scratch)?;
    let lab = Lab::new()?;
    let summary_path = r.scratch.join(format!("{}-summary.json", lab.netns));
    let notices_path = r.scratch.join(format!("{}-notices.jsonl", lab.netns));
    let mut args = vec![
        "--xdp-mode".to_string(),
        "native".into(),
        "--summary".into(),
        summary_path.display().to_string(),
        "--notices".into(),
        notices_path.display().to_string(),
    ];
    args.extend(r.args.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let sensor = SensorProcess::start(&lab, &r.binary, &args)?;
    let pid = agent_pid(&lab)?;

    let (tx0, rx0) = (
        blast::link_stats(&lab.netns, &lab.tx)?,
        blast::link_stats(&lab.netns, &lab.rx)?,
    );
    let started = Instant::now();
    let sent = blast::send(&lab.netns, &lab.tx, &r.spec)?;
    let tx = delta(blast::link_stats(&lab.netns, &lab.tx)?, tx0);
    lab::wait_caught_up(&lab, tx.tx_packets, r.catch_up)?;
    let drain_seconds = started.elapsed().as_secs_f64();
    let rx = delta(blast::link_stats(&lab.netns, &lab.rx)?, rx0);

    if let Some(src) = r.wait_notice_from {
        // The scanner's last SYNs turn into failed attempts 5 s after they were sent (packet
        // time follows the wall clock on a quiet link), so its notice can come a little later.
        let deadline = Instant::now() + r.notice_wait;
        while Instant::now() < deadline
            && !read_notices(&notices_path)
                .iter()
                .any(|n| n["src"].as_str() == Some(&src.to_string()))
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let peak_rss_kib = proc_status_kib(pid, "VmHWM").unwrap_or(0);
    let cpu_seconds = proc_cpu_seconds(pid).unwrap_or(0.0);
    // At exit the engine reports every attempt still pending (a full connection table's worth
    // after a flood), which takes longer than `SensorProcess::stop` waits: signal it here and
    // give it a minute, timed.
    let stopping = Instant::now();
    // SAFETY: signalling the agent we started (our child, not yet reaped, so the pid is its).
    unsafe { libc::kill(libc::pid_t::try_from(pid)?, libc::SIGTERM) };
    while running(pid) && stopping.elapsed() < Duration::from_mins(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stop_seconds = stopping.elapsed().as_secs_f64();
    let status = sensor.stop()?;
    anyhow::ensure!(status.success(), "the sensor exited with {status}");
    let summary: RunSummary = serde_json::from_slice(
        &std::fs::read(&summary_path).with_context(|| summary_path.display().to_string())?,
    )?;
    Ok(AgentReport {
        sent,
        tx,
        rx,
        summary,
        peak_rss_kib,
        cpu_seconds,
        drain_seconds,
        stop_seconds,
        notices: read_notices(&notices_path),
    })
}

fn delta(after: LinkStats, before: LinkStats) -> LinkStats {
    LinkStats {
        rx_packets: after.rx_packets - before.rx_packets,
        rx_dropped: after.rx_dropped - before.rx_dropped,
        tx_packets: after.tx_packets - before.tx_packets,
        tx_dropped: after.tx_dropped - before.tx_dropped,
    }
}

fn read_notices(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The agent's pid: the one `sensor` process in the lab namespace (`ip netns exec` execs it).
fn agent_pid(lab: &Lab) -> anyhow::Result<u32> {
    let out = std::process::Command::new("ip")
        .args(["netns", "pids", &lab.netns])
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sensor")
        })
        .context("no sensor process in the lab namespace")
}

/// Whether `pid` still runs (not gone, not a zombie waiting to be reaped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the parenthesised command name.
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// A `/proc/PID/status` field in KiB.
/// Ring bytes one IPv4 SYN takes: its record and the ring's 8-byte record header.
// A few dozen bytes: the narrowing is exact.
#[allow(clippy::cast_possible_truncation)]
const SYN_RECORD_BYTES: u32 = (sensor_ebpf::header_len(sensor_ebpf::kind::TCP, 4)
    + size_of::<sensor_ebpf::TcpTail>()
    + 8) as u32;

/// User plus system CPU time of process `pid`, all threads (`utime` and `stime`, fields 14
/// and 15 of `/proc/PID/stat`, proc(5)), in seconds.
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ').skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf with a valid name only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) as f64 / ticks as f64)
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The scanner of [`crate::flood`] (300 SYNs to 198.51.100.1… on port 445) as frames to mix
/// into a flood.
pub fn scanner_frames(targets: u32) -> Vec<Vec<u8>> {
    crate::flood::Flood {
        spoofed: 0,
        targets,
        span: Duration::from_secs(1),
    }
    .capture()
    .packets
    .into_iter()
    .map(|p| p.frame)
    .collect()
}

/// One probe of the sustained-rate search.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub pps: u64,
    pub sent_pps: f64,
    pub ring_drops: u64,
    pub decoded: u64,
    /// The agent's CPU time over the probe (all threads).
    pub cpu_seconds: f64,
}

impl Probe {
    /// Agent CPU time per decoded record, microseconds: what one record costs, whatever the
    /// number of cores the machine lends the workers.
    pub fn cpu_us_per_record(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.decoded.max(1) as f64
    }
}

/// Settings of the live benchmark (`bench --live`).
#[derive(Clone, Debug)]
pub struct LiveBench {
    pub binary: PathBuf,
    pub scratch: PathBuf,
    /// Seconds of flood per probe of the search.
    pub probe_seconds: u64,
    /// Ring size for the search: small, so that it buffers well under a second of records and
    /// zero drops means the agent kept up, not that the ring absorbed the burst.
    pub search_ring_bytes: u32,
    /// Worker counts to measure (`sensor run --workers N`), all in one run so that their
    /// ratio means something on a shared machine.
    pub workers: Vec<u32>,
    /// Spoofed SYNs of the flood row.
    pub flood_count: u64,
    /// Ring size of the flood row (`None`: the default, 16 MiB per ring).
    pub flood_ring_bytes: Option<u32>,
    pub scanner_targets: u32,
}

impl LiveBench {
    pub fn new(binary: PathBuf, scratch: PathBuf) -> Self {
        LiveBench {
            binary,
            scratch,
            // Long enough to run well past the tables' caps, as a flood would: on this machine
            // 15 s probes found 17 kpps "sustained", exactly the rate at which 15 s of SYNs
            // fit the connection table (258,111 entries), while 40 s at 14 kpps dropped.
            probe_seconds: 40,
            search_ring_bytes: 2 << 20,
            workers: vec![1, 2],
            flood_count: 2_000_000,
            flood_ring_bytes: None,
            scanner_targets: 300,
        }
    }

    fn worker_args(workers: u32) -> Vec<String> {
        if workers == 1 {
            Vec::new()
        } else {
            vec!["--workers".into(), workers.to_string()]
        }
    }

    /// The generator alone, at top speed into a veth with nothing attached.
    pub fn generator(&self) -> anyhow::Result<(blast::Stats, LinkStats)> {
        let lab = Lab::new()?;
        let before = blast::link_stats(&lab.netns, &lab.rx)?;
        let spec = Spec::flood(2_000_000, None, Duration::from_secs(10));
        let stats = blast::send(&lab.netns, &lab.tx, &spec)?;
        let rx = delta(blast::link_stats(&lab.netns, &lab.rx)?, before);
        Ok((stats, rx))
    }

    /// Highest pps (every SYN from a new spoofed source) at which a `probe_seconds` flood
    /// leaves zero ring drops: a binary search between `lo` and `hi`, at most `steps` probes.
    pub fn sustained(
        &self,
        workers: u32,
        mut lo: u64,
        mut hi: u64,
        steps: u32,
    ) -> anyhow::Result<(u64, Vec<Probe>)> {
        let mut probes = Vec::new();
        let mut best = 0;
        for _ in 0..steps {
            let pps = u64::midpoint(lo, hi);
            let p = self.probe(workers, pps)?;
            eprintln!("bench live: {workers} worker(s), {pps} pps: {p:?}");
            probes.push(p);
            if p.ring_drops == 0 {
                // What was sustained is what was sent: on a busy machine the sender may fall
                // short of the target, and then that is all the search can show.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let sent = p.sent_pps as u64;
                best = best.max(sent.min(pps));
                lo = pps;
            } else {
                hi = pps;
            }
            #[allow(clippy::cast_precision_loss)]
            if (hi as f64) < lo as f64 * 1.08 {
                break;
            }
        }
        Ok((best, probes))
    }

    fn probe(&self, workers: u32, pps: u64) -> anyhow::Result<Probe> {
        let mut args = vec![
            "--ring-bytes".to_string(),
            self.search_ring_bytes.to_string(),
        ];
        args.extend(Self::worker_args(workers));
        let secs = self.probe_seconds;
        let r = run(&AgentRun {
            binary: self.binary.clone(),
            spec: Spec::flood(pps * secs, Some(pps), Duration::from_secs(secs * 3)),
            args,
            wait_notice_from: None,
            notice_wait: Duration::ZERO,
            catch_up: Duration::from_mins(2),
            scratch: self.scratch.clone(),
        })?;
        let errors = r.accounting_errors();
        anyhow::ensure!(errors.is_empty(), "accounting: {errors:?}");
        Ok(Probe {
            pps,
            sent_pps: r.sent.pps(),
            ring_drops: r.ring_drops(),
            decoded: r.summary.consumed.total(),
            cpu_seconds: r.cpu_seconds,
        })
    }

    /// The flood row: `flood_count` spoofed SYNs with the scanner mixed in, at `pps` (`None`:
    /// the generator's top speed), default ring and caps, `--suppress all --threshold 20`.
    pub fn flood(&self, workers: u32, pps: Option<u64>) -> anyhow::Result<AgentReport> {
        let mut spec = Spec::flood(self.flood_count, pps, Duration::from_mins(2));
        spec.mix = scanner_frames(self.scanner_targets);
        let mut args: Vec<String> = ["--suppress", "all", "--threshold", "20"]
            .map(String::from)
            .to_vec();
        args.extend(Self::worker_args(workers));
        if let Some(bytes) = self.flood_ring_bytes {
            // The wake-up watermark must stay below the ring's size.
            args.extend([
                "--ring-bytes".to_string(),
                bytes.to_string(),
                "--wakeup-bytes".to_string(),
                (bytes / 4).to_string(),
            ]);
        }
        run(&AgentRun {
            binary: self.binary.clone(),
            spec,
            args,
            wait_notice_from: Some(IpAddr::V4(crate::flood::SCANNER)),
            notice_wait: Duration::from_secs(20),
            catch_up: Duration::from_mins(3),
            scratch: self.scratch.clone(),
        })
    }

    /// The "Live rates" section of BENCHMARKS.md.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    pub fn section(&self) -> anyhow::Result<String> {
        let mut md = String::new();
        // The machine's load when the section started: these rates are wall-clock rates.
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().next().unwrap_or("?").to_string();
        let (g, g_rx) = self.generator()?;
        eprintln!("bench live: generator {g:?}");
        writeln!(
            md,
            "\n## Live rates (native XDP on a veth, release agent, `sensor_tests::blast` sender)\n\n\
             Sender: an AF_PACKET TX ring with the qdisc bypassed, from a thread inside the lab \
             namespace (`sensor_tests::blast`; `target/release/blast` runs it alone). Load \
             average when this section started: {load} on {} CPUs. Into a \
             veth with nothing attached: {} SYNs in {:.2} s = **{:.0} pps** wall clock; the \
             sending thread used {:.2} s of CPU ({:.0} frames per CPU-second); the peer \
             received {} and dropped {}.\n",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            g.sent(),
            g.seconds,
            g.pps(),
            g.cpu_seconds,
            g.sent() as f64 / g.cpu_seconds.max(1e-9),
            g_rx.rx_packets,
            g_rx.rx_dropped,
        )?;
        // The flood first: the rate the agent drains at while saturated bounds the search.
        writeln!(
            md,
            "Above the sustainable rate: {} spoofed SYNs with a {}-address port-445 scanner \
             (`sensor_tests::flood::SCANNER`) spread through them, at the sender's top speed, \
             default ring (16 MiB) and caps, `--suppress all --threshold 20` \
             (`tests/tests/live_flood.rs` asserts the same). \"records/s until drained\": \
             records decoded from the first frame sent to the last record decoded.\n\n\
             | workers | sent | pps sent | XDP frames | ring drops (per ring) | decoded | records/s until drained | agent peak RSS | exit after SIGTERM | scanner AddressScan notices | accounting |\n\
             |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            self.flood_count, self.scanner_targets,
        )?;
        let mut saturated = Vec::new();
        for &w in &self.workers {
            let r = self.flood(w, None)?;
            eprintln!("bench live: flood: {}", r.line());
            saturated.push(r.record_rate());
            let errors = r.accounting_errors();
            writeln!(
                md,
                "| {w} | {} | {:.0} | {} | {} | {} | {:.0} | {} MiB | {:.1} s | {} | {} |",
                r.sent.sent(),
                r.sent.pps(),
                r.xdp("packets"),
                if r.summary.ring_drops.len() > 1 {
                    format!("{} ({:?})", r.ring_drops(), r.summary.ring_drops)
                } else {
                    r.ring_drops().to_string()
                },
                r.summary.consumed.total(),
                r.record_rate(),
                r.peak_rss_kib / 1024,
                r.stop_seconds,
                r.notices_for(IpAddr::V4(crate::flood::SCANNER), "AddressScan"),
                if errors.is_empty() {
                    "every frame".to_string()
                } else {
                    errors.join("; ")
                },
            )?;
        }
        writeln!(
            md,
            "\nSustained record rate: the highest SYN rate (every SYN from a new spoofed source: \
             the costliest record, which fills every per-source table) at which a {} s flood \
             leaves zero ring drops, by binary search between 1/8 and 1.5× the drain rate \
             above. The probes are long enough to run well past every table's cap (the \
             connection table's 258,111 entries fill within the first 3 s at these rates; a \
             probe that ends before its tables are full measures an agent that never evicts, \
             which is much faster). Ring {} MiB for the search (about {} SYN records, a fraction of a \
             second at these rates, so zero drops means the agent kept up rather than the ring \
             absorbed the burst), default caps.\n\n\
             Agent CPU: user plus system time of the agent process (all threads) per decoded \
             record, at the sustained probe: what a record costs whatever cores the workers get.\n\n\
             | workers | sustained pps (0 drops) | agent CPU µs/record | probes (target pps → sent pps: ring drops) |\n|---:|---:|---:|---|",
            self.probe_seconds,
            self.search_ring_bytes >> 20,
            self.search_ring_bytes / SYN_RECORD_BYTES,
        )?;
        let mut bests = Vec::new();
        for (&w, &rate) in self.workers.iter().zip(&saturated) {
            let hi = ((rate * 1.5) as u64).max(4_000);
            let (best, probes) = self.sustained(w, hi / 8, hi, 5)?;
            let list: Vec<String> = probes
                .iter()
                .map(|p| format!("{} → {:.0}: {}", p.pps, p.sent_pps, p.ring_drops))
                .collect();
            let cpu = probes
                .iter()
                .filter(|p| p.ring_drops == 0)
                .max_by_key(|p| p.pps)
                .map_or_else(|| "-".into(), |p| format!("{:.2}", p.cpu_us_per_record()));
            writeln!(md, "| {w} | {best} | {cpu} | {} |", list.join(", "))?;
            bests.push((w, best));
        }
        if let (Some(&(1, one)), true) = (bests.first(), bests.len() > 1) {
            for &(w, best) in &bests[1..] {
                let line = format!(
                    "{w} workers sustain {:.2}× the rate of one ({best} / {one} pps).",
                    best as f64 / one.max(1) as f64
                );
                eprintln!("bench live: {line}");
                writeln!(md, "\n{line}")?;
            }
        }
        writeln!(
            md,
            "\nOn a shared 2-core machine these rates move with the other load; rerun on a \
             quiet one: `cargo xtask bench --live` (this section only).\n"
        )?;
        Ok(md)
    }
}

/// `bench --live [FILE]`: measures the live section alone and puts it into FILE (default
/// BENCHMARKS.md), replacing the section a previous run wrote. `bench --live --probe PPS
/// SECONDS [WORKERS]`: one probe of the search, printed.
pub fn bench_live_main(args: &[String]) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("sensor-bench-live-{}", std::process::id()));
    let mut bench = LiveBench::new(lab::sensor_binary(true)?, scratch);
    let mut args = args.to_vec();
    if let Some(i) = args.iter().position(|a| a == "--workers") {
        // `--workers 1,2`: the worker counts to measure, in this order.
        let list = args
            .get(i + 1)
            .context("usage: bench --live --workers N[,N...]")?
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .context("--workers takes a comma-separated list of counts")?;
        anyhow::ensure!(!list.is_empty(), "--workers: no count given");
        bench.workers = list;
        args.drain(i..=i + 1);
    }
    let args = &args[..];
    if args.first().map(String::as_str) == Some("--probe") {
        let arg = |i: usize| -> anyhow::Result<u64> {
            Ok(args
                .get(i)
                .context("usage: bench --live --probe PPS SECONDS [WORKERS]")?
                .parse()?)
        };
        bench.probe_seconds = arg(2)?;
        let workers = u32::try_from(arg(3).unwrap_or(1))?;
        let p = bench.probe(workers, arg(1)?)?;
        println!("{p:?}");
        return Ok(());
    }
    let out = args
        .first()
        .map_or_else(|| PathBuf::from("BENCHMARKS.md"), PathBuf::from);
    anyhow::ensure!(
        !out.to_string_lossy().starts_with('-'),
        "unknown option {}",
        out.display()
    );
    let section = bench.section()?;
    let old = std::fs::read_to_string(&out).unwrap_or_else(|_| "# Benchmarks\n".into());
    let heading = "\n## Live rates";
    let new = match old.find(heading) {
        Some(start) => {
            // Up to the next section, or the end.
            let rest = &old[start + heading.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |i| start + heading.len() + i);
            format!("{}{}{}", &old[..start], section.trim_end(), &old[end..])
        }
        None => format!("{}\n{}", old.trim_end(), section),
    };
    let new = if new.ends_with('\n') { new } else { new + "\n" };
    std::fs::write(&out, new)?;
    eprintln!("bench: wrote the live section to {}", out.display());
    Ok(())
}
