//! `sensor`: the BitTorrent-vs-scan sensor's command line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sensor::agent::{self, RunConfig};
use sensor::capture::pcap;
use sensor::capture::xdp::XdpConfig;
use sensor::cli::{AnalyzeArgs, Command, EvalArgs, ManArgs, PeersArgs, PrefilterArgs, RunArgs};
use sensor::conn::ConnOutcome;
use sensor::detect::ScanNotice;
use sensor::engine::{Engine, EngineConfig, EngineSink, Suppress, SuppressReason};
use sensor::event::{EventLog, EventSink};
use sensor::ppr::PprSample;
use sensor::predict::{Channel, PeerTransport, PredictedPeer};

fn main() {
    let cli = sensor::cli::parse();
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
        Command::CheckConfig(args) => {
            sensor::cli::check_config(&args).unwrap_or_else(|e| e.exit());
            Ok(())
        }
        Command::Completions(args) => write_stdout(&sensor::cli::docs::completions(args.shell)),
        Command::Man(args) => man(&args),
    };
    if let Err(e) = result {
        eprintln!("sensor: {e:#}");
        std::process::exit(1);
    }
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    std::io::stdout().write_all(bytes)?;
    Ok(())
}

fn man(args: &ManArgs) -> anyhow::Result<()> {
    match &args.out_dir {
        Some(dir) => sensor::cli::docs::man_pages(dir)
            .with_context(|| format!("writing man pages to {}", dir.display())),
        None => write_stdout(&sensor::cli::docs::man()?),
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
    let mut config = RunConfig {
        ifaces: args.iface,
        mode: args.xdp_mode,
        xdp: XdpConfig {
            snaplen: args.xdp.snaplen,
            ring_bytes: args.xdp.ring_bytes,
            wakeup_bytes: args.wakeup_bytes,
            udp_policy: filter_config(
                args.xdp.snaplen,
                args.xdp.udp_full,
                args.engine.detection.udp_scan,
            )
            .udp_policy,
            ..XdpConfig::default()
        },
        metrics: (!args.no_metrics).then_some(args.metrics),
        metrics_allow_remote: args.metrics_allow_remote,
        drain_interval: Duration::from_millis(args.drain_ms.max(1)),
        duration: args.duration.map(Duration::from_secs_f64),
        summary: args.summary,
        state: args.state_file.clone().map(|path| agent::StateConfig {
            path,
            interval: Duration::from_secs(args.state_interval.max(1)),
        }),
        log_reopen: None,
    };
    let logs = match &args.log_dir {
        Some(dir) => {
            let reopen = sensor::logs::Reopen::default();
            config.log_reopen = Some(reopen.clone());
            Some(
                sensor::logs::LogSink::append(dir, args.json_logs)?
                    .with_reopen(reopen)
                    .with_stats_interval(sensor::time::Duration::from_secs(args.stats_interval)),
            )
        }
        None => None,
    };
    let stats = std::sync::Arc::new(sensor::metrics::AgentStats::default());
    let notices = match &args.notices {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let live = agent::LiveNotices::new(stats.clone(), notices, logs);
    if args.workers > 1 {
        anyhow::ensure!(
            args.events.is_none(),
            "--events writes one reader's records: use it with --workers 1"
        );
        anyhow::ensure!(
            args.state_file.is_none(),
            "--state-file holds one engine's state: use it with --workers 1 (or without it)"
        );
        let seed = sensor::shard::Shard::random_seed();
        config.xdp.shards = args.workers;
        config.xdp.shard_seed = seed;
        let engine_config = sensor::shard::worker_config(&args.engine.config()?, args.workers);
        let engines = sensor::shard::Shard::split(args.workers, seed)?
            .into_iter()
            .zip(sensor::shard::Locked::split(live, args.workers as usize))
            .map(|(shard, sink)| {
                let mut e = Engine::new(engine_config.clone(), sink)?;
                e.set_shard(shard);
                Ok(e)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let summary = runtime.block_on(agent::run_sharded(config, stats, engines))?;
        print_run_summary(&summary);
        return Ok(());
    }
    let mut engine = Engine::new(args.engine.config()?, live)?;
    engine.export_tables(stats.tables.clone());
    if let Some(path) = &args.state_file {
        agent::load_state(&mut engine, path)?;
    }
    let mut sink = sensor::event::Tee(event_sink(args.events.as_ref())?, engine);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(agent::run(config, stats, &mut sink))?;
    print_run_summary(&summary);
    Ok(())
}

fn print_run_summary(summary: &agent::RunSummary) {
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
    if summary.ring_drops.len() > 1 {
        eprintln!("sensor: records lost per ring {:?}", summary.ring_drops);
    }
}

/// The pre-filter's settings, as `run` loads them: the classified UDP policy (with
/// `--udp-scan`, metadata records for the other datagrams), or the full one (hidden
/// `--udp-full`).
fn filter_config(snaplen: u32, full: bool, udp_scan: bool) -> pcap::FilterConfig {
    if full {
        pcap::FilterConfig {
            snaplen,
            udp_policy: sensor_ebpf::udp_policy::FULL,
        }
    } else {
        pcap::FilterConfig::for_udp_scan(snaplen, udp_scan)
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
                filter_config(args.snaplen, args.udp_full, args.udp_scan),
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

fn analyze(args: &AnalyzeArgs) -> anyhow::Result<()> {
    let config = args.engine.config()?;
    let logs = match &args.out {
        Some(dir) => Some(sensor::logs::LogSink::create(dir, args.json_logs)?),
        None => None,
    };
    let sink = sensor::logs::Both(PrintNotices { json: args.json }, logs);
    if args.workers > 1 {
        return analyze_sharded(args, &config, sink);
    }
    let mut engine = Engine::new(config, sink)?;
    if let Some(path) = &args.state_in {
        let loaded = engine.load_state(path)?;
        eprintln!("sensor: {}: {loaded}", path.display());
    }
    if args.state_out.is_some() {
        engine.check_state_support()?;
    }
    let filter = filter_config(args.snaplen, args.udp_full, false)
        .with_udp_scan(args.engine.detection.udp_scan);
    let report = sensor::analyze::feed(&mut engine, &args.pcaps, filter);
    match &args.state_out {
        Some(path) => {
            let bytes = engine.save_state(path)?;
            eprintln!("sensor: state saved to {} ({bytes} bytes)", path.display());
        }
        None => engine.finish(),
    }
    if let Some(logs) = &mut engine.sink.1 {
        logs.close()?;
    }
    if report.read_any() {
        print_analyze_summary(&report, &engine.stats, "");
        print_evictions(&engine);
    }
    // The logs are closed: the engine's tables (hundreds of thousands of predictions, one
    // node each) are left to the process exit, which frees them at once; dropping them one by
    // one took about a tenth of `analyze`'s time on BitTorrent-heavy captures.
    std::mem::forget(engine);
    finish_inputs(&report);
    Ok(())
}

/// The line `analyze` ends with on stderr; `tail` is appended to it.
fn print_analyze_summary(
    report: &sensor::analyze::AnalyzeReport,
    s: &sensor::engine::EngineStats,
    tail: &str,
) {
    eprintln!(
        "sensor: {} frames{}, {} failed attempts ({} predicted), {} notices, {} suppressed (predicted {}, ppr {}){tail}",
        report.counters.get(sensor_ebpf::counter::PACKETS),
        capture_note(&report.capture),
        s.failed_attempts,
        s.predicted_failures,
        s.notices,
        s.suppressed_predicted + s.suppressed_ppr,
        s.suppressed_predicted,
        s.suppressed_ppr
    );
}

/// `analyze --workers N` (N > 1): the hosts split over N engines, as `run --workers` splits
/// them (see `sensor::shard`).
fn analyze_sharded(
    args: &AnalyzeArgs,
    config: &EngineConfig,
    sink: sensor::logs::Both<PrintNotices, Option<sensor::logs::LogSink>>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.state_in.is_none() && args.state_out.is_none(),
        "--state-in and --state-out take one engine's state: use them with --workers 1"
    );
    let mut sharded = sensor::shard::Sharded::new(
        config,
        args.workers,
        sensor::shard::Shard::random_seed(),
        sink,
    )?;
    let filter = filter_config(args.snaplen, args.udp_full, false)
        .with_udp_scan(args.engine.detection.udp_scan);
    let report = sensor::analyze::feed(&mut sharded, &args.pcaps, filter);
    sharded.finish();
    if let Some(logs) = &mut sharded.sink.1 {
        logs.close()?;
    }
    if report.read_any() {
        let workers = format!(", {} workers", args.workers);
        print_analyze_summary(&report, &sharded.stats(), &workers);
        for engine in &sharded.engines {
            print_evictions(engine);
        }
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
    let filter = filter_config(args.snaplen, args.udp_full, false);
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
