//! The detection engine: every stage after capture, shared by `sensor run` and `sensor analyze`.
//!
//! events → connection outcomes ([`crate::conn`]) → prediction filter ([`crate::predict`]) →
//! scan detector ([`crate::detect`]) → PPR gate ([`crate::ppr`]) → notices.
//!
//! **Suppressed notices.** A notice blocked by the PPR gate is reported with reason `ppr`. A
//! notice that prediction prevented never exists in the filtered detector, so when prediction is
//! on, a *baseline* detector also sees every attempt; whenever the baseline raises a notice of
//! some kind for a source more often than the filtered detector has, that notice is reported
//! with reason `predicted`. If the filtered detector raises it later after all, the suppression
//! only delayed it, and both appear in the logs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context as _;

use crate::bt::{ChannelCounts, Coordination, CoordinationConfig, TableStats};
use crate::conn::{BroEvent, ConnConfig, ConnOutcome, ConnTracker};
use crate::detect::{BroScan, BroScanConfig, ConnState, NoticeKind, ScanNotice, Trw, TrwConfig};
use crate::event::{EventSink, PacketEvent, Transport};
use crate::ppr::{PprConfig, PprSample, PprTracker};
use crate::predict::{
    Channel, PeerTransport, PredictedPeer, PredictionConfig, PredictionTable, RetractedPeer,
};
use crate::time::{Duration, Timestamp};

/// Which suppression to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Suppress {
    /// The Bro 1.5 baseline: every failed attempt counts.
    None,
    /// Failed attempts to predicted peers do not count (the paper's filter).
    Predict,
    /// Notices from sources whose attempts look peer-to-peer are suppressed.
    Ppr,
    /// Both.
    All,
}

impl Suppress {
    fn predict(self) -> bool {
        matches!(self, Suppress::Predict | Suppress::All)
    }
    fn ppr(self) -> bool {
        matches!(self, Suppress::Ppr | Suppress::All)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Bro 1.5 `scan.bro`.
    Bro,
    /// Threshold Random Walk (Bro 1.5 `trw.bro`).
    Trw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SuppressReason {
    Predicted,
    Ppr,
}

impl SuppressReason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub conn: ConnConfig,
    pub bro: BroScanConfig,
    pub trw: TrwConfig,
    pub detector: DetectorKind,
    pub suppress: Suppress,
    pub ppr: PprConfig,
    pub prediction: PredictionConfig,
    pub coordination: CoordinationConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            conn: ConnConfig::default(),
            bro: BroScanConfig::default(),
            trw: TrwConfig::default(),
            detector: DetectorKind::Bro,
            suppress: Suppress::All,
            ppr: PprConfig::default(),
            prediction: PredictionConfig::default(),
            coordination: CoordinationConfig::default(),
        }
    }
}

/// Where the engine's results go: notices, suppressed notices, and the records behind them.
pub trait EngineSink {
    fn notice(&mut self, notice: &ScanNotice);
    fn suppressed(&mut self, notice: &ScanNotice, reason: SuppressReason, ppr: &PprSample);
    /// Every connection outcome, with the channel that predicted it (failed attempts only).
    fn attempt(&mut self, _outcome: &ConnOutcome, _predicted: Option<Channel>) {}
    fn prediction(&mut self, _prediction: &PredictedPeer) {}
}

/// Discards everything (for callers that only want the engine's counters).
impl EngineSink for () {
    fn notice(&mut self, _: &ScanNotice) {}
    fn suppressed(&mut self, _: &ScanNotice, _: SuppressReason, _: &PprSample) {}
}

/// Totals for reports and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    pub events: u64,
    pub outcomes: u64,
    pub failed_attempts: u64,
    pub predicted_failures: u64,
    pub notices: u64,
    pub suppressed_predicted: u64,
    pub suppressed_ppr: u64,
}

/// Bro sweeps expired table entries every 10 s (`table_expire_interval`).
const TABLE_EXPIRE_INTERVAL: Duration = Duration::from_secs(10);
/// Metrics are published more often than tables are swept, so a scrape is at most a second
/// (of packet time) behind.
const PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// One bounded table's occupancy and losses, published for a scrape on another thread.
#[derive(Debug)]
pub struct TableGauge {
    pub name: &'static str,
    pub entries: AtomicU64,
    /// Dropped to make room.
    pub evicted: AtomicU64,
    pub expired: AtomicU64,
}

/// One coordination channel's message counts, published for a scrape on another thread.
#[derive(Debug)]
pub struct ChannelGauge {
    pub name: &'static str,
    pub seen: AtomicU64,
    pub parsed: AtomicU64,
    pub rejected: AtomicU64,
}

/// The engine's tables and the coordination channels' counts, by name. The rows are laid out
/// once, from the engine's own lists, when the engine starts exporting; until then a scrape
/// shows none.
#[derive(Debug, Default)]
pub struct TableGauges {
    rows: std::sync::OnceLock<(Vec<TableGauge>, Vec<ChannelGauge>)>,
}

impl TableGauges {
    pub fn tables(&self) -> &[TableGauge] {
        self.rows.get().map_or(&[], |r| &r.0)
    }

    pub fn channels(&self) -> &[ChannelGauge] {
        self.rows.get().map_or(&[], |r| &r.1)
    }

    pub fn table(&self, name: &str) -> Option<&TableGauge> {
        self.tables().iter().find(|t| t.name == name)
    }

    fn lay_out(
        &self,
        tables: &[(&'static str, TableStats)],
        channels: &[(&'static str, ChannelCounts)],
    ) {
        self.rows.get_or_init(|| {
            let t = tables.iter().map(|&(name, _)| TableGauge {
                name,
                entries: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                expired: AtomicU64::new(0),
            });
            let c = channels.iter().map(|&(name, _)| ChannelGauge {
                name,
                seen: AtomicU64::new(0),
                parsed: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
            });
            (t.collect(), c.collect())
        });
    }

    /// Stores the current values, each under its name.
    fn publish(
        &self,
        tables: &[(&'static str, TableStats)],
        channels: &[(&'static str, ChannelCounts)],
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        self.lay_out(tables, channels);
        for (name, t) in tables {
            if let Some(g) = self.table(name) {
                g.entries.store(t.len, Relaxed);
                g.evicted.store(t.evicted, Relaxed);
                g.expired.store(t.expired, Relaxed);
            }
        }
        for (name, c) in channels {
            if let Some(g) = self.channels().iter().find(|g| g.name == *name) {
                g.seen.store(c.seen, Relaxed);
                g.parsed.store(c.parsed, Relaxed);
                g.rejected.store(c.rejected_total(), Relaxed);
            }
        }
    }
}

// One per engine (two with prediction on): the size difference between variants is irrelevant.
#[allow(clippy::large_enum_variant)]
enum Detector {
    Bro(BroScan),
    Trw(Trw),
}

impl Detector {
    fn new(cfg: &EngineConfig) -> anyhow::Result<Self> {
        Ok(match cfg.detector {
            DetectorKind::Bro => Detector::Bro(BroScan::new(cfg.bro.clone())),
            DetectorKind::Trw => {
                Detector::Trw(Trw::new(cfg.trw.clone()).context("TRW parameters")?)
            }
        })
    }

    fn check(&mut self, o: &ConnOutcome, out: &mut Vec<ScanNotice>) {
        match self {
            Detector::Bro(bro) => bro.check_into(&o.scan_check(), out),
            Detector::Trw(trw) => {
                // Bro 1.5 `trw.bro` runs from the connection_attempt, connection_rejected and
                // connection_established events, on TCP only.
                let state = match o.event {
                    BroEvent::Attempt | BroEvent::IcmpUnreachable => ConnState::S0,
                    BroEvent::Rejected => ConnState::REJ,
                    BroEvent::Established => ConnState::S1,
                    _ => return,
                };
                if !o.udp {
                    trw.check_scan(&o.scan_check(), state, 0, out);
                }
            }
        }
    }

    fn expire(&mut self, now: Timestamp, out: &mut Vec<ScanNotice>) {
        match self {
            Detector::Bro(bro) => bro.expire(now, out),
            Detector::Trw(trw) => trw.expire(now, out),
        }
    }

    /// (tracked sources, evictions)
    fn table(&self) -> (u64, u64) {
        match self {
            Detector::Bro(bro) => (bro.tracked_sources() as u64, bro.evictions),
            Detector::Trw(trw) => (trw.tracked_sources() as u64, trw.evictions),
        }
    }

    fn finish(&mut self, now: Timestamp, out: &mut Vec<ScanNotice>) {
        match self {
            Detector::Bro(bro) => bro.finish(now, out),
            Detector::Trw(trw) => trw.expire(now, out),
        }
    }
}

pub struct Engine<S: EngineSink> {
    config: EngineConfig,
    conns: ConnTracker,
    /// Coordination parsers: the source of predictions.
    coordination: Coordination,
    learnt: Vec<PredictedPeer>,
    retracted: Vec<RetractedPeer>,
    predictions: Arc<PredictionTable>,
    /// Sees only the attempts that count.
    detector: Detector,
    /// Sees every attempt; present when prediction filters (see module docs).
    baseline: Option<Detector>,
    ppr: PprTracker,
    /// (source, notice kind) → notices raised by (filtered, baseline).
    raised: HashMap<(IpAddr, NoticeKind), (u32, u32)>,
    outcomes: Vec<ConnOutcome>,
    notices: Vec<ScanNotice>,
    baseline_notices: Vec<ScanNotice>,
    last_expire: Timestamp,
    last_publish: Timestamp,
    last_idle_publish: std::time::Instant,
    now: Timestamp,
    gauges: Option<Arc<TableGauges>>,
    pub stats: EngineStats,
    pub sink: S,
}

impl<S: EngineSink> Engine<S> {
    pub fn new(config: EngineConfig, sink: S) -> anyhow::Result<Self> {
        let predictions = Arc::new(PredictionTable::new(config.prediction.clone()));
        Self::with_predictions(config, predictions, sink)
    }

    /// An engine reading (and feeding) a prediction table shared with others.
    pub fn with_predictions(
        config: EngineConfig,
        predictions: Arc<PredictionTable>,
        sink: S,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            conns: ConnTracker::new(config.conn.clone()),
            coordination: Coordination::new(&config.coordination),
            learnt: Vec::new(),
            retracted: Vec::new(),
            detector: Detector::new(&config)?,
            baseline: if config.suppress.predict() {
                Some(Detector::new(&config)?)
            } else {
                None
            },
            ppr: PprTracker::new(config.ppr.clone()),
            predictions,
            raised: HashMap::new(),
            outcomes: Vec::new(),
            notices: Vec::new(),
            baseline_notices: Vec::new(),
            last_expire: Timestamp::ZERO,
            last_publish: Timestamp::ZERO,
            last_idle_publish: std::time::Instant::now(),
            now: Timestamp::ZERO,
            gauges: None,
            stats: EngineStats::default(),
            sink,
            config,
        })
    }

    pub fn predictions(&self) -> &Arc<PredictionTable> {
        &self.predictions
    }

    pub fn conns(&self) -> &ConnTracker {
        &self.conns
    }

    /// Publishes table sizes and drop counts to `gauges` from now on (every 10 s of packet time
    /// and at the end).
    pub fn export_tables(&mut self, gauges: Arc<TableGauges>) {
        self.gauges = Some(gauges);
        self.publish();
    }

    /// Every bounded table, by name: the engine's own, then the coordination channels'.
    pub fn tables(&self) -> Vec<(&'static str, TableStats)> {
        use std::sync::atomic::Ordering::Relaxed;
        let p = &self.predictions.stats;
        let (det_n, det_ev) = self.detector.table();
        let (base_n, base_ev) = self.baseline.as_ref().map_or((0, 0), Detector::table);
        let stats = |len, evicted, expired| TableStats {
            len,
            evicted,
            expired,
        };
        let mut out = vec![
            (
                "connections",
                stats(
                    self.conns.len() as u64,
                    self.conns.evictions,
                    self.conns.expired,
                ),
            ),
            (
                "predictions",
                stats(
                    self.predictions.len(),
                    p.evicted_host_cap.load(Relaxed) + p.evicted_total_cap.load(Relaxed),
                    p.expired.load(Relaxed),
                ),
            ),
            ("scan_sources", stats(det_n, det_ev, 0)),
            ("baseline_scan_sources", stats(base_n, base_ev, 0)),
            (
                "ppr_sources",
                stats(self.ppr.len() as u64, self.ppr.evictions, 0),
            ),
        ];
        out.extend(self.coordination.tables());
        out
    }

    fn publish(&self) {
        if let Some(g) = &self.gauges {
            g.publish(&self.tables(), &self.coordination.counts());
        }
    }

    /// The coordination channels, for their counters.
    pub fn coordination(&self) -> &Coordination {
        &self.coordination
    }

    /// Adds a prediction (from a coordination parser, or a test).
    pub fn predict(&mut self, p: &PredictedPeer) {
        self.predictions.insert(p);
        self.sink.prediction(p);
    }

    fn process_outcomes(&mut self) {
        let outcomes = std::mem::take(&mut self.outcomes);
        for o in &outcomes {
            self.stats.outcomes += 1;
            let failed = o.failed();
            let transport = if o.udp {
                PeerTransport::Udp
            } else {
                PeerTransport::Tcp
            };
            let predicted = if failed {
                self.stats.failed_attempts += 1;
                let p = self
                    .predictions
                    .lookup(o.initiator().ip(), o.target(), transport, o.ts);
                if p.is_some() {
                    self.stats.predicted_failures += 1;
                }
                p
            } else {
                None
            };
            self.sink.attempt(o, predicted);
            if let Some(baseline) = &mut self.baseline {
                baseline.check(o, &mut self.baseline_notices);
            }
            if predicted.is_some() && self.config.suppress.predict() {
                continue;
            }
            if failed {
                self.ppr
                    .record(o.ts, o.initiator().ip(), o.target().ip(), o.target().port());
            }
            self.detector.check(o, &mut self.notices);
        }
        self.outcomes = outcomes;
        self.outcomes.clear();
        self.emit();
    }

    /// Routes the notices the detectors just raised.
    fn emit(&mut self) {
        if self.notices.is_empty() && self.baseline_notices.is_empty() {
            return;
        }
        for n in std::mem::take(&mut self.notices) {
            self.raised.entry((n.src, n.note)).or_default().0 += 1;
            let (p2p, sample) = self.ppr.looks_p2p(n.src);
            let evidence =
                !self.config.ppr.require_bittorrent || self.predictions.knows_host(n.src);
            if self.config.suppress.ppr() && p2p && evidence {
                self.stats.suppressed_ppr += 1;
                self.sink.suppressed(&n, SuppressReason::Ppr, &sample);
            } else {
                self.stats.notices += 1;
                self.sink.notice(&n);
            }
        }
        for n in std::mem::take(&mut self.baseline_notices) {
            let counts = self.raised.entry((n.src, n.note)).or_default();
            counts.1 += 1;
            if counts.1 > counts.0 {
                self.stats.suppressed_predicted += 1;
                let sample = self.ppr.sample(n.src);
                self.sink.suppressed(&n, SuppressReason::Predicted, &sample);
            }
        }
    }

    fn tick(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
        if self.now - self.last_expire >= TABLE_EXPIRE_INTERVAL {
            self.last_expire = self.now;
            self.detector.expire(self.now, &mut self.notices);
            if let Some(b) = &mut self.baseline {
                b.expire(self.now, &mut self.baseline_notices);
            }
            self.ppr.expire(self.now);
            self.predictions.expire(self.now);
            self.coordination.expire(self.now);
            self.emit();
        }
        if self.now - self.last_publish >= PUBLISH_INTERVAL {
            self.last_publish = self.now;
            self.publish();
        }
    }

    /// End of input: pending attempts, then every summary.
    pub fn finish(&mut self) {
        let now = self.now;
        self.conns.finish(now, &mut self.outcomes);
        self.process_outcomes();
        self.detector.finish(now, &mut self.notices);
        if let Some(b) = &mut self.baseline {
            b.finish(now, &mut self.baseline_notices);
        }
        self.emit();
        self.publish();
    }
}

impl<S: EngineSink> EventSink for Engine<S> {
    fn event(&mut self, event: &PacketEvent<'_>) {
        self.stats.events += 1;
        self.tick(event.ts);
        // Learn first: a peer list and an attempt it explains may share a drain batch.
        match &event.transport {
            Transport::Udp(udp) => {
                self.coordination
                    .on_udp(event, udp, &mut self.learnt, &mut self.retracted);
            }
            Transport::Tcp(seg) => {
                self.coordination
                    .on_tcp(event, seg, &mut self.learnt, &mut self.retracted);
            }
            Transport::Icmp(_) => {}
        }
        if !self.learnt.is_empty() {
            // Keep the buffer: it is reused for every message.
            let learnt = std::mem::take(&mut self.learnt);
            for p in &learnt {
                self.predict(p);
            }
            self.learnt = learnt;
            self.learnt.clear();
        }
        for r in self.retracted.drain(..) {
            self.predictions.retract(&r);
        }
        self.conns.on_event(event, &mut self.outcomes);
        if !self.outcomes.is_empty() {
            self.process_outcomes();
        }
    }

    fn idle(&mut self) {
        // Live: keep /metrics current when traffic stops (packet time then stands still).
        if self.last_idle_publish.elapsed() >= std::time::Duration::from_millis(500) {
            self.last_idle_publish = std::time::Instant::now();
            self.publish();
        }
    }

    fn flush(&mut self) {
        self.finish();
    }
}

/// Collects everything in memory (tests, small offline runs).
#[derive(Debug, Default)]
pub struct Collect {
    pub notices: Vec<ScanNotice>,
    pub suppressed: Vec<(ScanNotice, SuppressReason)>,
    pub attempts: Vec<(ConnOutcome, Option<Channel>)>,
}

impl EngineSink for Collect {
    fn notice(&mut self, notice: &ScanNotice) {
        self.notices.push(notice.clone());
    }
    fn suppressed(&mut self, notice: &ScanNotice, reason: SuppressReason, _: &PprSample) {
        self.suppressed.push((notice.clone(), reason));
    }
    fn attempt(&mut self, outcome: &ConnOutcome, predicted: Option<Channel>) {
        self.attempts.push((*outcome, predicted));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{TcpFlags, TcpSegment, Transport};
    use sensor_ebpf::tcp_flag::SYN;
    use std::net::SocketAddr;

    const BT: &str = "192.0.2.10";

    fn syn(ts_ms: u64, src: SocketAddr, dst: SocketAddr) -> PacketEvent<'static> {
        PacketEvent {
            ts: Timestamp::from_secs(1_700_000_000) + Duration::from_millis(ts_ms),
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Tcp(TcpSegment {
                flags: TcpFlags(SYN),
                seq: 1,
                ack: 0,
                window: 1,
                payload_len: 0,
                head: &[],
            }),
        }
    }

    /// 40 unanswered SYNs from `src`, each to a new peer on its own high port.
    fn bittorrent_like(src: &str) -> Vec<PacketEvent<'static>> {
        (0..40u16)
            .map(|i| {
                let dst: SocketAddr = format!("203.0.113.{}:{}", i + 1, 20_000 + i * 337)
                    .parse()
                    .unwrap();
                syn(
                    u64::from(i) * 500,
                    format!("{src}:{}", 50_000 + i).parse().unwrap(),
                    dst,
                )
            })
            .collect()
    }

    fn run(suppress: Suppress, predict: bool, events: &[PacketEvent<'static>]) -> Engine<Collect> {
        let config = EngineConfig {
            suppress,
            bro: BroScanConfig::with_first_threshold(20),
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, Collect::default()).unwrap();
        if predict {
            for e in events {
                engine.predict(&PredictedPeer {
                    ts: e.ts,
                    host: e.src.ip(),
                    peer: e.dst,
                    transport: PeerTransport::Tcp,
                    channel: Channel::Synthetic,
                });
            }
        }
        for e in events {
            engine.event(e);
        }
        // Let the attempt timers of the last SYNs run out.
        let end = events.last().unwrap().ts + Duration::from_secs(10);
        engine.tick(end);
        engine.conns.advance(end, &mut engine.outcomes);
        engine.process_outcomes();
        engine.finish();
        engine
    }

    fn notes(v: &[ScanNotice]) -> Vec<&'static str> {
        v.iter().map(|n| n.note.as_str()).collect()
    }

    #[test]
    fn baseline_flags_the_bittorrent_host() {
        let e = run(Suppress::None, true, &bittorrent_like(BT));
        assert_eq!(
            notes(&e.sink.notices),
            ["AddressScan", "ScanSummary", "PortScanSummary"]
        );
        assert!(e.sink.notices[0]
            .msg
            .starts_with("192.0.2.10 has scanned 20 hosts"));
        assert_eq!(e.stats.failed_attempts, 40);
        assert_eq!(
            e.stats.predicted_failures, 40,
            "labelled even when not suppressed"
        );
        assert!(e.sink.suppressed.is_empty());
    }

    #[test]
    fn prediction_removes_predicted_failures_and_says_so() {
        let e = run(Suppress::Predict, true, &bittorrent_like(BT));
        assert!(e.sink.notices.is_empty(), "{:?}", e.sink.notices);
        let reasons: Vec<_> = e
            .sink
            .suppressed
            .iter()
            .map(|(n, r)| (n.note.as_str(), *r))
            .collect();
        assert_eq!(
            reasons,
            [
                ("AddressScan", SuppressReason::Predicted),
                ("ScanSummary", SuppressReason::Predicted),
                ("PortScanSummary", SuppressReason::Predicted)
            ]
        );
        // Unpredicted, the same host is still flagged with prediction on.
        let e = run(Suppress::Predict, false, &bittorrent_like(BT));
        assert_eq!(
            notes(&e.sink.notices),
            ["AddressScan", "ScanSummary", "PortScanSummary"]
        );
    }

    #[test]
    fn ppr_suppresses_bittorrent_shape_but_not_a_horizontal_scan() {
        // Without BitTorrent evidence the same shape is not suppressed (it could be Gnutella).
        let e = run(Suppress::Ppr, false, &bittorrent_like(BT));
        assert_eq!(
            notes(&e.sink.notices),
            ["AddressScan", "ScanSummary", "PortScanSummary"]
        );
        // With it (one peer announced to the host, on another port), PPR suppresses.
        let mut events = bittorrent_like(BT);
        events.truncate(40);
        let config = EngineConfig {
            suppress: Suppress::Ppr,
            bro: BroScanConfig::with_first_threshold(20),
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, Collect::default()).unwrap();
        engine.predict(&PredictedPeer {
            ts: events[0].ts,
            host: BT.parse().unwrap(),
            peer: "198.51.100.99:51413".parse().unwrap(),
            transport: PeerTransport::Tcp,
            channel: Channel::Synthetic,
        });
        for ev in &events {
            engine.event(ev);
        }
        engine.finish();
        let e = engine;
        assert!(e.sink.notices.is_empty(), "{:?}", e.sink.notices);
        assert!(e
            .sink
            .suppressed
            .iter()
            .all(|(_, r)| *r == SuppressReason::Ppr));
        assert_eq!(e.stats.suppressed_ppr, 3);

        let scan: Vec<_> = (1..=40u16)
            .map(|i| {
                let dst: SocketAddr = format!("198.51.100.{i}:23").parse().unwrap();
                syn(
                    u64::from(i) * 10,
                    format!("192.0.2.66:{}", 40_000 + i).parse().unwrap(),
                    dst,
                )
            })
            .collect();
        let e = run(Suppress::All, false, &scan);
        assert_eq!(notes(&e.sink.notices), ["AddressScan", "ScanSummary"]);
        assert!(e.sink.suppressed.is_empty());
    }

    #[test]
    fn table_drops_are_published() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut config = EngineConfig {
            suppress: Suppress::None,
            ..EngineConfig::default()
        };
        config.conn.max_conns = 5;
        let gauges = Arc::new(TableGauges::default());
        let mut engine = Engine::new(config, Collect::default()).unwrap();
        engine.export_tables(gauges.clone());
        for e in bittorrent_like(BT).iter().take(20) {
            engine.event(e);
        }
        engine.finish();
        let connections = gauges.table("connections").unwrap();
        assert_eq!(connections.entries.load(Relaxed), 5);
        assert_eq!(
            connections.evicted.load(Relaxed),
            15,
            "every eviction is counted"
        );
        let (name, t) = engine.tables()[0];
        assert_eq!(
            (name, t.len, t.evicted, t.expired),
            ("connections", 5, 15, 0)
        );
        // Every table and every channel has its row, once.
        let names: Vec<&str> = gauges.tables().iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            engine.tables().iter().map(|t| t.0).collect::<Vec<_>>()
        );
        assert_eq!(
            gauges.channels().len(),
            engine.coordination().counts().len()
        );
    }

    /// The README's counter list names every table and channel label `/metrics` exports.
    #[test]
    fn readme_lists_every_table_and_channel() {
        let readme = include_str!("../../README.md");
        let metrics = &readme[readme.find("### Metrics").expect("metrics section")..];
        let engine = Engine::new(EngineConfig::default(), Collect::default()).unwrap();
        let channels = engine.coordination().counts();
        let names = engine
            .tables()
            .into_iter()
            .map(|t| t.0)
            .chain(channels.into_iter().map(|c| c.0));
        for name in names {
            assert!(
                metrics.contains(&format!("`{name}`")),
                "README misses `{name}`"
            );
        }
    }

    #[test]
    fn trw_detector_flags_after_four_failures() {
        let config = EngineConfig {
            detector: DetectorKind::Trw,
            suppress: Suppress::None,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(config, Collect::default()).unwrap();
        for e in bittorrent_like(BT).iter().take(6) {
            engine.event(e);
        }
        engine.tick(Timestamp::from_secs(1_700_000_020));
        engine.conns.advance(engine.now, &mut engine.outcomes);
        engine.process_outcomes();
        assert_eq!(notes(&engine.sink.notices), ["TRWAddressScan"]);
    }
}
