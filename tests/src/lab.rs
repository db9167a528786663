//! Lab networks for live tests and the demo: a fresh network namespace holding one veth pair.
//!
//! Safety rules this enforces: everything happens inside a namespace we create, with names
//! unique to this process; IPv6 is disabled and no address or route is configured, so the
//! namespace neither sends anything of its own nor reaches anything outside; and [`Lab`]'s
//! `Drop` deletes the namespace (and with it the veth pair), also when a test panics.
//! Namespaces left by a killed process are swept by [`sweep_stale`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Prefix of every namespace we create: `sxlab-<pid>-<n>`.
pub const PREFIX: &str = "sxlab-";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace with a veth pair: frames sent on `tx` arrive on `rx`.
#[derive(Debug)]
pub struct Lab {
    pub netns: String,
    /// The end replays are sent from.
    pub tx: String,
    /// The end the sensor attaches to.
    pub rx: String,
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(args))
}

impl Lab {
    /// Creates the namespace and the veth pair, both ends up, with nothing else configured.
    pub fn new() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let lab = Lab {
            netns: format!("{PREFIX}{pid}-{n}"),
            // Interface names are limited to 15 bytes; these live only inside the namespace.
            tx: format!("sxt{n}"),
            rx: format!("sxr{n}"),
        };
        ip(&["netns", "add", &lab.netns])?;
        // From here on, `lab`'s Drop deletes the namespace even if a later step fails.
        lab.setup()?;
        Ok(lab)
    }

    fn setup(&self) -> anyhow::Result<()> {
        // No IPv6 means no router solicitations or DAD probes: the only frames on the wire are
        // the ones a test sends, so counts can be exact.
        for key in [
            "net.ipv6.conf.all.disable_ipv6",
            "net.ipv6.conf.default.disable_ipv6",
        ] {
            run(self.exec("sysctl").args(["-qw", &format!("{key}=1")]))?;
        }
        // Loopback carries the metrics scrape; it stays inside the namespace.
        ip(&["-n", &self.netns, "link", "set", "lo", "up"])?;
        self.add_pair(&self.tx, &self.rx)
    }

    /// Adds a veth pair to the namespace, set up as the first: frames sent on `tx` arrive on
    /// `rx`. The names need only be unique inside the namespace (at most 15 bytes).
    pub fn add_pair(&self, tx: &str, rx: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.netns,
            "link",
            "add",
            tx,
            "type",
            "veth",
            "peer",
            "name",
            rx,
        ])?;
        for dev in [tx, rx] {
            // Offloads would merge or split frames between the send and XDP.
            let _ = run(self
                .exec("ethtool")
                .args(["-K", dev, "gro", "off", "tso", "off", "gso", "off"]));
            ip(&["-n", &self.netns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// A command that runs inside the namespace.
    pub fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// Kernel RX packet count of an interface in the namespace.
    pub fn rx_packets(&self, dev: &str) -> anyhow::Result<u64> {
        let out = ip(&["-n", &self.netns, "-s", "-j", "link", "show", dev])?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        json[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .context("no rx stats in `ip -s -j link`")
    }

    /// Whether an XDP program is attached to `dev`.
    pub fn has_xdp(&self, dev: &str) -> anyhow::Result<bool> {
        let out = ip(&["-n", &self.netns, "-j", "link", "show", dev])?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(!json[0]["xdp"].is_null())
    }

    /// `GET http://127.0.0.1:<port><path>` from inside the namespace; the body of a 200.
    pub fn http_get(&self, port: u16, path: &str) -> anyhow::Result<String> {
        Ok(self.http_request(port, path, &[])?.1)
    }

    /// `GET http://127.0.0.1:<port><path>` with extra request headers from inside the
    /// namespace; the response's head (status line and headers) and body, if the status is 200.
    pub fn http_request(
        &self,
        port: u16,
        path: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(String, String)> {
        let ns = Path::new("/var/run/netns").join(&self.netns);
        let path = path.to_string();
        let headers = headers.iter().fold(String::new(), |mut out, (k, v)| {
            use std::fmt::Write as _;
            let _ = write!(out, "{k}: {v}\r\n");
            out
        });
        // setns changes only the calling thread's namespace: do it on a throwaway thread.
        std::thread::spawn(move || -> anyhow::Result<(String, String)> {
            let fd = File::open(&ns).with_context(|| format!("opening {}", ns.display()))?;
            // SAFETY: a valid namespace fd; affects this thread only.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
            )?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            let (head, body) = response
                .split_once("\r\n\r\n")
                .context("malformed HTTP response")?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!("HTTP error: {}", head.lines().next().unwrap_or_default());
            }
            Ok((head.to_string(), body.to_string()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("scrape thread panicked"))?
    }

    /// Replays `pcap` once at the capture's own timing (for captures of a few seconds).
    pub fn replay_timed(&self, pcap: &Path) -> anyhow::Result<ReplayStats> {
        let out = run(self
            .exec("tcpreplay")
            .args(["-q", "-K", "-i", &self.tx, "--loop", "1"])
            .arg(pcap))?;
        ReplayStats::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Replays `pcap` out of `tx` with tcpreplay, bounded in rate (`pps`, or top speed if
    /// `None`) and in count (`loops` passes over the file).
    pub fn replay(&self, pcap: &Path, pps: Option<u32>, loops: u32) -> anyhow::Result<ReplayStats> {
        self.replay_on(&self.tx, pcap, pps, loops)
    }

    /// [`Lab::replay`] out of the namespace's interface `tx`.
    pub fn replay_on(
        &self,
        tx: &str,
        pcap: &Path,
        pps: Option<u32>,
        loops: u32,
    ) -> anyhow::Result<ReplayStats> {
        let mut cmd = self.exec("tcpreplay");
        cmd.args(["-q", "-K", "-i", tx, "--loop", &loops.max(1).to_string()]);
        match pps {
            Some(pps) => cmd.arg(format!("--pps={pps}")),
            None => cmd.arg("--topspeed"),
        };
        let out = run(cmd.arg(pcap))?;
        ReplayStats::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair inside it.
        if let Err(e) = ip(&["netns", "del", &self.netns]) {
            eprintln!("lab: could not delete namespace {}: {e:#}", self.netns);
        }
    }
}

/// Deletes lab namespaces whose creating process no longer exists.
pub fn sweep_stale() -> anyhow::Result<Vec<String>> {
    let out = ip(&["-j", "netns", "list"])?;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut removed = Vec::new();
    for entry in list.as_array().into_iter().flatten() {
        let Some(name) = entry["name"].as_str() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        ip(&["netns", "del", name])?;
        removed.push(name.to_string());
    }
    Ok(removed)
}

/// What tcpreplay reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplayStats {
    pub packets: u64,
    pub seconds: f64,
    pub pps: f64,
    pub failed: u64,
}

impl ReplayStats {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let mut stats = ReplayStats::default();
        for line in text.lines().map(str::trim) {
            let words: Vec<&str> = line.split_whitespace().collect();
            if line.starts_with("Actual:") {
                stats.packets = words
                    .get(1)
                    .and_then(|w| w.parse().ok())
                    .context("Actual: packets")?;
                let at = words
                    .iter()
                    .position(|w| *w == "in")
                    .context("Actual: seconds")?;
                stats.seconds = words
                    .get(at + 1)
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0.0);
            } else if line.starts_with("Rated:") {
                let at = words
                    .iter()
                    .position(|w| w.starts_with("pps"))
                    .context("Rated: pps")?;
                stats.pps = words[at - 1].trim_end_matches(',').parse().unwrap_or(0.0);
            } else if line.starts_with("Failed packets:") {
                stats.failed = words.last().and_then(|w| w.parse().ok()).unwrap_or(0);
            }
        }
        anyhow::ensure!(
            stats.packets > 0 || text.contains("Actual: 0"),
            "no tcpreplay summary in:\n{text}"
        );
        Ok(stats)
    }
}

/// A copy of `pcap` (in `dir`) with frames longer than a 1500-byte MTU cut to fit, as a veth
/// cannot carry the GRO/TSO super-frames some captures hold.
pub fn mtu_safe_copy(pcap: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = pcap
        .file_stem()
        .context("capture without a name")?
        .to_string_lossy();
    let out = dir.join(format!("{name}.mtu1500.pcap"));
    run(Command::new("tcprewrite")
        .args(["--mtu=1500", "--mtu-trunc", "-i"])
        .arg(pcap)
        .arg("-o")
        .arg(&out))?;
    Ok(out)
}

/// Prometheus text exposition → `series{labels}` → value. The `iface` label of the kernel
/// counters is left out (values summed over it), so a series reads the same whatever the
/// interfaces are called.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        *out.entry(without_iface(series)).or_insert(0.0) += value;
    }
    out
}

/// `name{iface="x",kind="y"}` → `name{kind="y"}`; `name{iface="x"}` → `name`. Label values
/// here never hold `,` or `"` other than the interface list, which is quoted.
fn without_iface(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_string();
    };
    let labels = labels.strip_suffix('}').unwrap_or(labels);
    let mut kept = Vec::new();
    let mut rest = labels;
    while !rest.is_empty() {
        // One `key="value"` pair; the value ends at the next unescaped quote.
        let Some((key, after)) = rest.split_once("=\"") else {
            break;
        };
        let mut end = 0;
        let bytes = after.as_bytes();
        while end < bytes.len() && !(bytes[end] == b'"' && (end == 0 || bytes[end - 1] != b'\\')) {
            end += 1;
        }
        if key != "iface" {
            kept.push(format!("{key}=\"{}\"", &after[..end]));
        }
        rest = after.get(end + 1..).unwrap_or("").trim_start_matches(',');
    }
    if kept.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{}}}", kept.join(","))
    }
}

/// Builds the `sensor` binary (a no-op when up to date) and returns its path.
pub fn sensor_binary(release: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "sensor",
        "--bin",
        "sensor",
        "--message-format=json",
    ]);
    if release {
        cmd.arg("--release");
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("building the sensor binary failed");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "sensor" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo did not report the sensor executable")
}

/// Counts of what the pre-filter must forward from a capture, computed by tshark: an
/// implementation independent of ours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TsharkCounts {
    pub frames: u64,
    pub syn: u64,
    pub synack: u64,
    pub rst: u64,
    pub fin: u64,
    /// UDP datagrams with a payload (not inside ICMP errors, not later fragments).
    pub udp: u64,
    /// ICMP destination unreachable (v4 type 3, v6 type 1) quoting TCP or UDP ports.
    pub icmp: u64,
}

pub fn tshark_counts(pcap: &Path) -> anyhow::Result<TsharkCounts> {
    let out = run(Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE"])
        .args(["-T", "fields", "-E", "occurrence=f", "-e", "frame.number"])
        .args([
            "-e",
            "tcp.flags",
            "-e",
            "udp.length",
            "-e",
            "icmp.type",
            "-e",
            "icmpv6.type",
            "-e",
            "tcp.srcport",
            "-e",
            "udp.srcport",
        ]))?;
    let mut counts = TsharkCounts::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        counts.frames += 1;
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        if !field(3).is_empty() || !field(4).is_empty() {
            // ICMP: a TCP/UDP header inside is the quoted original, not a packet of its own.
            let unreachable = field(3) == "3" || field(4) == "1";
            if unreachable && (!field(5).is_empty() || !field(6).is_empty()) {
                counts.icmp += 1;
            }
            continue;
        }
        if let Some(flags) = field(1).strip_prefix("0x") {
            let flags = u16::from_str_radix(flags, 16)?;
            let (fin, syn, rst, ack) = (
                flags & 1 != 0,
                flags & 2 != 0,
                flags & 4 != 0,
                flags & 0x10 != 0,
            );
            if rst {
                counts.rst += 1;
            } else if syn && ack {
                counts.synack += 1;
            } else if syn {
                counts.syn += 1;
            } else if fin {
                counts.fin += 1;
            }
        } else if let Ok(len) = field(2).parse::<u32>() {
            if len > 8 {
                counts.udp += 1;
            }
        }
    }
    Ok(counts)
}

/// Port the sensor serves metrics on inside a lab (each lab has its own loopback).
pub const METRICS_PORT: u16 = 9899;

/// A `sensor run` process inside a lab; stopped and reaped when dropped, so it never outlives
/// the namespace it is attached in.
pub struct SensorProcess {
    child: Option<Child>,
}

impl SensorProcess {
    /// Starts `sensor run --iface <lab.rx> --metrics 127.0.0.1:9899 <args>` in the lab and waits
    /// (at most 20 s) until XDP is attached and `/metrics` answers.
    pub fn start(lab: &Lab, binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_wrapped(lab, &[], binary, args)
    }

    /// [`SensorProcess::start`], run through `wrapper` (a command that executes its arguments
    /// in place, such as `setpriv …`).
    pub fn start_wrapped(
        lab: &Lab,
        wrapper: &[&str],
        binary: &Path,
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = lab.exec(program);
                cmd.args(rest).arg(binary);
                cmd
            }
            None => lab.exec(binary),
        };
        let child = cmd
            .args([
                "run",
                "--iface",
                &lab.rx,
                "--metrics",
                &format!("127.0.0.1:{METRICS_PORT}"),
            ])
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the sensor")?;
        let mut sensor = SensorProcess { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(lab.has_xdp(&lab.rx).unwrap_or(false)
            && lab.http_get(METRICS_PORT, "/metrics").is_ok())
        {
            if let Some(status) = sensor
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("the sensor exited during start-up ({status})");
            }
            if Instant::now() > deadline {
                bail!("the sensor did not attach and serve metrics within 20 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(sensor)
    }

    /// The sensor's process id (`ip netns exec` executes it in place).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGTERM, then wait at most 10 s (SIGKILL after that).
    pub fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().expect("running");
        terminate(&mut child).context("the sensor did not exit within 10 s of SIGTERM")
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

fn terminate(child: &mut Child) -> Option<ExitStatus> {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Value of one series in a scrape, 0 if absent.
pub fn metric<S: std::hash::BuildHasher>(metrics: &HashMap<String, f64, S>, series: &str) -> u64 {
    count(metrics.get(series).copied().unwrap_or(0.0))
}

/// A counter's value as exposed (Prometheus text carries every number as a float).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // counters: whole, ≥ 0, < 2^53
pub fn count(value: f64) -> u64 {
    value as u64
}

/// Waits (at most `timeout`) until XDP has seen `sent` frames and the agent has decoded every
/// record the kernel emitted; returns that scrape.
pub fn wait_caught_up(
    lab: &Lab,
    sent: u64,
    timeout: Duration,
) -> anyhow::Result<HashMap<String, f64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = parse_metrics(&lab.http_get(METRICS_PORT, "/metrics")?);
        let kinds = ["syn", "synack", "rst", "fin", "udp", "icmp"];
        let sum = |name: &str| -> u64 {
            kinds
                .iter()
                .map(|k| metric(&m, &format!("{name}{{kind=\"{k}\"}}")))
                .sum()
        };
        let lost = metric(&m, "sensor_xdp_ring_full_drops_total");
        let decode_errors: u64 = m
            .iter()
            .filter(|(series, _)| series.starts_with("sensor_ring_decode_errors_total"))
            .map(|(_, v)| count(*v))
            .sum();
        // With several workers a record may go to two rings: what the rings got, copies
        // included, is what must be read.
        let put: u64 = m
            .iter()
            .filter(|(series, _)| series.starts_with("sensor_xdp_ring_records_total"))
            .map(|(_, v)| count(*v))
            .sum();
        let read_all: u64 = m
            .iter()
            .filter(|(series, _)| series.starts_with("sensor_ring_records_total"))
            .map(|(_, v)| count(*v))
            .sum();
        let caught_up = if put > 0 {
            read_all + decode_errors >= put
        } else {
            sum("sensor_ring_records_total") + decode_errors >= sum("sensor_xdp_records_total")
        };
        if metric(&m, "sensor_xdp_packets_total") >= sent && caught_up {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("the sensor did not catch up within {timeout:?} (ring drops so far: {lost})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
