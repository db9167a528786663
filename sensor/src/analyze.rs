//! Offline analysis: capture files through the pre-filter and the engine, as `sensor analyze`.

use std::path::{Path, PathBuf};

use crate::capture::pcap::FilterConfig;
use crate::capture::pcap::{self, ReadReport};
use crate::capture::CounterSnapshot;
use crate::engine::{Engine, EngineConfig, EngineSink};
use crate::event::EventSink;

/// What reading the inputs produced, besides the engine's own output.
#[derive(Debug, Default)]
pub struct AnalyzeReport {
    /// Pre-filter counters over all inputs.
    pub counters: CounterSnapshot,
    /// What the capture reader counted over all inputs: cut frames, unsupported link types.
    pub capture: ReadReport,
    /// Frames read per input that could be read.
    pub frames: Vec<(PathBuf, u64)>,
    /// Inputs that ended in damage: (file, what went wrong). Their frames before it were used.
    pub damaged: Vec<(PathBuf, String)>,
    /// Inputs that could not be read at all (missing, a directory, not a capture): (file, why).
    /// The other inputs were analysed without them.
    pub unreadable: Vec<(PathBuf, String)>,
    /// Per input, what it held that the sensor cannot read (an unsupported link type).
    pub warnings: Vec<(PathBuf, String)>,
}

impl AnalyzeReport {
    /// Records one input's outcome: its counters and reading report, or why it could not be
    /// read.
    pub fn add_input(
        &mut self,
        path: &Path,
        outcome: anyhow::Result<(CounterSnapshot, ReadReport)>,
    ) {
        match outcome {
            Ok((counters, read)) => {
                for (total, n) in self.counters.0.iter_mut().zip(counters.0) {
                    *total += n;
                }
                self.capture.add(&read);
                self.frames.push((path.to_path_buf(), read.frames));
                for warning in read.warnings() {
                    self.warnings.push((path.to_path_buf(), warning));
                }
                if let Some(err) = read.error {
                    self.damaged.push((path.to_path_buf(), err));
                }
            }
            Err(e) => self.unreadable.push((path.to_path_buf(), format!("{e:#}"))),
        }
    }

    /// Whether any input could be read (the results cover something).
    pub fn read_any(&self) -> bool {
        !self.frames.is_empty()
    }

    /// The offline commands' exit status: 1 if an input could not be read at all, else 2 if
    /// one ended in damage, else 0. Cut frames and unsupported link types are counted and
    /// warned about, not errors.
    pub fn exit_status(&self) -> i32 {
        if !self.unreadable.is_empty() {
            1
        } else if !self.damaged.is_empty() {
            2
        } else {
            0
        }
    }

    /// What to tell the user on stderr, one line each, without the program name: unreadable
    /// inputs, damaged ones, unsupported link types, in input order within each kind.
    pub fn diagnostics(&self) -> Vec<String> {
        let unreadable = self.unreadable.iter().map(|(_, e)| e.clone());
        let damaged = self.damaged.iter().map(|(path, err)| {
            let frames = self
                .frames
                .iter()
                .find(|(p, _)| p == path)
                .map_or(0, |(_, n)| *n);
            format!(
                "warning: {}: {err}; results cover the {frames} frames before it",
                path.display()
            )
        });
        let warnings = self
            .warnings
            .iter()
            .map(|(path, w)| format!("warning: {}: {w}", path.display()));
        unreadable.chain(damaged).chain(warnings).collect()
    }
}

/// Runs `inputs`, in the order given, as one stream of packet time through a fresh engine.
/// An input that cannot be read at all (missing, a directory, not a capture) is recorded in
/// `AnalyzeReport::unreadable` and the others still run; a damaged one is reported and its
/// frames up to the damage still count. `Err` only for a bad engine configuration.
pub fn analyze<S: EngineSink>(
    inputs: &[PathBuf],
    filter: impl Into<FilterConfig>,
    config: EngineConfig,
    sink: S,
) -> anyhow::Result<(Engine<S>, AnalyzeReport)> {
    let filter = filter.into().with_udp_scan(config.conn.udp);
    let mut engine = Engine::new(config, sink)?;
    let report = feed(&mut engine, inputs, filter);
    engine.finish();
    Ok((engine, report))
}

/// What reads a stream of records in packet time: one engine, or several sharing the work
/// (`--workers`, [`crate::shard::Sharded`]).
pub trait Feed {
    fn event(&mut self, ev: &crate::event::PacketEvent<'_>);
    /// Packet time reached `ts` without a record (a frame the pre-filter kept back).
    fn advance_to(&mut self, ts: crate::time::Timestamp);
}

impl<S: EngineSink> Feed for Engine<S> {
    fn event(&mut self, ev: &crate::event::PacketEvent<'_>) {
        EventSink::event(self, ev);
    }
    fn advance_to(&mut self, ts: crate::time::Timestamp) {
        Engine::advance_to(self, ts);
    }
}

impl<S: EngineSink> Feed for crate::shard::Sharded<S> {
    fn event(&mut self, ev: &crate::event::PacketEvent<'_>) {
        EventSink::event(self, ev);
    }
    fn advance_to(&mut self, ts: crate::time::Timestamp) {
        crate::shard::Sharded::advance_to(self, ts);
    }
}

/// Runs `inputs` through `engine` as [`analyze`] does, without ending the run: the caller
/// finishes the engine, or saves its state to continue later (`--state-out`).
pub fn feed(
    engine: &mut impl Feed,
    inputs: &[PathBuf],
    filter: impl Into<FilterConfig>,
) -> AnalyzeReport {
    let filter = filter.into();
    let mut report = AnalyzeReport::default();
    let progress = Progress::new(inputs);
    for path in inputs {
        let outcome = pcap::open(path).and_then(|file| {
            let reader = std::io::BufReader::with_capacity(1 << 16, progress.bar.wrap_read(file));
            pcap::prefilter_reader_timed(&path.display().to_string(), reader, filter, |seen| {
                match seen {
                    pcap::Seen::Event(ev) => engine.event(ev),
                    pcap::Seen::Time(ts) => engine.advance_to(ts),
                }
            })
        });
        report.add_input(path, outcome);
    }
    progress.bar.finish_and_clear();
    report
}

/// A byte-based progress bar on stderr, shown only when stderr is a terminal and the input is
/// large enough to take a while.
struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    const MIN_BYTES: u64 = 64 << 20;

    fn new(inputs: &[PathBuf]) -> Self {
        let total: u64 = inputs
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let bar =
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) && total >= Self::MIN_BYTES {
                let bar = indicatif::ProgressBar::new(total);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style);
                }
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
        Self { bar }
    }
}
