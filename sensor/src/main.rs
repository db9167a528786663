//! `sensor`: the BitTorrent-vs-scan sensor's command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sensor::agent::{self, RunConfig};
use sensor::capture::xdp::{AttachMode, XdpConfig};
use sensor::capture::{pcap, CounterSnapshot};
use sensor::event::{EventLog, EventSink};

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
}

fn main() {
    let cli = Cli::parse();
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
        Command::Prefilter(args) => prefilter(args),
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
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
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
        },
        metrics: (!args.no_metrics).then_some(args.metrics),
        metrics_allow_remote: args.metrics_allow_remote,
        drain_interval: Duration::from_millis(args.drain_ms.max(1)),
        duration: args.duration.map(Duration::from_secs_f64),
        summary: args.summary,
    };
    let mut sink = event_sink(args.events.as_ref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let summary = runtime.block_on(agent::run(config, sink.as_mut()))?;
    let lost = summary.xdp.get("ring_full").copied().unwrap_or(0) + summary.decode_errors;
    eprintln!(
        "sensor: {:.1} s, {} frames, {} records decoded (syn {}, synack {}, rst {}, fin {}, udp {}), {} lost",
        summary.seconds,
        summary.xdp.get("packets").copied().unwrap_or(0),
        summary.consumed.total(),
        summary.consumed.syn,
        summary.consumed.synack,
        summary.consumed.rst,
        summary.consumed.fin,
        summary.consumed.udp,
        lost
    );
    Ok(())
}

fn prefilter(args: PrefilterArgs) -> anyhow::Result<()> {
    let mut sink = event_sink(args.events.as_ref())?;
    let mut total = CounterSnapshot::default();
    let mut damaged = false;
    for path in &args.pcaps {
        let (counters, report) = pcap::prefilter_file(path, args.snaplen, |ev| sink.event(ev))?;
        for (slot, value) in counters.0.iter().enumerate() {
            total.0[slot] += value;
        }
        if let Some(err) = report.error {
            eprintln!(
                "sensor: warning: {}: {err}; results cover the {} frames before it",
                path.display(),
                report.frames
            );
            damaged = true;
        }
    }
    sink.flush();
    if args.json {
        let map: std::collections::BTreeMap<_, _> = total.iter().collect();
        println!("{}", serde_json::to_string(&map)?);
    } else {
        for (name, value) in total.iter() {
            println!("{name:>16} {value}");
        }
    }
    if damaged {
        std::process::exit(2);
    }
    Ok(())
}
