//! The options of each subcommand, as clap derive structs. Every option here can also be set in
//! the config file (`--config`, see [`super::config`]) under its long name, with nothing to add:
//! the file is read through these same definitions.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use crate::capture::xdp::AttachMode;
use crate::detect::BroScanConfig;
use crate::engine::{DetectorKind, EngineConfig, Suppress};
use crate::ppr::{PprConfig, PprMode};

/// `--config FILE`, flattened into every subcommand that reads the config file.
#[derive(clap::Args, Clone, Debug)]
pub struct ConfigArg {
    /// Read options from this TOML file (a `[COMMAND]` table, and `[detection]` for the
    /// detection options); options given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

pub const EVAL_HELP: &str = "\
Each capture is a separate run with its own labels: --labels for all of them, or else
NAME.labels.csv beside NAME.pcap (as the lab writes them). Labels are CSV lines `ip,role,what,...`
with roles bittorrent, scanner and benign; other roles are reported, not scored. A host is
flagged when it raised an AddressScan or PortScan notice. For every mode (none, predict, ppr,
all) and threshold: TPR = scanners flagged / scanners, FPR = BitTorrent hosts flagged /
BitTorrent hosts. Every capture is read once; its events feed one engine per mode and threshold
(so eval takes neither --suppress nor --threshold; the other detection options apply).

With --out DIR: roc.csv, roc.json (with every host's results), roc.svg (the ROC curves) and
time-to-100.svg (per BitTorrent host, minutes from its first to its 100th predicted
connection, failed or established, in 15-minute bins).";

#[derive(clap::Args, Debug)]
#[command(after_long_help = EVAL_HELP)]
pub struct EvalArgs {
    /// pcap or pcapng files, each a labelled run.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// Labels for every capture (default: NAME.labels.csv beside each NAME.pcap).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// First address-scan thresholds to evaluate.
    #[arg(long, value_delimiter = ',', default_values_t = crate::eval::DEFAULT_THRESHOLDS)]
    pub thresholds: Vec<u64>,
    /// Write roc.csv, roc.json, roc.svg and time-to-100.svg here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub engine: DetectionArgs,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct PeersArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// One JSON object per line: ts, host, peer, port, transport, channel.
    #[arg(long)]
    pub json: bool,
    /// Instead of the peers: per channel, messages seen, parsed and rejected (by reason), and per
    /// host the share of its failed TCP handshakes that were predicted, by channel.
    #[arg(long)]
    pub stats: bool,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Most connections tracked at once, as for `analyze`.
    #[arg(long, default_value_t = 500_000)]
    pub max_conns: usize,
    /// Forward every UDP payload head (the full policy, kept to compare against the default
    /// classified one).
    #[arg(long, hide = true)]
    pub udp_full: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub const ANALYZE_HELP: &str = "\
Capture files (pcap/pcapng; Ethernet, Linux SLL/SLL2, raw IP, BSD loopback) are read in the
order given as one stream of packet time, through the same pre-filter as the XDP program and the
same engine as `sensor run`. Notices go to stdout, one per line (`ts note msg`, or JSON with
--json).

--threshold N makes N the first address-scan threshold: the AddressScan vector becomes N
followed by Bro's defaults above N ({20, 100, 1000, 10000, ...} for a non-local source,
{100, 1000, 10000} for a local one). ShutdownThresh does not move: a non-local source still
gets it at 100 distinct peers, tested before AddressScan, so AddressScan is then due at 101.
With N > 100 ShutdownThresh fires at 100 and the first AddressScan at exactly N.

Prediction removes every attempt to a peer that coordination traffic announced to the source,
failed or established. PPR judges, per source, the attempts the detector counted (failed ones:
S0, REJ, RSTOS0, SH, and UDP requests with --udp-scan; established ones on services outside
Bro's allow_services; with prediction on, only unpredicted ones) until the source is idle for
15 minutes. Classic: suppress when LO <= distinct ports / distinct peers <= HI. Hardened
(default) also needs distinct (peer, port) pairs / distinct peers <= 1.25 and at least 90% of
the ports >= 1024, which a block scan (N hosts x N ports) cannot meet. Neither prediction nor
PPR hides a scan's shape: when everything a source tried, predicted attempts included, sweeps
one port over most of its peers (at least 5), fails on one port for 10 distinct peers (below
1024) or 20 (any other port but BitTorrent's defaults), or tries 20 ports of one peer, its
notices stand.

Frames cut by a snap length are analysed as captured and counted (frames_cut,
bytes_not_captured); frames on an unsupported link type are counted and the link type named.

Exit status: 0; 1 if an input could not be read at all (missing, a directory, not a pcap or
pcapng file: the other inputs are still analysed and their results printed); else 2 if an
input ended in damage (its frames up to the damage are still analysed, with a warning);
64 for a usage error (a bad option), 78 for a bad config file.";

#[derive(clap::Args, Debug)]
#[command(after_long_help = ANALYZE_HELP)]
pub struct AnalyzeArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Notices as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Write Zeek-style logs here: notice.log, attempts.log, predictions.log, suppressed.log,
    /// stats.log.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write the logs as JSON lines instead of Zeek TSV.
    #[arg(long)]
    pub json_logs: bool,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Continue from this state file (saved by --state-out or `run --state-file`).
    #[arg(long, value_name = "PATH")]
    pub state_in: Option<PathBuf>,
    /// Save the state here at the end instead of closing the run (no end-of-run summaries),
    /// so that a later `--state-in` continues it.
    #[arg(long, value_name = "PATH")]
    pub state_out: Option<PathBuf>,
    /// Forward every UDP payload head (the full policy, kept to compare against the default
    /// classified one).
    #[arg(long, hide = true)]
    pub udp_full: bool,
    /// Split the hosts over this many engines, as `run --workers` does (1 to 4); the results
    /// are the same as with one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub workers: u32,
    #[command(flatten)]
    pub config: ConfigArg,
}

/// Detection settings of `run` and `analyze`: the suppression mode and first threshold, which
/// `eval` varies itself, and the rest ([`DetectionArgs`]), which `eval` takes too.
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Which suppression to apply.
    #[arg(long, value_enum, default_value_t = Suppress::All)]
    pub suppress: Suppress,
    /// First AddressScan threshold N: Bro's vector becomes N, then its defaults above N
    /// (ShutdownThresh stays at 100 peers).
    #[arg(long, value_name = "N")]
    pub threshold: Option<u64>,
    #[command(flatten)]
    pub detection: DetectionArgs,
}

/// PPR's ratio range: suppress when `lo` <= distinct ports / distinct peers <= `hi`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PprRange {
    pub lo: f64,
    pub hi: f64,
}

impl std::str::FromStr for PprRange {
    type Err = String;

    /// `LO,HI`, as the help writes it: `0.75,1.0`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (lo, hi) = s
            .split_once(',')
            .ok_or_else(|| format!("expected LO,HI (e.g. 0.75,1.0), got {s:?}"))?;
        let num = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| format!("{v:?} is not a non-negative number"))
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi {
            return Err(format!("LO {lo} exceeds HI {hi}"));
        }
        Ok(PprRange { lo, hi })
    }
}

impl std::fmt::Display for PprRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?},{:?}", self.lo, self.hi)
    }
}

/// A network in CIDR notation, or one address (a host prefix, /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a network (CIDR such as 10.0.0.0/8) or an address"))
}

/// Detection settings shared by `run`, `analyze` and `eval`.
#[derive(clap::Args, Debug)]
pub struct DetectionArgs {
    /// Local networks, as Bro's local_nets: sources there are outbound (default: none, as in
    /// the paper's run).
    #[arg(long, value_delimiter = ',', value_name = "CIDR", value_parser = parse_net)]
    pub local_nets: Vec<IpNet>,
    /// Sources never reported as scanners (Bro's skip_scan_sources, with its default
    /// 255.255.255.255). Bro detector only.
    #[arg(long, value_delimiter = ',', value_name = "IP")]
    pub skip_scan_sources: Vec<IpAddr>,
    /// Networks whose sources are never reported as scanners (Bro's skip_scan_nets). Bro
    /// detector only.
    #[arg(long, value_delimiter = ',', value_name = "CIDR", value_parser = parse_net)]
    pub skip_scan_nets: Vec<IpNet>,
    /// Scan detector.
    #[arg(long, value_enum, default_value_t = DetectorKind::Bro)]
    pub detector: DetectorKind,
    /// Count every UDP request to a new peer, as Bro 1.5 with udp-common loaded.
    #[arg(long)]
    pub udp_scan: bool,
    /// PPR variant.
    #[arg(long, value_enum, default_value_t = PprMode::Hardened)]
    pub ppr: PprMode,
    /// PPR ratio range: suppress when LO <= distinct ports / distinct peers <= HI.
    #[arg(long, value_name = "LO,HI", default_value = "0.75,1.0")]
    pub ppr_range: PprRange,
    /// Apply PPR to every source, not only to those with BitTorrent evidence (the paper's PPR).
    #[arg(long)]
    pub ppr_any_host: bool,
    /// Seconds an announced peer stays predicted after its last announcement.
    #[arg(long, default_value_t = 1800)]
    pub prediction_ttl: u64,
    /// Most predicted peers kept per host (oldest evicted first).
    #[arg(long, default_value_t = 20_000)]
    pub max_peers_per_host: usize,
    /// Most predicted peers kept in all (its memory budget, 96 MiB, may hold fewer).
    #[arg(long, default_value_t = 500_000)]
    pub max_predictions: usize,
    /// Most connections tracked at once (its memory budget, 96 MiB, may hold fewer); when
    /// full, the oldest is evicted, and an attempt still unanswered is reported as failed.
    #[arg(long, default_value_t = 500_000)]
    pub max_conns: usize,
    /// Zeek's notice suppression interval per (source, note), in seconds: a notice of a kind
    /// reported for a source less than this ago is suppressed, and a source still scanning
    /// this long after its last report is reported again. 0 (default): off, as in Bro 1.5.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub notice_suppress_for: u64,
}

impl EngineArgs {
    /// The engine configuration these options describe.
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        let mut config = self.detection.config()?;
        if let Some(n) = self.threshold {
            anyhow::ensure!(n > 0, "--threshold must be at least 1");
            let bro = BroScanConfig::with_first_threshold(n);
            config.bro.report_peer_scan = bro.report_peer_scan;
            config.bro.report_outbound_peer_scan = bro.report_outbound_peer_scan;
        }
        config.suppress = self.suppress;
        Ok(config)
    }
}

impl DetectionArgs {
    /// The engine configuration these options describe, with Bro's default thresholds and
    /// every suppression on.
    pub fn config(&self) -> anyhow::Result<EngineConfig> {
        let mut config = EngineConfig {
            detector: self.detector,
            ..EngineConfig::default()
        };
        config.bro.local_nets.clone_from(&self.local_nets);
        config.bro.skip_scan_sources.extend(&self.skip_scan_sources);
        config.bro.skip_scan_nets.clone_from(&self.skip_scan_nets);
        config.trw.local_nets.clone_from(&self.local_nets);
        anyhow::ensure!(
            self.max_peers_per_host > 0 && self.max_predictions > 0,
            "prediction limits must be positive"
        );
        config.prediction = crate::predict::PredictionConfig {
            ttl: Duration::from_secs(self.prediction_ttl),
            max_per_host: self.max_peers_per_host,
            max_total: self.max_predictions,
            ..crate::predict::PredictionConfig::default()
        };
        anyhow::ensure!(self.max_conns > 0, "--max-conns must be positive");
        config.conn.max_conns = self.max_conns;
        config.notice_suppress_for = crate::time::Duration::from_secs(self.notice_suppress_for);
        config.conn.udp = self.udp_scan;
        config.ppr = PprConfig {
            mode: self.ppr,
            lo: self.ppr_range.lo,
            hi: self.ppr_range.hi,
            require_bittorrent: !self.ppr_any_host,
            ..PprConfig::default()
        };
        Ok(config)
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to (repeat for each ingress NIC of a gateway, at most 8); the kernel
    /// counters are kept per interface.
    #[arg(long, required = true)]
    pub iface: Vec<String>,
    /// Where XDP runs: native (in the driver), skb (generic), or auto (native if supported).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    pub xdp_mode: AttachMode,
    /// Prometheus endpoint (`/metrics`). Loopback only unless --metrics-allow-remote.
    #[arg(long, default_value = "127.0.0.1:9899")]
    pub metrics: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Allow a non-loopback metrics address.
    #[arg(long)]
    pub metrics_allow_remote: bool,
    #[command(flatten)]
    pub xdp: XdpArgs,
    /// Drain the ring at least every this many milliseconds.
    #[arg(long, default_value_t = 5)]
    pub drain_ms: u64,
    /// Ring bytes unread at which the kernel wakes the agent early (0: on every record).
    #[arg(long, default_value_t = 256 << 10)]
    pub wakeup_bytes: u32,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Write the final counters as JSON to this file on exit.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Write every decoded event as a JSON line to this file.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Write every notice as a JSON line to this file (they are also logged).
    #[arg(long)]
    pub notices: Option<PathBuf>,
    /// Write Zeek-style logs here, as `analyze --out` (appended to; SIGHUP reopens them).
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Write the logs as JSON lines instead of Zeek TSV.
    #[arg(long)]
    pub json_logs: bool,
    /// Seconds between stats.log rows.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub stats_interval: u64,
    /// Load the engine's state from this file at start (if it exists) and save it there
    /// periodically and on SIGINT/SIGTERM.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Seconds between periodic state saves (with --state-file).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub state_interval: u64,
    /// Worker threads (1 to 4): the XDP program splits the records over one ring per worker
    /// by host, and each worker runs its own engine on the hosts it owns.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub workers: u32,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct XdpArgs {
    /// UDP payload bytes forwarded per datagram (at most 2048).
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = 16 << 20)]
    pub ring_bytes: u32,
    /// Load the full UDP policy: every UDP payload head, as before classification (kept to
    /// compare against the default).
    #[arg(long, hide = true)]
    pub udp_full: bool,
}

#[derive(clap::Args, Debug)]
pub struct PrefilterArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pub pcaps: Vec<PathBuf>,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    pub snaplen: u32,
    /// Print the counters as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write every forwarded event as a JSON line to this file.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Forward every UDP payload head (the full policy, kept to compare against the default
    /// classified one).
    #[arg(long, hide = true)]
    pub udp_full: bool,
    /// Forward the datagrams that carry no coordination as metadata records (what
    /// `--udp-scan` needs; the full policy forwards them whole anyway).
    #[arg(long, hide = true)]
    pub udp_scan: bool,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(clap::Args, Debug)]
pub struct CheckConfigArgs {
    /// The TOML file to check.
    pub file: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to write completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write sensor.1 and one page per subcommand (sensor-run.1, ...) here instead.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}
