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
    let (_, read) = pcap::prefilter_reader(&name, reader, snaplen, |ev| grid.event(ev))?;
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
mod tests {
    use std::net::SocketAddr;

    use super::*;

    /// The head of a labels file as the lab writes it: a header, quoted fields holding commas,
    /// roles that are not scored, and rows naming a prefix rather than a host.
    const LAB_LABELS: &str = r#"ip,role,client_or_tool,scan_type,rate,details
10.1.0.1,gateway,linux router (capture point),,,inside LAN interface br-in
198.18.7.107,tracker,opentracker (Debian 0.0~git20210823),,,"HTTP :6969/announce, UDP :6969"
10.1.44.184,bittorrent,transmission-daemon 3.00,,,listen 52372 (DHT on same port); started t=34s
10.1.37.229,bittorrent,"python-libtorrent 2.1.1 (PyPI wheel)",,,"listen 46355; tier1 udp://, tier2 http://"
10.1.101.15,scanner,masscan,horizontal,100 pps (--rate 100),"side=inside; targets=198.18.225.0/24,198.18.178.0/24; ports=80,443"
10.1.238.180,benign,curl,,,curl page fetches every 3-20 s
198.19.0.0/16,peer-population,lab peers (bin/natpeers.py),,,"announced via http-a, udp-a"
2001:db8::7,scanner,"nmap -sS, -T3",vertical,,
"#;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn labels_parse_the_lab_format() {
        let l = Labels::parse(LAB_LABELS).unwrap();
        // The header and the prefix row are skipped; every address is kept.
        assert_eq!(l.len(), 7);
        let get = |s| l.get(ip(s)).unwrap();
        assert_eq!(get("10.1.44.184").role, Role::Bittorrent);
        assert_eq!(get("10.1.44.184").what, "transmission-daemon 3.00");
        // Quoted fields: the quotes go, the commas inside stay, and the row keeps its columns.
        assert_eq!(
            get("10.1.37.229").what,
            "python-libtorrent 2.1.1 (PyPI wheel)"
        );
        assert_eq!(get("2001:db8::7").role, Role::Scanner);
        assert_eq!(get("2001:db8::7").what, "nmap -sS, -T3");
        assert_eq!(get("10.1.101.15").role, Role::Scanner);
        assert_eq!(get("10.1.238.180").role, Role::Benign);
        // Unknown roles are kept, as written, and not scored.
        assert_eq!(get("10.1.0.1").role, Role::Other("gateway".into()));
        assert_eq!(
            get("198.18.7.107").role,
            Role::Other("tracker".into()),
            "a quoted field with commas later in the row does not shift the role"
        );
        assert!(l.get(ip("198.19.0.0")).is_none());
    }

    #[test]
    fn labels_roles_ignore_case_and_serialise_as_written() {
        let l =
            Labels::parse("192.0.2.1, BitTorrent ,x\n192.0.2.2,Scanner\n192.0.2.3,Seed\n").unwrap();
        assert_eq!(l.get(ip("192.0.2.1")).unwrap().role, Role::Bittorrent);
        assert_eq!(l.get(ip("192.0.2.2")).unwrap().role, Role::Scanner);
        assert_eq!(l.get(ip("192.0.2.2")).unwrap().what, "");
        let seed = &l.get(ip("192.0.2.3")).unwrap().role;
        assert_eq!(*seed, Role::Other("Seed".into()));
        assert_eq!(serde_json::to_string(seed).unwrap(), r#""Seed""#);
        assert_eq!(
            serde_json::to_string(&Role::Bittorrent).unwrap(),
            r#""bittorrent""#
        );
    }

    #[test]
    fn labels_without_hosts_are_an_error() {
        for text in [
            "",
            "\n\n",
            "ip,role,client_or_tool\n",
            "198.19.0.0/16,peer-population\n",
        ] {
            let err = Labels::parse(text).unwrap_err();
            assert!(
                err.to_string().contains("no labelled hosts"),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn labels_byte_order_mark_and_duplicates() {
        let l = Labels::parse("\u{feff}192.0.2.1,scanner,nmap\n192.0.2.1,scanner,nmap\n").unwrap();
        assert_eq!(l.len(), 1);
        let err = Labels::parse("192.0.2.1,scanner,nmap\n192.0.2.1,bittorrent,x\n").unwrap_err();
        assert!(err.to_string().contains("labelled again"), "{err}");
    }

    fn host(ip_: &str, role: Role, flagged: [(&'static str, Vec<bool>); 4]) -> HostResult {
        HostResult {
            capture: "c.pcap".into(),
            ip: ip(ip_),
            label: Label {
                role,
                what: String::new(),
            },
            flagged: flagged.into_iter().collect(),
            failed_tcp: 0,
            predicted_failed_tcp: 0,
            predicted_by_channel: BTreeMap::new(),
            minutes_to_100_predicted: None,
        }
    }

    #[test]
    fn roc_counts_scanners_and_bittorrent_hosts_per_mode_and_threshold() {
        let (t, f) = (true, false);
        let hosts = [
            // Flagged at both thresholds in every mode.
            host(
                "192.0.2.1",
                Role::Scanner,
                [
                    ("none", vec![t, t]),
                    ("predict", vec![t, t]),
                    ("ppr", vec![t, t]),
                    ("all", vec![t, t]),
                ],
            ),
            // Flagged only at the low threshold.
            host(
                "192.0.2.2",
                Role::Scanner,
                [
                    ("none", vec![t, f]),
                    ("predict", vec![t, f]),
                    ("ppr", vec![t, f]),
                    ("all", vec![t, f]),
                ],
            ),
            // Flagged by the baseline at both, by PPR alone at the low one.
            host(
                "192.0.2.3",
                Role::Bittorrent,
                [
                    ("none", vec![t, t]),
                    ("predict", vec![f, f]),
                    ("ppr", vec![t, f]),
                    ("all", vec![f, f]),
                ],
            ),
            host(
                "192.0.2.4",
                Role::Bittorrent,
                [
                    ("none", vec![t, f]),
                    ("predict", vec![f, f]),
                    ("ppr", vec![f, f]),
                    ("all", vec![f, f]),
                ],
            ),
            host(
                "192.0.2.5",
                Role::Bittorrent,
                [
                    ("none", vec![f, f]),
                    ("predict", vec![f, f]),
                    ("ppr", vec![f, f]),
                    ("all", vec![f, f]),
                ],
            ),
            // Neither benign hosts nor other roles are scored, flagged or not.
            host(
                "192.0.2.6",
                Role::Benign,
                [
                    ("none", vec![t, t]),
                    ("predict", vec![t, t]),
                    ("ppr", vec![t, t]),
                    ("all", vec![t, t]),
                ],
            ),
            host(
                "192.0.2.7",
                Role::Other("seed".into()),
                [
                    ("none", vec![t, t]),
                    ("predict", vec![t, t]),
                    ("ppr", vec![t, t]),
                    ("all", vec![t, t]),
                ],
            ),
        ];
        let rows = roc(&hosts, &[10, 100]);
        let got: Vec<(&str, u64, u64, u64, u64, u64)> = rows
            .iter()
            .map(|r| (r.mode, r.threshold, r.tp, r.scanners, r.fp, r.bittorrent))
            .collect();
        assert_eq!(
            got,
            [
                ("none", 10, 2, 2, 2, 3),
                ("none", 100, 1, 2, 1, 3),
                ("predict", 10, 2, 2, 0, 3),
                ("predict", 100, 1, 2, 0, 3),
                ("ppr", 10, 2, 2, 1, 3),
                ("ppr", 100, 1, 2, 0, 3),
                ("all", 10, 2, 2, 0, 3),
                ("all", 100, 1, 2, 0, 3),
            ]
        );
        let none_10 = &rows[0];
        assert!((none_10.tpr - 1.0).abs() < 1e-12);
        assert!((none_10.fpr - 2.0 / 3.0).abs() < 1e-12);
        assert!((rows[1].tpr - 0.5).abs() < 1e-12);

        let report = EvalReport {
            thresholds: vec![10, 100],
            captures: vec!["c.pcap".into()],
            roc: rows,
            hosts: hosts.to_vec(),
        };
        let csv = report.roc_csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "mode,threshold,tp,scanners,fp,bittorrent,tpr,fpr");
        assert_eq!(lines[1], "none,10,2,2,2,3,1.0000,0.6667");
        assert_eq!(lines.len(), 9);
    }

    #[test]
    fn roc_without_hosts_of_a_role_has_zero_rates() {
        let hosts = [host(
            "192.0.2.1",
            Role::Scanner,
            [
                ("none", vec![true]),
                ("predict", vec![true]),
                ("ppr", vec![true]),
                ("all", vec![true]),
            ],
        )];
        for r in roc(&hosts, &[20]) {
            assert_eq!((r.tp, r.scanners, r.fp, r.bittorrent), (1, 1, 0, 0));
            assert!((r.tpr - 1.0).abs() < 1e-12 && r.fpr == 0.0);
        }
    }

    #[test]
    fn predicted_connections_are_failed_matches_and_established_handshakes_to_announced_peers() {
        use crate::detect::ConnState;
        use crate::predict::{PredictedPeer, PredictionConfig};

        let table = Arc::new(PredictionTable::new(PredictionConfig::default()));
        let host = ip("192.0.2.10");
        let announced: SocketAddr = "203.0.113.7:51413".parse().unwrap();
        table.insert(&PredictedPeer {
            ts: Timestamp::from_secs(1),
            host,
            peer: announced,
            transport: PeerTransport::Tcp,
            channel: Channel::UdpTracker,
        });
        let mut sink = LaneSink {
            recorder: Some(Recorder {
                hosts: HashMap::new(),
                predictions: Arc::clone(&table),
            }),
            ..LaneSink::default()
        };
        let outcome = |secs, resp: &str, event, state, established| ConnOutcome {
            ts: Timestamp::from_secs(secs),
            orig: SocketAddr::new(host, 50000),
            resp: resp.parse().unwrap(),
            udp: false,
            event,
            state,
            established,
            reverse: false,
        };
        // A failed attempt the engine matched: predicted, and counted as a failed handshake.
        sink.attempt(
            &outcome(
                10,
                "203.0.113.8:6881",
                BroEvent::Attempt,
                ConnState::S0,
                false,
            ),
            Some(Channel::Dht),
        );
        // A failed attempt to a peer nobody announced.
        sink.attempt(
            &outcome(
                11,
                "203.0.113.9:6881",
                BroEvent::Rejected,
                ConnState::REJ,
                false,
            ),
            None,
        );
        // A handshake to the announced peer, then the same connection's later outcome.
        sink.attempt(
            &outcome(
                12,
                "203.0.113.7:51413",
                BroEvent::Established,
                ConnState::S1,
                true,
            ),
            None,
        );
        sink.attempt(
            &outcome(
                13,
                "203.0.113.7:51413",
                BroEvent::Reset,
                ConnState::RSTO,
                true,
            ),
            None,
        );
        // A handshake to a peer nobody announced.
        sink.attempt(
            &outcome(
                14,
                "203.0.113.10:80",
                BroEvent::Established,
                ConnState::S1,
                true,
            ),
            None,
        );
        let a = &sink.recorder.unwrap().hosts[&host];
        assert_eq!((a.failed_tcp, a.predicted_failed_tcp), (2, 1));
        assert_eq!(a.by_channel, BTreeMap::from([(Channel::Dht, 1)]));
        assert_eq!(
            a.predicted_at,
            [Timestamp::from_secs(10), Timestamp::from_secs(12)]
        );
    }

    #[test]
    fn minutes_to_the_hundredth_predicted_connection() {
        let times: Vec<Timestamp> = (0..150)
            .map(|i| Timestamp::from_secs(600 + 6 * i))
            .collect();
        // The 1st at 600 s, the 100th at 600 + 6·99 s: 9.9 minutes.
        let m = minutes_to_target(&times[..PREDICTED_TARGET]).unwrap();
        assert!((m - 9.9).abs() < 1e-9, "{m}");
        assert_eq!(minutes_to_target(&times[..99]), None);
        assert_eq!(minutes_to_target(&[]), None);
    }
}
