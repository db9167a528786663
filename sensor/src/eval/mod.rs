//! `sensor eval`: how well the detector separates scanners from BitTorrent hosts on labelled
//! captures, as the paper's evaluation does: a ROC curve over address-scan thresholds for each
//! suppression mode (Khan, Syed and Khayam, Figure 13) and, per BitTorrent host, the time it took
//! to make 100 predicted connections (Figure 14).
//!
//! A host is *flagged* when it raised at least one AddressScan or PortScan notice. TPR is the
//! share of labelled scanners flagged, FPR the share of labelled BitTorrent hosts flagged. Every
//! capture is an independent run (its own engines, its own hosts), read once: its events go to
//! one engine per (mode, threshold).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

use crate::capture::pcap;
use crate::conn::{BroEvent, ConnOutcome};
use crate::detect::{BroScanConfig, NoticeKind, ScanNotice};
use crate::engine::{DetectorKind, Engine, EngineConfig, EngineSink, Suppress, SuppressReason};
use crate::event::{EventSink, PacketEvent};
use crate::ppr::PprSample;
use crate::predict::{Channel, PeerTransport, PredictionTable};
use crate::time::Timestamp;

pub mod plot;

/// The modes compared, in the order reported.
pub const MODES: [Suppress; 4] = [
    Suppress::None,
    Suppress::Predict,
    Suppress::Ppr,
    Suppress::All,
];

/// The paper's thresholds (Figure 13).
pub const DEFAULT_THRESHOLDS: [u64; 8] = [5, 10, 20, 50, 100, 200, 500, 1000];

/// How many predicted connections Figure 14 waits for.
const PREDICTED_TARGET: usize = 100;

/// What a labelled host is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Bittorrent,
    Scanner,
    Benign,
    /// Any other label (a seed, a tracker, infrastructure): reported, not scored.
    Other(String),
}

impl Role {
    /// Roles are matched without regard to case (`BitTorrent` is `bittorrent`); other labels
    /// are kept as written.
    fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "bittorrent" => Role::Bittorrent,
            "scanner" => Role::Scanner,
            "benign" => Role::Benign,
            _ => Role::Other(s.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Role::Bittorrent => "bittorrent",
            Role::Scanner => "scanner",
            Role::Benign => "benign",
            Role::Other(r) => r,
        }
    }
}

/// As the label it was read from: `"bittorrent"`, `"seed"`, … (one string, whatever the role).
impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One labelled host: its role and what it runs (client or tool).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Label {
    pub role: Role,
    pub what: String,
}

/// Host labels, from a CSV file whose first two columns are `ip,role` (a header line naming
/// them is skipped; a third column, if any, says what the host runs). Rows whose first field is
/// not an address (the header, the prefixes of peer populations) are skipped.
#[derive(Clone, Debug, Default)]
pub struct Labels(BTreeMap<IpAddr, Label>);

impl Labels {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        // A spreadsheet's UTF-8 byte-order mark would hide the first row's address.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut map: BTreeMap<IpAddr, Label> = BTreeMap::new();
        for record in reader.records() {
            let record = record.context("reading labels")?;
            let line = record.position().map_or(0, csv::Position::line);
            let (Some(ip), Some(role)) = (record.get(0), record.get(1)) else {
                continue;
            };
            // The header, and infrastructure rows naming a prefix (a peer population), are
            // not hosts to score.
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            let label = Label {
                role: Role::parse(role),
                what: record.get(2).unwrap_or_default().to_owned(),
            };
            if let Some(earlier) = map.get(&ip) {
                anyhow::ensure!(
                    *earlier == label,
                    "line {line}: {ip} labelled again, differently ({} {:?}, then {} {:?})",
                    earlier.role.as_str(),
                    earlier.what,
                    label.role.as_str(),
                    label.what
                );
            }
            map.insert(ip, label);
        }
        anyhow::ensure!(!map.is_empty(), "no labelled hosts");
        Ok(Self(map))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading labels {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("labels {}", path.display()))
    }

    pub fn get(&self, ip: IpAddr) -> Option<&Label> {
        self.0.get(&ip)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpAddr, &Label)> {
        self.0.iter().map(|(ip, l)| (*ip, l))
    }
}

/// The labels of a capture: `--labels`, or `NAME.labels.csv` beside `NAME.pcap` (as the lab
/// writes them).
pub fn labels_for(pcap: &Path, explicit: Option<&Path>) -> anyhow::Result<Labels> {
    if let Some(path) = explicit {
        return Labels::read(path);
    }
    let beside = pcap.with_extension("labels.csv");
    anyhow::ensure!(
        beside.exists(),
        "{}: no --labels given and no {} beside it",
        pcap.display(),
        beside.display()
    );
    Labels::read(&beside)
}

/// What one engine of the grid keeps: the hosts it flagged and, for the engine that records
/// them, the attempts of every host.
#[derive(Debug, Default)]
struct LaneSink {
    flagged: HashSet<IpAddr>,
    recorder: Option<Recorder>,
}

/// Every host's attempts, as prediction saw them (one engine of the grid keeps them: they do
/// not depend on the mode or the threshold).
#[derive(Debug)]
struct Recorder {
    hosts: HashMap<IpAddr, HostAttempts>,
    /// The recording engine's own prediction table, to tell which *established* connections
    /// went to announced peers (the engine looks up only failed ones).
    predictions: Arc<PredictionTable>,
}

/// A host's connection attempts as prediction saw them.
#[derive(Clone, Debug, Default)]
struct HostAttempts {
    failed_tcp: u64,
    predicted_failed_tcp: u64,
    by_channel: BTreeMap<Channel, u64>,
    /// Times of its first predicted connections (failed or established), up to
    /// [`PREDICTED_TARGET`].
    predicted_at: Vec<Timestamp>,
}

impl EngineSink for LaneSink {
    fn notice(&mut self, n: &ScanNotice) {
        if matches!(n.note, NoticeKind::AddressScan | NoticeKind::PortScan) {
            self.flagged.insert(n.src);
        }
    }

    fn suppressed(&mut self, _: &ScanNotice, _: SuppressReason, _: &PprSample) {}

    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        let Some(rec) = &mut self.recorder else {
            return;
        };
        let initiator = o.initiator().ip();
        // A connection to a predicted peer: a failed attempt the engine matched, or a TCP
        // handshake that completed to an announced peer, counted once, on `Established` (later
        // outcomes of the same connection are established too). The engine looks up only
        // failed attempts today; the table answers for the others.
        let predicted_connection = if o.failed() {
            predicted.is_some()
        } else {
            !o.udp
                && o.event == BroEvent::Established
                && (predicted.is_some()
                    || rec
                        .predictions
                        .lookup(initiator, o.target(), PeerTransport::Tcp, o.ts)
                        .is_some())
        };
        let host = rec.hosts.entry(initiator).or_default();
        if predicted_connection && host.predicted_at.len() < PREDICTED_TARGET {
            host.predicted_at.push(o.ts);
        }
        if o.udp || !o.failed() {
            return;
        }
        host.failed_tcp += 1;
        if let Some(channel) = predicted {
            host.predicted_failed_tcp += 1;
            *host.by_channel.entry(channel).or_default() += 1;
        }
    }
}

/// One engine per (mode, threshold), all fed from one read of the capture.
struct Grid {
    lanes: Vec<(Suppress, u64, Engine<LaneSink>)>,
}

impl Grid {
    fn new(base: &EngineConfig, thresholds: &[u64]) -> anyhow::Result<Self> {
        let mut lanes = Vec::new();
        for mode in MODES {
            for (i, &threshold) in thresholds.iter().enumerate() {
                let mut config = base.clone();
                config.suppress = mode;
                let first = BroScanConfig::with_first_threshold(threshold);
                config.bro.report_peer_scan = first.report_peer_scan;
                config.bro.report_outbound_peer_scan = first.report_outbound_peer_scan;
                let engine = if mode == Suppress::All && i == 0 {
                    // Coverage does not depend on the threshold: one engine records it.
                    let predictions = Arc::new(PredictionTable::new(config.prediction.clone()));
                    let sink = LaneSink {
                        recorder: Some(Recorder {
                            hosts: HashMap::new(),
                            predictions: Arc::clone(&predictions),
                        }),
                        ..LaneSink::default()
                    };
                    Engine::with_predictions(config, predictions, sink)?
                } else {
                    Engine::new(config, LaneSink::default())?
                };
                lanes.push((mode, threshold, engine));
            }
        }
        Ok(Self { lanes })
    }

    fn finish(&mut self) {
        for (_, _, engine) in &mut self.lanes {
            engine.finish();
        }
    }

    /// Packet time moves on without an event (a datagram the pre-filter withheld).
    fn advance_to(&mut self, ts: Timestamp) {
        for (_, _, engine) in &mut self.lanes {
            engine.advance_to(ts);
        }
    }
}

impl EventSink for Grid {
    fn event(&mut self, ev: &PacketEvent<'_>) {
        for (_, _, engine) in &mut self.lanes {
            engine.event(ev);
        }
    }
}

/// A labelled host's results in one capture.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostResult {
    pub capture: String,
    pub ip: IpAddr,
    #[serde(flatten)]
    pub label: Label,
    /// Flagged per mode, at each threshold (in the order of [`EvalReport::thresholds`]).
    pub flagged: BTreeMap<&'static str, Vec<bool>>,
    pub failed_tcp: u64,
    pub predicted_failed_tcp: u64,
    pub predicted_by_channel: BTreeMap<&'static str, u64>,
    /// Minutes from its first to its 100th predicted connection, if it made 100.
    pub minutes_to_100_predicted: Option<f64>,
}

/// One point of the ROC curve.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RocRow {
    pub mode: &'static str,
    pub threshold: u64,
    pub tp: u64,
    pub scanners: u64,
    pub fp: u64,
    pub bittorrent: u64,
    pub tpr: f64,
    pub fpr: f64,
}

/// Everything `sensor eval` found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalReport {
    pub thresholds: Vec<u64>,
    pub captures: Vec<String>,
    pub roc: Vec<RocRow>,
    pub hosts: Vec<HostResult>,
}

pub fn mode_name(mode: Suppress) -> &'static str {
    match mode {
        Suppress::None => "none",
        Suppress::Predict => "predict",
        Suppress::Ppr => "ppr",
        Suppress::All => "all",
    }
}

/// Evaluates `captures` (each with its labels) at every mode and threshold.
pub fn evaluate(
    captures: &[(PathBuf, Labels)],
    base: &EngineConfig,
    thresholds: &[u64],
    snaplen: u32,
) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(
        base.detector == DetectorKind::Bro,
        "eval varies Bro's address-scan threshold; TRW has none"
    );
    anyhow::ensure!(!thresholds.is_empty(), "no thresholds");
    anyhow::ensure!(
        thresholds.iter().all(|&t| t > 0),
        "thresholds must be at least 1"
    );
    // In increasing order, once each: the ROC curve is drawn through them in this order.
    let mut thresholds = thresholds.to_vec();
    thresholds.sort_unstable();
    thresholds.dedup();
    let mut hosts = Vec::new();
    for (path, labels) in captures {
        let grid = run_capture(path, base, &thresholds, snaplen)?;
        hosts.extend(host_results(&path.display().to_string(), labels, &grid));
    }
    Ok(EvalReport {
        captures: captures
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect(),
        roc: roc(&hosts, &thresholds),
        thresholds,
        hosts,
    })
}

fn run_capture(
    path: &Path,
    base: &EngineConfig,
    thresholds: &[u64],
    snaplen: u32,
) -> anyhow::Result<Grid> {
    let mut grid = Grid::new(base, thresholds)?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::with_capacity(1 << 16, file);
    let name = path.display().to_string();
    let filter = pcap::FilterConfig::from(snaplen).with_udp_scan(base.conn.udp);
    let (_, read) = pcap::prefilter_reader_timed(&name, reader, filter, |seen| match seen {
        pcap::Seen::Event(ev) => grid.event(ev),
        pcap::Seen::Time(ts) => grid.advance_to(ts),
    })?;
    if let Some(err) = read.error {
        anyhow::bail!("{name}: {err}; an evaluation on part of a capture would mislead");
    }
    grid.finish();
    Ok(grid)
}

fn host_results(capture: &str, labels: &Labels, grid: &Grid) -> Vec<HostResult> {
    let attempts = grid
        .lanes
        .iter()
        .find_map(|(_, _, e)| e.sink.recorder.as_ref().map(|r| &r.hosts));
    labels
        .iter()
        .map(|(ip, label)| {
            let mut flagged: BTreeMap<&'static str, Vec<bool>> = BTreeMap::new();
            for (mode, _, engine) in &grid.lanes {
                let at = flagged.entry(mode_name(*mode)).or_default();
                at.push(engine.sink.flagged.contains(&ip));
            }
            let a = attempts
                .and_then(|m| m.get(&ip))
                .cloned()
                .unwrap_or_default();
            HostResult {
                capture: capture.to_owned(),
                ip,
                label: label.clone(),
                flagged,
                failed_tcp: a.failed_tcp,
                predicted_failed_tcp: a.predicted_failed_tcp,
                predicted_by_channel: a.by_channel.iter().map(|(c, n)| (c.as_str(), *n)).collect(),
                minutes_to_100_predicted: minutes_to_target(&a.predicted_at),
            }
        })
        .collect()
}

fn minutes_to_target(times: &[Timestamp]) -> Option<f64> {
    let (first, last) = (times.first()?, times.get(PREDICTED_TARGET - 1)?);
    Some((*last - *first).as_secs_f64() / 60.0)
}

/// TPR and FPR per mode and threshold, over every capture's hosts.
pub fn roc(hosts: &[HostResult], thresholds: &[u64]) -> Vec<RocRow> {
    let count = |role: &Role, mode: &str, i: usize| {
        let of_role = hosts.iter().filter(|h| &h.label.role == role);
        let flagged = of_role.clone().filter(|h| h.flagged[mode][i]).count() as u64;
        (flagged, of_role.count() as u64)
    };
    let rate = |k: u64, n: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let mut rows = Vec::new();
    for mode in MODES.map(mode_name) {
        for (i, &threshold) in thresholds.iter().enumerate() {
            let (tp, scanners) = count(&Role::Scanner, mode, i);
            let (fp, bittorrent) = count(&Role::Bittorrent, mode, i);
            rows.push(RocRow {
                mode,
                threshold,
                tp,
                scanners,
                fp,
                bittorrent,
                tpr: rate(tp, scanners),
                fpr: rate(fp, bittorrent),
            });
        }
    }
    rows
}

impl EvalReport {
    /// `roc.csv`: one row per mode and threshold, rates as fractions.
    pub fn roc_csv(&self) -> String {
        let mut out = String::from("mode,threshold,tp,scanners,fp,bittorrent,tpr,fpr\n");
        for r in &self.roc {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{:.4},{:.4}",
                r.mode, r.threshold, r.tp, r.scanners, r.fp, r.bittorrent, r.tpr, r.fpr
            );
        }
        out
    }

    /// The table printed on stdout: the ROC grid, then every scored host.
    pub fn table(&self) -> String {
        let mut out = String::from("mode     threshold   TPR (scanners)      FPR (BitTorrent)\n");
        for r in &self.roc {
            let _ = writeln!(
                out,
                "{:<8} {:>9}   {:>3}/{:<3} {:>6.1}%   {:>3}/{:<3} {:>6.1}%",
                r.mode,
                r.threshold,
                r.tp,
                r.scanners,
                100.0 * r.tpr,
                r.fp,
                r.bittorrent,
                100.0 * r.fpr
            );
        }
        out.push_str(&self.host_table());
        out
    }

    /// One row per labelled host, columns as wide as their widest cell (addresses, labels and
    /// client names vary in length); with several captures, the capture each host is from.
    fn host_table(&self) -> String {
        let several = self.captures.len() > 1;
        let mut rows: Vec<[String; 8]> = vec![[
            "capture",
            "host",
            "role",
            "runs",
            "failed TCP",
            "predicted",
            "flagged at (all)",
            "minutes to 100 predicted",
        ]
        .map(str::to_owned)];
        for h in &self.hosts {
            let flagged: Vec<String> = self
                .thresholds
                .iter()
                .zip(&h.flagged["all"])
                .filter(|(_, f)| **f)
                .map(|(t, _)| t.to_string())
                .collect();
            let share = if h.failed_tcp == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.1}%",
                    100.0 * h.predicted_failed_tcp as f64 / h.failed_tcp as f64
                )
            };
            let capture = Path::new(&h.capture)
                .file_name()
                .map_or_else(|| h.capture.clone(), |n| n.to_string_lossy().into_owned());
            rows.push([
                capture,
                h.ip.to_string(),
                h.label.role.as_str().to_owned(),
                h.label.what.clone(),
                h.failed_tcp.to_string(),
                share,
                if flagged.is_empty() {
                    "-".to_owned()
                } else {
                    flagged.join(",")
                },
                h.minutes_to_100_predicted
                    .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}")),
            ]);
        }
        let mut width = [0usize; 8];
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::from("\n");
        for row in &rows {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(width).enumerate() {
                if i == 0 && !several {
                    continue;
                }
                // Counts and shares right-aligned, text left-aligned.
                let _ = if matches!(i, 4 | 5) {
                    write!(line, "{cell:>w$}  ")
                } else {
                    write!(line, "{cell:<w$}  ")
                };
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

impl EvalReport {
    /// Writes `roc.csv`, `roc.json`, `roc.svg` and `time-to-100.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write("roc.csv", self.roc_csv())?;
        write("roc.json", serde_json::to_string_pretty(self)? + "\n")?;
        let figure = |name: &str, draw: fn(&EvalReport, &Path) -> plot::Plot| {
            let path = dir.join(name);
            draw(self, &path).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
        };
        figure("roc.svg", plot::roc_svg)?;
        figure("time-to-100.svg", plot::time_to_100_svg)
    }
}

#[cfg(test)]
mod tests;
