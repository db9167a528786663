//! `sensor`: the BitTorrent-vs-scan sensor's command line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sensor::agent::{self, RunConfig};
use sensor::capture::pcap;
use sensor::capture::xdp::{AttachMode, XdpConfig};
use sensor::conn::ConnOutcome;
use sensor::detect::{BroScanConfig, ScanNotice};
use sensor::engine::{DetectorKind, Engine, EngineConfig, EngineSink, Suppress, SuppressReason};
use sensor::event::{EventLog, EventSink};
use sensor::ppr::{PprConfig, PprMode, PprSample};
use sensor::predict::{Channel, PeerTransport, PredictedPeer};

#[derive(Parser)]
#[command(
    version,
    about = "Tells BitTorrent hosts apart from port scanners, at the gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the XDP pre-filter to interfaces and process their traffic until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Run the pre-filter over capture files: what XDP would forward, and its counters.
    Prefilter(PrefilterArgs),
    /// Analyse capture files: scan notices, with BitTorrent prediction and PPR suppression.
    Analyze(AnalyzeArgs),
    /// The peers BitTorrent coordination traffic announced to each host (the predictions).
    Peers(PeersArgs),
    /// Accuracy on labelled captures: TPR/FPR per suppression mode and threshold (ROC).
    Eval(EvalArgs),
}

const EVAL_HELP: &str = "\
Each capture is a separate run with its own labels: --labels for all of them, or else
NAME.labels.csv beside NAME.pcap (as the lab writes them). Labels are CSV lines `ip,role,what,...`
with roles bittorrent, scanner and benign; other roles are reported, not scored. A host is
flagged when it raised an AddressScan or PortScan notice. For every mode (none, predict, ppr,
all) and threshold: TPR = scanners flagged / scanners, FPR = BitTorrent hosts flagged /
BitTorrent hosts. Every capture is read once; its events feed one engine per mode and threshold
(so --suppress is ignored and --threshold refused; the other detection options apply).

With --out DIR: roc.csv, roc.json (with every host's results), roc.svg (the ROC curves) and
time-to-100.svg (per BitTorrent host, minutes from its first to its 100th predicted
connection, failed or established, in 15-minute bins).";

#[derive(clap::Args)]
#[command(after_long_help = EVAL_HELP)]
struct EvalArgs {
    /// pcap or pcapng files, each a labelled run.
    #[arg(required = true)]
    pcaps: Vec<PathBuf>,
    /// Labels for every capture (default: NAME.labels.csv beside each NAME.pcap).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// First address-scan thresholds to evaluate.
    #[arg(long, value_delimiter = ',', default_values_t = sensor::eval::DEFAULT_THRESHOLDS)]
    thresholds: Vec<u64>,
    /// Write roc.csv, roc.json, roc.svg and time-to-100.svg here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    snaplen: u32,
}

#[derive(clap::Args)]
struct PeersArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pcaps: Vec<PathBuf>,
    /// One JSON object per line: ts, host, peer, port, transport, channel.
    #[arg(long)]
    json: bool,
    /// Instead of the peers: per channel, messages seen, parsed and rejected (by reason), and per
    /// host the share of its failed TCP handshakes that were predicted, by channel.
    #[arg(long)]
    stats: bool,
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Most connections tracked at once, as for `analyze`.
    #[arg(long, default_value_t = 500_000)]
    max_conns: usize,
    /// Forward only the UDP payloads that can carry coordination (the classified policy,
    /// offline only for now: the XDP program does not pass the verifier with it yet).
    #[arg(long, hide = true)]
    udp_classified: bool,
}

const ANALYZE_HELP: &str = "\
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
input ended in damage (its frames up to the damage are still analysed, with a warning).";

#[derive(clap::Args)]
#[command(after_long_help = ANALYZE_HELP)]
struct AnalyzeArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pcaps: Vec<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Notices as JSON lines.
    #[arg(long)]
    json: bool,
    /// Write Zeek-style logs here: notice.log, attempts.log, predictions.log, suppressed.log.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the logs as JSON lines instead of Zeek TSV.
    #[arg(long)]
    json_logs: bool,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Forward only the UDP payloads that can carry coordination (the classified policy,
    /// offline only for now: the XDP program does not pass the verifier with it yet).
    #[arg(long, hide = true)]
    udp_classified: bool,
}

/// Detection settings, the same for `run` and `analyze`.
#[derive(clap::Args)]
struct EngineArgs {
    /// Which suppression to apply.
    #[arg(long, value_enum, default_value_t = Suppress::All)]
    suppress: Suppress,
    /// First address-scan threshold (see below).
    #[arg(long)]
    threshold: Option<u64>,
    /// Local networks, as Bro's local_nets (default: none, as in the paper's run).
    #[arg(long, value_delimiter = ',')]
    local_nets: Vec<String>,
    /// Scan detector.
    #[arg(long, value_enum, default_value_t = DetectorKind::Bro)]
    detector: DetectorKind,
    /// Count every UDP request to a new peer, as Bro 1.5 with udp-common loaded.
    #[arg(long)]
    udp_scan: bool,
    /// PPR variant.
    #[arg(long, value_enum, default_value_t = PprMode::Hardened)]
    ppr: PprMode,
    /// PPR ratio range LO,HI.
    #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.75, 1.0])]
    ppr_range: Vec<f64>,
    /// Apply PPR to every source, not only to those with BitTorrent evidence (the paper's PPR).
    #[arg(long)]
    ppr_any_host: bool,
    /// Seconds an announced peer stays predicted after its last announcement.
    #[arg(long, default_value_t = 1800)]
    prediction_ttl: u64,
    /// Most predicted peers kept per host (oldest evicted first).
    #[arg(long, default_value_t = 20_000)]
    max_peers_per_host: usize,
    /// Most predicted peers kept in all (its memory budget, 96 MiB, may hold fewer).
    #[arg(long, default_value_t = 500_000)]
    max_predictions: usize,
    /// Most connections tracked at once (its memory budget, 96 MiB, may hold fewer); when
    /// full, the oldest is evicted, and an attempt still unanswered is reported as failed.
    #[arg(long, default_value_t = 500_000)]
    max_conns: usize,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Interface to attach to (repeat for each ingress NIC of a gateway).
    #[arg(long, required = true)]
    iface: Vec<String>,
    /// Where XDP runs: native (in the driver), skb (generic), or auto (native if supported).
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Prometheus endpoint (`/metrics`). Loopback only unless --metrics-allow-remote.
    #[arg(long, default_value = "127.0.0.1:9899")]
    metrics: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    no_metrics: bool,
    /// Allow a non-loopback metrics address.
    #[arg(long)]
    metrics_allow_remote: bool,
    #[command(flatten)]
    xdp: XdpArgs,
    /// Drain the ring at least every this many milliseconds.
    #[arg(long, default_value_t = 5)]
    drain_ms: u64,
    /// Ring bytes unread at which the kernel wakes the agent early (0: on every record).
    #[arg(long, default_value_t = 256 << 10)]
    wakeup_bytes: u32,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Write the final counters as JSON to this file on exit.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Write every decoded event as a JSON line to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Write every notice as a JSON line to this file (they are also logged).
    #[arg(long)]
    notices: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(clap::Args)]
struct XdpArgs {
    /// UDP payload bytes forwarded per datagram (at most 2048).
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = 16 << 20)]
    ring_bytes: u32,
}

#[derive(clap::Args)]
struct PrefilterArgs {
    /// pcap or pcapng files.
    #[arg(required = true)]
    pcaps: Vec<PathBuf>,
    /// UDP payload bytes kept per datagram, as for `run`.
    #[arg(long, default_value_t = sensor_ebpf::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Print the counters as JSON.
    #[arg(long)]
    json: bool,
    /// Write every forwarded event as a JSON line to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Forward only the UDP payloads that can carry coordination (the classified policy,
    /// offline only for now: the XDP program does not pass the verifier with it yet).
    #[arg(long, hide = true)]
    udp_classified: bool,
    /// With the classified UDP policy, forward the datagrams that carry no coordination as
    /// metadata records (what `--udp-scan` needs).
    #[arg(long, hide = true)]
    udp_scan: bool,
}

fn main() {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        // Offline commands are filters: a closed pipe (`| head`) ends them quietly, as it does
        // any Unix tool, instead of failing a print. The daemon keeps Rust's default (ignored).
        // SAFETY: single-threaded here; restoring the default disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Prefilter(args) => prefilter(&args),
        Command::Analyze(args) => analyze(&args),
        Command::Peers(args) => peers(&args),
        Command::Eval(args) => eval(&args),
    };
    if let Err(e) = result {
        eprintln!("sensor: {e:#}");
        std::process::exit(1);
    }
}

fn event_sink(path: Option<&PathBuf>) -> anyhow::Result<Box<dyn EventSink>> {
    Ok(match path {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            Box::new(EventLog::new(std::io::BufWriter::new(file)))
        }
        None => Box::new(()),
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = RunConfig {
        ifaces: args.iface,
        mode: args.xdp_mode,
        xdp: XdpConfig {
            snaplen: args.xdp.snaplen,
            ring_bytes: args.xdp.ring_bytes,
            wakeup_bytes: args.wakeup_bytes,
            udp_policy: pcap::DEFAULT_UDP_POLICY,
        },
        metrics: (!args.no_metrics).then_some(args.metrics),
        metrics_allow_remote: args.metrics_allow_remote,
        drain_interval: Duration::from_millis(args.drain_ms.max(1)),
        duration: args.duration.map(Duration::from_secs_f64),
        summary: args.summary,
    };
    let stats = std::sync::Arc::new(sensor::metrics::AgentStats::default());
    let notices = match &args.notices {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let mut engine = Engine::new(
        args.engine.config()?,
        agent::LiveNotices {
            stats: stats.clone(),
            out: notices,
        },
    )?;
    engine.export_tables(stats.tables.clone());
    let mut sink = sensor::event::Tee(event_sink(args.events.as_ref())?, engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(agent::run(config, stats, &mut sink))?;
    let lost = summary.xdp.get("ring_full").copied().unwrap_or(0) + summary.decode_errors;
    eprintln!(
        "sensor: {:.1} s, {} frames, {} records decoded ({}), {} lost",
        summary.seconds,
        summary.xdp.get("packets").copied().unwrap_or(0),
        summary.consumed.total(),
        sensor::event::EventKind::ALL
            .map(|k| format!("{k} {}", summary.consumed.get(k)))
            .join(", "),
        lost
    );
    eprintln!(
        "sensor: {} failed attempts ({} predicted), {} notices, {} suppressed (predicted {}, ppr {})",
        summary.failed_attempts,
        summary.predicted_failures,
        summary.notices,
        summary.suppressed_predicted + summary.suppressed_ppr,
        summary.suppressed_predicted,
        summary.suppressed_ppr
    );
    Ok(())
}

/// The pre-filter's settings: the UDP policy `run` loads, or the classified one (hidden
/// `--udp-classified`; with `--udp-scan`, metadata records for the other datagrams).
fn filter_config(snaplen: u32, classified: bool, udp_scan: bool) -> pcap::FilterConfig {
    if classified {
        pcap::FilterConfig::for_udp_scan(snaplen, udp_scan)
    } else {
        pcap::FilterConfig::from(snaplen)
    }
}

fn prefilter(args: &PrefilterArgs) -> anyhow::Result<()> {
    let mut sink = event_sink(args.events.as_ref())?;
    let mut report = sensor::analyze::AnalyzeReport::default();
    for path in &args.pcaps {
        report.add_input(
            path,
            pcap::prefilter_file(
                path,
                filter_config(args.snaplen, args.udp_classified, args.udp_scan),
                |ev| sink.event(ev),
            ),
        );
    }
    sink.flush();
    if report.read_any() {
        // The XDP counters, then what only a file can tell: frames cut by a snap length and
        // frames on a link type the pre-filter cannot read.
        let counters = report.counters.iter().chain(report.capture.counters());
        if args.json {
            let map: BTreeMap<_, _> = counters.collect();
            println!("{}", serde_json::to_string(&map)?);
        } else {
            for (name, value) in counters {
                println!("{name:>23} {value}");
            }
        }
    }
    finish_inputs(&report);
    Ok(())
}

/// Parses `a.b.c.d/len` or an address (a host prefix).
fn parse_cidr(s: &str) -> anyhow::Result<(std::net::IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: std::net::IpAddr = addr
        .trim()
        .parse()
        .with_context(|| format!("bad network {s:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .with_context(|| format!("bad prefix length in {s:?}"))?,
        None => max,
    };
    anyhow::ensure!(len <= max, "prefix length {len} too long in {s:?}");
    Ok((addr, len))
}

/// Prints notices as they are raised.
struct PrintNotices {
    json: bool,
}

impl EngineSink for PrintNotices {
    fn notice(&mut self, n: &ScanNotice) {
        if self.json {
            match serde_json::to_string(n) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("sensor: cannot encode notice: {e}"),
            }
        } else {
            println!("{} {} {}", n.ts, n.note.as_str(), n.msg);
        }
    }
    fn suppressed(&mut self, _: &ScanNotice, _: SuppressReason, _: &PprSample) {}
}

impl EngineArgs {
    fn config(&self) -> anyhow::Result<EngineConfig> {
        let local_nets = self
            .local_nets
            .iter()
            .map(|s| parse_cidr(s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut bro = match self.threshold {
            Some(n) => {
                anyhow::ensure!(n > 0, "--threshold must be at least 1");
                BroScanConfig::with_first_threshold(n)
            }
            None => BroScanConfig::default(),
        };
        bro.local_nets.clone_from(&local_nets);
        let mut config = EngineConfig {
            bro,
            suppress: self.suppress,
            detector: self.detector,
            ..EngineConfig::default()
        };
        config.trw.local_nets = local_nets;
        anyhow::ensure!(
            self.max_peers_per_host > 0 && self.max_predictions > 0,
            "prediction limits must be positive"
        );
        config.prediction = sensor::predict::PredictionConfig {
            ttl: Duration::from_secs(self.prediction_ttl),
            max_per_host: self.max_peers_per_host,
            max_total: self.max_predictions,
            ..sensor::predict::PredictionConfig::default()
        };
        anyhow::ensure!(self.max_conns > 0, "--max-conns must be positive");
        config.conn.max_conns = self.max_conns;
        config.conn.udp = self.udp_scan;
        config.ppr = PprConfig {
            mode: self.ppr,
            lo: self.ppr_range[0],
            hi: self.ppr_range[1],
            require_bittorrent: !self.ppr_any_host,
            ..PprConfig::default()
        };
        anyhow::ensure!(
            config.ppr.lo <= config.ppr.hi,
            "--ppr-range LO must not exceed HI"
        );
        Ok(config)
    }
}

fn analyze(args: &AnalyzeArgs) -> anyhow::Result<()> {
    let config = args.engine.config()?;
    let logs = match &args.out {
        Some(dir) => Some(sensor::logs::LogSink::create(dir, args.json_logs)?),
        None => None,
    };
    let sink = sensor::logs::Both(PrintNotices { json: args.json }, logs);
    let filter = filter_config(args.snaplen, args.udp_classified, false);
    let (mut engine, report) = sensor::analyze::analyze(&args.pcaps, filter, config, sink)?;
    if let Some(logs) = &mut engine.sink.1 {
        logs.close()?;
    }
    let s = engine.stats;
    if report.read_any() {
        eprintln!(
            "sensor: {} frames{}, {} failed attempts ({} predicted), {} notices, {} suppressed (predicted {}, ppr {})",
            report.counters.get(sensor_ebpf::counter::PACKETS),
            capture_note(&report.capture),
            s.failed_attempts,
            s.predicted_failures,
            s.notices,
            s.suppressed_predicted + s.suppressed_ppr,
            s.suppressed_predicted,
            s.suppressed_ppr
        );
        print_evictions(&engine);
    }
    finish_inputs(&report);
    Ok(())
}

/// One stderr line naming every table that had to evict entries (a table full: results may
/// be incomplete), with the connections reported as failed when evicted.
fn print_evictions<S: EngineSink>(engine: &Engine<S>) {
    if let Some(line) = evictions_line(engine) {
        eprintln!("sensor: {line}");
    }
}

/// `tables full, entries evicted: connections N (M pending attempts reported as failed), …`
/// for every table of `Engine::tables()` with evictions; `None` when no table was full.
fn evictions_line<S: EngineSink>(engine: &Engine<S>) -> Option<String> {
    let full: Vec<String> = engine
        .tables()
        .into_iter()
        .filter(|(_, t)| t.evicted > 0)
        .map(|(name, t)| {
            if name == "connections" {
                format!(
                    "{name} {} ({} pending attempts reported as failed)",
                    t.evicted,
                    engine.conns().evicted_as_failed
                )
            } else {
                format!("{name} {}", t.evicted)
            }
        })
        .collect();
    (!full.is_empty()).then(|| format!("tables full, entries evicted: {}", full.join(", ")))
}

/// Prints each prediction once, and tallies failed TCP handshakes per host for `--stats`.
struct PeersSink {
    print: bool,
    json: bool,
    seen: HashSet<(std::net::IpAddr, SocketAddr, PeerTransport, Channel)>,
    /// host → (failed TCP attempts, predicted ones by channel)
    failures: BTreeMap<std::net::IpAddr, (u64, BTreeMap<Channel, u64>)>,
}

impl EngineSink for PeersSink {
    fn notice(&mut self, _: &ScanNotice) {}
    fn suppressed(&mut self, _: &ScanNotice, _: SuppressReason, _: &PprSample) {}

    fn prediction(&mut self, p: &PredictedPeer) {
        if !self.print || !self.seen.insert((p.host, p.peer, p.transport, p.channel)) {
            return;
        }
        if self.json {
            let v = serde_json::json!({
                "ts": p.ts.as_secs_f64(),
                "host": p.host.to_string(),
                "peer": p.peer.ip().to_string(),
                "port": p.peer.port(),
                "transport": p.transport,
                "channel": p.channel,
            });
            println!("{v}");
        } else {
            let transport = match p.transport {
                PeerTransport::Tcp => "tcp",
                PeerTransport::Udp => "udp",
            };
            println!("{} {} {} {transport} {}", p.ts, p.host, p.peer, p.channel);
        }
    }

    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        if o.udp || !o.failed() {
            return;
        }
        let entry = self.failures.entry(o.initiator().ip()).or_default();
        entry.0 += 1;
        if let Some(channel) = predicted {
            *entry.1.entry(channel).or_default() += 1;
        }
    }
}

fn eval(args: &EvalArgs) -> anyhow::Result<()> {
    // eval varies both; taking one value of either silently would mislead.
    anyhow::ensure!(
        args.engine.threshold.is_none(),
        "eval takes --thresholds (a list), not --threshold"
    );
    // Every input must be a readable file before a long evaluation starts (eval scores whole
    // captures, so one it cannot read fails the run: status 1).
    let unreadable: Vec<String> = args
        .pcaps
        .iter()
        .filter_map(|p| pcap::probe(p).err().map(|e| format!("{e:#}")))
        .collect();
    if let Some(last) = unreadable.last() {
        for e in &unreadable[..unreadable.len() - 1] {
            eprintln!("sensor: {e}");
        }
        anyhow::bail!("{last}");
    }
    let captures = args
        .pcaps
        .iter()
        .map(|p| {
            Ok((
                p.clone(),
                sensor::eval::labels_for(p, args.labels.as_deref())?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = args.engine.config()?;
    let report = sensor::eval::evaluate(&captures, &config, &args.thresholds, args.snaplen)?;
    print!("{}", report.table());
    if let Some(dir) = &args.out {
        report.write(dir)?;
    }
    Ok(())
}

fn peers(args: &PeersArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.max_conns > 0, "--max-conns must be positive");
    let mut config = EngineConfig {
        suppress: Suppress::None,
        ..EngineConfig::default()
    };
    config.conn.max_conns = args.max_conns;
    let sink = PeersSink {
        print: !args.stats,
        json: args.json,
        seen: HashSet::default(),
        failures: BTreeMap::default(),
    };
    let filter = filter_config(args.snaplen, args.udp_classified, false);
    let (engine, report) = sensor::analyze::analyze(&args.pcaps, filter, config, sink)?;
    if args.stats && report.read_any() {
        let coordination = engine.coordination();
        println!("channel                   seen  parsed  rejected");
        for (name, c) in coordination.counts() {
            let reasons: Vec<String> = c.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
            println!(
                "{name:<24} {:>6} {:>7} {:>9}  {}",
                c.seen,
                c.parsed,
                c.rejected_total(),
                reasons.join(", ")
            );
        }
        for line in coordination.summaries() {
            println!("{line}");
        }
        let drops: Vec<String> = coordination
            .drops()
            .into_iter()
            .filter(|d| d.3 > 0)
            .map(|(channel, list, reason, n)| format!("{channel} {list} {reason} {n}"))
            .collect();
        if !drops.is_empty() {
            println!("read but not used: {}", drops.join(", "));
        }
        println!();
        println!("host                       failed TCP  predicted  by channel");
        let mut hosts: Vec<_> = engine.sink.failures.iter().collect();
        hosts.sort_by_key(|(_, (n, _))| std::cmp::Reverse(*n));
        for (host, (failed, by)) in hosts.into_iter().take(20) {
            let predicted: u64 = by.values().sum();
            let channels: Vec<String> = by.iter().map(|(c, n)| format!("{c} {n}")).collect();
            println!(
                "{:<26} {failed:>10} {:>9.1}%  {}",
                host.to_string(),
                100.0 * predicted as f64 / *failed as f64,
                channels.join(", ")
            );
        }
        println!();
        let capture: Vec<String> = [("frames", report.capture.frames)]
            .into_iter()
            .chain(report.capture.counters())
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        println!("capture: {}", capture.join(", "));
        if let Some(line) = evictions_line(&engine) {
            println!("{line}");
        }
    }
    finish_inputs(&report);
    Ok(())
}

/// Tells what went wrong with the inputs (unreadable ones, damage, unsupported link types)
/// and exits with the offline commands' status if it is not 0: 1 when an input could not be
/// read at all, else 2 when one ended in damage. The readable inputs' results are out by then.
fn finish_inputs(report: &sensor::analyze::AnalyzeReport) {
    for line in report.diagnostics() {
        eprintln!("sensor: {line}");
    }
    match report.exit_status() {
        0 => {}
        status => std::process::exit(status),
    }
}

/// The capture counters for the run summary, when there is something to say:
/// ` (3 cut by a snap length, 120 bytes not captured; 2 on an unsupported link type)`.
fn capture_note(capture: &pcap::ReadReport) -> String {
    let mut parts = Vec::new();
    if capture.frames_cut > 0 {
        parts.push(format!(
            "{} cut by a snap length, {} bytes not captured",
            capture.frames_cut, capture.bytes_not_captured
        ));
    }
    if capture.frames_unsupported_link() > 0 {
        parts.push(format!(
            "{} on an unsupported link type",
            capture.frames_unsupported_link()
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}
