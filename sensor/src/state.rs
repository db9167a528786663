//! State across restarts: the engine's tables saved to a file and loaded on start, so that a
//! restarted sensor neither re-raises what it already reported nor forgets what coordination
//! traffic announced.
//!
//! **What is saved.** The prediction table; both Bro detectors' per-source tables (the filtered
//! one and, with prediction on, the baseline); the PPR and scan-shape trackers; the notices
//! withheld as predicted and the per-(source, notice) counts that decide when the baseline's
//! notices are reported; the connection table (attempts still inside their 5 s delay, answered
//! connections a late RST or FIN may still close); and the packet-time clocks of each, so that
//! table expiry keeps its phase.
//!
//! **What a restart loses** (not saved; each is short-lived): the coordination channels'
//! pending state, i.e. a DHT, UDP-tracker or Vuze query sent before the stop whose reply
//! arrives after it (the reply's peers are not learnt), HTTP tracker and peer-wire TCP streams
//! and uTP streams in progress (their later bytes are read as a mid-stream join), the uTP SYNs
//! and LSD announcers remembered for later predictions, and the engine's counters (metrics
//! start again from zero, as after any restart). Only the Bro detector is saved: a TRW engine
//! refuses `--state-file`.
//!
//! **The file.** A 32-byte header, then a payload of length-prefixed records:
//!
//! | bytes | field |
//! |---|---|
//! | 0–7 | magic `SXSTATE\0` |
//! | 8–11 | format version, u32 little-endian ([`VERSION`]) |
//! | 12–15 | reserved, 0 |
//! | 16–23 | payload length in bytes, u64 LE |
//! | 24–27 | CRC-32 (IEEE) of the payload, u32 LE |
//! | 28–31 | reserved, 0 |
//!
//! Each record is a u32 LE length followed by one [`postcard`]-encoded [`Record`]; the first is
//! [`Record::Meta`], the last [`Record::End`] with the number of records before it. A file is
//! checked whole (size, magic, version, checksum, every record decoded, the end record) before
//! anything is applied: a truncated, corrupt, foreign or newer file is refused with an error
//! naming what is wrong, never half-loaded. Writes go to a temporary file in the same
//! directory, synced, then renamed over the old one, so a crash mid-save leaves the previous
//! file intact.
//!
//! **Expiry.** Entries keep their packet-time stamps. On load the engine's clocks are put back
//! at the save time; live (`sensor run`), packet time then advances to the wall clock at once,
//! and offline (`sensor analyze --state-in`) to the first packet, through the engine's own
//! expiry: predictions past their TTL, idle connections and PPR sources are dropped, pending
//! attempts whose 5 s ran out become failed attempts at their own time, and Bro tables idle
//! past their `&read_expire` are dropped with the summaries Bro raises for them, as an
//! uninterrupted run would have done.
//!
//! **Size.** The file holds what the tables hold, so it is bounded by their caps (see README,
//! "Memory, floods and full tables"); the per-(source, notice) counts are saved only for
//! sources one of those tables still holds.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};

use crate::conn::{SavedConn, SavedConnClock};
use crate::detect::bro::Src;
use crate::detect::{NoticeConn, NoticeKind, ScanNotice, Service};
use crate::ppr::Source;
use crate::predict::SavedPrediction;
use crate::time::Timestamp;

/// First bytes of every state file.
pub const MAGIC: [u8; 8] = *b"SXSTATE\0";
/// The format this build writes and reads. Bump it whenever a [`Record`] changes shape.
pub const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;
/// No record is larger than this (a Bro source with every set at its largest stays far
/// below); a larger length prefix is damage, not something to allocate for.
const MAX_RECORD: usize = 256 << 20;

/// Which of the engine's two Bro detectors a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Det {
    /// Sees the attempts that count (after prediction).
    Filtered,
    /// Sees every attempt (present with prediction on).
    Baseline,
}

/// Which of the engine's two PPR trackers a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Ppr {
    /// The PPR gate's samples.
    Gate,
    /// The scan-shape tracker.
    Shape,
}

/// What the file was written by and for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The engine's packet time at the save.
    pub saved_at: Timestamp,
    /// The wall clock at the save.
    pub saved_wall: Timestamp,
    /// `CARGO_PKG_VERSION` of the writer (informative).
    pub sensor: String,
    /// `--suppress` of the writer: the tables it keeps depend on it.
    pub suppress: String,
}

/// A notice withheld as predicted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedNotice {
    pub ts: Timestamp,
    pub note: NoticeKind,
    pub src: IpAddr,
    pub dst: Option<IpAddr>,
    pub p: Option<Service>,
    pub peers: u64,
    pub ports: u64,
    pub n: Option<u64>,
    pub conn: Option<NoticeConn>,
    pub sub: Option<String>,
    pub suppress_for: crate::time::Duration,
    pub msg: String,
}

impl From<&ScanNotice> for SavedNotice {
    fn from(n: &ScanNotice) -> Self {
        Self {
            ts: n.ts,
            note: n.note,
            src: n.src,
            dst: n.dst,
            p: n.p,
            peers: n.peers,
            ports: n.ports,
            n: n.n,
            conn: n.conn,
            sub: n.sub.clone(),
            suppress_for: n.suppress_for,
            msg: n.msg.clone(),
        }
    }
}

impl From<SavedNotice> for ScanNotice {
    fn from(n: SavedNotice) -> Self {
        Self {
            ts: n.ts,
            note: n.note,
            src: n.src,
            dst: n.dst,
            p: n.p,
            peers: n.peers,
            ports: n.ports,
            n: n.n,
            conn: n.conn,
            sub: n.sub,
            suppress_for: n.suppress_for,
            msg: n.msg,
        }
    }
}

/// The engine's own clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EngineClock {
    pub now: Timestamp,
    /// The last table-expiry pass (expiry runs every 10 s of packet time from it).
    pub last_expire: Timestamp,
}

/// One record of the file, as read. [`RecordOut`] is the same shape, borrowing, as written;
/// postcard encodes both identically (variant index, then fields in order).
#[derive(Debug, serde::Deserialize)]
pub enum Record {
    Meta(Meta),
    Engine(EngineClock),
    Prediction(SavedPrediction),
    ConnClock(SavedConnClock),
    Conn(SavedConn),
    BroClock(Det, Timestamp),
    BroSource(Det, IpAddr, Box<Src>),
    PprClock(Ppr, Timestamp),
    PprSource(Ppr, IpAddr, Box<Source>),
    Withheld(SavedNotice),
    /// (source, notice) → notices raised by (filtered, baseline) detector, and the last one
    /// reported under a suppression interval.
    Raised(IpAddr, NoticeKind, u32, u32, Option<SavedNotice>),
    /// Records before this one.
    End(u64),
}

/// [`Record`] borrowing what it writes.
#[derive(Debug, serde::Serialize)]
pub enum RecordOut<'a> {
    Meta(&'a Meta),
    Engine(EngineClock),
    Prediction(&'a SavedPrediction),
    ConnClock(SavedConnClock),
    Conn(&'a SavedConn),
    BroClock(Det, Timestamp),
    BroSource(Det, IpAddr, &'a Src),
    PprClock(Ppr, Timestamp),
    PprSource(Ppr, IpAddr, &'a Source),
    Withheld(SavedNotice),
    Raised(IpAddr, NoticeKind, u32, u32, Option<SavedNotice>),
    End(u64),
}

/// Encodes records into a file image: [`Writer::finish`] puts the header in front.
pub struct Writer {
    payload: Vec<u8>,
    records: u64,
}

impl Writer {
    pub fn new(meta: &Meta) -> anyhow::Result<Self> {
        let mut w = Self {
            payload: Vec::new(),
            records: 0,
        };
        w.push(&RecordOut::Meta(meta))?;
        Ok(w)
    }

    pub fn push(&mut self, r: &RecordOut<'_>) -> anyhow::Result<()> {
        let at = self.payload.len();
        self.payload.extend_from_slice(&[0; 4]);
        let payload = std::mem::take(&mut self.payload);
        self.payload = postcard::to_extend(r, payload).context("encoding a state record")?;
        let len = self.payload.len() - at - 4;
        ensure!(
            len <= MAX_RECORD,
            "a state record of {len} bytes is too large"
        );
        let len = u32::try_from(len).context("state record length")?;
        self.payload[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.records += 1;
        Ok(())
    }

    /// The whole file: header, records, end record.
    pub fn finish(mut self) -> anyhow::Result<Vec<u8>> {
        self.push(&RecordOut::End(self.records))?;
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(self.payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&self.payload).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.payload);
        Ok(out)
    }
}

/// Checks a file image whole and decodes its records (the end record excluded).
///
/// # Errors
/// A file shorter than its header or its declared payload, a foreign magic, another format
/// version, a checksum mismatch, an undecodable record, trailing bytes, or a missing end
/// record, each with a message naming it.
pub fn decode(bytes: &[u8]) -> anyhow::Result<(Meta, Vec<Record>)> {
    ensure!(
        MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]),
        "not a sensor state file (it does not start with {:?})",
        String::from_utf8_lossy(&MAGIC[..7])
    );
    ensure!(
        bytes.len() >= HEADER_LEN,
        "truncated state file: {} bytes, shorter than its {HEADER_LEN}-byte header",
        bytes.len()
    );
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let version = u32_at(8);
    if version > VERSION {
        bail!(
            "state file format version {version} is newer than this sensor reads ({VERSION}): \
             written by a later sensor"
        );
    }
    ensure!(
        version == VERSION,
        "state file format version {version} is not supported (this sensor reads {VERSION})"
    );
    ensure!(
        u32_at(12) == 0 && u32_at(28) == 0,
        "corrupt state file: reserved header fields are not zero"
    );
    let declared = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let payload = &bytes[HEADER_LEN..];
    if (payload.len() as u64) < declared {
        bail!(
            "truncated state file: the header declares {declared} bytes of records, {} are there",
            payload.len()
        );
    }
    ensure!(
        payload.len() as u64 == declared,
        "corrupt state file: {} bytes after the {declared} bytes of records the header declares",
        payload.len() as u64 - declared
    );
    let crc = crc32fast::hash(payload);
    ensure!(
        crc == u32_at(24),
        "corrupt state file: checksum {crc:08x} does not match the header's {:08x}",
        u32_at(24)
    );
    let mut rest = payload;
    let mut records = Vec::new();
    let mut meta = None;
    loop {
        ensure!(
            rest.len() >= 4,
            "corrupt state file: records end without an end record"
        );
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        ensure!(
            len <= MAX_RECORD && len <= rest.len() - 4,
            "corrupt state file: record {} claims {len} bytes, {} remain",
            records.len(),
            rest.len() - 4
        );
        let r: Record = postcard::from_bytes(&rest[4..4 + len])
            .with_context(|| format!("corrupt state file: record {}", records.len() + 1))?;
        rest = &rest[4 + len..];
        let index = records.len() as u64 + u64::from(meta.is_some());
        match r {
            Record::Meta(m) if index == 0 => meta = Some(m),
            Record::Meta(_) => bail!("corrupt state file: a second header record"),
            _ if index == 0 => {
                bail!("corrupt state file: it does not start with its header record")
            }
            Record::End(n) => {
                ensure!(
                    n == index && rest.is_empty(),
                    "corrupt state file: the end record counts {n} records, {index} were read{}",
                    if rest.is_empty() {
                        ""
                    } else {
                        ", and data follows it"
                    }
                );
                break;
            }
            r => records.push(r),
        }
    }
    Ok((meta.expect("index 0 is the header"), records))
}

/// Reads and checks a state file (see [`decode`]).
///
/// # Errors
/// The file cannot be read, or [`decode`] refuses it; the message names the path.
pub fn read(path: &Path) -> anyhow::Result<(Meta, Vec<Record>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode(&bytes).with_context(|| format!("{}: refused", path.display()))
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, renamed over it.
///
/// # Errors
/// The temporary file cannot be created, written, synced or renamed (it is removed then).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        // The rename itself is durable once the directory is synced; failing that is not
        // worth failing the save for (some filesystems refuse to sync a directory).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp.{}", std::process::id()));
    path.with_file_name(name)
}

/// What a load put back, for the log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub saved_at: Timestamp,
    pub predictions: u64,
    pub connections: u64,
    pub scan_sources: u64,
    pub ppr_sources: u64,
    pub withheld: u64,
}

impl std::fmt::Display for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "state saved at packet time {}: {} predictions, {} connections, {} scan sources, \
             {} PPR sources, {} withheld notices",
            self.saved_at,
            self.predictions,
            self.connections,
            self.scan_sources,
            self.ppr_sources,
            self.withheld
        )
    }
}

#[cfg(test)]
mod tests;
