//! The classified UDP policy changes nothing the detector concludes: the same predictions,
//! attempts and notices as with every UDP payload forwarded (the full policy), on a fixture
//! cut from a lab capture of real clients (`tests/fixtures/udp-policy-bt-heavy-36s-5s.pcap`:
//! seconds 36-41 of the bt-heavy lab run, cut by `cut-fixture --window 36 5`) and, in `corpus`, on every
//! shared capture. Unprivileged; offline (the XDP program runs the same policy code).

use std::path::{Path, PathBuf};

use sensor::capture::pcap::{self, FilterConfig, Seen};
use sensor::capture::CounterSnapshot;
use sensor::conn::ConnOutcome;
use sensor::detect::ScanNotice;
use sensor::engine::{Engine, EngineConfig, EngineSink, Suppress, SuppressReason};
use sensor::ppr::PprSample;
use sensor::predict::{Channel, PredictedPeer};
use sensor_ebpf::{counter, udp_policy};

/// Everything the engine concludes, in order, as text.
#[derive(Default)]
struct Record {
    lines: Vec<String>,
    predictions: usize,
}

impl EngineSink for Record {
    fn notice(&mut self, n: &ScanNotice) {
        self.lines.push(format!("notice {n:?}"));
    }
    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, _: &PprSample) {
        self.lines.push(format!("suppressed {reason:?} {n:?}"));
    }
    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        self.lines.push(format!("attempt {o:?} {predicted:?}"));
    }
    fn prediction(&mut self, p: &PredictedPeer) {
        self.predictions += 1;
        self.lines.push(format!("prediction {p:?}"));
    }
}

/// One capture through the pre-filter with `policy` and an engine in `suppress` mode.
fn run(path: &Path, policy: u32, suppress: Suppress) -> (Record, CounterSnapshot) {
    let config = EngineConfig {
        suppress,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(config, Record::default()).unwrap();
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let filter = FilterConfig {
        snaplen: sensor_ebpf::DEFAULT_SNAPLEN,
        udp_policy: policy,
    };
    let (counters, report) = pcap::prefilter_reader_timed(
        &path.display().to_string(),
        file,
        filter,
        |seen| match seen {
            Seen::Event(ev) => sensor::event::EventSink::event(&mut engine, ev),
            Seen::Time(ts) => engine.advance_to(ts),
        },
    )
    .unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    engine.finish();
    (engine.sink, counters)
}

/// Compares the full and the classified policy on `path`; returns the UDP record bytes each
/// forwarded and the predictions made.
fn same_conclusions(path: &Path) -> (u64, u64, usize) {
    let mut bytes = (0, 0);
    let mut predictions = 0;
    for suppress in [Suppress::All, Suppress::None] {
        let (full, full_counters) = run(path, udp_policy::FULL, suppress);
        let (classified, counters) = run(path, udp_policy::CLASSIFIED, suppress);
        assert_eq!(
            full.lines.len(),
            classified.lines.len(),
            "{}: {suppress:?}",
            path.display()
        );
        for (a, b) in full.lines.iter().zip(&classified.lines) {
            assert_eq!(a, b, "{}: {suppress:?}", path.display());
        }
        assert_eq!(
            full_counters.get(counter::BYTES_SEEN),
            counters.get(counter::BYTES_SEEN)
        );
        assert_eq!(
            full_counters.get(counter::REC_UDP),
            counters.get(counter::REC_UDP) + counters.get(counter::UDP_UNCLASSIFIED),
            "{}: a UDP datagram is forwarded or withheld",
            path.display()
        );
        bytes = (
            full_counters.get(counter::BYTES_UDP),
            counters.get(counter::BYTES_UDP),
        );
        predictions = full.predictions;
    }
    (bytes.0, bytes.1, predictions)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/udp-policy-bt-heavy-36s-5s.pcap")
}

#[test]
fn classified_udp_changes_nothing_on_a_lab_fixture() {
    let (full, classified, predictions) = same_conclusions(&fixture());
    // The fixture is real coordination traffic (DHT, trackers, PEX, uTP SYNs), with
    // predictions made from it; in this window every datagram has a coordination shape.
    assert!(predictions > 1000, "{predictions} predictions");
    assert!(
        classified <= full,
        "UDP record bytes {classified} vs {full}"
    );
}

mod corpus {
    use super::*;

    /// Every capture of the shared corpus: the same conclusions under both policies.
    #[test]
    fn classified_udp_changes_nothing_on_the_corpus() {
        let dir = sensor_tests::corpus_dir();
        let mut files = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap")
                {
                    files.push(p);
                }
            }
        }
        files.sort();
        assert!(files.len() > 50, "{} captures", files.len());
        let (mut full, mut classified, mut predictions) = (0, 0, 0);
        for f in files {
            // A capture that is not readable through (damaged) is the pcap tests' business.
            if pcap::read_frames(&f, |_, _| {}).map_or(true, |r| r.error.is_some()) {
                continue;
            }
            let (a, b, p) = same_conclusions(&f);
            full += a;
            classified += b;
            predictions += p;
        }
        assert!(predictions > 5_000, "{predictions} predictions");
        assert!(classified < full, "UDP record bytes {classified} vs {full}");
    }
}
