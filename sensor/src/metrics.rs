//! Prometheus exposition: the kernel's pre-filter counters, read at scrape time, and the agent's
//! own counters. Labels have fixed, small value sets (never addresses).

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
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use sensor_ebpf::counter;
use tokio::net::TcpListener;

use crate::capture::record::{DecodeError, DecodeReason};
use crate::capture::xdp::KernelCounters;
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
    /// The engine's tables (sizes, evictions, expiries).
    pub tables: Arc<crate::engine::TableGauges>,
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

/// Encodes everything on each scrape.
#[derive(Debug)]
struct SensorCollector {
    kernel: Arc<Mutex<KernelCounters>>,
    agent: Arc<AgentStats>,
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
        self.encode_kernel(&mut encoder)?;
        self.encode_agent(&mut encoder)?;
        self.encode_tables(&mut encoder)?;
        self.encode_channels(&mut encoder)?;
        self.encode_drops(&mut encoder)?;
        self.encode_decode_errors(&mut encoder)
    }
}

type Encoded = Result<(), std::fmt::Error>;

impl SensorCollector {
    /// The XDP program's per-CPU counters, summed, one family per metric name.
    fn encode_kernel(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let snap = match self.kernel.lock().map_err(|_| std::fmt::Error)?.read() {
            Ok(snap) => snap,
            Err(e) => {
                tracing::warn!("reading XDP counters: {e:#}");
                return Ok(());
            }
        };
        let mut done = Vec::new();
        for slot in 0..counter::COUNT {
            let (name, help, label) = kernel_metric(slot);
            if done.contains(&name) {
                continue;
            }
            done.push(name);
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            if label.is_none() {
                ConstCounter::new(snap.get(slot)).encode(family)?;
                continue;
            }
            for member in slot..counter::COUNT {
                if let (n, _, Some(label)) = kernel_metric(member) {
                    if n == name {
                        ConstCounter::new(snap.get(member))
                            .encode(family.encode_family(&[label])?)?;
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

    /// Every bounded table the engine published, by its name.
    fn encode_tables(&self, encoder: &mut DescriptorEncoder) -> Encoded {
        let tables = self.agent.tables.tables();
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

/// The registry served on `/metrics`.
pub fn registry(kernel: Arc<Mutex<KernelCounters>>, agent: Arc<AgentStats>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SensorCollector { kernel, agent }));
    registry
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
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => Response::builder()
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
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
