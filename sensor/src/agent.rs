//! The live agent: XDP pre-filter → ring → decoded events → sink, with metrics and a clean
//! detach on SIGINT/SIGTERM. SIGHUP asks the logs to reopen (logrotate's `postrotate`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use aya::programs::xdp::XdpLinkId;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::capture::record::{decode, MonotonicClock};
use crate::capture::xdp::{AttachMode, KernelCounters, XdpConfig, XdpSensor};
use crate::event::{EventSink, KindCounts};
use crate::metrics::{self, AgentStats};

/// Settings of `sensor run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub ifaces: Vec<String>,
    pub mode: AttachMode,
    pub xdp: XdpConfig,
    pub metrics: Option<SocketAddr>,
    pub metrics_allow_remote: bool,
    /// The ring is drained at least this often (records are submitted without wake-ups).
    pub drain_interval: Duration,
    /// Stop by itself after this long.
    pub duration: Option<Duration>,
    pub summary: Option<PathBuf>,
    /// Save the engine's state here, periodically and at a stop (`--state-file`).
    pub state: Option<StateConfig>,
    /// Set on SIGHUP: the Zeek logs reopen their files (see [`crate::logs::Reopen`]).
    pub log_reopen: Option<crate::logs::Reopen>,
}

/// Where and how often the live engine's state is saved.
#[derive(Clone, Debug)]
pub struct StateConfig {
    pub path: PathBuf,
    pub interval: Duration,
}

/// What a run saw, written as JSON by `--summary` and printed at exit.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub ifaces: Vec<String>,
    pub seconds: f64,
    /// Kernel pre-filter counters by name (see `sensor_ebpf::counter::NAMES`), summed over
    /// the interfaces.
    pub xdp: BTreeMap<String, u64>,
    /// The same counters per interface, by interface name (`unknown`: frames from an interface
    /// without its own counters, present only when there were any).
    #[serde(default)]
    pub xdp_by_iface: BTreeMap<String, BTreeMap<String, u64>>,
    /// Records the agent decoded, by kind.
    pub consumed: KindCounts,
    pub decode_errors: u64,
    /// Engine results.
    pub notices: u64,
    pub suppressed_predicted: u64,
    pub suppressed_ppr: u64,
    pub failed_attempts: u64,
    pub predicted_failures: u64,
    /// Records lost to each full ring, with several workers (one ring each); empty with one,
    /// whose losses are `xdp.ring_full`.
    #[serde(default)]
    pub ring_drops: Vec<u64>,
    /// Records put in each ring, copies included (several workers only).
    #[serde(default)]
    pub ring_records: Vec<u64>,
}

/// At least one interface, and no more than the kernel program has counter blocks for.
fn check_ifaces(config: &RunConfig) -> anyhow::Result<()> {
    anyhow::ensure!(!config.ifaces.is_empty(), "no interface given (--iface)");
    anyhow::ensure!(
        config.ifaces.len() <= sensor_ebpf::counter::MAX_IFACES as usize,
        "{} interfaces given; one sensor counts at most {} (--iface)",
        config.ifaces.len(),
        sensor_ebpf::counter::MAX_IFACES
    );
    Ok(())
}

/// Loads the XDP program (not attached yet) and forwards its eBPF-side log records (rare
/// paths only) into `tracing`.
fn load(config: &RunConfig) -> anyhow::Result<XdpSensor> {
    let mut sensor = XdpSensor::load(&config.xdp)?;
    match aya_log::EbpfLogger::init(sensor.ebpf_mut()) {
        Ok(logger) => {
            tokio::spawn(forward_ebpf_logs(logger));
        }
        Err(e) => tracing::warn!("eBPF logs unavailable: {e}"),
    }
    Ok(sensor)
}

/// Attaches the program to every configured interface, then gives up the privileges only
/// loading and attaching needed.
fn attach_all(sensor: &mut XdpSensor, config: &RunConfig) -> anyhow::Result<Vec<XdpLinkId>> {
    let workers = match config.xdp.shards {
        1 => "1 worker".to_string(),
        n => format!("{n} workers"),
    };
    let mut links = Vec::with_capacity(config.ifaces.len());
    for iface in &config.ifaces {
        links.push(sensor.attach(iface, config.mode)?);
        tracing::info!("attached XDP to {iface} ({} mode, {workers})", config.mode);
    }
    crate::privileges::drop_after_attach_logged()?;
    Ok(links)
}

/// Runs until a signal or `duration`; returns the final counts.
pub async fn run(
    config: RunConfig,
    stats: Arc<AgentStats>,
    sink: &mut dyn EventSink,
) -> anyhow::Result<RunSummary> {
    check_ifaces(&config)?;
    // From here on SIGHUP reopens the logs instead of killing the process (its default).
    let mut hangups = Hangups::new();
    let mut sensor = load(&config)?;
    let ring = sensor.take_ring()?;
    // Before attaching: every frame of these interfaces lands in its own counter block.
    sensor.set_ifaces(&config.ifaces)?;
    let kernel = Arc::new(Mutex::new(sensor.take_counters()?));
    let metrics_task = start_metrics(&config, &kernel, &stats).await?;

    let links = attach_all(&mut sensor, &config)?;
    let started = Instant::now();

    // SAFETY: the ring's fd stays open and unchanged for as long as the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .context("registering the ring with tokio")?;
    let clock = MonotonicClock::new();
    consume(&mut ring, &config, &clock, &stats, &mut hangups, sink).await?;

    // Detach first so the interface is clean, then take what is left in the ring.
    for link in links {
        if let Err(e) = sensor.program().detach(link) {
            tracing::warn!("detach: {e}");
        }
    }
    drain(ring.get_mut(), &clock, &stats, sink);
    if let Some(state) = &config.state {
        save_state_now(sink, &state.path);
    }
    sink.flush();
    if let Some(task) = metrics_task {
        task.abort();
    }
    let summary = summarize(&config, started, &kernel, &stats)?;
    if let Some(path) = &config.summary {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

/// Serves `/metrics` if `--metrics` asked for it.
async fn start_metrics(
    config: &RunConfig,
    kernel: &Arc<Mutex<KernelCounters>>,
    stats: &Arc<AgentStats>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = config.metrics else {
        return Ok(None);
    };
    let listener = metrics::bind(addr, config.metrics_allow_remote).await?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    let kernel = metrics::live_kernel(kernel.clone());
    let registry = Arc::new(metrics::registry(kernel, &config.ifaces, stats.clone()));
    Ok(Some(tokio::spawn(metrics::serve(listener, registry))))
}

/// Drains the ring whenever it signals records and at least every `drain_interval`, until a
/// signal or the run's `duration`.
async fn consume(
    ring: &mut AsyncFd<RingBuf<MapData>>,
    config: &RunConfig,
    clock: &MonotonicClock,
    stats: &AgentStats,
    hangups: &mut Hangups,
    sink: &mut dyn EventSink,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(config.drain_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = stop_signal(config.duration);
    tokio::pin!(stop);
    let mut saver = StateSaver::new(config.state.as_ref());
    loop {
        tokio::select! {
            reason = &mut stop => {
                tracing::info!("stopping: {reason}");
                saver.wait().await;
                return Ok(());
            }
            () = saver.due() => saver.save(sink),
            () = hangups.recv() => reopen_logs(config.log_reopen.as_ref()),
            ready = ring.readable_mut() => {
                let mut guard = ready.context("waiting on the ring")?;
                drain(guard.get_inner_mut(), clock, stats, sink);
                guard.clear_ready();
            }
            _ = tick.tick() => drain(ring.get_mut(), clock, stats, sink),
        }
    }
}

/// The final counts of a run.
fn summarize(
    config: &RunConfig,
    started: Instant,
    kernel: &Mutex<KernelCounters>,
    stats: &AgentStats,
) -> anyhow::Result<RunSummary> {
    let snap = kernel
        .lock()
        // The guard in a PoisonError is not Send, so it cannot be the error's source.
        .map_err(|_| anyhow::anyhow!("counter lock poisoned"))?
        .read()?;
    let (ring_drops, ring_records) = match stats.ring_stats.lock() {
        Ok(guard) => match guard.as_ref() {
            Some(rings) => rings.read()?,
            None => (Vec::new(), Vec::new()),
        },
        Err(_) => anyhow::bail!("ring counter lock poisoned"),
    };
    let by_name = |s: &crate::capture::CounterSnapshot| -> BTreeMap<String, u64> {
        s.iter().map(|(k, v)| (k.to_string(), v)).collect()
    };
    let mut xdp_by_iface: BTreeMap<_, _> = config
        .ifaces
        .iter()
        .zip(&snap.ifaces)
        .map(|(name, s)| (name.clone(), by_name(s)))
        .collect();
    if snap.unknown.0.iter().any(|&v| v != 0) {
        xdp_by_iface.insert("unknown".into(), by_name(&snap.unknown));
    }
    Ok(RunSummary {
        ifaces: config.ifaces.clone(),
        seconds: started.elapsed().as_secs_f64(),
        xdp: by_name(&snap.total()),
        xdp_by_iface,
        consumed: stats.consumed_counts(),
        decode_errors: stats.decode_errors(),
        notices: stats.notices.load(Relaxed),
        suppressed_predicted: stats.suppressed_predicted.load(Relaxed),
        suppressed_ppr: stats.suppressed_ppr.load(Relaxed),
        failed_attempts: stats.failed_attempts.load(Relaxed),
        predicted_failures: stats.predicted_failures.load(Relaxed),
        ring_drops,
        ring_records,
    })
}

/// Decodes everything currently in the ring.
fn drain(
    ring: &mut RingBuf<MapData>,
    clock: &MonotonicClock,
    stats: &AgentStats,
    sink: &mut dyn EventSink,
) {
    while let Some(item) = ring.next() {
        match decode(&item, clock) {
            Ok(event) => {
                stats.consumed(event.kind());
                sink.event(&event);
            }
            Err(e) => {
                stats.decode_error(&e);
                tracing::debug!("undecodable record: {e}");
            }
        }
    }
    sink.idle();
}

/// Loads `--state-file` into the fresh live engine if the file exists, then lets packet time
/// catch up with the wall clock, so that entries that expired while the sensor was down go
/// now (see `crate::state`). A file that exists but is refused stops the start: it is never
/// overwritten or trusted.
///
/// # Errors
/// The engine cannot keep state (TRW), or the file is refused.
pub fn load_state<S: crate::engine::EngineSink>(
    engine: &mut crate::engine::Engine<S>,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    engine.check_state_support()?;
    engine.set_resumable(true);
    if !path.exists() {
        tracing::info!("no state file at {} yet: starting afresh", path.display());
        return Ok(());
    }
    let loaded = engine.load_state(path)?;
    tracing::info!("loaded {}: {loaded}", path.display());
    engine.idle();
    Ok(())
}

/// The periodic state save (`--state-interval`): the engine's state is encoded between two
/// drains, on the loop that owns the engine, and written (temporary file, then rename) on a
/// blocking thread so that the ring keeps being drained meanwhile.
pub(crate) struct StateSaver {
    path: Option<PathBuf>,
    tick: Option<tokio::time::Interval>,
    writing: Option<tokio::task::JoinHandle<()>>,
}

impl StateSaver {
    pub(crate) fn new(state: Option<&StateConfig>) -> Self {
        let tick = state.map(|s| {
            let mut t =
                tokio::time::interval_at(tokio::time::Instant::now() + s.interval, s.interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        Self {
            path: state.map(|s| s.path.clone()),
            tick,
            writing: None,
        }
    }

    /// Resolves when a save is due; never without `--state-file`.
    pub(crate) async fn due(&mut self) {
        match &mut self.tick {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    pub(crate) fn save(&mut self, sink: &mut dyn EventSink) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if self.writing.as_ref().is_some_and(|w| !w.is_finished()) {
            tracing::warn!("state save skipped: the previous one is still being written");
            return;
        }
        match sink.save_state() {
            Some(Ok(bytes)) => {
                self.writing =
                    Some(tokio::task::spawn_blocking(
                        move || match crate::state::write_atomic(&path, &bytes) {
                            Ok(()) => tracing::debug!(
                                "state saved to {} ({} bytes)",
                                path.display(),
                                bytes.len()
                            ),
                            Err(e) => tracing::warn!("state save failed: {e:#}"),
                        },
                    ));
            }
            Some(Err(e)) => tracing::warn!("state save failed: {e:#}"),
            None => {}
        }
    }

    /// Lets a write in progress end before the final save replaces the file.
    pub(crate) async fn wait(&mut self) {
        if let Some(w) = self.writing.take() {
            let _ = w.await;
        }
    }
}

/// The save at a stop, after the last drain.
pub(crate) fn save_state_now(sink: &mut dyn EventSink, path: &std::path::Path) {
    match sink.save_state() {
        Some(Ok(bytes)) => match crate::state::write_atomic(path, &bytes) {
            Ok(()) => tracing::info!("state saved to {} ({} bytes)", path.display(), bytes.len()),
            Err(e) => tracing::error!("state save failed: {e:#}"),
        },
        Some(Err(e)) => tracing::error!("state save failed: {e:#}"),
        None => {}
    }
}

/// Resolves with a description of why to stop: SIGINT, SIGTERM, or the duration elapsing.
async fn stop_signal(duration: Option<Duration>) -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("no SIGTERM handler: {e}");
            return std::future::pending().await;
        }
    };
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        () = timer => "duration elapsed",
    }
}

/// SIGHUP, which no longer kills the process: it only asks the logs to reopen.
struct Hangups(Option<tokio::signal::unix::Signal>);

impl Hangups {
    fn new() -> Self {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Self(Some(s)),
            Err(e) => {
                tracing::warn!("no SIGHUP handler: {e}");
                Self(None)
            }
        }
    }

    /// Resolves on each SIGHUP; never if there is no handler.
    async fn recv(&mut self) {
        match &mut self.0 {
            Some(s) => {
                if s.recv().await.is_none() {
                    // The signal stream ended: stop listening rather than spin.
                    self.0 = None;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// SIGHUP: the logs reopen on the engine's next tick (within one drain interval).
fn reopen_logs(reopen: Option<&crate::logs::Reopen>) {
    if let Some(r) = reopen {
        tracing::info!("SIGHUP: reopening the logs");
        r.request();
    } else {
        tracing::info!("SIGHUP: no logs to reopen (--log-dir not set)");
    }
}

async fn forward_ebpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring's fd for the lifetime of the AsyncFd.
    let mut logger = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("eBPF logs unavailable: {e}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = logger.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// The live engine's output: notices are logged and counted, and written as JSON lines if asked;
/// with `--log-dir`, everything also goes to the Zeek logs.
pub struct LiveNotices {
    pub stats: Arc<AgentStats>,
    pub out: Option<std::io::BufWriter<std::fs::File>>,
    pub logs: Option<crate::logs::LogSink>,
    /// When the logs were last flushed: live, lines reach the files within a second.
    last_flush: Instant,
}

impl LiveNotices {
    pub fn new(
        stats: Arc<AgentStats>,
        out: Option<std::io::BufWriter<std::fs::File>>,
        logs: Option<crate::logs::LogSink>,
    ) -> Self {
        Self {
            stats,
            out,
            logs,
            last_flush: Instant::now(),
        }
    }
}

impl crate::engine::EngineSink for LiveNotices {
    fn notice(&mut self, n: &crate::detect::ScanNotice) {
        self.stats.notices.fetch_add(1, Relaxed);
        tracing::warn!(target: "notice", note = n.note.as_str(), src = %n.src, "{}", n.msg);
        self.logs.notice(n);
        if let Some(out) = &mut self.out {
            use std::io::Write as _;
            let ok = serde_json::to_writer(&mut *out, n).is_ok()
                && out.write_all(b"\n").is_ok()
                && out.flush().is_ok();
            if !ok {
                tracing::warn!("cannot write notice to the notices file");
            }
        }
    }

    fn suppressed(
        &mut self,
        n: &crate::detect::ScanNotice,
        reason: crate::engine::SuppressReason,
        ppr: &crate::ppr::PprSample,
    ) {
        let counter = match reason {
            crate::engine::SuppressReason::Predicted => &self.stats.suppressed_predicted,
            crate::engine::SuppressReason::Ppr => &self.stats.suppressed_ppr,
        };
        counter.fetch_add(1, Relaxed);
        self.logs.suppressed(n, reason, ppr);
        tracing::info!(target: "notice", note = n.note.as_str(), reason = reason.as_str(), "suppressed: {}", n.msg);
    }

    fn attempt(
        &mut self,
        o: &crate::conn::ConnOutcome,
        predicted: Option<crate::predict::Channel>,
    ) {
        self.logs.attempt(o, predicted);
        if o.failed() {
            self.stats.failed_attempts.fetch_add(1, Relaxed);
            if predicted.is_some() {
                self.stats.predicted_failures.fetch_add(1, Relaxed);
            }
        }
    }

    fn prediction(&mut self, p: &crate::predict::PredictedPeer) {
        self.stats.predictions.fetch_add(1, Relaxed);
        self.logs.prediction(p);
    }

    fn tick(&mut self, now: crate::time::Timestamp, stats: &crate::engine::EngineStats) {
        let Some(logs) = &mut self.logs else {
            return;
        };
        logs.tick(now, stats);
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.last_flush = Instant::now();
            logs.flush();
        }
    }

    fn finish(&mut self, now: crate::time::Timestamp, stats: &crate::engine::EngineStats) {
        // Final stats row, `#close`, flush (SIGINT/SIGTERM and --duration end here).
        self.logs.finish(now, stats);
    }
}

/// `sensor run --workers N` (N > 1): one ring per worker, split by host in the XDP program
/// (`sensor_ebpf::shard`), and one thread per ring that reads it and runs its own engine.
/// Nothing on a worker's per-record path is shared with another: each reads only its ring,
/// and its engine holds only its hosts' state (see `crate::shard`). What is shared: the agent's
/// counters (atomics), the logs and notice file (behind one mutex, taken per result, not per
/// record), the connection uid counter (an atomic), and the outcomes of reverse connections,
/// handed to their initiator's worker over a channel.
///
/// # Errors
/// As [`run`]; also `--state-file` (the state file holds one engine).
pub async fn run_sharded<S: crate::engine::EngineSink + Send + 'static>(
    config: RunConfig,
    stats: Arc<AgentStats>,
    engines: Vec<crate::engine::Engine<S>>,
) -> anyhow::Result<RunSummary> {
    use std::sync::atomic::AtomicBool;
    check_ifaces(&config)?;
    anyhow::ensure!(
        config.state.is_none(),
        "--state-file holds one engine's state: use it with --workers 1"
    );
    anyhow::ensure!(
        u32::try_from(engines.len()).ok() == Some(config.xdp.shards),
        "one engine per ring"
    );
    let mut hangups = Hangups::new();
    let mut sensor = load(&config)?;
    let rings = sensor.take_rings()?;
    *stats
        .ring_stats
        .lock()
        .map_err(|_| anyhow::anyhow!("ring counter lock poisoned"))? =
        Some(sensor.take_ring_stats()?);
    sensor.set_ifaces(&config.ifaces)?;
    let kernel = Arc::new(Mutex::new(sensor.take_counters()?));
    let metrics_task = start_metrics(&config, &kernel, &stats).await?;
    let links = attach_all(&mut sensor, &config)?;
    let started = Instant::now();

    let n = engines.len();
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n).map(|_| std::sync::mpsc::channel()).unzip();
    let gauges: Vec<Arc<crate::engine::TableGauges>> = (0..n).map(|_| Arc::default()).collect();
    let clock = MonotonicClock::new();
    let mut workers = Vec::with_capacity(n);
    for (index, ((ring, mut engine), inbox)) in
        rings.into_iter().zip(engines).zip(receivers).enumerate()
    {
        engine.export_tables(gauges[index].clone());
        let worker = Worker {
            index,
            seed: config.xdp.shard_seed,
            ring,
            inbox,
            outboxes: senders.clone(),
            stop: stop.clone(),
            barrier: barrier.clone(),
            stats: stats.clone(),
            clock,
            drain_interval: config.drain_interval,
        };
        workers.push(
            std::thread::Builder::new()
                .name(format!("sensor-worker-{index}"))
                .spawn(move || worker.run(engine))
                .context("starting a worker thread")?,
        );
    }
    drop(senders);

    let publish = |stats: &AgentStats| {
        stats.tables.store_sum(&gauges);
    };
    {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let stop_signal = stop_signal(config.duration);
        tokio::pin!(stop_signal);
        loop {
            tokio::select! {
                reason = &mut stop_signal => {
                    tracing::info!("stopping: {reason}");
                    break;
                }
                () = hangups.recv() => reopen_logs(config.log_reopen.as_ref()),
                _ = tick.tick() => {
                    publish(&stats);
                    if workers.iter().any(std::thread::JoinHandle::is_finished) {
                        tracing::error!("a worker stopped early: stopping");
                        break;
                    }
                }
            }
        }
    }
    // Detach first, so that what the workers drain last is all there will be.
    for link in links {
        if let Err(e) = sensor.program().detach(link) {
            tracing::warn!("detach: {e}");
        }
    }
    stop.store(true, Relaxed);
    let mut failed = None;
    for w in workers {
        match tokio::task::spawn_blocking(move || w.join()).await {
            Ok(Ok(())) => {}
            _ => failed = Some("a worker thread panicked"),
        }
    }
    publish(&stats);
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(e) = failed {
        anyhow::bail!(e);
    }
    let summary = summarize(&config, started, &kernel, &stats)?;
    if let Some(path) = &config.summary {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

/// One worker thread: its ring, the channels to hand reverse-connection outcomes over.
struct Worker {
    index: usize,
    seed: u64,
    ring: RingBuf<MapData>,
    inbox: std::sync::mpsc::Receiver<crate::conn::ConnOutcome>,
    outboxes: Vec<std::sync::mpsc::Sender<crate::conn::ConnOutcome>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    barrier: Arc<std::sync::Barrier>,
    stats: Arc<AgentStats>,
    clock: MonotonicClock,
    drain_interval: Duration,
}

impl Worker {
    /// Drains the ring whenever the kernel wakes it and at least every drain interval, until
    /// the stop flag; then a last drain (XDP is detached by then) and the engine's end.
    fn run<S: crate::engine::EngineSink>(mut self, mut engine: crate::engine::Engine<S>) {
        use std::os::fd::AsRawFd as _;
        let fd = self.ring.as_raw_fd();
        let timeout = i32::try_from(self.drain_interval.as_millis()).unwrap_or(i32::MAX);
        while !self.stop.load(Relaxed) {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call; the ring's fd stays open
            // while `self.ring` lives. An error (EINTR) only means an early drain.
            unsafe { libc::poll(&raw mut pfd, 1, timeout) };
            drain(&mut self.ring, &self.clock, &self.stats, &mut engine);
            self.exchange(&mut engine);
        }
        drain(&mut self.ring, &self.clock, &self.stats, &mut engine);
        self.exchange(&mut engine);
        // Every worker has handed its last outcomes over before any takes its last ones in.
        self.barrier.wait();
        self.exchange(&mut engine);
        engine.flush();
        tracing::debug!("worker {} done", self.index);
    }

    /// Hands this worker's reverse-connection outcomes to their owners and takes in theirs.
    fn exchange<S: crate::engine::EngineSink>(&self, engine: &mut crate::engine::Engine<S>) {
        let n = u32::try_from(self.outboxes.len()).unwrap_or(1);
        for o in engine.take_foreign() {
            let (addr, _) = crate::shard::addr_bytes(o.initiator().ip());
            let owner = sensor_ebpf::shard::shard_of(&addr, self.seed, n) as usize;
            // A worker gone (it panicked) takes nothing more: the outcome is lost with it.
            let _ = self.outboxes[owner].send(o);
        }
        while let Ok(o) = self.inbox.try_recv() {
            engine.accept_foreign(&o);
        }
    }
}
