//! The offline capture source: pcap and pcapng files, filtered by the same [`sensor_ebpf::parse`]
//! the XDP program runs, so a file and a replay of it through XDP produce the same events and
//! the same filter counters.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::Context;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError};
use sensor_ebpf::{
    confirm_signature, counter, kind, mark_flow, parse, record_len, tcp_action, udp_action,
    udp_policy, Parsed, TcpAction, UdpAction, ANNOUNCE_SCAN, L4,
};

use super::flows::FlowMarks;
use super::record::{event_from_header, DecodeError, Detail};
use super::CounterSnapshot;
use crate::event::{PacketEvent, Timestamp};

/// How a capture's frames start, normalised to Ethernet before parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkLayer {
    Ethernet,
    /// Linux cooked capture v1: 16-byte header, protocol at offset 14.
    LinuxSll,
    /// Linux cooked capture v2: 20-byte header, protocol at offset 0.
    LinuxSll2,
    /// Bare IPv4 or IPv6, told apart by the version nibble.
    RawIp,
    /// BSD loopback (`DLT_NULL`, `DLT_LOOP`: macOS `lo0`, OpenBSD): a 4-byte address family,
    /// whose values differ between systems and byte orders, then IP, told apart by its version.
    Loopback,
    Unsupported(u32),
}

impl From<DataLink> for LinkLayer {
    fn from(link: DataLink) -> Self {
        match link {
            DataLink::ETHERNET => LinkLayer::Ethernet,
            DataLink::LINUX_SLL => LinkLayer::LinuxSll,
            DataLink::LINUX_SLL2 => LinkLayer::LinuxSll2,
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => LinkLayer::RawIp,
            DataLink::NULL | DataLink::LOOP => LinkLayer::Loopback,
            other => LinkLayer::Unsupported(u32::from(other)),
        }
    }
}

/// Rewrites a frame of `link` as an Ethernet frame; Ethernet frames are returned as they are.
/// `None` if the frame is too short for its link header or the link type is unsupported.
fn as_ethernet<'a>(link: LinkLayer, data: &'a [u8], buf: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    let (ethertype, l3) = match link {
        LinkLayer::Ethernet => return Some(data),
        LinkLayer::LinuxSll => (data.get(14..16)?.try_into().ok()?, data.get(16..)?),
        LinkLayer::LinuxSll2 => (data.get(0..2)?.try_into().ok()?, data.get(20..)?),
        LinkLayer::RawIp | LinkLayer::Loopback => {
            let l3 = if link == LinkLayer::Loopback {
                data.get(4..)?
            } else {
                data
            };
            match l3.first()? >> 4 {
                4 => ([0x08, 0x00], l3),
                6 => ([0x86, 0xdd], l3),
                _ => return None,
            }
        }
        LinkLayer::Unsupported(_) => return None,
    };
    let ethertype: [u8; 2] = ethertype;
    buf.clear();
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(&ethertype);
    buf.extend_from_slice(l3);
    Some(buf)
}

/// What reading a file produced. Every frame read is in `frames`; the other counts say what
/// was incomplete about some of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Frames read from the file.
    pub frames: u64,
    /// Frames stored shorter than they were on the wire (a snap length: `tcpdump -s`,
    /// `editcap -s`). They are processed as captured, as XDP processes a short packet.
    pub frames_cut: u64,
    /// The bytes those frames lost to the snap length (original minus captured length).
    pub bytes_not_captured: u64,
    /// Frames whose link type we cannot parse (counted, not forwarded), by link type.
    pub unsupported_links: BTreeMap<u32, u64>,
    /// Frames too short for their link header, or raw-IP frames of no IP version: not IP.
    pub bad_link_header: u64,
    /// pcapng Section Header Blocks read (a concatenation of files has several); 0 for pcap.
    pub sections: u64,
    /// Set when the file ended in damage; everything before it was processed.
    pub error: Option<String>,
}

impl ReadReport {
    /// Frames on a link type we cannot parse, all types together.
    pub fn frames_unsupported_link(&self) -> u64 {
        self.unsupported_links.values().sum()
    }

    /// The named capture counters `sensor prefilter --json`, `peers --stats` and the run
    /// summary show.
    pub fn counters(&self) -> [(&'static str, u64); 3] {
        [
            ("frames_cut", self.frames_cut),
            ("bytes_not_captured", self.bytes_not_captured),
            ("frames_unsupported_link", self.frames_unsupported_link()),
        ]
    }

    /// Adds `other`'s counts to these (its `error` is not carried over).
    pub fn add(&mut self, other: &ReadReport) {
        self.frames += other.frames;
        self.frames_cut += other.frames_cut;
        self.bytes_not_captured += other.bytes_not_captured;
        for (&link, &n) in &other.unsupported_links {
            *self.unsupported_links.entry(link).or_default() += n;
        }
        self.bad_link_header += other.bad_link_header;
        self.sections += other.sections;
    }

    /// What the user should know about this file's frames: one warning if frames were cut,
    /// and one per unsupported link type met (what it is, how many frames it cost).
    pub fn warnings(&self) -> Vec<String> {
        let cut = (self.frames_cut > 0).then(|| {
            format!(
                "{} frames cut by a snap length ({} bytes not captured): coordination messages \
                 in the lost bytes cannot be read, so BitTorrent hosts may be reported as scanners",
                self.frames_cut, self.bytes_not_captured
            )
        });
        let links = self.unsupported_links.iter().map(|(&link, &n)| {
            let name = match DataLink::from(link) {
                DataLink::Unknown(_) => String::new(),
                known => format!(" ({known:?})"),
            };
            format!("link type {link}{name} is not supported: {n} frames skipped")
        });
        cut.into_iter().chain(links).collect()
    }

    fn frame(&mut self, captured: usize, orig_len: u32) {
        self.frames += 1;
        let captured = u64::try_from(captured).unwrap_or(u64::MAX);
        if u64::from(orig_len) > captured {
            self.frames_cut += 1;
            self.bytes_not_captured += u64::from(orig_len) - captured;
        }
    }
}

/// Opens a capture file, with a message that says what is wrong with a path that is not one:
/// missing, a directory, not readable.
pub fn open(path: &Path) -> anyhow::Result<File> {
    let name = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!(io_message(&name, &e)))?;
    anyhow::ensure!(!meta.is_dir(), "{name}: is a directory, not a capture file");
    File::open(path).map_err(|e| anyhow::anyhow!(io_message(&name, &e)))
}

/// Checks, without reading it through, that `path` opens and starts like a pcap or pcapng file.
pub fn probe(path: &Path) -> anyhow::Result<()> {
    let name = path.display().to_string();
    let mut magic = [0u8; 4];
    read_magic(&name, &mut open(path)?, &mut magic)?;
    anyhow::ensure!(
        magic == PCAPNG_MAGIC || PCAP_MAGICS.contains(&magic),
        "{name}: not a pcap or pcapng file"
    );
    Ok(())
}

fn read_magic(name: &str, file: &mut impl Read, magic: &mut [u8; 4]) -> anyhow::Result<()> {
    file.read_exact(magic).map_err(|e| {
        anyhow::anyhow!(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => format!("{name}: too short to be a capture file"),
            _ => io_message(&name, &e),
        })
    })
}

fn io_message(name: &impl std::fmt::Display, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{name}: no such file"),
        std::io::ErrorKind::PermissionDenied => format!("{name}: permission denied"),
        std::io::ErrorKind::IsADirectory => format!("{name}: is a directory, not a capture file"),
        _ => format!("{name}: cannot read: {e}"),
    }
}

/// Calls `f` with the timestamp and the Ethernet-normalised bytes of every frame in `path`.
/// A damaged or truncated file stops the walk with `ReadReport::error` set; a file that is not
/// a capture at all (or no file) is an `Err`.
pub fn read_frames(path: &Path, f: impl FnMut(Timestamp, &[u8])) -> anyhow::Result<ReadReport> {
    let file = open(path)?;
    read_frames_from(&path.display().to_string(), BufReader::new(file), f)
}

/// [`read_frames`] over any reader; `name` labels errors.
///
/// Frames cut by a snap length are passed on as captured and counted
/// (`ReadReport::frames_cut`); the pcap header's snap length is not enforced (0 means no
/// limit). In pcapng, each Section Header Block starts a new set of interfaces, so a
/// concatenation of files keeps each one's link types and timestamp resolutions.
pub fn read_frames_from(
    name: &str,
    mut file: impl Read,
    mut f: impl FnMut(Timestamp, &[u8]),
) -> anyhow::Result<ReadReport> {
    let mut magic = [0u8; 4];
    read_magic(name, &mut file, &mut magic)?;
    let file = std::io::Cursor::new(magic).chain(file);
    let mut report = ReadReport::default();
    let mut buf = Vec::new();
    let mut visit =
        |report: &mut ReadReport, link: LinkLayer, ts: Timestamp, data: &[u8], orig_len: u32| {
            report.frame(data.len(), orig_len);
            match link {
                LinkLayer::Unsupported(n) => *report.unsupported_links.entry(n).or_default() += 1,
                _ => match as_ethernet(link, data, &mut buf) {
                    Some(frame) => f(ts, frame),
                    None => report.bad_link_header += 1,
                },
            }
        };
    if magic == PCAPNG_MAGIC {
        let reader =
            PcapNgReader::new(file).with_context(|| format!("{name}: bad pcapng header"))?;
        report.sections = 1;
        walk_pcapng(reader, &mut report, &mut visit);
    } else {
        let reader = PcapReader::new(file).with_context(|| {
            if PCAP_MAGICS.contains(&magic) {
                format!("{name}: bad pcap header")
            } else {
                format!("{name}: not a pcap or pcapng file")
            }
        })?;
        walk_pcap(reader, &mut report, &mut visit);
    }
    Ok(report)
}

/// The first four bytes of a pcapng file: the Section Header Block type (pcapng spec,
/// draft-ietf-opsawg-pcapng, "Section Header Block"), the same in either byte order.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// The first four bytes of a classic pcap file: microsecond and nanosecond timestamps, each
/// in either byte order.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
    [0x4d, 0x3c, 0xb2, 0xa1],
];

/// What a pcapng Interface Description Block says about its packets.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkLayer,
    /// Timestamp units per second (`if_tsresol`).
    units: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: u64,
    /// 0: no limit.
    snaplen: u32,
}

impl Interface {
    /// A packet timestamp of `raw` units.
    fn timestamp(&self, raw: u64) -> Timestamp {
        let ns = u128::from(raw).saturating_mul(1_000_000_000) / u128::from(self.units)
            + u128::from(self.offset_secs) * 1_000_000_000;
        Timestamp::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }
}

/// Every packet of a pcapng file, with each interface's link layer and timestamp resolution.
/// Interface ids are per section: a Section Header Block forgets the interfaces before it.
fn walk_pcapng<R: Read>(
    mut reader: PcapNgReader<R>,
    report: &mut ReadReport,
    visit: &mut impl FnMut(&mut ReadReport, LinkLayer, Timestamp, &[u8], u32),
) {
    let mut interfaces: Vec<Interface> = Vec::new();
    while let Some(block) = reader.next_block() {
        let (interface_id, raw_ts, orig_len, data) = match block {
            Ok(Block::SectionHeader(_)) => {
                interfaces.clear();
                report.sections += 1;
                continue;
            }
            Ok(Block::InterfaceDescription(idb)) => {
                let mut interface = Interface {
                    link: idb.linktype.into(),
                    units: 1_000_000,
                    offset_secs: 0,
                    snaplen: idb.snaplen,
                };
                for opt in &idb.options {
                    match *opt {
                        InterfaceDescriptionOption::IfTsResol(r) => {
                            interface.units = units_per_second(r);
                        }
                        InterfaceDescriptionOption::IfTsOffset(s) => interface.offset_secs = s,
                        _ => {}
                    }
                }
                interfaces.push(interface);
                continue;
            }
            // pcap-file hands back the raw count of interface units as nanoseconds.
            Ok(Block::EnhancedPacket(epb)) => {
                #[allow(clippy::cast_possible_truncation)] // the block field is 64 bits wide
                let raw = epb.timestamp.as_nanos() as u64;
                (epb.interface_id, raw, epb.original_len, epb.data)
            }
            // The obsolete Packet Block (pcapng spec, appendix): an EPB with a 16-bit id.
            Ok(Block::Packet(pb)) => (
                u32::from(pb.interface_id),
                pb.timestamp,
                pb.original_len,
                pb.data,
            ),
            Ok(Block::SimplePacket(spb)) => {
                // No length of its own: the block body, padding included, cut to the original
                // length and to interface 0's snap length.
                let Some(&interface) = interfaces.first() else {
                    report.error = Some("simple packet block before any interface".into());
                    break;
                };
                let mut len = spb.data.len().min(spb.original_len as usize);
                if interface.snaplen != 0 {
                    len = len.min(interface.snaplen as usize);
                }
                visit(
                    report,
                    interface.link,
                    Timestamp::ZERO,
                    &spb.data[..len],
                    spb.original_len,
                );
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                report.error = Some(describe(e));
                break;
            }
        };
        let Some(interface) = interfaces.get(interface_id as usize) else {
            report.error = Some(format!(
                "packet for undeclared interface {interface_id} (section {})",
                report.sections
            ));
            break;
        };
        visit(
            report,
            interface.link,
            interface.timestamp(raw_ts),
            &data,
            orig_len,
        );
    }
}

/// Every packet of a classic pcap file. Packets are read raw: `pcap-file`'s checked reader
/// rejects every packet whose original length exceeds the header's snap length (all the cut
/// ones, and every packet when the header says 0), so the checks here are ours.
fn walk_pcap<R: Read>(
    mut reader: PcapReader<R>,
    report: &mut ReadReport,
    visit: &mut impl FnMut(&mut ReadReport, LinkLayer, Timestamp, &[u8], u32),
) {
    let header = reader.header();
    let link = LinkLayer::from(header.datalink);
    let frac_ns = match header.ts_resolution {
        pcap_file::TsResolution::MicroSecond => 1_000,
        pcap_file::TsResolution::NanoSecond => 1,
    };
    while let Some(packet) = reader.next_raw_packet() {
        match packet {
            Ok(p) => {
                // At most 4.3e18 ns: a 32-bit seconds field always fits.
                let ts = Timestamp::from_nanos(
                    u64::from(p.ts_sec) * 1_000_000_000 + u64::from(p.ts_frac) * frac_ns,
                );
                visit(report, link, ts, &p.data, p.orig_len);
            }
            Err(e) => {
                report.error = Some(describe(e));
                break;
            }
        }
    }
}

fn describe(e: PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "truncated capture (the last packet is cut off)".into(),
        PcapError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "truncated capture (the file ends inside a packet)".into()
        }
        other => other.to_string(),
    }
}

/// Timestamp units per second from an interface's `if_tsresol` (absent: microseconds).
fn units_per_second(r: u8) -> u64 {
    let exp = u32::from(r & 0x7f);
    if r & 0x80 != 0 {
        2u64.checked_pow(exp).unwrap_or(1 << 63)
    } else {
        10u64.checked_pow(exp).unwrap_or(1_000_000_000_000_000_000)
    }
}

/// The pre-filter's settings, as the XDP program's load-time globals `SNAPLEN` and
/// `UDP_POLICY`. A bare snap length converts to one with the default UDP policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterConfig {
    pub snaplen: u32,
    /// One of [`sensor_ebpf::udp_policy`].
    pub udp_policy: u32,
}

impl FilterConfig {
    /// The classified UDP policy, with metadata records for the datagrams that carry no
    /// coordination when UDP requests count as scan attempts.
    pub fn for_udp_scan(snaplen: u32, udp_scan: bool) -> Self {
        Self {
            snaplen,
            udp_policy: if udp_scan {
                udp_policy::CLASSIFIED_META
            } else {
                udp_policy::CLASSIFIED
            },
        }
    }
}

impl FilterConfig {
    /// With UDP requests counted as scan attempts, the classified policy also forwards the
    /// other datagrams as metadata records (the full policy forwards them anyway).
    #[must_use]
    pub fn with_udp_scan(mut self, udp_scan: bool) -> Self {
        if udp_scan && self.udp_policy == udp_policy::CLASSIFIED {
            self.udp_policy = udp_policy::CLASSIFIED_META;
        }
        self
    }
}

/// The UDP policy the live agent loads, and so the offline default that mirrors it: only the
/// heads of datagrams that can carry coordination.
pub const DEFAULT_UDP_POLICY: u32 = udp_policy::CLASSIFIED;

impl From<u32> for FilterConfig {
    fn from(snaplen: u32) -> Self {
        Self {
            snaplen,
            udp_policy: DEFAULT_UDP_POLICY,
        }
    }
}

/// Runs the pre-filter over a capture: calls `f` for every event the XDP program would forward,
/// and returns the counters the XDP program would have.
pub fn prefilter_file(
    path: &Path,
    config: impl Into<FilterConfig>,
    f: impl FnMut(&PacketEvent<'_>),
) -> anyhow::Result<(CounterSnapshot, ReadReport)> {
    let file = open(path)?;
    prefilter_reader(&path.display().to_string(), BufReader::new(file), config, f)
}

/// [`prefilter_file`] over any reader (a progress-reporting one, a socket, a fuzzer's bytes).
pub fn prefilter_reader(
    name: &str,
    reader: impl Read,
    config: impl Into<FilterConfig>,
    mut f: impl FnMut(&PacketEvent<'_>),
) -> anyhow::Result<(CounterSnapshot, ReadReport)> {
    prefilter_reader_timed(name, reader, config, |seen| {
        if let Seen::Event(ev) = seen {
            f(ev);
        }
    })
}

/// What the pre-filter tells the engine about one frame.
#[derive(Debug)]
pub enum Seen<'e, 'a> {
    /// A forwarded record's event.
    Event(&'e PacketEvent<'a>),
    /// A UDP datagram the classified policy did not forward (no coordination in it), which the
    /// full policy did, as an event no reader used. Offline, packet time still moves to its
    /// timestamp (`Engine::advance_to`), so attempt timers and table expiry run exactly as
    /// with every datagram forwarded; live, the agent's idle ticks move time instead.
    Time(Timestamp),
}

/// [`prefilter_reader`], also reporting the datagrams the UDP policy withheld ([`Seen::Time`]).
pub fn prefilter_reader_timed(
    name: &str,
    reader: impl Read,
    config: impl Into<FilterConfig>,
    mut f: impl FnMut(Seen<'_, '_>),
) -> anyhow::Result<(CounterSnapshot, ReadReport)> {
    let mut prefilter = Prefilter::with_config(config.into());
    let mut decode_errors = 0u64;
    let report = read_frames_from(name, reader, |ts, frame| {
        prefilter.counters.0[counter::PACKETS as usize] += 1;
        prefilter.counters.0[counter::BYTES_SEEN as usize] += frame.len() as u64;
        prefilter.withheld_udp = false;
        match prefilter.frame(frame, ts) {
            Ok(Some(event)) => f(Seen::Event(&event)),
            Ok(None) if prefilter.withheld_udp => f(Seen::Time(ts)),
            Ok(None) => {}
            Err(_) => decode_errors += 1,
        }
    })?;
    debug_assert_eq!(decode_errors, 0, "parse() only forwards decodable headers");
    // Frames the pre-filter never saw (a link type it cannot read, a link header cut short)
    // are not IP to it: counted so that every frame read is in `packets`, and
    // packets = records + skipped still holds.
    let unseen = report.frames_unsupported_link() + report.bad_link_header;
    let mut counters = prefilter.counters;
    counters.0[counter::PACKETS as usize] += unseen;
    counters.0[counter::NON_IP as usize] += unseen;
    Ok((counters, report))
}

/// The XDP program's decisions, offline: the shared `parse` and `tcp_action` policy, with the
/// flow table the program keeps in its `FLOWS` map and the counters it keeps per CPU.
#[derive(Debug)]
pub struct Prefilter {
    snaplen: u32,
    udp_policy: u32,
    /// Set by [`Prefilter::frame`] when the UDP policy withheld the frame's datagram.
    pub withheld_udp: bool,
    pub flows: FlowMarks,
    pub counters: CounterSnapshot,
}

impl Prefilter {
    /// The pre-filter with the default UDP policy ([`DEFAULT_UDP_POLICY`]).
    pub fn new(snaplen: u32) -> Self {
        Self::with_config(snaplen.into())
    }

    pub fn with_config(config: FilterConfig) -> Self {
        Self {
            snaplen: config.snaplen,
            udp_policy: config.udp_policy,
            withheld_udp: false,
            flows: FlowMarks::default(),
            counters: CounterSnapshot::default(),
        }
    }

    /// One frame through the pre-filter: the event it forwards, if any, with the counters
    /// updated as the XDP program updates its own (except `PACKETS`, which the caller counts).
    pub fn frame<'a>(
        &mut self,
        frame: &'a [u8],
        ts: Timestamp,
    ) -> Result<Option<PacketEvent<'a>>, DecodeError> {
        let counters = &mut self.counters.0;
        let mut parsed = match parse(frame, self.snaplen, &mut |slot| {
            counters[slot as usize] += 1;
        }) {
            Ok(parsed) => parsed,
            Err(slot) => {
                counters[slot as usize] += 1;
                return Ok(None);
            }
        };
        let mut slot = parsed.counter;
        if let L4::Tcp { .. } = parsed.l4 {
            let count = &mut |s: u32| counters[s as usize] += 1;
            slot = match tcp_action(&mut self.flows, frame, &mut parsed, count) {
                TcpAction::Control(s) | TcpAction::Data(s) => s,
                TcpAction::Probe(class) => {
                    if !probe_confirms(class, frame, &parsed) {
                        count(counter::TCP_OTHER);
                        return Ok(None);
                    }
                    mark_flow(&mut self.flows, &parsed.hdr, class, count);
                    counter::REC_TCP_DATA
                }
                TcpAction::Skip(s) => {
                    count(s);
                    return Ok(None);
                }
            };
        } else if let L4::Udp { .. } = parsed.l4 {
            let count = &mut |s: u32| counters[s as usize] += 1;
            slot = match udp_action(&mut self.flows, frame, &mut parsed, self.udp_policy, count) {
                UdpAction::Forward(s) => s,
                UdpAction::Skip(s) => {
                    count(s);
                    self.withheld_udp = s == counter::UDP_UNCLASSIFIED;
                    return Ok(None);
                }
            };
        }
        counters[slot as usize] += 1;
        let hdr = &parsed.hdr;
        // The record the program would put in the ring: its size, by kind.
        let size = record_len(hdr).unwrap_or(0) as u64;
        counters[counter::BYTES_FORWARDED as usize] += size;
        counters[counter::bytes_of(hdr.kind) as usize] += size;
        // `cap_len` is 0 when the payload starts past the captured bytes (TCP options cut by a
        // snap length), and `off` may then lie beyond the frame.
        let head = |off: usize| {
            frame
                .get(off..off + usize::from(hdr.cap_len))
                .unwrap_or_default()
        };
        let detail = match parsed.l4 {
            L4::Tcp {
                seq,
                ack,
                window,
                payload_off,
            } => Detail::Tcp {
                seq,
                ack,
                window,
                head: if hdr.kind == kind::TCP {
                    &[]
                } else {
                    head(payload_off)
                },
            },
            L4::Udp { payload_off } => Detail::Udp(head(payload_off)),
            L4::Icmp(q) => Detail::Icmp(q),
        };
        event_from_header(hdr, detail, ts).map(Some)
    }
}

/// The signature check the XDP program runs on the head it copied into a ring record: the same
/// function over a zero-filled copy. The program's record capacity never changes the outcome:
/// only the `cap_len` bytes copied are read, and at most `ANNOUNCE_SCAN` of them.
fn probe_confirms(class: u8, frame: &[u8], parsed: &Parsed) -> bool {
    let L4::Tcp { payload_off, .. } = parsed.l4 else {
        return false;
    };
    let cap = usize::from(parsed.hdr.cap_len);
    let mut copy = [0u8; ANNOUNCE_SCAN];
    let n = cap.min(ANNOUNCE_SCAN);
    copy[..n].copy_from_slice(&frame[payload_off..payload_off + n]);
    confirm_signature(class, &copy, cap)
}

#[cfg(test)]
mod tests;
