//! Zeek-style logs: `notice.log` (Zeek's notice fields), `attempts.log` (like `conn.log`, one
//! line per connection outcome, with `bt_predicted` and the predicting channel),
//! `predictions.log`, `suppressed.log` and `stats.log`. notice, suppressed and attempts lines
//! carry the connection's `uid`, so they join as Zeek's logs do. TSV with Zeek's header
//! (`#separator` … `#open`, `#fields`, `#types`) and `#close` line, timestamps in UTC; or JSON
//! lines, fields in the log's order, unset ones omitted, times and doubles with 6 decimals.

use std::borrow::Cow;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use serde::ser::{Error as _, SerializeMap as _};

use crate::conn::ConnOutcome;
use crate::detect::{Proto, ScanNotice};
use crate::engine::{EngineSink, EngineStats, SuppressReason};
use crate::event::Timestamp;
use crate::ppr::PprSample;
use crate::predict::{Channel, PredictedPeer};
use crate::time::Duration;

/// Field names and Zeek types of one log.
type Fields = &'static [(&'static str, &'static str)];

/// One log file.
struct Log {
    path: PathBuf,
    name: &'static str,
    out: BufWriter<File>,
    json: bool,
    fields: Fields,
    /// `#close` written (or, for JSON, flushed for good).
    closed: bool,
}

/// A field value, typed as Zeek writes it.
enum Val<'a> {
    Time(Timestamp),
    Str(Cow<'a, str>),
    Addr(std::net::IpAddr),
    Port(u16),
    Count(u64),
    Double(f64),
    Interval(Duration),
    Bool(bool),
    /// A `set[...]`: TSV joins it with `,`, JSON writes an array.
    Set(&'a [&'a str]),
    Unset,
}

impl Val<'_> {
    fn str(s: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(s))
    }

    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Self) -> Self {
        v.map_or(Val::Unset, f)
    }
}

/// Zeek's `#open`/`#close` time format, in UTC.
const HEADER_TIME: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]-[hour]-[minute]-[second]");

fn header_time() -> String {
    time::OffsetDateTime::now_utc()
        .format(HEADER_TIME)
        .unwrap_or_else(|_| "-".into())
}

/// A fixed-precision JSON number: Zeek writes times and intervals with 6 decimals.
fn fixed(x: f64) -> Option<Box<serde_json::value::RawValue>> {
    if !x.is_finite() {
        return None;
    }
    serde_json::value::RawValue::from_string(format!("{x:.6}")).ok()
}

/// One log line as a JSON object: fields in the log's order (not alphabetical), unset fields
/// omitted, as Zeek's JSON writer does.
struct Row<'a>(Fields, &'a [Val<'a>]);

impl serde::Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for ((name, _), v) in self.0.iter().zip(self.1) {
            let raw = |x: f64| fixed(x).ok_or_else(|| S::Error::custom("not a finite number"));
            match v {
                Val::Time(t) => map.serialize_entry(name, &*raw(t.as_secs_f64())?)?,
                Val::Double(d) if d.is_finite() => map.serialize_entry(name, &*raw(*d)?)?,
                Val::Interval(d) => map.serialize_entry(name, &*raw(d.as_secs_f64())?)?,
                Val::Str(x) => map.serialize_entry(name, x)?,
                Val::Addr(a) => map.serialize_entry(name, &a.to_string())?,
                Val::Port(p) => map.serialize_entry(name, p)?,
                Val::Count(c) => map.serialize_entry(name, c)?,
                Val::Bool(b) => map.serialize_entry(name, b)?,
                Val::Set(items) => map.serialize_entry(name, items)?,
                Val::Double(_) | Val::Unset => {}
            }
        }
        map.end()
    }
}

/// A TSV cell.
fn cell(v: &Val<'_>) -> String {
    match v {
        Val::Time(t) => t.to_string(),
        Val::Str(s) if s.is_empty() => "(empty)".into(),
        Val::Str(s) => escape(s),
        Val::Addr(a) => a.to_string(),
        Val::Port(p) => p.to_string(),
        Val::Count(c) => c.to_string(),
        Val::Double(d) if d.is_finite() => format!("{d:.6}"),
        Val::Interval(d) => format!("{:.6}", d.as_secs_f64()),
        Val::Bool(b) => (if *b { "T" } else { "F" }).into(),
        Val::Set([]) => "(empty)".into(),
        Val::Set(items) => items
            .iter()
            .map(|i| escape(i))
            .collect::<Vec<_>>()
            .join(","),
        Val::Double(_) | Val::Unset => "-".into(),
    }
}

impl Log {
    fn create(
        dir: &Path,
        name: &'static str,
        json: bool,
        fields: Fields,
        append: bool,
    ) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name}.log"));
        let out = Self::open_file(&path, append)?;
        let mut log = Self {
            path,
            name,
            out,
            json,
            fields,
            closed: false,
        };
        log.header()
            .with_context(|| log.path.display().to_string())?;
        Ok(log)
    }

    fn open_file(path: &Path, append: bool) -> anyhow::Result<BufWriter<File>> {
        let file = if append {
            OpenOptions::new().create(true).append(true).open(path)
        } else {
            File::create(path)
        };
        Ok(BufWriter::new(
            file.with_context(|| path.display().to_string())?,
        ))
    }

    /// Zeek's TSV header; JSON logs have none.
    fn header(&mut self) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        let out = &mut self.out;
        writeln!(out, "#separator \\x09")?;
        writeln!(out, "#set_separator\t,")?;
        writeln!(out, "#empty_field\t(empty)")?;
        writeln!(out, "#unset_field\t-")?;
        writeln!(out, "#path\t{}", self.name)?;
        writeln!(out, "#open\t{}", header_time())?;
        let names: Vec<_> = self.fields.iter().map(|f| f.0).collect();
        let types: Vec<_> = self.fields.iter().map(|f| f.1).collect();
        writeln!(out, "#fields\t{}", names.join("\t"))?;
        writeln!(out, "#types\t{}", types.join("\t"))
    }

    fn write(&mut self, values: &[Val<'_>]) -> std::io::Result<()> {
        debug_assert_eq!(values.len(), self.fields.len());
        if self.closed {
            return Err(std::io::Error::other("log closed"));
        }
        if self.json {
            serde_json::to_writer(&mut self.out, &Row(self.fields, values))?;
            self.out.write_all(b"\n")
        } else {
            let cells: Vec<String> = values.iter().map(cell).collect();
            writeln!(self.out, "{}", cells.join("\t"))
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        if !self.json {
            writeln!(self.out, "#close\t{}", header_time())?;
        }
        self.out.flush()
    }

    /// Closes the file and opens its path again (logrotate renamed it: a new file with a fresh
    /// header; not renamed: the same file, appended to, after its `#close`).
    fn reopen(&mut self) -> anyhow::Result<()> {
        let closed = self.close();
        self.out = Self::open_file(&self.path, true)?;
        self.closed = false;
        self.header()
            .with_context(|| self.path.display().to_string())?;
        closed.with_context(|| self.path.display().to_string())
    }
}

/// Zeek's escaping: separators and non-printable bytes as `\xNN`.
fn escape(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\t' || c == '\\' || c.is_control() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                let _ = write!(out, "\\x{b:02x}"); // writing to a String cannot fail
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Zeek's notice.log fields (`Notice::Info`, those that apply), then the detector's counts.
const NOTICE: Fields = &[
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("note", "enum"),
    ("msg", "string"),
    ("sub", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "port"),
    ("n", "count"),
    ("actions", "set[enum]"),
    ("suppress_for", "interval"),
    ("peers", "count"),
    ("ports", "count"),
];
/// notice.log's fields, then why the notice was suppressed and the PPR sample behind it.
const SUPPRESSED: Fields = &[
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("note", "enum"),
    ("msg", "string"),
    ("sub", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "port"),
    ("n", "count"),
    ("actions", "set[enum]"),
    ("suppress_for", "interval"),
    ("peers", "count"),
    ("ports", "count"),
    ("reason", "string"),
    ("ppr_peers", "count"),
    ("ppr_ports", "count"),
    ("ppr_pairs", "count"),
    ("ppr_ratio", "double"),
];
/// Like Zeek's conn.log: one line per connection outcome, joined to notices by `uid`.
const ATTEMPTS: Fields = &[
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("event", "string"),
    ("conn_state", "string"),
    ("reverse", "bool"),
    ("bt_predicted", "bool"),
    ("bt_channel", "string"),
];
const PREDICTIONS: Fields = &[
    ("ts", "time"),
    ("host", "addr"),
    ("peer", "addr"),
    ("port", "port"),
    ("transport", "string"),
    ("channel", "string"),
];
/// The engine's counters, cumulative since the start (as Prometheus counters), every
/// `stats_interval` of packet time and once at the end.
const STATS: Fields = &[
    ("ts", "time"),
    ("events", "count"),
    ("outcomes", "count"),
    ("failed_attempts", "count"),
    ("predicted_failures", "count"),
    ("notices", "count"),
    ("suppressed_predicted", "count"),
    ("suppressed_ppr", "count"),
    ("suppressed_interval", "count"),
    ("log_write_errors", "count"),
];

/// Every notice is logged (Zeek's `Notice::ACTION_LOG`); the sensor takes no other action.
const ACTIONS: &[&str] = &["Notice::ACTION_LOG"];

/// A notice's values in [`NOTICE`] order.
fn notice_values(n: &ScanNotice) -> Vec<Val<'_>> {
    let c = n.conn.as_ref();
    let proto = c.map(|c| c.proto).or(n.p.map(|p| p.proto));
    vec![
        Val::Time(n.ts),
        Val::opt(c, |c| Val::Str(Cow::Owned(c.uid.to_string()))),
        Val::opt(c, |c| Val::Addr(c.orig.ip())),
        Val::opt(c, |c| Val::Port(c.orig.port())),
        Val::opt(c, |c| Val::Addr(c.resp.ip())),
        Val::opt(c, |c| Val::Port(c.resp.port())),
        Val::opt(proto, |p| Val::str(p.as_str())),
        Val::str(n.note.as_str()),
        Val::str(&n.msg),
        Val::opt(n.sub.as_deref(), Val::str),
        Val::Addr(n.src),
        Val::opt(n.dst, Val::Addr),
        Val::opt(n.p, |p| Val::Port(p.port)),
        Val::opt(n.n, Val::Count),
        Val::Set(ACTIONS),
        Val::Interval(n.suppress_for),
        Val::Count(n.peers),
        Val::Count(n.ports),
    ]
}

/// [`ScanNotice`]'s serde form: the notice.log JSON line, so `sensor analyze --json`,
/// `sensor run --notices` and `--json-logs` agree field for field.
pub(crate) fn serialize_notice<S: serde::Serializer>(
    n: &ScanNotice,
    s: S,
) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&Row(NOTICE, &notice_values(n)), s)
}

/// Asks a [`LogSink`] to reopen its files (SIGHUP, after logrotate renamed them); shared with
/// the signal handler.
#[derive(Clone, Debug, Default)]
pub struct Reopen(Arc<AtomicBool>);

impl Reopen {
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.load(Ordering::Relaxed) && self.0.swap(false, Ordering::Relaxed)
    }
}

/// Zeek's stats.log default interval (`Stats::report_interval`, 5 min).
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(300);

/// Writes the five logs; errors are counted, not fatal, so analysis goes on.
pub struct LogSink {
    notice: Log,
    suppressed: Log,
    attempts: Log,
    predictions: Log,
    stats: Log,
    reopen: Option<Reopen>,
    stats_interval: Duration,
    /// Packet time of the last stats row (or of the first tick).
    last_stats: Option<Timestamp>,
    pub write_errors: u64,
    /// How many times the files were reopened.
    pub reopened: u64,
}

impl LogSink {
    /// New logs in `dir` (truncating old ones), as `sensor analyze --out` writes them.
    pub fn create(dir: &Path, json: bool) -> anyhow::Result<Self> {
        Self::open(dir, json, false)
    }

    /// Logs in `dir`, appended to if they exist (a restarted daemon keeps what it wrote), each
    /// open starting with a fresh header.
    pub fn append(dir: &Path, json: bool) -> anyhow::Result<Self> {
        Self::open(dir, json, true)
    }

    fn open(dir: &Path, json: bool, append: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        Ok(Self {
            notice: Log::create(dir, "notice", json, NOTICE, append)?,
            suppressed: Log::create(dir, "suppressed", json, SUPPRESSED, append)?,
            attempts: Log::create(dir, "attempts", json, ATTEMPTS, append)?,
            predictions: Log::create(dir, "predictions", json, PREDICTIONS, append)?,
            stats: Log::create(dir, "stats", json, STATS, append)?,
            reopen: None,
            stats_interval: DEFAULT_STATS_INTERVAL,
            last_stats: None,
            write_errors: 0,
            reopened: 0,
        })
    }

    /// Reopens the files when `reopen` is requested (checked as packet time moves).
    #[must_use]
    pub fn with_reopen(mut self, reopen: Reopen) -> Self {
        self.reopen = Some(reopen);
        self
    }

    /// A stats.log row every `interval` of packet time (zero: only the final one).
    #[must_use]
    pub fn with_stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval;
        self
    }

    fn logs(&mut self) -> [&mut Log; 5] {
        [
            &mut self.notice,
            &mut self.suppressed,
            &mut self.attempts,
            &mut self.predictions,
            &mut self.stats,
        ]
    }

    /// Writes `#close` and flushes every file (once; later calls only report). Errors if a
    /// line could not be written.
    pub fn close(&mut self) -> anyhow::Result<()> {
        let mut first_err = None;
        for log in self.logs() {
            if let Err(e) = log.close() {
                first_err.get_or_insert_with(|| format!("{}: {e}", log.path.display()));
            }
        }
        if let Some(e) = first_err {
            anyhow::bail!("closing the logs: {e}");
        }
        anyhow::ensure!(
            self.write_errors == 0,
            "{} log lines could not be written",
            self.write_errors
        );
        Ok(())
    }

    /// Closes every file (`#close`) and opens its path again with a fresh header: logrotate's
    /// `postrotate` (rename, then SIGHUP).
    pub fn reopen(&mut self) -> anyhow::Result<()> {
        self.reopened += 1;
        let mut result = Ok(());
        for log in self.logs() {
            if let Err(e) = log.reopen() {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }

    /// Flushes buffered lines to the files (live: so they can be read as they happen).
    pub fn flush(&mut self) {
        let mut errors = 0;
        for log in self.logs() {
            if !log.closed && log.out.flush().is_err() {
                errors += 1;
            }
        }
        self.write_errors += errors;
    }

    fn check(&mut self, r: &std::io::Result<()>) {
        if r.is_err() {
            self.write_errors += 1;
        }
    }

    fn stats_row(&mut self, now: Timestamp, s: &EngineStats) {
        let v = [
            Val::Time(now),
            Val::Count(s.events),
            Val::Count(s.outcomes),
            Val::Count(s.failed_attempts),
            Val::Count(s.predicted_failures),
            Val::Count(s.notices),
            Val::Count(s.suppressed_predicted),
            Val::Count(s.suppressed_ppr),
            Val::Count(s.suppressed_interval),
            Val::Count(self.write_errors),
        ];
        let r = self.stats.write(&v);
        self.check(&r);
    }
}

impl Drop for LogSink {
    /// An exit before the engine finished (an error, a panic unwinding) still leaves every
    /// file complete, with its `#close`.
    fn drop(&mut self) {
        for log in self.logs() {
            let _ = log.close(); // nowhere left to report it
        }
    }
}

impl EngineSink for LogSink {
    fn notice(&mut self, n: &ScanNotice) {
        let r = self.notice.write(&notice_values(n));
        self.check(&r);
    }

    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, ppr: &PprSample) {
        let mut v = notice_values(n);
        v.extend([
            Val::str(reason.as_str()),
            Val::Count(ppr.peers),
            Val::Count(ppr.ports),
            Val::Count(ppr.pairs),
            Val::Double(ppr.ratio()),
        ]);
        let r = self.suppressed.write(&v);
        self.check(&r);
    }

    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        let proto = if o.udp { Proto::Udp } else { Proto::Tcp };
        let v = [
            Val::Time(o.ts),
            Val::Str(Cow::Owned(o.uid.to_string())),
            Val::Addr(o.orig.ip()),
            Val::Port(o.orig.port()),
            Val::Addr(o.resp.ip()),
            Val::Port(o.resp.port()),
            Val::str(proto.as_str()),
            Val::str(o.event.as_str()),
            Val::str(o.state.as_str()),
            Val::Bool(o.reverse),
            Val::Bool(predicted.is_some()),
            Val::opt(predicted, |c| Val::str(c.as_str())),
        ];
        let r = self.attempts.write(&v);
        self.check(&r);
    }

    fn prediction(&mut self, p: &PredictedPeer) {
        let v = [
            Val::Time(p.ts),
            Val::Addr(p.host),
            Val::Addr(p.peer.ip()),
            Val::Port(p.peer.port()),
            Val::str(p.transport.as_str()),
            Val::str(p.channel.as_str()),
        ];
        let r = self.predictions.write(&v);
        self.check(&r);
    }

    fn tick(&mut self, now: Timestamp, stats: &EngineStats) {
        if self.reopen.as_ref().is_some_and(Reopen::take) {
            match self.reopen() {
                Ok(()) => tracing::info!("logs reopened"),
                Err(e) => {
                    self.write_errors += 1;
                    tracing::warn!("reopening the logs: {e:#}");
                }
            }
        }
        let last = *self.last_stats.get_or_insert(now);
        if self.stats_interval > Duration::ZERO && now.saturating_since(last) >= self.stats_interval
        {
            self.last_stats = Some(now);
            self.stats_row(now, stats);
        }
    }

    fn finish(&mut self, now: Timestamp, stats: &EngineStats) {
        if !self.stats.closed {
            self.stats_row(now, stats);
        }
        if let Err(e) = self.close() {
            tracing::warn!("{e:#}");
        }
    }
}

/// No logs.
impl<T: EngineSink> EngineSink for Option<T> {
    fn notice(&mut self, n: &ScanNotice) {
        if let Some(s) = self {
            s.notice(n);
        }
    }
    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, ppr: &PprSample) {
        if let Some(s) = self {
            s.suppressed(n, reason, ppr);
        }
    }
    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        if let Some(s) = self {
            s.attempt(o, predicted);
        }
    }
    fn prediction(&mut self, p: &PredictedPeer) {
        if let Some(s) = self {
            s.prediction(p);
        }
    }
    fn tick(&mut self, now: Timestamp, stats: &EngineStats) {
        if let Some(s) = self {
            s.tick(now, stats);
        }
    }
    fn finish(&mut self, now: Timestamp, stats: &EngineStats) {
        if let Some(s) = self {
            s.finish(now, stats);
        }
    }
}

/// Sends engine output to two sinks.
pub struct Both<A, B>(pub A, pub B);

impl<A: EngineSink, B: EngineSink> EngineSink for Both<A, B> {
    fn notice(&mut self, n: &ScanNotice) {
        self.0.notice(n);
        self.1.notice(n);
    }
    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, ppr: &PprSample) {
        self.0.suppressed(n, reason, ppr);
        self.1.suppressed(n, reason, ppr);
    }
    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        self.0.attempt(o, predicted);
        self.1.attempt(o, predicted);
    }
    fn prediction(&mut self, p: &PredictedPeer) {
        self.0.prediction(p);
        self.1.prediction(p);
    }
    fn tick(&mut self, now: Timestamp, stats: &EngineStats) {
        self.0.tick(now, stats);
        self.1.tick(now, stats);
    }
    fn finish(&mut self, now: Timestamp, stats: &EngineStats) {
        self.0.finish(now, stats);
        self.1.finish(now, stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(secs: u64, uid: u64) -> ScanNotice {
        let mut n = ScanNotice::new(
            Timestamp::from_secs(secs),
            crate::detect::NoticeKind::AddressScan,
            "192.0.2.66".parse().unwrap(),
            Some("198.51.100.7".parse().unwrap()),
            Some(crate::detect::Service::tcp(23)),
            (20, 1),
            "192.0.2.66 has scanned 20 hosts (23/tcp)".into(),
        )
        .with_n(20);
        n.conn = Some(crate::detect::NoticeConn {
            uid: crate::detect::Uid(uid),
            orig: "192.0.2.66:40000".parse().unwrap(),
            resp: "198.51.100.7:23".parse().unwrap(),
            proto: Proto::Tcp,
        });
        n
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sensor-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Header lines, data rows and whether the file ends with `#close`.
    fn parts(text: &str) -> (Vec<&str>, Vec<&str>, bool) {
        let header = text.lines().take_while(|l| l.starts_with('#')).collect();
        let rows = text.lines().filter(|l| !l.starts_with('#')).collect();
        let closed = text.lines().last().is_some_and(|l| {
            l.starts_with("#close\t20") && l.len() == "#close\t2026-12-03-12-00-00".len()
        });
        (header, rows, closed)
    }

    /// logrotate's `postrotate`: the file is renamed, then the sensor reopens its path. The old
    /// file ends with `#close`, the new one starts with a full header, no line is lost.
    #[test]
    fn reopen_after_rename_closes_the_old_file_and_starts_a_new_one() {
        let dir = temp_dir("rotate");
        let reopen = Reopen::default();
        let mut logs = LogSink::append(&dir, false)
            .unwrap()
            .with_reopen(reopen.clone());
        let stats = EngineStats::default();
        logs.tick(Timestamp::from_secs(100), &stats);
        logs.notice(&notice(100, 1));
        logs.flush();
        for name in ["notice", "suppressed", "attempts", "predictions", "stats"] {
            std::fs::rename(
                dir.join(format!("{name}.log")),
                dir.join(format!("{name}.log.1")),
            )
            .unwrap();
        }
        // Nothing happens until the request is seen on a tick.
        logs.notice(&notice(101, 2));
        reopen.request();
        logs.tick(Timestamp::from_secs(102), &stats);
        assert_eq!(logs.reopened, 1);
        logs.tick(Timestamp::from_secs(103), &stats);
        assert_eq!(logs.reopened, 1, "one request, one reopen");
        logs.notice(&notice(104, 3));
        logs.finish(Timestamp::from_secs(105), &stats);
        assert_eq!(logs.write_errors, 0);

        let old = std::fs::read_to_string(dir.join("notice.log.1")).unwrap();
        let new = std::fs::read_to_string(dir.join("notice.log")).unwrap();
        for text in [&old, &new] {
            let (header, _, closed) = parts(text);
            assert_eq!(header.len(), 8, "{text}");
            assert!(header[0] == "#separator \\x09" && header[4] == "#path\tnotice");
            assert!(header[5].starts_with("#open\t20"), "{text}");
            assert!(header[6].starts_with("#fields\tts\tuid\tid.orig_h"));
            assert!(closed, "{text}");
        }
        let (_, old_rows, _) = parts(&old);
        let (_, new_rows, _) = parts(&new);
        assert_eq!(old_rows.len(), 2);
        assert_eq!(new_rows.len(), 1);
        assert!(
            old_rows[0].starts_with("100.000000\tC") && new_rows[0].starts_with("104.000000\t")
        );
        // Every other log went the same way: closed and reopened with its own header.
        for name in ["suppressed", "attempts", "predictions", "stats"] {
            for file in [format!("{name}.log.1"), format!("{name}.log")] {
                let text = std::fs::read_to_string(dir.join(&file)).unwrap();
                let (header, _, closed) = parts(&text);
                assert_eq!(header[4], format!("#path\t{name}"), "{file}");
                assert!(closed, "{file}: {text}");
            }
        }
        // stats.log: the final row went to the new file.
        let stats_rows = parts(&std::fs::read_to_string(dir.join("stats.log")).unwrap())
            .1
            .len();
        assert_eq!(stats_rows, 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A SIGHUP without a rotation (or a restart) appends to the same file: a closed block, then
    /// a new header; earlier lines are kept.
    #[test]
    fn reopen_without_rename_appends_a_new_block() {
        let dir = temp_dir("hup");
        let mut logs = LogSink::append(&dir, false).unwrap();
        logs.notice(&notice(100, 1));
        logs.reopen().unwrap();
        logs.notice(&notice(101, 2));
        logs.close().unwrap();
        let text = std::fs::read_to_string(dir.join("notice.log")).unwrap();
        assert_eq!(text.matches("#open\t").count(), 2);
        assert_eq!(text.matches("#close\t").count(), 2);
        assert_eq!(parts(&text).1.len(), 2);
        // A restart appends too.
        let mut again = LogSink::append(&dir, false).unwrap();
        again.close().unwrap();
        let text = std::fs::read_to_string(dir.join("notice.log")).unwrap();
        assert_eq!(text.matches("#open\t").count(), 3);
        assert_eq!(parts(&text).1.len(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Dropped without a close (an error before the engine finished): still complete files.
    #[test]
    fn drop_closes() {
        let dir = temp_dir("drop");
        let mut logs = LogSink::create(&dir, false).unwrap();
        logs.notice(&notice(100, 1));
        drop(logs);
        let text = std::fs::read_to_string(dir.join("notice.log")).unwrap();
        assert!(parts(&text).2, "{text}");
        assert_eq!(parts(&text).1.len(), 1);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// JSON logs: the notice line is the notice's serde form, fields in Zeek's order.
    #[test]
    fn json_notice_line_is_the_serde_form() {
        let dir = temp_dir("json");
        let mut logs = LogSink::create(&dir, true).unwrap();
        let n = notice(100, 7);
        logs.notice(&n);
        logs.close().unwrap();
        let text = std::fs::read_to_string(dir.join("notice.log")).unwrap();
        assert_eq!(text, format!("{}\n", serde_json::to_string(&n).unwrap()));
        let uid = crate::detect::Uid(7).to_string();
        assert_eq!(
            text.trim_end(),
            format!(
                r#"{{"ts":100.000000,"uid":"{uid}","id.orig_h":"192.0.2.66","id.orig_p":40000,"id.resp_h":"198.51.100.7","id.resp_p":23,"proto":"tcp","note":"AddressScan","msg":"192.0.2.66 has scanned 20 hosts (23/tcp)","src":"192.0.2.66","dst":"198.51.100.7","p":23,"n":20,"actions":["Notice::ACTION_LOG"],"suppress_for":0.000000,"peers":20,"ports":1}}"#
            )
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn uids_are_zeek_shaped_and_distinct() {
        let uids: std::collections::HashSet<String> = (0..10_000)
            .map(|i| crate::detect::Uid(i).to_string())
            .collect();
        assert_eq!(uids.len(), 10_000);
        assert!(uids.iter().all(|u| u.len() == 12
            && u.starts_with('C')
            && u[1..].bytes().all(|b| b.is_ascii_alphanumeric())));
    }

    #[test]
    fn escapes_like_zeek() {
        assert_eq!(escape("a\tb\\c\nd"), "a\\x09b\\x5cc\\x0ad");
        assert_eq!(
            escape("192.0.2.1 has scanned 20 hosts (6881/tcp)"),
            "192.0.2.1 has scanned 20 hosts (6881/tcp)"
        );
    }
}
