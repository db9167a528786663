//! Offline analysis: capture files through the pre-filter and the engine, as `sensor analyze`.

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
    for path in inputs {
        let (counters, read) = pcap::prefilter_file(path, snaplen, |ev| engine.event(ev))?;
        for (total, n) in report.counters.0.iter_mut().zip(counters.0) {
            *total += n;
        }
        report.frames.push((path.clone(), read.frames));
        if let Some(err) = read.error {
            report.damaged.push((path.clone(), err));
        }
    }
    engine.finish();
    Ok((engine, report))
}
