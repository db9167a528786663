//! A SYN flood from spoofed sources hiding a port-445 address scan: the adversarial input of the
//! table-exhaustion tests and of the flood benchmark. Generated here, deterministically, as
//! engine events (for the 2 M-SYN run, fed straight to `Engine::event`) or as a capture file
//! (for the `sensor analyze` tests).
//!
//! The scanner (`SCANNER`) sends one SYN to each of `targets` addresses on port 445, evenly
//! spread through `spoofed` SYNs from distinct spoofed IPv4 sources (10.0.0.0/8, then
//! 100.64.0.0/10 …, one SYN each) to one victim's port 80, all within `span`. Nobody answers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use etherparse::PacketBuilder;
use sensor::event::{PacketEvent, TcpFlags, TcpSegment, Transport};
use sensor::time::{self, Timestamp};

use crate::synth::{Capture, SynthPacket};

/// The scanner hidden in the flood.
pub const SCANNER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
/// The flood's target.
pub const VICTIM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 80), 80);
/// The scanned port.
pub const SCAN_PORT: u16 = 445;
/// 2026-01-01T00:00:00Z.
const START_SECS: u64 = 1_767_225_600;

/// The flood's shape.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    pub spoofed: u32,
    pub targets: u32,
    pub span: Duration,
}

/// One SYN of the flood: (time since the start, source, destination).
pub type Syn = (Duration, SocketAddr, SocketAddr);

impl Flood {
    /// Every SYN in time order: the scanner's interleaved with the spoofed ones.
    pub fn syns(self) -> impl Iterator<Item = Syn> {
        let total = u64::from(self.spoofed) + u64::from(self.targets);
        // The scanner sends its k-th SYN after every `every` spoofed ones.
        let every = u64::from(self.spoofed) / (u64::from(self.targets) + 1);
        let step = u64::try_from(self.span.as_nanos()).unwrap_or(u64::MAX) / total.max(1);
        let (mut spoofed, mut scanned) = (0u32, 0u32);
        (0..total).map(move |i| {
            let at = Duration::from_nanos(i * step);
            let scanner_due = scanned < self.targets
                && (spoofed == self.spoofed
                    || u64::from(spoofed) >= (u64::from(scanned) + 1) * every);
            if scanner_due {
                scanned += 1;
                let target = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 51, 100, 0)) + scanned);
                (
                    at,
                    SocketAddrV4::new(SCANNER, 40_000 + (scanned % 20_000) as u16).into(),
                    SocketAddrV4::new(target, SCAN_PORT).into(),
                )
            } else {
                spoofed += 1;
                // 10.0.0.1, 10.0.0.2, …: one SYN per spoofed source.
                let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + spoofed);
                let port = 1024 + (spoofed.wrapping_mul(7919) % 60_000) as u16;
                (at, SocketAddrV4::new(src, port).into(), VICTIM.into())
            }
        })
    }

    /// The flood as engine events.
    pub fn events(self) -> impl Iterator<Item = PacketEvent<'static>> {
        let start = Timestamp::from_secs(START_SECS);
        self.syns().map(move |(at, src, dst)| PacketEvent {
            ts: start
                + time::Duration::from_nanos(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX)),
            src,
            dst,
            vlan_depth: 0,
            transport: Transport::Tcp(TcpSegment {
                flags: TcpFlags(sensor_ebpf::tcp_flag::SYN),
                seq: 1,
                ack: 0,
                window: 1024,
                payload_len: 0,
                head: &[],
            }),
        })
    }

    /// The flood as Ethernet frames, for a capture file.
    pub fn capture(self) -> Capture {
        let mac = [0x02, 0, 0, 0, 0, 1];
        let packets = self
            .syns()
            .map(|(at, src, dst)| {
                let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
                    unreachable!("the flood is IPv4")
                };
                let mut frame = Vec::with_capacity(60);
                PacketBuilder::ethernet2(mac, mac)
                    .ipv4(src.ip().octets(), dst.ip().octets(), 64)
                    .tcp(src.port(), dst.port(), 1, 1024)
                    .syn()
                    .write(&mut frame, &[])
                    .expect("a SYN frame");
                // Whole microseconds, to survive the pcap round trip.
                let ts = Duration::from_secs(START_SECS) + at;
                SynthPacket {
                    ts: Duration::from_micros(u64::try_from(ts.as_micros()).unwrap_or(u64::MAX)),
                    frame,
                }
            })
            .collect();
        Capture { packets }
    }
}

/// Peak resident set size of this process so far (`VmHWM`), in KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Current resident set size (`VmRSS`), in KiB.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_is_spread_through_the_flood() {
        let f = Flood {
            spoofed: 10_000,
            targets: 300,
            span: Duration::from_secs(2),
        };
        let syns: Vec<_> = f.syns().collect();
        assert_eq!(syns.len(), 10_300);
        let scanner: Vec<usize> = syns
            .iter()
            .enumerate()
            .filter(|(_, s)| s.1.ip() == SCANNER)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(scanner.len(), 300);
        assert!(scanner[0] > 20 && scanner[299] < 10_300 - 20, "{scanner:?}");
        let sources: std::collections::HashSet<_> = syns.iter().map(|s| s.1.ip()).collect();
        assert_eq!(sources.len(), 10_001, "one SYN per spoofed source");
        assert!(syns.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(syns.last().unwrap().0 < f.span);
    }
}

/// The bound the README documents for the whole engine (every table at its memory budget, the
/// process's own baseline included), in MiB.
pub const ENGINE_BOUND_MIB: u64 = 700;

/// What the 2 M-SYN flood run measured.
#[derive(Debug)]
pub struct BigFloodReport {
    pub spoofed: u32,
    pub seconds: f64,
    pub peak_rss_kib: u64,
    pub rss_before_kib: u64,
    pub address_scans: usize,
    pub failed_attempts: u64,
    pub evicted_as_failed: u64,
    /// Every table: (name, entries at the end, evicted).
    pub tables: Vec<(&'static str, u64, u64)>,
}

/// Keeps the notices only (`Collect` also keeps every attempt: 2 M of them here, which would
/// be the sink's memory, not the engine's).
#[derive(Default)]
struct Notices(Vec<sensor::detect::ScanNotice>);

impl sensor::engine::EngineSink for Notices {
    fn notice(&mut self, n: &sensor::detect::ScanNotice) {
        self.0.push(n.clone());
    }
    fn suppressed(
        &mut self,
        _: &sensor::detect::ScanNotice,
        _: sensor::engine::SuppressReason,
        _: &sensor::ppr::PprSample,
    ) {
    }
}

/// The big flood: 2 M spoofed SYNs in 10 s with the 300-target scan, at the default caps, fed
/// straight to the engine. Run it in a fresh process for a meaningful peak RSS.
pub fn run_big_flood(suppress: sensor::engine::Suppress, threshold: u64) -> BigFloodReport {
    use sensor::event::EventSink as _;
    let f = Flood {
        spoofed: 2_000_000,
        targets: 300,
        span: Duration::from_secs(10),
    };
    let rss_before_kib = rss_kib().unwrap_or(0);
    let config = sensor::engine::EngineConfig {
        suppress,
        bro: sensor::detect::BroScanConfig::with_first_threshold(threshold),
        ..sensor::engine::EngineConfig::default()
    };
    let started = std::time::Instant::now();
    let mut e = sensor::engine::Engine::new(config, Notices::default()).expect("default engine");
    for ev in f.events() {
        e.event(&ev);
    }
    // Attempts still inside their delay are reported at the end, as Bro does.
    e.finish();
    let scanner = IpAddr::V4(SCANNER);
    BigFloodReport {
        spoofed: f.spoofed,
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_kib: peak_rss_kib().unwrap_or(0),
        rss_before_kib,
        address_scans: e
            .sink
            .0
            .iter()
            .filter(|n| n.src == scanner && n.note == sensor::detect::NoticeKind::AddressScan)
            .count(),
        failed_attempts: e.stats.failed_attempts,
        evicted_as_failed: e.conns().evicted_as_failed,
        tables: e
            .tables()
            .into_iter()
            .map(|(name, t)| (name, t.len, t.evicted))
            .collect(),
    }
}

/// Bytes one entry of `table` costs, measured: the growth of this process's RSS while `n`
/// flood-shaped entries are added to a table of that kind alone, uncapped, divided by `n`. Run
/// each table in a fresh process. Tables: `connections` (pending SYNs), `scan_sources` (a Bro
/// source with one failed attempt), `trw_sources` (a TRW source with one failed first contact),
/// `trw_friendly` (a TRW friendly remote), `ppr_sources` (a source with one pair), `predictions` (one
/// peer for each of `n` hosts) and `predictions_one_host` (`n` peers of one host).
pub fn entry_bytes(table: &str, n: u32) -> Option<f64> {
    use sensor::conn::{ConnConfig, ConnOutcome, ConnTracker};
    use sensor::predict::{Channel, PeerTransport, PredictedPeer, PredictionConfig};
    let f = Flood {
        spoofed: n,
        targets: 0,
        span: Duration::from_secs(1),
    };
    let before = rss_kib()?;
    let start = Timestamp::from_secs(START_SECS);
    let keep: Box<dyn std::any::Any> = match table {
        "connections" => {
            let mut t = ConnTracker::new(ConnConfig {
                max_conns: usize::MAX,
                max_bytes: usize::MAX,
                ..ConnConfig::default()
            });
            let mut out = Vec::new();
            for ev in f.events() {
                t.on_event(&ev, &mut out);
            }
            assert!(out.is_empty() && t.len() == n as usize);
            Box::new(t)
        }
        "scan_sources" => {
            let mut b = sensor::detect::BroScan::new(sensor::detect::BroScanConfig {
                max_sources: usize::MAX,
                max_bytes: usize::MAX,
                ..sensor::detect::BroScanConfig::default()
            });
            let mut out = Vec::new();
            for ev in f.events() {
                let o = ConnOutcome {
                    ts: ev.ts,
                    orig: ev.src,
                    resp: ev.dst,
                    udp: false,
                    event: sensor::conn::BroEvent::Attempt,
                    state: sensor::detect::ConnState::S0,
                    established: false,
                    reverse: false,
                    uid: sensor::detect::Uid::default(),
                };
                b.check_into(&o.scan_check(), &mut out);
            }
            assert_eq!(b.tracked_sources(), n as usize);
            Box::new(b)
        }
        "trw_sources" | "trw_friendly" => {
            let mut t = sensor::detect::Trw::new(sensor::detect::TrwConfig {
                max_sources: usize::MAX,
                max_bytes: usize::MAX,
                // The flood's sources are remote; its targets are local, so each target that
                // contacts a spoofed source befriends it.
                local_nets: vec!["192.0.2.0/24".parse().expect("a network")],
                ..sensor::detect::TrwConfig::default()
            })
            .expect("valid TRW");
            let mut out = Vec::new();
            let friendly = table == "trw_friendly";
            for ev in f.events() {
                let (orig, resp) = if friendly {
                    (ev.dst.ip(), ev.src.ip())
                } else {
                    (ev.src.ip(), ev.dst.ip())
                };
                let state = if friendly {
                    sensor::detect::ConnState::SF
                } else {
                    sensor::detect::ConnState::S0
                };
                t.check(
                    ev.ts,
                    orig,
                    resp,
                    sensor::detect::Service::tcp(ev.dst.port()),
                    state,
                    0,
                    &mut out,
                );
            }
            if friendly {
                assert_eq!(t.friendly_remotes(), n as usize);
            } else {
                assert_eq!(t.tracked_sources(), n as usize);
            }
            Box::new(t)
        }
        "ppr_sources" => {
            let mut p = sensor::ppr::PprTracker::new(sensor::ppr::PprConfig {
                max_sources: usize::MAX,
                max_bytes: usize::MAX,
                ..sensor::ppr::PprConfig::default()
            });
            for ev in f.events() {
                p.record(ev.ts, ev.src.ip(), ev.dst.ip(), ev.dst.port(), true);
            }
            assert_eq!(p.len(), n as usize);
            Box::new(p)
        }
        "predictions" | "predictions_one_host" => {
            let t = sensor::predict::PredictionTable::new(PredictionConfig {
                max_per_host: usize::MAX,
                max_total: usize::MAX,
                max_bytes: usize::MAX,
                ..PredictionConfig::default()
            });
            let one_host = table == "predictions_one_host";
            for ((_, src, _), i) in f.syns().zip(0u32..) {
                let host = if one_host {
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10))
                } else {
                    src.ip()
                };
                t.insert(&PredictedPeer {
                    ts: start,
                    host,
                    peer: SocketAddrV4::new(Ipv4Addr::from(0xC633_6400 + i), 6881).into(),
                    transport: PeerTransport::Tcp,
                    channel: Channel::Synthetic,
                });
            }
            assert_eq!(t.len(), u64::from(n));
            Box::new(t)
        }
        _ => return None,
    };
    let after = rss_kib()?;
    drop(keep);
    Some((after.saturating_sub(before) * 1024) as f64 / f64::from(n))
}
