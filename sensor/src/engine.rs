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
//!
//! **Notice suppression interval** (Zeek's notice framework, `suppress_for`, per (source,
//! note)). Off by default, as in Bro 1.5, whose notice framework had no suppression (every
//! NOTICE was logged, default action `NOTICE_ALARM_ALWAYS`) and whose `scan.bro` raises each
//! threshold once per source while its state lasts. With an interval S, a notice whose kind was
//! reported for its source less than S ago is suppressed (counted as `suppressed_interval`),
//! and a source the detector still counts attempts of, S or more after its last report of a
//! kind, is reported again (sub-message `still active ...`): Zeek's scan detection re-raises a
//! scanner every time it crosses its threshold again, and the notice framework lets one notice
//! through per interval. Summaries and ShutdownThresh, one-time reports, are not renewed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context as _;

use crate::bt::{ChannelCounts, Coordination, CoordinationConfig, TableStats};
use crate::conn::{BroEvent, ConnConfig, ConnOutcome, ConnTracker};
use crate::detect::{
    BroScan, BroScanConfig, ConnState, Dropped, NoticeConn, NoticeKind, Proto, ScanNotice, Service,
    Trw, TrwConfig,
};
use strum::VariantArray as _;

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
    /// Attempts to predicted peers, failed or established, do not count (the paper's filter).
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
    /// Zeek's `suppress_for` per (source, note); zero: no suppression and no renewal (Bro 1.5).
    pub notice_suppress_for: Duration,
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
            notice_suppress_for: Duration::ZERO,
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
    /// Packet time moved (on every event, and on every drain live): periodic output such as
    /// stats.log, and housekeeping such as reopening logs.
    fn tick(&mut self, _now: Timestamp, _stats: &EngineStats) {}
    /// End of input, with the final counters: flush and close what was written.
    fn finish(&mut self, _now: Timestamp, _stats: &EngineStats) {}
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
    /// Notices suppressed because one of their kind was reported for their source less than
    /// the suppression interval ago.
    pub suppressed_interval: u64,
    /// Notices reported again after the suppression interval (included in `notices`).
    pub renewed: u64,
}

impl EngineStats {
    /// Adds `other`'s counts (workers' totals, `--workers`).
    pub fn add(&mut self, other: &Self) {
        self.events += other.events;
        self.outcomes += other.outcomes;
        self.failed_attempts += other.failed_attempts;
        self.predicted_failures += other.predicted_failures;
        self.notices += other.notices;
        self.suppressed_predicted += other.suppressed_predicted;
        self.suppressed_ppr += other.suppressed_ppr;
        self.suppressed_interval += other.suppressed_interval;
        self.renewed += other.renewed;
    }
}

/// Live, on a quiet link: how far behind the wall clock packet time is assumed to have got.
/// Records are drained every few milliseconds; the margin covers ring lag and the drift between
/// the kernel's clock and the wall clock, so no record still in flight is overtaken.
const QUIET_LAG: Duration = Duration::from_secs(1);

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
    /// Of `evicted`, those whose pending evidence was reported first.
    pub evicted_reported: AtomicU64,
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

/// What a coordination channel read but did not use, by list and reason, published for a
/// scrape on another thread.
#[derive(Debug)]
pub struct DropGauge {
    pub channel: &'static str,
    pub list: &'static str,
    pub reason: &'static str,
    pub count: AtomicU64,
}

/// One coordination drop: (channel, list, reason, count).
pub type Drop = (&'static str, &'static str, &'static str, u64);

/// The laid-out rows of [`TableGauges`].
#[derive(Debug, Default)]
struct Rows {
    tables: Vec<TableGauge>,
    channels: Vec<ChannelGauge>,
    drops: Vec<DropGauge>,
}

/// The engine's tables and the coordination channels' counts and drops, by name. The rows are
/// laid out once, from the engine's own lists, when the engine starts exporting; until then a
/// scrape shows none.
#[derive(Debug, Default)]
pub struct TableGauges {
    rows: std::sync::OnceLock<Rows>,
}

impl TableGauges {
    pub fn tables(&self) -> &[TableGauge] {
        self.rows.get().map_or(&[], |r| &r.tables)
    }

    pub fn channels(&self) -> &[ChannelGauge] {
        self.rows.get().map_or(&[], |r| &r.channels)
    }

    pub fn drops(&self) -> &[DropGauge] {
        self.rows.get().map_or(&[], |r| &r.drops)
    }

    pub fn table(&self, name: &str) -> Option<&TableGauge> {
        self.tables().iter().find(|t| t.name == name)
    }

    fn lay_out(
        &self,
        tables: &[(&'static str, TableStats)],
        channels: &[(&'static str, ChannelCounts)],
        drops: &[Drop],
    ) {
        self.rows.get_or_init(|| Rows {
            tables: tables
                .iter()
                .map(|&(name, _)| TableGauge {
                    name,
                    entries: AtomicU64::new(0),
                    evicted: AtomicU64::new(0),
                    evicted_reported: AtomicU64::new(0),
                    expired: AtomicU64::new(0),
                })
                .collect(),
            channels: channels
                .iter()
                .map(|&(name, _)| ChannelGauge {
                    name,
                    seen: AtomicU64::new(0),
                    parsed: AtomicU64::new(0),
                    rejected: AtomicU64::new(0),
                })
                .collect(),
            drops: drops
                .iter()
                .map(|&(channel, list, reason, _)| DropGauge {
                    channel,
                    list,
                    reason,
                    count: AtomicU64::new(0),
                })
                .collect(),
        });
    }

    /// Stores the sums of `parts` (the workers' gauges, `--workers`), laid out as the first.
    pub fn store_sum(&self, parts: &[Arc<TableGauges>]) {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(first) = parts.first() else {
            return;
        };
        if first.rows.get().is_none() {
            return;
        }
        let sum = |get: &dyn Fn(&TableGauges) -> u64| parts.iter().map(|p| get(p)).sum::<u64>();
        let tables: Vec<_> = first
            .tables()
            .iter()
            .map(|t| {
                let field = |f: fn(&TableGauge) -> &AtomicU64| {
                    sum(&|p: &TableGauges| p.table(t.name).map_or(0, |g| f(g).load(Relaxed)))
                };
                (
                    t.name,
                    TableStats {
                        len: field(|g| &g.entries),
                        evicted: field(|g| &g.evicted),
                        expired: field(|g| &g.expired),
                        evicted_reported: field(|g| &g.evicted_reported),
                    },
                )
            })
            .collect();
        let channels: Vec<_> = first
            .channels()
            .iter()
            .map(|c| {
                let field = |f: fn(&ChannelGauge) -> &AtomicU64| {
                    sum(&|p: &TableGauges| {
                        p.channels()
                            .iter()
                            .find(|g| g.name == c.name)
                            .map_or(0, |g| f(g).load(Relaxed))
                    })
                };
                (
                    c.name,
                    field(|g| &g.seen),
                    field(|g| &g.parsed),
                    field(|g| &g.rejected),
                )
            })
            .collect();
        let drops: Vec<Drop> = first
            .drops()
            .iter()
            .map(|d| {
                let n = sum(&|p: &TableGauges| {
                    p.drops()
                        .iter()
                        .find(|g| (g.channel, g.list, g.reason) == (d.channel, d.list, d.reason))
                        .map_or(0, |g| g.count.load(Relaxed))
                });
                (d.channel, d.list, d.reason, n)
            })
            .collect();
        let layout: Vec<_> = channels
            .iter()
            .map(|&(name, ..)| (name, ChannelCounts::default()))
            .collect();
        self.lay_out(&tables, &layout, &drops);
        for (name, seen, parsed, rejected) in channels {
            if let Some(g) = self.channels().iter().find(|g| g.name == name) {
                g.seen.store(seen, Relaxed);
                g.parsed.store(parsed, Relaxed);
                g.rejected.store(rejected, Relaxed);
            }
        }
        for (name, t) in &tables {
            if let Some(g) = self.table(name) {
                g.entries.store(t.len, Relaxed);
                g.evicted.store(t.evicted, Relaxed);
                g.evicted_reported.store(t.evicted_reported, Relaxed);
                g.expired.store(t.expired, Relaxed);
            }
        }
        for &(channel, list, reason, n) in &drops {
            if let Some(g) = self
                .drops()
                .iter()
                .find(|g| (g.channel, g.list, g.reason) == (channel, list, reason))
            {
                g.count.store(n, Relaxed);
            }
        }
    }

    /// Stores the current values, each under its name.
    fn publish(
        &self,
        tables: &[(&'static str, TableStats)],
        channels: &[(&'static str, ChannelCounts)],
        drops: &[Drop],
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        self.lay_out(tables, channels, drops);
        for (name, t) in tables {
            if let Some(g) = self.table(name) {
                g.entries.store(t.len, Relaxed);
                g.evicted.store(t.evicted, Relaxed);
                g.evicted_reported.store(t.evicted_reported, Relaxed);
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
        for &(channel, list, reason, n) in drops {
            let row = self
                .drops()
                .iter()
                .find(|g| (g.channel, g.list, g.reason) == (channel, list, reason));
            if let Some(g) = row {
                g.count.store(n, Relaxed);
            }
        }
    }
}

/// Notices suppressed as predicted, per source, until the source turns out scan-shaped or goes
/// idle. Bounded: a few notices per source, and sources only while the shape tracker keeps them.
#[derive(Debug, Default)]
struct Withheld(HashMap<IpAddr, Vec<ScanNotice>>);

impl Withheld {
    /// Bro raises each notice kind a handful of times per source; more are not kept.
    const PER_SOURCE: usize = 16;

    fn holds(&self, src: IpAddr) -> bool {
        !self.0.is_empty() && self.0.contains_key(&src)
    }

    fn hold(&mut self, n: ScanNotice) {
        let held = self.0.entry(n.src).or_default();
        if held.len() < Self::PER_SOURCE {
            held.push(n);
        }
    }

    fn take(&mut self, src: IpAddr) -> Vec<ScanNotice> {
        self.0.remove(&src).unwrap_or_default()
    }

    /// Forgets sources whose attempts the shape tracker no longer holds.
    fn expire(&mut self, shape: &PprTracker) {
        self.0.retain(|src, _| shape.sample(*src).peers > 0);
    }
}

/// What the engine remembers of one (source, notice kind).
#[derive(Debug, Default)]
struct Raised {
    /// Raised by the filtered detector, by the baseline (see module docs).
    filtered: u32,
    baseline: u32,
    /// Packet time of the last raise or report: the eviction order at the cap.
    touched: Timestamp,
    /// With a suppression interval: the last notice of this kind reported for this source.
    reported: Option<Box<ScanNotice>>,
    /// The end of the interval an item in [`RaisedNotices::due`] waits for.
    due: Option<Timestamp>,
}

/// [`Raised`] per (source, notice kind). Bounded: an entry is dropped once neither detector
/// holds state for its source and its suppression interval is over (both are needed: the
/// counts compare the detectors' output over the source's state, the last report times the
/// interval), and at [`RaisedNotices::CAP`] the least recently touched eighth is evicted.
///
/// Expiry is incremental: an expiry pass looks only at the sources whose entries could have
/// become droppable since the last pass, never at the whole table. An entry that survived a
/// pass was kept because a detector tracked its source or its interval ran; it can only
/// become droppable when it is touched, when a detector drops its source (the detectors hand
/// those over, [`crate::detect::DroppedSources`]), or when its interval ends (a min-heap of
/// interval ends). So a pass costs O(log n) per source it looks at.
#[derive(Debug, Default)]
struct RaisedNotices {
    map: HashMap<(IpAddr, NoticeKind), Raised>,
    /// Sources touched since the last pass.
    touched: HashSet<IpAddr>,
    /// (end of a suppression interval, source): checked when the interval is over. One live
    /// item per entry ([`Raised::due`]); a report that moves the end leaves a stale item,
    /// which only costs a look.
    due: BinaryHeap<Reverse<(Timestamp, IpAddr)>>,
    evicted: u64,
    expired: u64,
    /// Entries looked at by expiry passes (tests).
    looked: u64,
}

impl RaisedNotices {
    /// Far above what the detectors' own source caps produce in practice (notices need many
    /// attempts per source); about 100 B per entry, plus the last notice with an interval.
    const CAP: usize = 100_000;

    fn entry(&mut self, src: IpAddr, note: NoticeKind, now: Timestamp) -> &mut Raised {
        if self.map.len() >= Self::CAP && !self.map.contains_key(&(src, note)) {
            self.evict();
        }
        self.touched.insert(src);
        let e = self.map.entry((src, note)).or_default();
        e.touched = e.touched.max(now);
        e
    }

    /// Drops the least recently touched eighth, so eviction costs O(1) per insertion, amortised
    /// (one selection over the map per `CAP / 8` insertions). Kept rather than a linked map
    /// (`hashlink`, as the detectors' source tables): this table is touched once per notice,
    /// not per packet, mostly on entries it holds, where this is about twice as fast (17 against
    /// 32 ns per touch in BENCHMARKS.md, "LRU tables"), at the same bytes per entry; the linked
    /// map only wins when most accesses are new keys at the cap, which notices do not produce.
    fn evict(&mut self) {
        let mut order: Vec<(Timestamp, (IpAddr, NoticeKind))> =
            self.map.iter().map(|(k, e)| (e.touched, *k)).collect();
        let n = (Self::CAP / 8).max(1).min(order.len());
        order.select_nth_unstable_by_key(n - 1, |(touched, _)| *touched);
        for (_, k) in &order[..n] {
            self.map.remove(k);
        }
        self.evicted += n as u64;
    }

    /// The expiry pass: drops the entries of `sources` (and of every source touched since the
    /// last pass, or whose interval ended by `now`) that no detector tracks (`tracked`) and
    /// whose interval is over. `Dropped::Many`: the detectors dropped too many sources to
    /// list, so every entry is looked at (a cost the drops pay for).
    fn expire(
        &mut self,
        now: Timestamp,
        interval: Duration,
        sources: &[Dropped],
        tracked: impl Fn(IpAddr) -> bool,
    ) {
        if sources.iter().any(|d| matches!(d, Dropped::Many)) {
            let all: HashSet<IpAddr> = self.map.keys().map(|(src, _)| *src).collect();
            self.touched.extend(all);
        }
        for d in sources {
            if let Dropped::Sources(list) = d {
                self.touched.extend(list.iter().copied());
            }
        }
        while let Some(&Reverse((end, src))) = self.due.peek() {
            if end > now {
                break;
            }
            self.due.pop();
            self.touched.insert(src);
        }
        for src in std::mem::take(&mut self.touched) {
            let untracked = !tracked(src);
            for &note in NoticeKind::VARIANTS {
                let Some(e) = self.map.get_mut(&(src, note)) else {
                    continue;
                };
                self.looked += 1;
                let end = e.reported.as_ref().map(|n| n.ts + interval);
                let suppressing = end.is_some_and(|end| now < end);
                if !suppressing && untracked {
                    self.map.remove(&(src, note));
                    self.expired += 1;
                } else if let Some(end) = end.filter(|_| suppressing) {
                    // Looked at again when the interval is over.
                    if e.due != Some(end) {
                        e.due = Some(end);
                        self.due.push(Reverse((end, src)));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod raised_tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))
    }

    #[test]
    fn full_table_evicts_the_least_recently_touched_eighth_and_counts_it() {
        let mut t = RaisedNotices::default();
        let cap = u32::try_from(RaisedNotices::CAP).unwrap();
        for i in 0..cap {
            t.entry(
                ip(i),
                NoticeKind::AddressScan,
                Timestamp::from_secs(u64::from(i)),
            )
            .filtered += 1;
        }
        assert_eq!((t.map.len(), t.evicted), (RaisedNotices::CAP, 0));
        // Touching an existing entry never evicts.
        t.entry(
            ip(0),
            NoticeKind::AddressScan,
            Timestamp::from_secs(1_000_000),
        );
        assert_eq!(t.evicted, 0);
        // A new one makes room: the oldest eighth goes (not the entry just touched).
        t.entry(
            ip(cap),
            NoticeKind::PortScan,
            Timestamp::from_secs(1_000_001),
        );
        let evicted = RaisedNotices::CAP / 8;
        assert_eq!(t.evicted, evicted as u64);
        assert_eq!(t.map.len(), RaisedNotices::CAP - evicted + 1);
        assert!(t.map.contains_key(&(ip(0), NoticeKind::AddressScan)));
        assert!(!t.map.contains_key(&(ip(1), NoticeKind::AddressScan)));
        assert!(t.map.contains_key(&(ip(cap - 1), NoticeKind::AddressScan)));
    }

    #[test]
    fn entries_live_while_a_detector_tracks_the_source_or_the_interval_runs() {
        let mut t = RaisedNotices::default();
        let every = Duration::from_secs(600);
        t.entry(ip(1), NoticeKind::AddressScan, Timestamp::from_secs(100));
        let reported = t.entry(ip(2), NoticeKind::AddressScan, Timestamp::from_secs(100));
        let mut n = ScanNotice::new(
            Timestamp::from_secs(100),
            NoticeKind::AddressScan,
            ip(2),
            None,
            None,
            (20, 1),
            String::new(),
        );
        n.suppress_for = every;
        reported.reported = Some(Box::new(n));
        t.entry(ip(3), NoticeKind::AddressScan, Timestamp::from_secs(100));
        let tracked = |src: IpAddr| src == ip(3);
        t.expire(Timestamp::from_secs(699), every, &[], tracked);
        // 1: untracked, no interval: gone. 2: its interval runs until 700. 3: tracked.
        assert_eq!(t.expired, 1);
        assert!(t.map.contains_key(&(ip(2), NoticeKind::AddressScan)));
        t.expire(Timestamp::from_secs(700), every, &[], tracked);
        assert_eq!(t.expired, 2);
        assert_eq!(t.map.len(), 1);
        assert!(t.map.contains_key(&(ip(3), NoticeKind::AddressScan)));
    }

    /// A pass looks at what changed since the last one, not at the table: 10,000 entries of
    /// tracked sources are looked at once, then only the source a detector dropped.
    #[test]
    fn an_expiry_pass_looks_only_at_touched_dropped_or_due_sources() {
        let mut t = RaisedNotices::default();
        let every = Duration::from_secs(600);
        for i in 0..10_000 {
            t.entry(ip(i), NoticeKind::AddressScan, Timestamp::from_secs(1))
                .filtered += 1;
        }
        let gone = ip(7);
        t.expire(Timestamp::from_secs(10), every, &[], |_| true);
        assert_eq!((t.looked, t.expired), (10_000, 0));
        for s in 2..50 {
            t.expire(Timestamp::from_secs(10 * s), every, &[], |_| true);
        }
        assert_eq!(t.looked, 10_000, "nothing changed: nothing looked at");
        // The detector dropped one source: only its entry is looked at, and it goes.
        t.expire(
            Timestamp::from_secs(600),
            every,
            &[Dropped::Sources(vec![gone])],
            |src| src != gone,
        );
        assert_eq!((t.looked, t.expired), (10_001, 1));
        assert!(!t.map.contains_key(&(gone, NoticeKind::AddressScan)));
        // A source touched again is looked at once more.
        t.entry(ip(8), NoticeKind::PortScan, Timestamp::from_secs(601));
        t.expire(Timestamp::from_secs(610), every, &[], |src| src != gone);
        assert_eq!(t.looked, 10_003);
        // Too many drops to list: every entry is looked at, the untracked go.
        t.expire(Timestamp::from_secs(620), every, &[Dropped::Many], |src| {
            src != ip(9)
        });
        assert_eq!((t.looked, t.expired), (10_003 + 10_000, 2));
        assert_eq!(t.map.len(), 9_999);
    }
}

/// Notice kinds a long-running source is reported again for after the suppression interval:
/// not the summaries (raised when a source's state ends) nor ShutdownThresh (once per source).
const RENEWABLE: [NoticeKind; 5] = [
    NoticeKind::AddressScan,
    NoticeKind::PortScan,
    NoticeKind::LowPortTrolling,
    NoticeKind::BackscatterSeen,
    NoticeKind::TRWAddressScan,
];

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

    /// The connection event TRW runs on (Bro 1.5 `trw.bro`: connection_attempt,
    /// connection_rejected and connection_established, TCP only).
    fn trw_state(o: &ConnOutcome) -> Option<ConnState> {
        if o.udp {
            return None;
        }
        match o.event {
            BroEvent::Attempt | BroEvent::IcmpUnreachable => Some(ConnState::S0),
            BroEvent::Rejected => Some(ConnState::REJ),
            BroEvent::Established => Some(ConnState::S1),
            _ => None,
        }
    }

    /// Whether the detector counts `o` at all.
    fn counts(&self, o: &ConnOutcome) -> bool {
        match self {
            Detector::Bro(bro) => bro.counts(&o.scan_check()),
            Detector::Trw(_) => Self::trw_state(o).is_some(),
        }
    }

    /// One `check_scan` call; the notices it raises carry the connection's uid and `id`.
    fn check(&mut self, o: &ConnOutcome, out: &mut Vec<ScanNotice>) {
        let first = out.len();
        self.check_scan(o, out);
        let proto = if o.udp { Proto::Udp } else { Proto::Tcp };
        for n in &mut out[first..] {
            n.conn = Some(NoticeConn {
                uid: o.uid,
                orig: o.orig,
                resp: o.resp,
                proto,
            });
        }
    }

    fn check_scan(&mut self, o: &ConnOutcome, out: &mut Vec<ScanNotice>) {
        match self {
            Detector::Bro(bro) => bro.check_into(&o.scan_check(), out),
            Detector::Trw(trw) => {
                if let Some(state) = Self::trw_state(o) {
                    trw.check_scan(&o.scan_check(), state, 0, out);
                }
            }
        }
    }

    /// The sources removed since the last call.
    fn take_dropped(&mut self) -> Dropped {
        match self {
            Detector::Bro(bro) => bro.take_dropped(),
            Detector::Trw(trw) => trw.take_dropped(),
        }
    }

    fn tracks(&self, src: IpAddr) -> bool {
        match self {
            Detector::Bro(bro) => bro.tracks(src),
            Detector::Trw(trw) => trw.tracks(src),
        }
    }

    /// The source's distinct (peers, ports) now, for a renewed notice.
    fn source_counts(&self, src: IpAddr) -> Option<(u64, u64)> {
        match self {
            Detector::Bro(bro) => Some((bro.distinct_peers(src), bro.distinct_ports(src))),
            Detector::Trw(_) => None,
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
    /// Every attempt the detector counts, predicted or not: the shape prediction cannot hide.
    shape: PprTracker,
    /// Notices suppressed as predicted, kept until their source's attempts look like a scan.
    withheld: Withheld,
    /// Per (source, notice kind): notices raised by each detector, the last one reported.
    raised: RaisedNotices,
    outcomes: Vec<ConnOutcome>,
    notices: Vec<ScanNotice>,
    baseline_notices: Vec<ScanNotice>,
    last_expire: Timestamp,
    last_publish: Timestamp,
    last_idle_publish: std::time::Instant,
    now: Timestamp,
    gauges: Option<Arc<TableGauges>>,
    /// A state file continues the run: the end of input does not close it (see `state_engine`).
    resumable: bool,
    /// With `--workers N`: the hosts this worker owns (see `crate::shard`).
    shard: Option<crate::shard::Shard>,
    /// Outcomes of connections tracked here whose initiator another worker owns (reverse
    /// connections), for [`Engine::take_foreign`].
    foreign: Vec<ConnOutcome>,
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
            shape: PprTracker::new(config.ppr.clone()),
            withheld: Withheld::default(),
            predictions,
            raised: RaisedNotices::default(),
            outcomes: Vec::new(),
            notices: Vec::new(),
            baseline_notices: Vec::new(),
            last_expire: Timestamp::ZERO,
            last_publish: Timestamp::ZERO,
            last_idle_publish: std::time::Instant::now(),
            now: Timestamp::ZERO,
            gauges: None,
            resumable: false,
            shard: None,
            foreign: Vec::new(),
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
            evicted_reported: 0,
        };
        let mut out = vec![
            (
                "connections",
                TableStats {
                    evicted_reported: self.conns.evicted_as_failed,
                    ..stats(
                        self.conns.len() as u64,
                        self.conns.evictions,
                        self.conns.expired,
                    )
                },
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
            (
                "shape_sources",
                stats(self.shape.len() as u64, self.shape.evictions, 0),
            ),
            (
                "raised_notices",
                stats(
                    self.raised.map.len() as u64,
                    self.raised.evicted,
                    self.raised.expired,
                ),
            ),
        ];
        out.extend(self.coordination.tables());
        out
    }

    fn publish(&self) {
        if let Some(g) = &self.gauges {
            g.publish(
                &self.tables(),
                &self.coordination.counts(),
                &self.coordination.drops(),
            );
        }
    }

    /// The coordination channels, for their counters.
    pub fn coordination(&self) -> &Coordination {
        &self.coordination
    }

    /// Makes this engine one worker of several: it reports, predicts for and counts only the
    /// hosts `shard` owns (see `crate::shard`).
    pub fn set_shard(&mut self, shard: crate::shard::Shard) {
        self.conns.set_shard(shard.clone());
        self.shard = Some(shard);
    }

    fn owns(&self, ip: IpAddr) -> bool {
        self.shard.as_ref().is_none_or(|s| s.owns(ip))
    }

    /// Outcomes this worker's tracker reported for another worker's initiator.
    pub fn take_foreign(&mut self) -> Vec<ConnOutcome> {
        std::mem::take(&mut self.foreign)
    }

    /// An outcome another worker's tracker reported for an initiator this worker owns.
    pub fn accept_foreign(&mut self, o: &ConnOutcome) {
        self.process(o);
        self.emit();
    }

    /// Adds a prediction (from a coordination parser, or a test).
    pub fn predict(&mut self, p: &PredictedPeer) {
        // Another worker, which sees the same message, predicts for its own hosts.
        if !self.owns(p.host) {
            return;
        }
        self.predictions.insert(p);
        self.sink.prediction(p);
    }

    fn process_outcomes(&mut self) {
        let outcomes = std::mem::take(&mut self.outcomes);
        for o in &outcomes {
            if self.shard.is_some() {
                if !self.owns(o.orig.ip()) {
                    // A UDP flow the originator's worker tracks as well and reports.
                    continue;
                }
                if !self.owns(o.initiator().ip()) {
                    self.foreign.push(*o);
                    continue;
                }
            }
            self.process(o);
        }
        self.outcomes = outcomes;
        self.outcomes.clear();
        self.emit();
    }

    /// One connection outcome through prediction, the detectors and the PPR samples.
    fn process(&mut self, o: &ConnOutcome) {
        self.stats.outcomes += 1;
        let transport = if o.udp {
            PeerTransport::Udp
        } else {
            PeerTransport::Tcp
        };
        // What coordination predicts is the peer, whatever becomes of the attempt: an
        // established connection to an announced peer is as much BitTorrent as a failed one
        // (Bro counts both as distinct peers).
        let predicted = self
            .predictions
            .lookup(o.initiator().ip(), o.target(), transport, o.ts);
        if o.failed() {
            self.stats.failed_attempts += 1;
            self.stats.predicted_failures += u64::from(predicted.is_some());
        }
        self.sink.attempt(o, predicted);
        if let Some(baseline) = &mut self.baseline {
            baseline.check(o, &mut self.baseline_notices);
        }
        let counted = self.detector.counts(o);
        let (src, dst, port) = (o.initiator().ip(), o.target().ip(), o.target().port());
        if counted {
            // The shape of everything the source tried, predicted or not.
            self.shape.record(o.ts, src, dst, port, o.failed());
            self.release_withheld(src);
        }
        if predicted.is_some() && self.config.suppress.predict() {
            return;
        }
        if counted {
            // PPR judges exactly the attempts the (filtered) detector counts.
            self.ppr.record(o.ts, src, dst, port, o.failed());
        }
        let first = self.notices.len();
        self.detector.check(o, &mut self.notices);
        if counted && self.config.notice_suppress_for > Duration::ZERO {
            self.renew(o, first);
        }
    }

    /// Reports again, for the source of `o` (an attempt the detector counted), every kind of
    /// notice last reported a suppression interval or more ago, unless this very check raised
    /// it anew (`self.notices[first..]`).
    fn renew(&mut self, o: &ConnOutcome, first: usize) {
        let every = self.config.notice_suppress_for;
        let src = o.initiator().ip();
        let mut due = Vec::new();
        for kind in RENEWABLE {
            let Some(last) = self
                .raised
                .map
                .get(&(src, kind))
                .and_then(|e| e.reported.as_deref())
            else {
                continue;
            };
            if o.ts < last.ts + every || self.notices[first..].iter().any(|n| n.note == kind) {
                continue;
            }
            let mut n = last.clone();
            let (peers, ports) = self
                .detector
                .source_counts(src)
                .unwrap_or((n.peers, n.ports));
            n.sub = Some(format!(
                "still active: {peers} hosts, {ports} ports, {:.0} s after the last report",
                o.ts.saturating_since(last.ts).as_secs_f64()
            ));
            n.ts = o.ts;
            n.peers = peers;
            n.ports = ports;
            n.dst = Some(o.target().ip());
            let port = o.target().port();
            n.p = Some(if o.udp {
                Service::udp(port)
            } else {
                Service::tcp(port)
            });
            n.conn = Some(NoticeConn {
                uid: o.uid,
                orig: o.orig,
                resp: o.resp,
                proto: if o.udp { Proto::Udp } else { Proto::Tcp },
            });
            due.push(n);
        }
        for n in due {
            self.stats.renewed += 1;
            self.route(n);
        }
    }

    /// Routes the notices the detectors just raised.
    fn emit(&mut self) {
        if self.notices.is_empty() && self.baseline_notices.is_empty() {
            return;
        }
        for n in std::mem::take(&mut self.notices) {
            self.raised.entry(n.src, n.note, n.ts).filtered += 1;
            self.route(n);
        }
        for n in std::mem::take(&mut self.baseline_notices) {
            let counts = self.raised.entry(n.src, n.note, n.ts);
            counts.baseline += 1;
            if counts.baseline <= counts.filtered {
                continue;
            }
            if self.shape.sample(n.src).scan_shaped() {
                // Prediction never hides a scan's shape: the notice stands, raised as the
                // detector that saw every attempt raised it.
                self.report(n);
            } else {
                self.stats.suppressed_predicted += 1;
                let sample = self.ppr.sample(n.src);
                self.sink.suppressed(&n, SuppressReason::Predicted, &sample);
                self.withheld.hold(n);
            }
        }
    }

    /// A notice of the filtered detector (or a renewed one) through the PPR gate.
    fn route(&mut self, n: ScanNotice) {
        let (p2p, sample) = self.ppr.looks_p2p(n.src);
        let evidence = !self.config.ppr.require_bittorrent || self.predictions.knows_host(n.src);
        if self.config.suppress.ppr() && p2p && evidence && !self.scan_shaped(n.src) {
            self.stats.suppressed_ppr += 1;
            self.sink.suppressed(&n, SuppressReason::Ppr, &sample);
        } else {
            self.report(n);
        }
    }

    /// Reports a notice, unless a suppression interval is set and a notice of its kind was
    /// reported for its source less than that interval ago.
    fn report(&mut self, mut n: ScanNotice) {
        let every = self.config.notice_suppress_for;
        if every > Duration::ZERO {
            n.suppress_for = every;
            let e = self.raised.entry(n.src, n.note, n.ts);
            if e.reported
                .as_ref()
                .is_some_and(|last| n.ts < last.ts + every)
            {
                self.stats.suppressed_interval += 1;
                return;
            }
            e.reported = Some(Box::new(n.clone()));
        }
        self.stats.notices += 1;
        self.sink.notice(&n);
    }

    /// Raises what prediction withheld from `src` once its attempts take a scan's shape (the
    /// shape may show only after the first notices: LowPortTrolling comes at 5 ports).
    fn release_withheld(&mut self, src: IpAddr) {
        if !self.withheld.holds(src) || !self.scan_shaped(src) {
            return;
        }
        for n in self.withheld.take(src) {
            self.report(n);
        }
    }

    /// Whether everything `src` tried, predicted attempts included, has a scan's shape.
    fn scan_shaped(&self, src: IpAddr) -> bool {
        self.shape.sample(src).scan_shaped()
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
            self.shape.expire(self.now);
            self.withheld.expire(&self.shape);
            self.predictions.expire(self.now);
            self.coordination.expire(self.now);
            self.emit();
            let dropped = [
                Some(self.detector.take_dropped()),
                self.baseline.as_mut().map(Detector::take_dropped),
            ];
            let (detector, baseline) = (&self.detector, &self.baseline);
            self.raised.expire(
                self.now,
                self.config.notice_suppress_for,
                &dropped.into_iter().flatten().collect::<Vec<_>>(),
                |src| detector.tracks(src) || baseline.as_ref().is_some_and(|b| b.tracks(src)),
            );
        }
        self.sink.tick(self.now, &self.stats);
        if self.now - self.last_publish >= PUBLISH_INTERVAL {
            self.last_publish = self.now;
            self.publish();
        }
    }

    /// Moves packet time to `now` and runs the table expiry that is due, as a packet at `now`
    /// does before anything else (`--workers`: every worker's clock moves with every record).
    pub fn tick_to(&mut self, now: Timestamp) {
        self.tick(now);
    }

    /// Fires the attempt timers due by packet time (after [`Engine::tick_to`], for a worker the
    /// record did not go to).
    pub fn run_timers(&mut self) {
        self.conns.advance(self.now, &mut self.outcomes);
        if !self.outcomes.is_empty() {
            self.process_outcomes();
        }
    }

    /// Moves packet time to `now` without a packet (live, on a quiet link): attempt timers and
    /// table expiry run as a packet at `now` would make them. Outcomes are stamped with their
    /// own timer's time, so the notices are those the next packet would have produced.
    pub fn advance_to(&mut self, now: Timestamp) {
        if now <= self.now {
            return;
        }
        self.tick(now);
        self.conns.advance(self.now, &mut self.outcomes);
        if !self.outcomes.is_empty() {
            self.process_outcomes();
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
        self.sink.finish(now, &self.stats);
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
            let mut learnt = std::mem::take(&mut self.learnt);
            // As `predict` on each, with the table locked once per message: another worker,
            // which reads the same message, predicts for its own hosts.
            if let Some(shard) = &self.shard {
                learnt.retain(|p| shard.owns(p.host));
            }
            self.predictions.insert_all(&learnt);
            for p in &learnt {
                self.sink.prediction(p);
            }
            self.learnt = learnt;
            self.learnt.clear();
        }
        for r in self.retracted.drain(..) {
            if self.shard.as_ref().is_none_or(|s| s.owns(r.host)) {
                self.predictions.retract(&r);
            }
        }
        self.conns.on_event(event, &mut self.outcomes);
        if !self.outcomes.is_empty() {
            self.process_outcomes();
        }
    }

    fn idle(&mut self) {
        // Live: when the link is quiet, packet time follows the wall clock, so pending
        // attempts become S0 on time and tables expire (a scan's last probes raise their
        // notice without waiting for an unrelated frame).
        let wall = Timestamp::from_system(std::time::SystemTime::now());
        self.advance_to(wall - QUIET_LAG);
        // Live housekeeping (a SIGHUP's log reopening) even while packet time stands still.
        self.sink.tick(self.now, &self.stats);
        // Keep /metrics current when traffic stops.
        if self.last_idle_publish.elapsed() >= std::time::Duration::from_millis(500) {
            self.last_idle_publish = std::time::Instant::now();
            self.publish();
        }
    }

    fn flush(&mut self) {
        if self.resumable {
            // The run goes on from the saved state: nothing is closed (see `state_engine`).
            self.publish();
        } else {
            self.finish();
        }
    }

    fn save_state(&mut self) -> Option<anyhow::Result<Vec<u8>>> {
        self.resumable.then(|| self.encode_state())
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

// State across restarts: the engine's hooks (the file format is `crate::state`).
#[path = "state_engine.rs"]
mod state_engine;

#[cfg(test)]
mod tests;
