//! Offline analysis: capture files through the pre-filter and the engine, as `sensor analyze`.

use anyhow::Context as _;
use std::path::PathBuf;

use crate::capture::{pcap, CounterSnapshot};
use crate::engine::{Engine, EngineConfig, EngineSink};
use crate::event::EventSink;

/// What reading the inputs produced, besides the engine's own output.
#[derive(Debug, Default)]
pub struct AnalyzeReport {
    /// Pre-filter counters over all inputs.
    pub counters: CounterSnapshot,
    /// Frames read per input.
    pub frames: Vec<(PathBuf, u64)>,
    /// Inputs that ended in damage: (file, what went wrong). Their frames before it were used.
    pub damaged: Vec<(PathBuf, String)>,
}

/// Runs `inputs`, in the order given, as one stream of packet time through a fresh engine.
/// A file that is not a capture at all is an error; a damaged one is reported and its frames
/// up to the damage still count.
pub fn analyze<S: EngineSink>(
    inputs: &[PathBuf],
    snaplen: u32,
    config: EngineConfig,
    sink: S,
) -> anyhow::Result<(Engine<S>, AnalyzeReport)> {
    let mut engine = Engine::new(config, sink)?;
    let mut report = AnalyzeReport::default();
    let progress = Progress::new(inputs);
    for path in inputs {
        let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        let reader = std::io::BufReader::with_capacity(1 << 16, progress.bar.wrap_read(file));
        let (counters, read) =
            pcap::prefilter_reader(&path.display().to_string(), reader, snaplen, |ev| {
                engine.event(ev);
            })?;
        for (total, n) in report.counters.0.iter_mut().zip(counters.0) {
            *total += n;
        }
        report.frames.push((path.clone(), read.frames));
        if let Some(err) = read.error {
            report.damaged.push((path.clone(), err));
        }
    }
    progress.bar.finish_and_clear();
    engine.finish();
    Ok((engine, report))
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
