//! Prometheus exposition: the kernel's pre-filter counters, read at scrape time, the agent's
//! own counters, the build and the process. Labels have fixed, small value sets (never
//! addresses).
//!
//! `/metrics` answers in the format the scraper asks for: OpenMetrics 1.0 when its `Accept`
//! header prefers `application/openmetrics-text`, the Prometheus text format 0.0.4 otherwise
//! (`text/plain`, no header, anything else), which is what `promtool check metrics` and most
//! other consumers read. prometheus-client encodes only OpenMetrics; [`to_classic`] rewrites
//! that text (the two differ in family names, `# UNIT` and `# EOF`, not in samples).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sensor_ebpf::counter;
use tokio::net::TcpListener;

use crate::capture::record::{DecodeError, DecodeReason};
use crate::capture::xdp::{KernelCounters, KernelSnapshot};
use crate::capture::CounterSnapshot;
use crate::engine::TableGauge;
use crate::event::{EventKind, KindCounts};

/// Counters kept by the agent; shared between the ring reader and the scrape handler.
#[derive(Debug, Default)]
pub struct AgentStats {
    consumed: [AtomicU64; EventKind::ALL.len()],
    decode_errors: [AtomicU64; <DecodeReason as strum::EnumCount>::COUNT],
    /// Engine results, updated by the live notice sink.
    pub notices: AtomicU64,
    pub suppressed_predicted: AtomicU64,
    pub suppressed_ppr: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub predicted_failures: AtomicU64,
    pub predictions: AtomicU64,
    /// The engine's tables (sizes, evictions, expiries); with several workers, their sums.
    pub tables: Arc<crate::engine::TableGauges>,
    /// The kernel's per-ring counters (`--workers`: one ring per worker), read at each scrape;
    /// set by the agent when it runs several.
    pub ring_stats: Mutex<Option<crate::capture::xdp::RingStats>>,
}

impl AgentStats {
    pub fn consumed(&self, kind: EventKind) {
        self.consumed[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn decode_error(&self, err: &DecodeError) {
        self.decode_errors[DecodeReason::from(err) as usize].fetch_add(1, Relaxed);
    }

    pub fn consumed_counts(&self) -> KindCounts {
        let mut out = KindCounts::default();
        for kind in EventKind::ALL {
            out.set(kind, self.consumed[kind as usize].load(Relaxed));
        }
        out
    }

    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// Where the kernel's counters come from at each scrape: the XDP program's map when live, a
/// fixed snapshot in tests.
pub type KernelSource = Box<dyn Fn() -> anyhow::Result<KernelSnapshot> + Send + Sync>;

/// Reads the live XDP program's per-CPU counters, summed over CPUs, per interface.
pub fn live_kernel(counters: Arc<Mutex<KernelCounters>>) -> KernelSource {
    Box::new(move || {
        counters
            .lock()
            .map_err(|_| anyhow::anyhow!("counter lock poisoned"))?
            .read()
    })
}

/// The commit the binary was built from (`sensor/build.rs`), `unknown` outside a git checkout.
pub const BUILD_COMMIT: &str = env!("SENSOR_BUILD_COMMIT");

/// Encodes everything on each scrape.
struct SensorCollector {
    kernel: KernelSource,
    /// The `iface` label of each block of kernel counters, in block (attach) order.
    ifaces: Vec<String>,
    agent: Arc<AgentStats>,
}

impl std::fmt::Debug for SensorCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorCollector")
            .field("ifaces", &self.ifaces)
            .finish_non_exhaustive()
    }
}

/// How each kernel counter slot is exported: (metric, help, label).
fn kernel_metric(
    slot: u32,
) -> (
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
) {
    #[allow(clippy::wildcard_imports)] // every slot constant of the kernel's counter map
    use counter::*;
    const SKIPPED: &str = "sensor_xdp_skipped";
    const SKIPPED_HELP: &str = "Frames the XDP pre-filter did not forward, by reason";
    const RECORDS: &str = "sensor_xdp_records";
    const RECORDS_HELP: &str = "Records the XDP pre-filter emitted into the ring, by kind";
    const IP: &str = "sensor_xdp_ip_packets";
    const IP_HELP: &str = "IP packets seen by the XDP pre-filter, by version";
    const FWD: &str = "sensor_xdp_record_bytes";
    const FWD_HELP: &str = "Record bytes the XDP pre-filter put in the ring, by record kind";
    match slot {
        PACKETS => (
            "sensor_xdp_packets",
            "Frames the XDP pre-filter ran on",
            None,
        ),
        IPV4 => (IP, IP_HELP, Some(("version", "4"))),
        IPV6 => (IP, IP_HELP, Some(("version", "6"))),
        NON_IP => (SKIPPED, SKIPPED_HELP, Some(("reason", "non_ip"))),
        FRAGMENTS => (SKIPPED, SKIPPED_HELP, Some(("reason", "fragment"))),
        PARSE_ERRORS => (SKIPPED, SKIPPED_HELP, Some(("reason", "parse_error"))),
        TCP_OTHER => (
            SKIPPED,
            SKIPPED_HELP,
            Some(("reason", "tcp_no_syn_rst_fin")),
        ),
        UDP_EMPTY => (SKIPPED, SKIPPED_HELP, Some(("reason", "udp_empty"))),
        OTHER_L4 => (SKIPPED, SKIPPED_HELP, Some(("reason", "other_l4"))),
        REC_SYN => (RECORDS, RECORDS_HELP, Some(("kind", "syn"))),
        REC_SYNACK => (RECORDS, RECORDS_HELP, Some(("kind", "synack"))),
        REC_RST => (RECORDS, RECORDS_HELP, Some(("kind", "rst"))),
        REC_FIN => (RECORDS, RECORDS_HELP, Some(("kind", "fin"))),
        REC_UDP => (RECORDS, RECORDS_HELP, Some(("kind", "udp"))),
        REC_ICMP => (RECORDS, RECORDS_HELP, Some(("kind", "icmp"))),
        REC_TCP_DATA => (RECORDS, RECORDS_HELP, Some(("kind", "tcp_data"))),
        TCP_OVER_BUDGET => (
            SKIPPED,
            SKIPPED_HELP,
            Some(("reason", "tcp_flow_over_budget")),
        ),
        FLOWS_MARKED => (
            "sensor_xdp_flows_marked",
            "TCP flows marked for payload forwarding (tracker announce, peer-wire handshake, extended message)",
            None,
        ),
        FLOWS_ENDED => (
            "sensor_xdp_flows_ended",
            "Payload marks removed on FIN, RST or a spent budget",
            None,
        ),
        RING_FULL => (
            "sensor_xdp_ring_full_drops",
            "Records lost because the ring was full",
            None,
        ),
        LOAD_ERRORS => (
            "sensor_xdp_load_errors",
            "Records lost because a payload copy failed",
            None,
        ),
        UDP_TRUNCATED => (
            "sensor_xdp_udp_truncated",
            "UDP records holding only a prefix of the payload",
            None,
        ),
        UDP_UNCLASSIFIED => (SKIPPED, SKIPPED_HELP, Some(("reason", "udp_unclassified"))),
        REC_UDP_META => (RECORDS, RECORDS_HELP, Some(("kind", "udp_meta"))),
        UTP_HEADER_ONLY => (
            "sensor_xdp_utp_header_only",
            "uTP DATA packets of peer-wire flows forwarded as their bare header",
            None,
        ),
        BYTES_SEEN => (
            "sensor_xdp_bytes_seen",
            "Bytes of the frames the XDP pre-filter ran on",
            None,
        ),
        BYTES_FORWARDED => (
            "sensor_xdp_bytes_forwarded",
            "Record bytes the XDP pre-filter put in the ring",
            None,
        ),
        BYTES_TCP => (FWD, FWD_HELP, Some(("kind", "tcp"))),
        BYTES_TCP_DATA => (FWD, FWD_HELP, Some(("kind", "tcp_data"))),
        BYTES_UDP => (FWD, FWD_HELP, Some(("kind", "udp"))),
        BYTES_UDP_META => (FWD, FWD_HELP, Some(("kind", "udp_meta"))),
        BYTES_ICMP => (FWD, FWD_HELP, Some(("kind", "icmp"))),
        _ => ("sensor_xdp_unknown", "Unknown counter slot", None),
    }
}

impl Collector for SensorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_build_info(&mut encoder)?;
        encode_process(&mut encoder)?;
        self.encode_kernel(&mut encoder)?;
        self.encode_agent(&mut encoder)?;
        encode_tables(&self.agent.tables, &mut encoder)?;
        self.encode_channels(&mut encoder)?;
        self.encode_drops(&mut encoder)?;
        self.encode_ring_drops(&mut encoder)?;
        self.encode_decode_errors(&mut encoder)
    }
}

type Encoded = Result<(), std::fmt::Error>;

impl SensorCollector {
    /// The XDP program's per-CPU counters, summed over CPUs, one family per metric name and
    /// one series per interface. Frames from an interface without a block (none unless the
    /// program was attached elsewhere) appear under `iface="unknown"`, only when there are any.
    fn encode_kernel(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let kernel = match (self.kernel)() {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!("reading XDP counters: {e:#}");
                return Ok(());
            }
        };
        let mut blocks: Vec<(&str, &CounterSnapshot)> = self
            .ifaces
            .iter()
            .map(String::as_str)
            .zip(&kernel.ifaces)
            .collect();
        if kernel.unknown.0.iter().any(|&v| v != 0) {
            blocks.push(("unknown", &kernel.unknown));
        }
        let mut done = Vec::new();
        for slot in 0..counter::COUNT {
            let (name, help, label) = kernel_metric(slot);
            if done.contains(&name) {
                continue;
            }
            done.push(name);
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for &(iface, snap) in &blocks {
                let iface = ("iface", iface);
                if label.is_none() {
                    ConstCounter::new(snap.get(slot)).encode(family.encode_family(&[iface])?)?;
                    continue;
                }
                for member in slot..counter::COUNT {
                    if let (n, _, Some(label)) = kernel_metric(member) {
                        if n == name {
                            ConstCounter::new(snap.get(member))
                                .encode(family.encode_family(&[iface, label])?)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Ring records decoded, and the engine's results.
    fn encode_agent(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let a = &self.agent;
        let mut family = encoder.encode_descriptor(
            "sensor_ring_records",
            "Ring records the agent decoded, by kind",
            None,
            MetricType::Counter,
        )?;
        let consumed = a.consumed_counts();
        for kind in EventKind::ALL {
            ConstCounter::new(consumed.get(kind))
                .encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }
        for (name, help, value) in [
            ("sensor_notices", "Scan notices raised", &a.notices),
            (
                "sensor_failed_attempts",
                "Failed connection attempts seen",
                &a.failed_attempts,
            ),
            (
                "sensor_predicted_failures",
                "Failed attempts to peers that BitTorrent coordination predicted",
                &a.predicted_failures,
            ),
            (
                "sensor_predictions",
                "Peers learnt from coordination traffic",
                &a.predictions,
            ),
        ] {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Relaxed)).encode(family)?;
        }
        let mut family = encoder.encode_descriptor(
            "sensor_suppressed_notices",
            "Scan notices suppressed, by reason",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in [
            ("predicted", &a.suppressed_predicted),
            ("ppr", &a.suppressed_ppr),
        ] {
            ConstCounter::new(value.load(Relaxed))
                .encode(family.encode_family(&[("reason", reason)])?)?;
        }
        Ok(())
    }

    /// Messages of every registered coordination channel, by outcome.
    fn encode_channels(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let mut family = encoder.encode_descriptor(
            "sensor_coordination_messages",
            "BitTorrent coordination messages by channel: seen (passed the shape check), parsed, rejected",
            None,
            MetricType::Counter,
        )?;
        for c in self.agent.tables.channels() {
            for (outcome, value) in [
                ("seen", &c.seen),
                ("parsed", &c.parsed),
                ("rejected", &c.rejected),
            ] {
                let labels = [("channel", c.name), ("outcome", outcome)];
                ConstCounter::new(value.load(Relaxed)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    /// Records lost per ring (a record for two workers is a copy in each of their rings).
    fn encode_ring_drops(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let read = match self.agent.ring_stats.lock() {
            Ok(guard) => guard.as_ref().map(crate::capture::xdp::RingStats::read),
            Err(_) => None,
        };
        let (drops, records) = match read {
            None => return Ok(()),
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                tracing::warn!("reading the ring counters: {e:#}");
                return Ok(());
            }
        };
        let series = [
            (
                "sensor_xdp_ring_drops",
                "Records lost to a full ring, per ring (one ring per worker)",
                drops,
            ),
            (
                "sensor_xdp_ring_records",
                "Records put in each ring, a record for two workers counting in both",
                records,
            ),
        ];
        for (name, help, values) in series {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (ring, n) in values.into_iter().enumerate() {
                let ring = ring.to_string();
                ConstCounter::new(n).encode(family.encode_family(&[("ring", ring.as_str())])?)?;
            }
        }
        Ok(())
    }

    /// What the coordination channels read but did not use, by list and reason.
    fn encode_drops(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let mut family = encoder.encode_descriptor(
            "sensor_coordination_dropped",
            "Peer-list entries and messages the coordination channels read but did not use, by channel, list and reason",
            None,
            MetricType::Counter,
        )?;
        for d in self.agent.tables.drops() {
            let labels = [
                ("channel", d.channel),
                ("list", d.list),
                ("reason", d.reason),
            ];
            ConstCounter::new(d.count.load(Relaxed)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    fn encode_decode_errors(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let mut family = encoder.encode_descriptor(
            "sensor_ring_decode_errors",
            "Ring records the agent could not decode (dropped), by reason",
            None,
            MetricType::Counter,
        )?;
        for reason in <DecodeReason as strum::IntoEnumIterator>::iter() {
            let value = self.agent.decode_errors[reason as usize].load(Relaxed);
            let label: &str = reason.into();
            ConstCounter::new(value).encode(family.encode_family(&[("reason", label)])?)?;
        }
        Ok(())
    }
}

/// Every bounded table the engine published, by its name.
fn encode_tables(gauges: &crate::engine::TableGauges, encoder: &mut DescriptorEncoder) -> Encoded {
    let tables = gauges.tables();
    let mut family = encoder.encode_descriptor(
        "sensor_table_entries",
        "Entries in the engine's bounded tables",
        None,
        MetricType::Gauge,
    )?;
    for t in tables {
        let v = i64::try_from(t.entries.load(Relaxed)).unwrap_or(i64::MAX);
        ConstGauge::new(v).encode(family.encode_family(&[("table", t.name)])?)?;
    }
    for (name, help, value) in [
        (
            "sensor_table_evictions",
            "Entries dropped from the engine's tables because they were full",
            (|t| &t.evicted) as fn(&TableGauge) -> &AtomicU64,
        ),
        (
            "sensor_table_evictions_reported",
            "Of the evictions, entries whose pending evidence was reported before they were dropped (connections: unanswered SYNs reported as failed attempts)",
            |t| &t.evicted_reported,
        ),
        (
            "sensor_table_expired",
            "Entries the engine's tables let expire",
            |t| &t.expired,
        ),
    ] {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for t in tables {
            ConstCounter::new(value(t).load(Relaxed))
                .encode(family.encode_family(&[("table", t.name)])?)?;
        }
    }
    Ok(())
}

/// `sensor_build_info{version,commit} 1`, the usual way to put a build on a dashboard.
fn encode_build_info(encoder: &mut DescriptorEncoder) -> Encoded {
    let family = encoder.encode_descriptor(
        "sensor_build",
        "The sensor's version and the git commit it was built from",
        None,
        MetricType::Info,
    )?;
    Info::new([
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", BUILD_COMMIT),
    ])
    .encode(family)
}

/// The process's own resources, under the names every Prometheus client library uses
/// (`process_*`), read from `/proc/self` at each scrape.
fn encode_process(encoder: &mut DescriptorEncoder) -> Encoded {
    let sample = match ProcessSample::read() {
        Ok(sample) => sample,
        Err(e) => {
            // Without /proc there is nothing to export; the other families still are.
            tracing::debug!("process metrics unavailable: {e}");
            return Ok(());
        }
    };
    let family = encoder.encode_descriptor(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        None,
        MetricType::Counter,
    )?;
    ConstCounter::new(sample.cpu_seconds).encode(family)?;
    for (name, help, value) in [
        (
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            sample.resident_bytes,
        ),
        (
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            sample.virtual_bytes,
        ),
        (
            "process_open_fds",
            "Number of open file descriptors",
            sample.open_fds,
        ),
        (
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit)",
            sample.max_fds,
        ),
    ] {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(family)?;
    }
    let family = encoder.encode_descriptor(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(sample.start_time_seconds).encode(family)
}

/// One reading of `/proc/self`.
#[derive(Clone, Copy, Debug)]
struct ProcessSample {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: u64,
    start_time_seconds: f64,
}

impl ProcessSample {
    fn read() -> procfs::ProcResult<Self> {
        use procfs::WithCurrentSystemInfo as _;
        let me = procfs::process::Process::myself()?;
        let stat = me.stat()?;
        let ticks = procfs::ticks_per_second() as f64;
        let max_fds = match me.limits()?.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(n) => n,
            procfs::process::LimitValue::Unlimited => u64::MAX,
        };
        Ok(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: stat.rss_bytes().get(),
            virtual_bytes: stat.vsize,
            open_fds: me.fd_count()? as u64,
            max_fds,
            // `starttime` counts clock ticks from boot.
            start_time_seconds: procfs::boot_time_secs()? as f64 + stat.starttime as f64 / ticks,
        })
    }
}

/// The registry served on `/metrics`; `ifaces` are the interfaces the XDP program is attached
/// to, in the order of the kernel's counter blocks (the `iface` label of its counters).
pub fn registry(kernel: KernelSource, ifaces: &[String], agent: Arc<AgentStats>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SensorCollector {
        kernel,
        ifaces: ifaces.to_vec(),
        agent,
    }));
    registry
}

/// The two exposition formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Classic,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header prefers (RFC 9110 section 12.5.1): OpenMetrics when its
    /// quality is above 0 and not below that of `text/plain` (or of a wildcard covering it),
    /// the classic text otherwise, and for no header. Prometheus itself sends
    /// `application/openmetrics-text;version=1.0.0,…,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Format::Classic;
        };
        let (mut openmetrics, mut plain) = (0.0_f64, 0.0_f64);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f64>().ok())
                // An unreadable weight makes the range unusable, not preferred.
                .unwrap_or(0.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => plain = plain.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= plain {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }
}

/// Encodes the registry in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(match format {
        Format::OpenMetrics => body,
        Format::Classic => to_classic(&body),
    })
}

/// Rewrites OpenMetrics text, as prometheus-client writes it for the families this module
/// encodes (counters, gauges, info; no exemplars, no `_created`), as the Prometheus text
/// format 0.0.4:
/// - a counter family `x` is named by its sample `x_total` in `# HELP` and `# TYPE`, as the
///   older format has no families apart from their samples;
/// - an info family `x` becomes the gauge `x_info` (the older format has no info type);
/// - `# UNIT` and the closing `# EOF` are dropped.
///
/// Samples pass unchanged: label and number syntax is the same in both formats.
pub fn to_classic(openmetrics: &str) -> String {
    // Writing to a String cannot fail.
    use std::fmt::Write as _;
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (sample, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                let _ = writeln!(out, "# HELP {sample} {text}");
            }
            let _ = writeln!(out, "# TYPE {sample} {kind}");
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Serves `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&req, &registry)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection from {peer}: {e}");
            }
        });
    }
}

fn respond<B>(req: &Request<B>, registry: &Registry) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"try /metrics\n")))
            .expect("static response");
    }
    let accept = req
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    match encode(registry, format) {
        Ok(body) => Response::builder()
            .header(hyper::header::CONTENT_TYPE, format.content_type())
            .header(hyper::header::VARY, "Accept")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response"),
        Err(_) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Full::new(Bytes::from_static(b"encoding failed\n")))
            .expect("static response"),
    }
}

/// Binds the metrics listener; refuses non-loopback addresses unless `allow_remote`.
pub async fn bind(addr: SocketAddr, allow_remote: bool) -> anyhow::Result<TcpListener> {
    if !addr.ip().is_loopback() && !allow_remote {
        anyhow::bail!(
            "refusing to serve metrics on non-loopback {addr} without --metrics-allow-remote"
        );
    }
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics on {addr}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// A registry over a fixed kernel snapshot and a live engine's exported tables, attached to
    /// two interfaces: slot i holds 1000 + i on eth1 and 2000 + i on eth2.
    fn test_registry() -> Registry {
        test_registry_with(CounterSnapshot::default())
    }

    /// As [`test_registry`], with `unknown` as the block of frames from no known interface.
    fn test_registry_with(unknown: CounterSnapshot) -> Registry {
        let agent = Arc::new(AgentStats::default());
        let mut engine = Engine::new(EngineConfig::default(), ()).unwrap();
        engine.export_tables(agent.tables.clone());
        agent.notices.store(3, Relaxed);
        let block = |first: u64| {
            let mut snap = [0u64; counter::COUNT as usize];
            for (v, i) in snap.iter_mut().zip(0..) {
                *v = first + i;
            }
            CounterSnapshot(snap)
        };
        let snap = KernelSnapshot {
            ifaces: vec![block(1000), block(2000)],
            unknown,
        };
        let kernel: KernelSource = Box::new(move || Ok(snap.clone()));
        registry(kernel, &["eth1".into(), "eth2".into()], agent)
    }

    fn series(text: &str) -> std::collections::HashMap<&str, &str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .collect()
    }

    /// Runs `promtool check metrics` on `text`; `None` when promtool is not installed (it is
    /// required under `cargo xtask test`, whose set-up installs it).
    fn promtool(text: &str) -> Option<(bool, String)> {
        use std::io::Write as _;
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var_os("SENSOR_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
                    "promtool is required here (cargo xtask setup installs it): {e}"
                );
                eprintln!("promtool not installed: skipping its check");
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
        Some((out.status.success(), report))
    }

    #[test]
    fn the_classic_text_passes_promtool_and_openmetrics_is_what_it_rejected() {
        let registry = test_registry();
        let classic = encode(&registry, Format::Classic).unwrap();
        let Some((ok, report)) = promtool(&classic) else {
            return;
        };
        assert!(
            ok && report.trim().is_empty(),
            "promtool: {report}\n{classic}"
        );
        // The check bites: promtool reads only the older format, and refuses the OpenMetrics
        // text (its `info` type; without it, its counter families named without `_total`).
        let openmetrics = encode(&registry, Format::OpenMetrics).unwrap();
        let (ok, report) = promtool(&openmetrics).unwrap();
        assert!(!ok, "promtool accepted OpenMetrics text: {report}");
    }

    #[test]
    fn every_family_has_help_and_a_type_and_the_samples_agree_across_formats() {
        let registry = test_registry();
        let classic = encode(&registry, Format::Classic).unwrap();
        let openmetrics = encode(&registry, Format::OpenMetrics).unwrap();
        assert!(openmetrics.ends_with("# EOF\n"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
        // Every sample's family (its name up to the labels) has HELP and TYPE lines before it.
        let mut described = std::collections::HashSet::new();
        let mut families = 0;
        for line in classic.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap();
                assert!(!help.trim().is_empty(), "{name} has empty help");
                described.insert(name.to_string());
                families += 1;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(described.contains(name), "{name} has no HELP line");
            }
        }
        assert!(families >= 25, "only {families} families");
        // The process's own numbers move between two encodings; the rest is fixed.
        let fixed = |text| {
            let mut s = series(text);
            s.retain(|name, _| !name.starts_with("process_"));
            s
        };
        assert_eq!(fixed(&classic), fixed(&openmetrics), "samples differ");
    }

    #[test]
    fn kernel_counters_carry_the_interfaces_and_build_info_the_commit() {
        let text = encode(&test_registry(), Format::Classic).unwrap();
        let s = series(&text);
        for (name, first) in [("eth1", 1000), ("eth2", 2000)] {
            let iface = format!("iface=\"{name}\"");
            assert_eq!(
                s[format!("sensor_xdp_packets_total{{{iface}}}").as_str()],
                first.to_string()
            );
            assert_eq!(
                s[format!("sensor_xdp_records_total{{{iface},kind=\"syn\"}}").as_str()],
                (first + counter::REC_SYN).to_string()
            );
            assert_eq!(
                s[format!("sensor_xdp_skipped_total{{{iface},reason=\"tcp_flow_over_budget\"}}")
                    .as_str()],
                (first + counter::TCP_OVER_BUDGET).to_string()
            );
            assert_eq!(
                s[format!("sensor_xdp_record_bytes_total{{{iface},kind=\"icmp\"}}").as_str()],
                (first + counter::BYTES_ICMP).to_string()
            );
        }
        // One series per interface and label set, never the set's sum or name list; the
        // unknown block is left out while it is empty.
        let packets: Vec<_> = s
            .keys()
            .filter(|k| k.starts_with("sensor_xdp_packets_total"))
            .collect();
        assert_eq!(packets.len(), 2, "{packets:?}");
        assert!(!text.contains("eth1,eth2") && !text.contains("iface=\"unknown\""));
        assert_eq!(s["sensor_notices_total"], "3");
        let build = format!(
            "sensor_build_info{{version=\"{}\",commit=\"{BUILD_COMMIT}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(s[build.as_str()], "1", "{text}");
        assert!(text.contains("# TYPE sensor_build_info gauge\n"));
        // Built from this checkout: a hexadecimal commit (CI and developers build from git).
        if BUILD_COMMIT != "unknown" {
            assert!(
                BUILD_COMMIT.len() == 12 && BUILD_COMMIT.bytes().all(|b| b.is_ascii_hexdigit())
            );
        }
    }

    #[test]
    fn frames_from_an_unknown_interface_get_their_own_series_once_counted() {
        let mut unknown = CounterSnapshot::default();
        unknown.0[counter::PACKETS as usize] = 7;
        let registry = test_registry_with(unknown);
        let text = encode(&registry, Format::Classic).unwrap();
        let s = series(&text);
        assert_eq!(s["sensor_xdp_packets_total{iface=\"unknown\"}"], "7");
        assert_eq!(s["sensor_xdp_packets_total{iface=\"eth2\"}"], "2000");
        if let Some((ok, report)) = promtool(&text) {
            assert!(ok && report.trim().is_empty(), "promtool: {report}");
        }
    }

    #[test]
    fn process_metrics_describe_this_process() {
        let text = encode(&test_registry(), Format::Classic).unwrap();
        let s = series(&text);
        let value = |name: &str| -> f64 { s[name].parse().unwrap() };
        // This test process has its stdio and the test harness's files open, and memory.
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = value("process_start_time_seconds");
        // Started before now, and not before the test run (a day is generous for a slow CI).
        assert!(
            started <= now + 1.0 && started > now - 86_400.0,
            "{started} vs {now}"
        );
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
    }

    #[test]
    fn classic_text_names_families_by_their_samples() {
        let om = "\
# HELP a_requests Requests served.
# TYPE a_requests counter
a_requests_total{code=\"200\"} 5
# HELP a_size_bytes Size of a thing.
# TYPE a_size_bytes gauge
# UNIT a_size_bytes bytes
a_size_bytes 7
# HELP a_build Build.
# TYPE a_build info
a_build_info{version=\"1\"} 1
# EOF
";
        let classic = "\
# HELP a_requests_total Requests served.
# TYPE a_requests_total counter
a_requests_total{code=\"200\"} 5
# HELP a_size_bytes Size of a thing.
# TYPE a_size_bytes gauge
a_size_bytes 7
# HELP a_build_info Build.
# TYPE a_build_info gauge
a_build_info{version=\"1\"} 1
";
        assert_eq!(to_classic(om), classic);
    }

    #[test]
    fn accept_headers_choose_the_format() {
        use Format::{Classic, OpenMetrics};
        for (accept, want) in [
            (None, Classic),
            (Some(""), Classic),
            (Some("text/plain"), Classic),
            (Some("text/plain;version=0.0.4"), Classic),
            (Some("*/*"), Classic),
            (Some("application/openmetrics-text"), OpenMetrics),
            (Some("Application/OpenMetrics-Text; version=1.0.0"), OpenMetrics),
            // What Prometheus 2.x sends by default.
            (
                Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
                OpenMetrics,
            ),
            // Prometheus configured for the classic format only.
            (Some("text/plain;version=0.0.4;q=1,*/*;q=0.1"), Classic),
            (Some("text/plain;q=0.9, application/openmetrics-text;q=0.5"), Classic),
            (Some("text/plain;q=0.2, application/openmetrics-text;q=0.5"), OpenMetrics),
            (Some("application/openmetrics-text;q=0"), Classic),
            (Some("application/openmetrics-text;q=oops"), Classic),
            (Some("application/json"), Classic),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn the_endpoint_answers_in_the_negotiated_format() {
        let registry = test_registry();
        let request = |accept: Option<&str>| {
            let mut req = Request::builder().uri("/metrics");
            if let Some(a) = accept {
                req = req.header("accept", a);
            }
            respond(&req.body(()).unwrap(), &registry)
        };
        let body = |resp: Response<Full<Bytes>>| {
            use http_body_util::BodyExt as _;
            let bytes = block_on(resp.into_body().collect()).unwrap().to_bytes();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let plain = request(None);
        assert_eq!(plain.status(), StatusCode::OK);
        assert_eq!(
            plain.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(!body(plain).contains("# EOF"));
        let om = request(Some("application/openmetrics-text; version=1.0.0"));
        assert_eq!(
            om.headers()["content-type"],
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(body(om).ends_with("# EOF\n"));
        let missing = respond(&Request::builder().uri("/").body(()).unwrap(), &registry);
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    }

    /// Polls a ready future (a `Full` body is) without a runtime.
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(f)
    }

    use crate::engine::{Collect, Engine, EngineConfig, Suppress, TableGauges};
    use crate::event::EventSink as _;

    /// The table rows alone, for a registry without a kernel map.
    #[derive(Debug)]
    struct Tables(Arc<TableGauges>);

    impl Collector for Tables {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode_tables(&self.0, &mut encoder)
        }
    }

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// A connection table too small for a burst of unanswered SYNs: every eviction reported the
    /// pending attempt as failed, and `/metrics` says so next to the evictions.
    #[test]
    fn evictions_reported_as_failed_are_exported() {
        let mut config = EngineConfig {
            suppress: Suppress::None,
            ..EngineConfig::default()
        };
        config.conn.max_conns = 5;
        let gauges = Arc::new(TableGauges::default());
        let mut engine = Engine::new(config, Collect::default()).unwrap();
        engine.export_tables(gauges.clone());
        for i in 0..20u8 {
            engine.event(&crate::event::PacketEvent {
                ts: crate::time::Timestamp::from_secs(1_000),
                src: SocketAddr::from(([192, 0, 2, 1], 40_000)),
                dst: SocketAddr::from(([198, 51, 100, i], 445)),
                vlan_depth: 0,
                transport: crate::event::Transport::Tcp(crate::event::TcpSegment {
                    flags: crate::event::TcpFlags(sensor_ebpf::tcp_flag::SYN),
                    seq: 1,
                    ack: 0,
                    window: 1,
                    payload_len: 0,
                    head: &[],
                }),
            });
        }
        engine.finish();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Tables(gauges)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let evicted = r#"sensor_table_evictions_total{table="connections"}"#;
        let reported = r#"sensor_table_evictions_reported_total{table="connections"}"#;
        assert_eq!(value(&text, evicted), Some(15), "{text}");
        assert_eq!(value(&text, reported), Some(15), "{text}");
        assert_eq!(
            value(
                &text,
                r#"sensor_table_evictions_reported_total{table="dht_queries"}"#
            ),
            Some(0)
        );
    }
}
