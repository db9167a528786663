//! Traffic split over workers by host (`--workers N`): which records each worker gets, which
//! results it owns, and the offline driver that runs N engines on one stream of records.
//!
//! The split is the XDP program's ([`sensor_ebpf::shard`]): a record goes to the shards of
//! both endpoints (a connection's opening segments only to its originator's), so a worker sees
//! every record of the hosts it owns. Each worker keeps everything per host for its own hosts:
//! connections and scan counters by initiator, the peers announced to them, their PPR samples.
//! Nothing is shared between workers but a counter of connection uids, so there are no locks
//! on the per-record path. The one result that crosses workers is the outcome of a reverse
//! connection (a SYN-ACK without its SYN): the tracker of the SYN-ACK's receiver reports it,
//! but the detector counts its sender; the worker hands it over ([`Engine::take_foreign`]).

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use sensor_ebpf::shard::{icmp_targets, shard_of, targets, tcp_targets, MAX_SHARDS};

use crate::conn::ConnOutcome;
use crate::detect::ScanNotice;
use crate::engine::{Engine, EngineConfig, EngineSink, EngineStats, SuppressReason};
use crate::event::{EventSink, PacketEvent, Transport};
use crate::ppr::PprSample;
use crate::predict::{Channel, PredictedPeer};
use crate::time::Timestamp;

/// The hosts one worker owns: those whose address hashes to `index` of `count`.
#[derive(Clone, Debug)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
    pub seed: u64,
    /// Connection uids, shared by the workers so that no two connections get one uid (and an
    /// offline run numbers them as one engine would).
    serials: Arc<AtomicU64>,
}

impl Shard {
    /// The `count` shards of one split (`count` in 1..=[`MAX_SHARDS`]).
    ///
    /// # Errors
    /// `count` out of range.
    pub fn split(count: u32, seed: u64) -> anyhow::Result<Vec<Self>> {
        anyhow::ensure!(
            (1..=MAX_SHARDS).contains(&count),
            "--workers must be 1 to {MAX_SHARDS}, not {count}"
        );
        let serials = Arc::new(AtomicU64::new(0));
        Ok((0..count)
            .map(|index| Self {
                index,
                count,
                seed,
                serials: serials.clone(),
            })
            .collect())
    }

    /// Whether this worker owns `ip`.
    pub fn owns(&self, ip: IpAddr) -> bool {
        shard_of(&addr_bytes(ip).0, self.seed, self.count) == self.index
    }

    /// The next connection uid (never 0).
    pub(crate) fn next_serial(&self) -> u64 {
        self.serials.fetch_add(1, Relaxed) + 1
    }

    /// A random seed for the split (see [`sensor_ebpf::shard::shard_of`]).
    pub fn random_seed() -> u64 {
        use std::hash::{BuildHasher as _, Hasher as _};
        // std's RandomState is seeded from the OS once per process, then incremented.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        h.finish()
    }
}

/// An address as the XDP program's records hold it (IPv4 in the first 4 bytes) and its IP
/// version.
pub fn addr_bytes(ip: IpAddr) -> ([u8; 16], u8) {
    match ip {
        IpAddr::V4(v4) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&v4.octets());
            (out, 4)
        }
        IpAddr::V6(v6) => (v6.octets(), 6),
    }
}

/// The shards (bit mask) a decoded record goes to: the XDP program's choice for its record.
pub fn event_targets(ev: &PacketEvent<'_>, seed: u64, n: u32) -> u32 {
    let (src, version) = addr_bytes(ev.src.ip());
    let (dst, _) = addr_bytes(ev.dst.ip());
    match &ev.transport {
        Transport::Tcp(seg) => tcp_targets(seg.flags.0, &src, &dst, version, seed, n),
        Transport::Udp(_) => targets(&src, &dst, version, seed, n),
        Transport::Icmp(icmp) => icmp_targets(
            (&src, &dst),
            (
                &addr_bytes(icmp.inner_src.ip()).0,
                &addr_bytes(icmp.inner_dst.ip()).0,
            ),
            version,
            seed,
            n,
        ),
    }
}

/// The configuration of one of `n` workers: every table's caps and memory budget divided by
/// `n`, so the configured bounds still hold for the process.
pub fn worker_config(config: &EngineConfig, n: u32) -> EngineConfig {
    let n = n.max(1) as usize;
    let mut c = config.clone();
    let div = |v: &mut usize| *v = (*v / n).max(1);
    div(&mut c.conn.max_conns);
    div(&mut c.conn.max_bytes);
    div(&mut c.prediction.max_total);
    div(&mut c.prediction.max_bytes);
    div(&mut c.ppr.max_sources);
    div(&mut c.ppr.max_bytes);
    div(&mut c.ppr.max_pairs);
    div(&mut c.trw.max_sources);
    div(&mut c.trw.max_bytes);
    div(&mut c.bro.max_sources);
    div(&mut c.bro.max_bytes);
    c
}

/// What the engines wrote during one record, before it is merged.
enum Out {
    Notice(ScanNotice),
    Suppressed(ScanNotice, SuppressReason, PprSample),
    Attempt(ConnOutcome, Option<Channel>),
    Prediction(PredictedPeer),
}

impl Out {
    /// The merge key. One engine writes in packet time; for a record, one engine fires the
    /// attempt timers due (in creation order, which the shared uid counter gives) before the
    /// record's own connection reports: `record` holds its endpoints.
    fn key(&self, record: Option<(SocketAddr, SocketAddr)>) -> (Timestamp, bool, u64) {
        match self {
            Out::Notice(n) | Out::Suppressed(n, ..) => (n.ts, false, 0),
            Out::Attempt(o, _) => {
                let own = record
                    .is_some_and(|(a, b)| (o.orig, o.resp) == (a, b) || (o.orig, o.resp) == (b, a));
                (o.ts, own, o.uid.0)
            }
            Out::Prediction(p) => (p.ts, false, 0),
        }
    }
}

/// One sink written by several engines on one thread: what they write during a record is
/// buffered, then written in time order ([`Sharded`]). Their `tick` and `finish` are left out:
/// the driver calls them once, with the engines' statistics summed.
pub struct Shared {
    pending: Rc<RefCell<Vec<Vec<Out>>>>,
    index: usize,
}

impl Shared {
    fn push(&self, out: Out) {
        self.pending.borrow_mut()[self.index].push(out);
    }
}

impl EngineSink for Shared {
    fn notice(&mut self, n: &ScanNotice) {
        self.push(Out::Notice(n.clone()));
    }
    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, ppr: &PprSample) {
        self.push(Out::Suppressed(n.clone(), reason, *ppr));
    }
    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        self.push(Out::Attempt(*o, predicted));
    }
    fn prediction(&mut self, p: &PredictedPeer) {
        self.push(Out::Prediction(*p));
    }
}

/// `n` engines fed from one stream of records (offline `--workers N`): each record goes to the
/// engines of its shards, and every engine's clock moves with every record, so tables expire
/// and attempts time out at the same records as in one engine and the results are the same.
pub struct Sharded<S: EngineSink> {
    pub engines: Vec<Engine<Shared>>,
    pub sink: S,
    /// What each engine wrote during the current record.
    pending: Rc<RefCell<Vec<Vec<Out>>>>,
    seed: u64,
    now: Timestamp,
    /// Records read, each once whatever number of engines it went to.
    records: u64,
}

impl<S: EngineSink> Sharded<S> {
    /// # Errors
    /// A bad engine configuration or worker count.
    pub fn new(config: &EngineConfig, workers: u32, seed: u64, sink: S) -> anyhow::Result<Self> {
        let pending = Rc::new(RefCell::new(
            (0..workers).map(|_| Vec::new()).collect::<Vec<_>>(),
        ));
        let config = worker_config(config, workers);
        let engines = Shard::split(workers, seed)?
            .into_iter()
            .map(|shard| {
                let sink = Shared {
                    pending: pending.clone(),
                    index: shard.index as usize,
                };
                let mut e = Engine::new(config.clone(), sink)?;
                e.set_shard(shard);
                Ok(e)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            engines,
            sink,
            pending,
            seed,
            now: Timestamp::ZERO,
            records: 0,
        })
    }

    /// The engines' statistics summed, records counted once as one engine counts them.
    pub fn stats(&self) -> EngineStats {
        let mut sum = EngineStats::default();
        for e in &self.engines {
            sum.add(&e.stats);
        }
        sum.events = self.records;
        sum
    }

    /// Writes what the engines wrote during the record in time order: attempts of one time by
    /// uid (their creation order), those due before the record's own. Only results of one
    /// time from several engines can come out in another order than one engine's (end-of-run
    /// summaries, all stamped with the last packet's time; an LSD announce's predictions).
    fn merge(&mut self, record: Option<(SocketAddr, SocketAddr)>) {
        let mut pending = self.pending.borrow_mut();
        if pending.iter().all(Vec::is_empty) {
            return;
        }
        let mut out: Vec<Out> = pending.iter_mut().flat_map(std::mem::take).collect();
        // Stable: writes of one key keep their engine's order.
        out.sort_by_key(|o| o.key(record));
        for o in &out {
            match o {
                Out::Notice(n) => self.sink.notice(n),
                Out::Suppressed(n, reason, ppr) => self.sink.suppressed(n, *reason, ppr),
                Out::Attempt(a, predicted) => self.sink.attempt(a, *predicted),
                Out::Prediction(p) => self.sink.prediction(p),
            }
        }
    }

    /// Hands reverse-connection outcomes to the worker owning their initiator.
    fn hand_over(&mut self) {
        for i in 0..self.engines.len() {
            let foreign = self.engines[i].take_foreign();
            for o in foreign {
                let owner = shard_of(
                    &addr_bytes(o.initiator().ip()).0,
                    self.seed,
                    u32::try_from(self.engines.len()).unwrap_or(1),
                ) as usize;
                self.engines[owner].accept_foreign(&o);
            }
        }
    }

    /// Packet time reached `now` without a record (see [`Engine::advance_to`]).
    pub fn advance_to(&mut self, now: Timestamp) {
        if now <= self.now {
            return;
        }
        for e in &mut self.engines {
            e.tick_to(now);
        }
        self.tick_sink(now);
        for e in &mut self.engines {
            e.run_timers();
        }
        self.hand_over();
        self.merge(None);
    }

    /// The sink's tick, with the statistics summed, as one engine gives it.
    fn tick_sink(&mut self, now: Timestamp) {
        // What expiry raised comes before the tick, as in one engine.
        self.merge(None);
        self.now = self.now.max(now);
        let stats = self.stats();
        self.sink.tick(self.now, &stats);
    }

    /// End of input: every engine's pending attempts and summaries.
    pub fn finish(&mut self) {
        for e in &mut self.engines {
            e.finish();
        }
        self.hand_over();
        self.merge(None);
        let stats = self.stats();
        self.sink.finish(self.now, &stats);
    }
}

impl<S: EngineSink> EventSink for Sharded<S> {
    fn event(&mut self, ev: &PacketEvent<'_>) {
        let n = u32::try_from(self.engines.len()).unwrap_or(1);
        let mask = event_targets(ev, self.seed, n);
        // As one engine does for each record: the expiry due first, then the sink's tick (the
        // statistics as they stand before the record), then the record.
        for e in &mut self.engines {
            e.tick_to(ev.ts);
        }
        self.records += 1;
        self.tick_sink(ev.ts);
        for (i, e) in self.engines.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                e.event(ev);
            } else {
                e.run_timers();
            }
        }
        self.hand_over();
        self.merge(Some((ev.src, ev.dst)));
    }
}

/// One sink written by several worker threads (live `--workers N`), behind a mutex: what the
/// engines write through it (notices, attempts, predictions) is little next to the records
/// they read. `tick` goes through with the workers' statistics summed, at most every
/// [`Locked::TICK`] of a worker's packet time; `finish` once, when the last worker finishes.
pub struct Locked<S> {
    inner: Arc<std::sync::Mutex<LockedInner<S>>>,
    index: usize,
    last_tick: Timestamp,
}

struct LockedInner<S> {
    sink: S,
    stats: Vec<EngineStats>,
    finished: usize,
}

impl<S> LockedInner<S> {
    fn sum(&self) -> EngineStats {
        let mut sum = EngineStats::default();
        for s in &self.stats {
            sum.add(s);
        }
        sum
    }
}

impl<S: EngineSink> Locked<S> {
    /// The logs reopen, stats rows and flushes that `tick` drives run on a scale of seconds.
    pub const TICK: crate::time::Duration = crate::time::Duration::from_millis(100);

    /// `n` handles on `sink`, one per worker.
    pub fn split(sink: S, n: usize) -> Vec<Self> {
        let inner = Arc::new(std::sync::Mutex::new(LockedInner {
            sink,
            stats: vec![EngineStats::default(); n],
            finished: 0,
        }));
        (0..n)
            .map(|index| Self {
                inner: inner.clone(),
                index,
                last_tick: Timestamp::ZERO,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LockedInner<S>> {
        // A worker that panicked holding the lock left the sink as it was between two calls:
        // still usable for the others.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: EngineSink> EngineSink for Locked<S> {
    fn notice(&mut self, n: &ScanNotice) {
        self.lock().sink.notice(n);
    }
    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, ppr: &PprSample) {
        self.lock().sink.suppressed(n, reason, ppr);
    }
    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        self.lock().sink.attempt(o, predicted);
    }
    fn prediction(&mut self, p: &PredictedPeer) {
        self.lock().sink.prediction(p);
    }
    fn tick(&mut self, now: Timestamp, stats: &EngineStats) {
        if now < self.last_tick + Self::TICK {
            return;
        }
        self.last_tick = now;
        let mut inner = self.lock();
        inner.stats[self.index] = *stats;
        let sum = inner.sum();
        inner.sink.tick(now, &sum);
    }
    fn finish(&mut self, now: Timestamp, stats: &EngineStats) {
        let mut inner = self.lock();
        inner.stats[self.index] = *stats;
        inner.finished += 1;
        if inner.finished == inner.stats.len() {
            let sum = inner.sum();
            inner.sink.finish(now, &sum);
        }
    }
}
