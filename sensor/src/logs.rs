//! Zeek-style logs: `notice.log`, `attempts.log` (like `conn.log`, one line per connection
//! outcome, with `bt_predicted` and the predicting channel), `predictions.log` and
//! `suppressed.log`. TSV with Zeek's `#separator`/`#fields`/`#types` header, or JSON lines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;

use crate::conn::ConnOutcome;
use crate::detect::ScanNotice;
use crate::engine::{EngineSink, SuppressReason};
use crate::event::Timestamp;
use crate::ppr::PprSample;
use crate::predict::{Channel, PredictedPeer};

/// One log file.
struct Log {
    out: BufWriter<File>,
    json: bool,
    fields: &'static [(&'static str, &'static str)],
}

/// A field value, typed as Zeek writes it.
enum Val<'a> {
    Time(Timestamp),
    Str(&'a str),
    Addr(std::net::IpAddr),
    Port(u16),
    Count(u64),
    Double(f64),
    Bool(bool),
    Unset,
}

impl Log {
    fn create(
        dir: &Path,
        name: &str,
        json: bool,
        fields: &'static [(&'static str, &'static str)],
    ) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name}.log"));
        let file = File::create(&path).with_context(|| path.display().to_string())?;
        let mut out = BufWriter::new(file);
        if !json {
            writeln!(out, "#separator \\x09")?;
            writeln!(out, "#set_separator\t,")?;
            writeln!(out, "#empty_field\t(empty)")?;
            writeln!(out, "#unset_field\t-")?;
            writeln!(out, "#path\t{name}")?;
            let names: Vec<_> = fields.iter().map(|f| f.0).collect();
            let types: Vec<_> = fields.iter().map(|f| f.1).collect();
            writeln!(out, "#fields\t{}", names.join("\t"))?;
            writeln!(out, "#types\t{}", types.join("\t"))?;
        }
        Ok(Self { out, json, fields })
    }

    fn write(&mut self, values: &[Val<'_>]) -> std::io::Result<()> {
        debug_assert_eq!(values.len(), self.fields.len());
        if self.json {
            let mut map = serde_json::Map::new();
            for ((name, _), v) in self.fields.iter().zip(values) {
                let json = match v {
                    Val::Time(t) => serde_json::json!(t.as_secs_f64()),
                    Val::Str(s) => serde_json::json!(s),
                    Val::Addr(a) => serde_json::json!(a.to_string()),
                    Val::Port(p) => serde_json::json!(p),
                    Val::Count(c) => serde_json::json!(c),
                    Val::Double(d) => serde_json::json!(d),
                    Val::Bool(b) => serde_json::json!(b),
                    Val::Unset => continue,
                };
                map.insert((*name).to_string(), json);
            }
            serde_json::to_writer(&mut self.out, &map)?;
            self.out.write_all(b"\n")
        } else {
            let cells: Vec<String> = values
                .iter()
                .map(|v| match v {
                    Val::Time(t) => t.to_string(),
                    Val::Str("") => "(empty)".into(),
                    Val::Str(s) => escape(s),
                    Val::Addr(a) => a.to_string(),
                    Val::Port(p) => p.to_string(),
                    Val::Count(c) => c.to_string(),
                    Val::Double(d) => format!("{d:.6}"),
                    Val::Bool(b) => (if *b { "T" } else { "F" }).into(),
                    Val::Unset => "-".into(),
                })
                .collect();
            writeln!(self.out, "{}", cells.join("\t"))
        }
    }

    fn close(&mut self) -> std::io::Result<()> {
        if !self.json {
            writeln!(self.out, "#close")?;
        }
        self.out.flush()
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

const NOTICE: &[(&str, &str)] = &[
    ("ts", "time"),
    ("note", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "string"),
    ("peers", "count"),
    ("ports", "count"),
    ("msg", "string"),
];
const SUPPRESSED: &[(&str, &str)] = &[
    ("ts", "time"),
    ("note", "string"),
    ("src", "addr"),
    ("dst", "addr"),
    ("p", "string"),
    ("peers", "count"),
    ("ports", "count"),
    ("msg", "string"),
    ("reason", "string"),
    ("ppr_peers", "count"),
    ("ppr_ports", "count"),
    ("ppr_pairs", "count"),
    ("ppr_ratio", "double"),
];
const ATTEMPTS: &[(&str, &str)] = &[
    ("ts", "time"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "string"),
    ("event", "string"),
    ("conn_state", "string"),
    ("reverse", "bool"),
    ("bt_predicted", "bool"),
    ("bt_channel", "string"),
];
const PREDICTIONS: &[(&str, &str)] = &[
    ("ts", "time"),
    ("host", "addr"),
    ("peer", "addr"),
    ("port", "port"),
    ("transport", "string"),
    ("channel", "string"),
];

/// Writes the four logs; errors are counted, not fatal, so analysis goes on.
pub struct LogSink {
    notice: Log,
    suppressed: Log,
    attempts: Log,
    predictions: Log,
    pub write_errors: u64,
}

impl LogSink {
    pub fn create(dir: &Path, json: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        Ok(Self {
            notice: Log::create(dir, "notice", json, NOTICE)?,
            suppressed: Log::create(dir, "suppressed", json, SUPPRESSED)?,
            attempts: Log::create(dir, "attempts", json, ATTEMPTS)?,
            predictions: Log::create(dir, "predictions", json, PREDICTIONS)?,
            write_errors: 0,
        })
    }

    pub fn close(&mut self) -> anyhow::Result<()> {
        for log in [
            &mut self.notice,
            &mut self.suppressed,
            &mut self.attempts,
            &mut self.predictions,
        ] {
            log.close()?;
        }
        anyhow::ensure!(
            self.write_errors == 0,
            "{} log lines could not be written",
            self.write_errors
        );
        Ok(())
    }

    fn check(&mut self, r: &std::io::Result<()>) {
        if r.is_err() {
            self.write_errors += 1;
        }
    }
}

fn notice_values(n: &ScanNotice) -> Vec<Val<'_>> {
    vec![
        Val::Time(n.ts),
        Val::Str(n.note.as_str()),
        Val::Addr(n.src),
        n.dst.map_or(Val::Unset, Val::Addr),
        Val::Unset, // replaced by the caller: `p` needs an owned string
        Val::Count(n.peers),
        Val::Count(n.ports),
        Val::Str(&n.msg),
    ]
}

impl EngineSink for LogSink {
    fn notice(&mut self, n: &ScanNotice) {
        let p = n.p.map(|p| p.to_string());
        let mut v = notice_values(n);
        v[4] = p.as_deref().map_or(Val::Unset, Val::Str);
        let r = self.notice.write(&v);
        self.check(&r);
    }

    fn suppressed(&mut self, n: &ScanNotice, reason: SuppressReason, ppr: &PprSample) {
        let p = n.p.map(|p| p.to_string());
        let mut v = notice_values(n);
        v[4] = p.as_deref().map_or(Val::Unset, Val::Str);
        v.extend([
            Val::Str(reason.as_str()),
            Val::Count(ppr.peers),
            Val::Count(ppr.ports),
            Val::Count(ppr.pairs),
            Val::Double(ppr.ratio()),
        ]);
        let r = self.suppressed.write(&v);
        self.check(&r);
    }

    fn attempt(&mut self, o: &ConnOutcome, predicted: Option<Channel>) {
        let v = [
            Val::Time(o.ts),
            Val::Addr(o.orig.ip()),
            Val::Port(o.orig.port()),
            Val::Addr(o.resp.ip()),
            Val::Port(o.resp.port()),
            Val::Str(if o.udp { "udp" } else { "tcp" }),
            Val::Str(o.event.as_str()),
            Val::Str(o.state.as_str()),
            Val::Bool(o.reverse),
            Val::Bool(predicted.is_some()),
            predicted.map_or(Val::Unset, |c| Val::Str(c.as_str())),
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
            Val::Str(p.transport.as_str()),
            Val::Str(p.channel.as_str()),
        ];
        let r = self.predictions.write(&v);
        self.check(&r);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_zeek() {
        assert_eq!(escape("a\tb\\c\nd"), "a\\x09b\\x5cc\\x0ad");
        assert_eq!(
            escape("192.0.2.1 has scanned 20 hosts (6881/tcp)"),
            "192.0.2.1 has scanned 20 hosts (6881/tcp)"
        );
    }
}
