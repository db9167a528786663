//! The offline capture source: pcap and pcapng files, filtered by the same [`sensor_ebpf::parse`]
//! the XDP program runs, so a file and a replay of it through XDP produce the same events and
//! the same filter counters.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::Context;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError};
use sensor_ebpf::{
    confirm_signature, counter, kind, mark_flow, parse, tcp_action, Parsed, TcpAction,
    ANNOUNCE_SCAN, L4,
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
    Unsupported(u32),
}

impl From<DataLink> for LinkLayer {
    fn from(link: DataLink) -> Self {
        match link {
            DataLink::ETHERNET => LinkLayer::Ethernet,
            DataLink::LINUX_SLL => LinkLayer::LinuxSll,
            DataLink::LINUX_SLL2 => LinkLayer::LinuxSll2,
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => LinkLayer::RawIp,
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
        LinkLayer::RawIp => match data.first()? >> 4 {
            4 => ([0x08, 0x00], data),
            6 => ([0x86, 0xdd], data),
            _ => return None,
        },
        LinkLayer::Unsupported(_) => return None,
    };
    let ethertype: [u8; 2] = ethertype;
    buf.clear();
    buf.extend_from_slice(&[0; 12]);
    buf.extend_from_slice(&ethertype);
    buf.extend_from_slice(l3);
    Some(buf)
}

/// What reading a file produced.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Frames read from the file.
    pub frames: u64,
    /// Frames whose link type we cannot parse (counted, not forwarded).
    pub unsupported_link: u64,
    /// Set when the file ended in damage; everything before it was processed.
    pub error: Option<String>,
}

/// Calls `f` with the timestamp and the Ethernet-normalised bytes of every frame in `path`.
/// A damaged or truncated file stops the walk with `ReadReport::error` set; a file that is not
/// a capture at all is an `Err`.
pub fn read_frames(path: &Path, f: impl FnMut(Timestamp, &[u8])) -> anyhow::Result<ReadReport> {
    let file = File::open(path).with_context(|| path.display().to_string())?;
    read_frames_from(&path.display().to_string(), BufReader::new(file), f)
}

/// [`read_frames`] over any reader; `name` labels errors.
pub fn read_frames_from(
    name: &str,
    mut file: impl Read,
    mut f: impl FnMut(Timestamp, &[u8]),
) -> anyhow::Result<ReadReport> {
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .with_context(|| format!("{name}: too short to be a capture file"))?;
    let file = std::io::Cursor::new(magic).chain(file);
    let mut report = ReadReport::default();
    let mut buf = Vec::new();
    let mut visit = |report: &mut ReadReport, link: LinkLayer, ts: Timestamp, data: &[u8]| {
        report.frames += 1;
        match as_ethernet(link, data, &mut buf) {
            Some(frame) => f(ts, frame),
            None => report.unsupported_link += 1,
        }
    };
    if magic == PCAPNG_MAGIC {
        let reader =
            PcapNgReader::new(file).with_context(|| format!("{name}: bad pcapng header"))?;
        walk_pcapng(reader, &mut report, &mut visit);
    } else {
        let reader =
            PcapReader::new(file).with_context(|| format!("{name}: not a pcap or pcapng file"))?;
        walk_pcap(reader, &mut report, &mut visit);
    }
    Ok(report)
}

/// The first four bytes of a pcapng file: the Section Header Block type (pcapng spec,
/// draft-ietf-opsawg-pcapng, "Section Header Block"), the same in either byte order.
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Every packet of a pcapng file, with each interface's link layer and timestamp resolution.
fn walk_pcapng<R: Read>(
    mut reader: PcapNgReader<R>,
    report: &mut ReadReport,
    visit: &mut impl FnMut(&mut ReadReport, LinkLayer, Timestamp, &[u8]),
) {
    // Per interface: link layer and timestamp units per second.
    let mut interfaces: Vec<(LinkLayer, u64)> = Vec::new();
    while let Some(block) = reader.next_block() {
        match block {
            Ok(Block::InterfaceDescription(idb)) => {
                interfaces.push((idb.linktype.into(), units_per_second(&idb.options)));
            }
            Ok(Block::EnhancedPacket(epb)) => {
                let Some(&(link, units)) = interfaces.get(epb.interface_id as usize) else {
                    report.error = Some(format!(
                        "packet for undeclared interface {}",
                        epb.interface_id
                    ));
                    break;
                };
                // pcap-file hands back the raw count of interface units as nanoseconds.
                let raw = epb.timestamp.as_nanos();
                let ns = raw.saturating_mul(1_000_000_000) / u128::from(units);
                // Truncating as before: only a pcapng timestamp past the year 2554 is cut.
                #[allow(clippy::cast_possible_truncation)]
                let ts = Timestamp::from_nanos(ns as u64);
                visit(report, link, ts, &epb.data);
            }
            Ok(Block::SimplePacket(spb)) => {
                let link = interfaces.first().map_or(LinkLayer::Ethernet, |i| i.0);
                visit(report, link, Timestamp::ZERO, &spb.data);
            }
            Ok(_) => {}
            Err(e) => {
                report.error = Some(describe(e));
                break;
            }
        }
    }
}

/// Every packet of a classic pcap file.
fn walk_pcap<R: Read>(
    mut reader: PcapReader<R>,
    report: &mut ReadReport,
    visit: &mut impl FnMut(&mut ReadReport, LinkLayer, Timestamp, &[u8]),
) {
    let link = LinkLayer::from(reader.header().datalink);
    while let Some(packet) = reader.next_packet() {
        match packet {
            Ok(p) => {
                // A pcap timestamp (32-bit seconds) is at most 4.3e18 ns: it always fits.
                #[allow(clippy::cast_possible_truncation)]
                let ts = Timestamp::from_nanos(p.timestamp.as_nanos() as u64);
                visit(report, link, ts, &p.data);
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

/// Timestamp units per second from an interface's `if_tsresol` (default: microseconds).
fn units_per_second(options: &[InterfaceDescriptionOption]) -> u64 {
    for opt in options {
        if let InterfaceDescriptionOption::IfTsResol(r) = *opt {
            let exp = u32::from(r & 0x7f);
            return if r & 0x80 != 0 {
                2u64.checked_pow(exp).unwrap_or(1 << 63)
            } else {
                10u64.checked_pow(exp).unwrap_or(1_000_000_000_000_000_000)
            };
        }
    }
    1_000_000
}

/// Runs the pre-filter over a capture: calls `f` for every event the XDP program would forward,
/// and returns the counters the XDP program would have.
pub fn prefilter_file(
    path: &Path,
    snaplen: u32,
    f: impl FnMut(&PacketEvent<'_>),
) -> anyhow::Result<(CounterSnapshot, ReadReport)> {
    let file = File::open(path).with_context(|| path.display().to_string())?;
    prefilter_reader(
        &path.display().to_string(),
        BufReader::new(file),
        snaplen,
        f,
    )
}

/// [`prefilter_file`] over any reader (a progress-reporting one, a socket, a fuzzer's bytes).
pub fn prefilter_reader(
    name: &str,
    reader: impl Read,
    snaplen: u32,
    mut f: impl FnMut(&PacketEvent<'_>),
) -> anyhow::Result<(CounterSnapshot, ReadReport)> {
    let mut prefilter = Prefilter::new(snaplen);
    let mut decode_errors = 0u64;
    let report = read_frames_from(name, reader, |ts, frame| {
        prefilter.counters.0[counter::PACKETS as usize] += 1;
        match prefilter.frame(frame, ts) {
            Ok(Some(event)) => f(&event),
            Ok(None) => {}
            Err(_) => decode_errors += 1,
        }
    })?;
    debug_assert_eq!(decode_errors, 0, "parse() only forwards decodable headers");
    let mut counters = prefilter.counters;
    counters.0[counter::NON_IP as usize] += report.unsupported_link;
    Ok((counters, report))
}

/// The XDP program's decisions, offline: the shared `parse` and `tcp_action` policy, with the
/// flow table the program keeps in its `FLOWS` map and the counters it keeps per CPU.
#[derive(Debug)]
pub struct Prefilter {
    snaplen: u32,
    pub flows: FlowMarks,
    pub counters: CounterSnapshot,
}

impl Prefilter {
    pub fn new(snaplen: u32) -> Self {
        Self {
            snaplen,
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
        }
        counters[slot as usize] += 1;
        let hdr = &parsed.hdr;
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
mod tests {
    use super::*;
    use crate::event::{EventKind, Transport};
    use std::borrow::Cow;
    use std::path::PathBuf;

    use etherparse::PacketBuilder;
    use pcap_file::pcap::{PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sensor-pcap-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    /// A BEP 5 `ping` query: a KRPC message is a bencoded dictionary.
    const KRPC_PING: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";

    /// An Ethernet frame carrying `payload` in UDP over IPv4.
    fn udp4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv4(src, dst, 64)
            .udp(40000, 50000)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// An Ethernet frame carrying `payload` in UDP over IPv6.
    fn udp6(src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [3; 6])
            .ipv6(src, dst, 64)
            .udp(3478, 45658)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// A classic pcap (Ethernet, microsecond timestamps) of `frames` at `(secs, micros)`.
    fn pcap_bytes(frames: &[((u64, u32), Vec<u8>)]) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for ((secs, micros), data) in frames {
            let ts = std::time::Duration::new(*secs, micros * 1000);
            let len = u32::try_from(data.len()).unwrap();
            w.write_packet(&PcapPacket::new(ts, len, data)).unwrap();
        }
        w.into_writer()
    }

    /// A pcapng with one Ethernet interface per entry of `tsresol` (`None`: the default
    /// microseconds) and `packets` as `(interface, raw timestamp in its units, frame)`.
    fn pcapng_bytes(tsresol: &[Option<u8>], packets: &[(u32, u64, Vec<u8>)]) -> Vec<u8> {
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        for r in tsresol {
            let options = r
                .map(InterfaceDescriptionOption::IfTsResol)
                .into_iter()
                .collect();
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0xffff,
                options,
            })
            .unwrap();
        }
        for (interface_id, raw, data) in packets {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: *interface_id,
                timestamp: std::time::Duration::from_nanos(*raw),
                original_len: u32::try_from(data.len()).unwrap(),
                data: Cow::Borrowed(data),
                options: vec![],
            })
            .unwrap();
        }
        w.into_inner()
    }

    fn prefilter_bytes(
        bytes: &[u8],
        f: impl FnMut(&PacketEvent<'_>),
    ) -> (CounterSnapshot, ReadReport) {
        prefilter_reader("test", bytes, 1472, f).unwrap()
    }

    #[test]
    fn pcap_gives_every_datagram_with_its_payload_and_time() {
        let frames: Vec<_> = (0..3u8)
            .map(|i| {
                let mut payload = KRPC_PING.to_vec();
                payload.extend(std::iter::repeat_n(b' ', usize::from(i)));
                let frame = udp4([190, 0, 0, 1], [190, 0, 0, 2], &payload);
                ((1_611_622_278, 556_477 + u32::from(i)), frame)
            })
            .collect();
        let mut events = Vec::new();
        let (counters, report) = prefilter_bytes(&pcap_bytes(&frames), |ev| {
            let Transport::Udp(udp) = ev.transport else {
                panic!("not UDP: {ev:?}")
            };
            events.push((ev.ts, ev.src, ev.dst, udp.payload_len, udp.head.to_vec()));
        });
        assert!(report.error.is_none());
        assert_eq!(report.frames, 3);
        assert_eq!(counters.get(counter::PACKETS), 3);
        assert_eq!(counters.get(counter::REC_UDP), 3);
        for (i, event) in events.iter().enumerate() {
            assert_eq!(usize::from(event.3), KRPC_PING.len() + i);
            assert_eq!(event.4.len(), KRPC_PING.len() + i, "whole payload kept");
            assert!(event.4.starts_with(KRPC_PING));
        }
        assert_eq!(
            events[0].0,
            Timestamp::from_nanos(1_611_622_278_556_477_000)
        );
        assert_eq!(events[0].1, "190.0.0.1:40000".parse().unwrap());
        assert_eq!(events[0].2, "190.0.0.2:50000".parse().unwrap());
    }

    /// `if_tsresol` 9 gives nanoseconds; an interface without it counts microseconds.
    #[test]
    fn pcapng_timestamp_resolution_per_interface_and_ipv6() {
        let src = "32fb:f967:681e:e96b:face:b00c:0:74fd".parse::<std::net::Ipv6Addr>();
        let dst = "20ed:470f:6f73:ce60:60be:8b4f:df37:b080".parse::<std::net::Ipv6Addr>();
        let frame = udp6(src.unwrap().octets(), dst.unwrap().octets(), KRPC_PING);
        let v4 = udp4([192, 0, 2, 1], [198, 51, 100, 2], KRPC_PING);
        let bytes = pcapng_bytes(
            &[Some(9), None],
            &[
                (0, 1_631_961_258_895_162_012, frame),
                (1, 1_631_961_259_000_001, v4),
            ],
        );
        let mut events = Vec::new();
        let (counters, report) = prefilter_bytes(&bytes, |ev| {
            events.push((ev.ts, ev.src, ev.dst, ev.kind()));
        });
        assert!(report.error.is_none());
        assert_eq!(counters.get(counter::PACKETS), 2);
        assert_eq!(
            events[0],
            (
                Timestamp::from_nanos(1_631_961_258_895_162_012),
                "[32fb:f967:681e:e96b:face:b00c:0:74fd]:3478"
                    .parse()
                    .unwrap(),
                "[20ed:470f:6f73:ce60:60be:8b4f:df37:b080]:45658"
                    .parse()
                    .unwrap(),
                EventKind::Udp
            )
        );
        assert_eq!(
            events[1].0,
            Timestamp::from_nanos(1_631_961_259_000_001_000)
        );
    }

    #[test]
    fn truncated_capture_keeps_what_came_before_the_damage() {
        let frames: Vec<_> = (0..10u32)
            .map(|i| {
                (
                    (1_000, i),
                    udp4([192, 0, 2, 1], [198, 51, 100, 2], KRPC_PING),
                )
            })
            .collect();
        let bytes = pcap_bytes(&frames);
        let (_, report) = prefilter_bytes(&bytes[..bytes.len() - 7], |_| {});
        assert_eq!(report.frames, 9, "all but the cut-off last frame");
        let error = report.error.unwrap();
        assert!(error.contains("truncated"), "{error}");

        let packets: Vec<_> = (0..10u64)
            .map(|i| (0, i, udp4([192, 0, 2, 1], [198, 51, 100, 2], KRPC_PING)))
            .collect();
        let bytes = pcapng_bytes(&[None], &packets);
        let (counters, report) = prefilter_bytes(&bytes[..bytes.len() / 2], |_| {});
        assert!(report.error.is_some(), "damage must be reported");
        assert!(report.frames > 1 && report.frames < 10, "{}", report.frames);
        assert_eq!(counters.get(counter::PACKETS), report.frames);
    }

    /// The same checks on third-party captures (the corpus); expected values come from
    /// tshark's reading of the same files.
    mod corpus {
        use super::*;
        use crate::test_support::corpus;

        #[test]
        fn suricata_dht_capture_gives_every_datagram_with_its_payload() {
            let mut events = Vec::new();
            let (counters, report) = prefilter_file(
                &corpus("OISF-suricata-verify/bittorrent-dht/input.pcap"),
                1472,
                |ev| {
                    let Transport::Udp(udp) = ev.transport else {
                        panic!("not UDP: {ev:?}")
                    };
                    events.push((ev.ts, ev.src, ev.dst, udp.payload_len, udp.head.to_vec()));
                },
            )
            .unwrap();
            assert!(report.error.is_none());
            assert_eq!(report.frames, 16);
            assert_eq!(counters.get(counter::REC_UDP), 16);
            let udp_lengths = [
                64, 55, 64, 59, 109, 82, 112, 107, 103, 90, 137, 55, 155, 55, 57, 52,
            ];
            for (event, udp_len) in events.iter().zip(udp_lengths) {
                assert_eq!(event.3, udp_len - 8);
                assert_eq!(
                    event.4.len(),
                    usize::from(udp_len - 8),
                    "whole payload kept"
                );
                assert!(
                    event.4.starts_with(b"d1:"),
                    "KRPC messages are bencoded dictionaries"
                );
            }
            assert_eq!(
                events[0].0,
                Timestamp::from_nanos(1_611_622_278_556_477_000)
            );
            assert_eq!(events[0].1, "190.0.0.1:40000".parse().unwrap());
            assert_eq!(events[0].2, "190.0.0.2:50000".parse().unwrap());
        }

        #[test]
        fn pcapng_nanosecond_resolution_and_ipv6() {
            let mut first = None;
            let (counters, _) = prefilter_file(
                &corpus("ntop-nDPI/bittorrent_transmission.pcapng"),
                1472,
                |ev| {
                    first.get_or_insert((ev.ts, ev.kind()));
                },
            )
            .unwrap();
            // if_tsresol = 9: 1631961258.895162012 exactly, not a microsecond reading.
            assert_eq!(
                first,
                Some((
                    Timestamp::from_nanos(1_631_961_258_895_162_012),
                    EventKind::Udp
                ))
            );
            assert_eq!(counters.get(counter::PACKETS), 7723);

            let mut v6 = Vec::new();
            prefilter_file(&corpus("ntop-nDPI/lru_ipv6_caches.pcapng"), 1472, |ev| {
                v6.push((ev.src, ev.dst, ev.kind()));
            })
            .unwrap();
            assert_eq!(
                v6[0],
                (
                    "[32fb:f967:681e:e96b:face:b00c:0:74fd]:3478"
                        .parse()
                        .unwrap(),
                    "[20ed:470f:6f73:ce60:60be:8b4f:df37:b080]:45658"
                        .parse()
                        .unwrap(),
                    EventKind::Udp
                )
            );
        }

        #[test]
        fn truncated_capture_keeps_what_came_before_the_damage() {
            let bytes = std::fs::read(corpus("ntop-nDPI/bittorrent_transmission.pcapng")).unwrap();
            let cut = scratch("cut.pcapng");
            std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
            let (counters, report) = prefilter_file(&cut, 1472, |_| {}).unwrap();
            assert!(report.error.is_some(), "damage must be reported");
            assert!(
                report.frames > 1000 && report.frames < 7723,
                "{}",
                report.frames
            );
            assert_eq!(counters.get(counter::PACKETS), report.frames);

            let bytes = std::fs::read(corpus("ntop-nDPI/synscan.pcap")).unwrap();
            let cut = scratch("cut.pcap");
            std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
            let (_, report) = prefilter_file(&cut, 1472, |_| {}).unwrap();
            assert_eq!(report.frames, 2010, "all but the cut-off last frame");
            let error = report.error.unwrap();
            assert!(error.contains("truncated"), "{error}");
        }
    }

    /// Fuzzer finding: a segment of a marked flow whose TCP options run past the captured
    /// bytes has nothing to copy; it must come out empty, not panic.
    #[test]
    fn marked_flow_segment_cut_inside_its_options() {
        let segment = |payload: &[u8]| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2([2; 6], [3; 6])
                .ipv4([192, 0, 2, 1], [198, 51, 100, 2], 64)
                .tcp(40000, 6881, 1, 1000)
                .ack(1)
                .write(&mut out, payload)
                .unwrap();
            out
        };
        let mut hs = b"\x13BitTorrent protocol".to_vec();
        hs.resize(68, 0);
        let mut p = Prefilter::new(1472);
        assert!(p
            .frame(&segment(&hs), Timestamp::from_nanos(1))
            .unwrap()
            .is_some());
        // A 60-byte TCP header (data offset 15) before 60 payload bytes, cut at 77 bytes.
        let mut cut = segment(&[0u8; 100]);
        cut[14 + 20 + 12] = 15 << 4;
        cut.truncate(77);
        let ev = p
            .frame(&cut, Timestamp::from_nanos(2))
            .unwrap()
            .expect("forwarded");
        let Transport::Tcp(seg) = ev.transport else {
            panic!("not TCP")
        };
        assert_eq!((seg.payload_len, seg.head.len()), (60, 0));
    }

    #[test]
    fn non_captures_are_clear_errors() {
        let text = scratch("notes.txt");
        std::fs::write(&text, "this is not a capture file\n").unwrap();
        let err = prefilter_file(&text, 1472, |_| {}).unwrap_err().to_string();
        assert!(err.contains("not a pcap or pcapng file"), "{err}");

        let tiny = scratch("tiny");
        std::fs::write(&tiny, [0xd4, 0xc3]).unwrap();
        let err = prefilter_file(&tiny, 1472, |_| {}).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");

        let err = prefilter_file(Path::new("/nonexistent/x.pcap"), 1472, |_| {}).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.pcap"));
    }

    /// The same IPv4 UDP packet under each supported link layer parses to the same event.
    #[test]
    fn cooked_and_raw_link_layers_normalise_to_ethernet() {
        let l3: Vec<u8> = {
            let mut ip = vec![
                0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 2,
            ];
            let payload = b"d1:ad2:id20:01234567890123456789e1:q4:ping1:t2:xx1:y1:qe";
            let total = u16::try_from(20 + 8 + payload.len()).unwrap();
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&6881u16.to_be_bytes());
            ip.extend_from_slice(&6881u16.to_be_bytes());
            ip.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
            ip.extend_from_slice(&[0, 0]);
            ip.extend_from_slice(payload);
            ip
        };
        let mut ethernet = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        ethernet.extend_from_slice(&l3);
        let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0, 0x08, 0x00];
        sll.extend_from_slice(&l3);
        let mut sll2 = vec![
            0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0,
        ];
        sll2.extend_from_slice(&l3);

        let event_of = |link: LinkLayer, data: &[u8]| {
            let mut buf = Vec::new();
            let frame = as_ethernet(link, data, &mut buf)
                .expect("supported")
                .to_vec();
            let mut prefilter = Prefilter::new(1472);
            let ev = prefilter
                .frame(&frame, Timestamp::from_nanos(1))
                .unwrap()
                .unwrap();
            crate::event::EventLine::from(&ev)
        };
        let reference = event_of(LinkLayer::Ethernet, &ethernet);
        assert_eq!(reference.src, "192.0.2.1:6881");
        assert_eq!(event_of(LinkLayer::LinuxSll, &sll), reference);
        assert_eq!(event_of(LinkLayer::LinuxSll2, &sll2), reference);
        assert_eq!(event_of(LinkLayer::RawIp, &l3), reference);
        let mut buf = Vec::new();
        assert!(as_ethernet(LinkLayer::LinuxSll, &sll[..10], &mut buf).is_none());
        assert!(as_ethernet(LinkLayer::Unsupported(147), &l3, &mut buf).is_none());
    }
}
