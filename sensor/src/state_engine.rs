//! The engine's side of state across restarts (the format is [`crate::state`]): which of its
//! tables go into the file, and how they are put back. A child module of `engine`, so that the
//! engine's fields stay private.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{bail, ensure, Context as _};

use super::{Detector, Engine, EngineSink};
use crate::detect::BroScan;
use crate::state::{
    self, Det, EngineClock, Loaded, Meta, Ppr, Record, RecordOut, SavedNotice, Writer,
};
use crate::time::Timestamp;

fn bro(d: &Detector) -> anyhow::Result<&BroScan> {
    match d {
        Detector::Bro(b) => Ok(b),
        Detector::Trw(_) => bail!("state files hold the Bro detector's tables only, not TRW's"),
    }
}

fn bro_mut(d: &mut Detector) -> anyhow::Result<&mut BroScan> {
    match d {
        Detector::Bro(b) => Ok(b),
        Detector::Trw(_) => bail!("state files hold the Bro detector's tables only, not TRW's"),
    }
}

impl<S: EngineSink> Engine<S> {
    /// With a state file: the end of input (a stop) does not close the run. Pending attempts
    /// are not forced out and no end-of-run summaries are raised, since the run continues
    /// from the saved state after a restart and reports them there, once.
    pub fn set_resumable(&mut self, on: bool) {
        self.resumable = on;
    }

    /// Whether the engine can save its state (it runs the Bro detector).
    ///
    /// # Errors
    /// With the TRW detector, whose tables are not saved.
    pub fn check_state_support(&self) -> anyhow::Result<()> {
        bro(&self.detector).map(|_| ())
    }

    /// The whole state file image (see [`crate::state`]).
    ///
    /// # Errors
    /// With the TRW detector, or if a record cannot be encoded.
    pub fn encode_state(&self) -> anyhow::Result<Vec<u8>> {
        let meta = Meta {
            saved_at: self.now,
            saved_wall: Timestamp::from_system(std::time::SystemTime::now()),
            sensor: env!("CARGO_PKG_VERSION").to_string(),
            suppress: suppress_name(self),
        };
        let mut w = Writer::new(&meta)?;
        w.push(&RecordOut::Engine(EngineClock {
            now: self.now,
            last_expire: self.last_expire,
        }))?;
        for p in &self.predictions.export() {
            w.push(&RecordOut::Prediction(p))?;
        }
        let (clock, conns) = self.conns.export();
        w.push(&RecordOut::ConnClock(clock))?;
        for c in &conns {
            w.push(&RecordOut::Conn(c))?;
        }
        // Sources any saved table holds: the per-(source, notice) counts of others are not
        // saved, so that the file stays bounded by the tables' caps.
        let mut held: HashSet<IpAddr> = HashSet::new();
        let detectors = [
            (Det::Filtered, Some(&self.detector)),
            (Det::Baseline, self.baseline.as_ref()),
        ];
        for (which, d) in detectors {
            let Some(d) = d else { continue };
            let (now, srcs) = bro(d)?.export();
            w.push(&RecordOut::BroClock(which, now))?;
            for (ip, s) in srcs {
                held.insert(ip);
                w.push(&RecordOut::BroSource(which, ip, s))?;
            }
        }
        for (which, t) in [(Ppr::Gate, &self.ppr), (Ppr::Shape, &self.shape)] {
            let (now, srcs) = t.export();
            w.push(&RecordOut::PprClock(which, now))?;
            for (ip, s) in srcs {
                held.insert(ip);
                w.push(&RecordOut::PprSource(which, ip, s))?;
            }
        }
        let mut withheld: Vec<_> = self.withheld.0.iter().collect();
        withheld.sort_unstable_by_key(|(ip, _)| **ip);
        for (ip, notices) in withheld {
            held.insert(*ip);
            for n in notices {
                w.push(&RecordOut::Withheld(n.into()))?;
            }
        }
        // Per (source, notice): kept where a withheld notice may need the counts, or where a
        // suppression interval runs; the rest is rebuilt by the detectors' restored state.
        let mut raised: Vec<_> = self
            .raised
            .map
            .iter()
            .filter(|((ip, _), e)| held.contains(ip) || e.reported.is_some())
            .collect();
        raised.sort_unstable_by_key(|((ip, note), _)| (*ip, note.as_str()));
        for (&(ip, note), e) in raised {
            let reported = e.reported.as_deref().map(SavedNotice::from);
            w.push(&RecordOut::Raised(
                ip, note, e.filtered, e.baseline, reported,
            ))?;
        }
        w.finish()
    }

    /// Saves the state to `path` atomically; returns the file's size.
    ///
    /// # Errors
    /// As [`Engine::encode_state`], or the file cannot be written.
    pub fn save_state(&self, path: &Path) -> anyhow::Result<u64> {
        let bytes = self.encode_state()?;
        state::write_atomic(path, &bytes)?;
        Ok(bytes.len() as u64)
    }

    /// Reads, checks and puts back a state file into this fresh engine. Nothing is applied
    /// unless the whole file checks out.
    ///
    /// # Errors
    /// The file is refused (see [`state::decode`]), was written for another `--suppress`, or
    /// this engine runs TRW.
    pub fn load_state(&mut self, path: &Path) -> anyhow::Result<Loaded> {
        let (meta, records) = state::read(path)?;
        self.restore_state(&meta, records)
            .with_context(|| format!("{}: refused", path.display()))
    }

    /// Puts back decoded records (see [`Engine::load_state`]).
    ///
    /// # Errors
    /// As [`Engine::load_state`].
    pub fn restore_state(&mut self, meta: &Meta, records: Vec<Record>) -> anyhow::Result<Loaded> {
        self.check_state_support()?;
        let ours = suppress_name(self);
        ensure!(
            meta.suppress == ours,
            "the state was saved with --suppress {}, this run uses --suppress {ours}",
            meta.suppress
        );
        ensure!(
            self.stats.events == 0,
            "a state file is loaded into a fresh engine only"
        );
        let mut loaded = Loaded {
            saved_at: meta.saved_at,
            ..Loaded::default()
        };
        let mut bro_srcs: [Vec<_>; 2] = [Vec::new(), Vec::new()];
        let mut bro_now = [Timestamp::ZERO; 2];
        let mut ppr_srcs: [Vec<_>; 2] = [Vec::new(), Vec::new()];
        let mut ppr_now = [Timestamp::ZERO; 2];
        let mut conns = Vec::new();
        let mut conn_clock = None;
        for r in records {
            match r {
                Record::Meta(_) | Record::End(_) => {}
                Record::Engine(c) => {
                    self.now = self.now.max(c.now);
                    self.last_expire = c.last_expire;
                    self.last_publish = c.now;
                }
                Record::Prediction(p) => {
                    self.predictions.restore(&p);
                    loaded.predictions += 1;
                }
                Record::ConnClock(c) => conn_clock = Some(c),
                Record::Conn(c) => conns.push(c),
                Record::BroClock(d, now) => bro_now[d as usize] = now,
                Record::BroSource(d, ip, s) => bro_srcs[d as usize].push((ip, *s)),
                Record::PprClock(p, now) => ppr_now[p as usize] = now,
                Record::PprSource(p, ip, s) => ppr_srcs[p as usize].push((ip, *s)),
                Record::Withheld(n) => {
                    self.withheld.hold(n.into());
                    loaded.withheld += 1;
                }
                Record::Raised(ip, note, f, b, reported) => {
                    let e = self.raised.entry(ip, note, meta.saved_at);
                    (e.filtered, e.baseline) = (f, b);
                    e.reported = reported.map(|n| Box::new(n.into()));
                }
            }
        }
        loaded.connections = conns.len() as u64;
        if let Some(clock) = conn_clock {
            self.conns.restore(clock, conns);
        }
        let [filtered, baseline] = bro_srcs;
        loaded.scan_sources = filtered.len() as u64;
        bro_mut(&mut self.detector)?.restore(bro_now[Det::Filtered as usize], filtered);
        if let Some(b) = &mut self.baseline {
            bro_mut(b)?.restore(bro_now[Det::Baseline as usize], baseline);
        }
        let [gate, shape] = ppr_srcs;
        loaded.ppr_sources = gate.len() as u64;
        self.ppr.restore(ppr_now[Ppr::Gate as usize], gate);
        self.shape.restore(ppr_now[Ppr::Shape as usize], shape);
        // A stale file's entries go at the first expiry pass, which the next packet (or, live,
        // the wall clock) runs as soon as packet time is TABLE_EXPIRE_INTERVAL past the save's.
        self.publish();
        Ok(loaded)
    }
}

fn suppress_name<S: EngineSink>(e: &Engine<S>) -> String {
    format!("{:?}", e.config.suppress).to_lowercase()
}
