//! The offline capture source: pcap and pcapng files, filtered by the same [`sensor_ebpf::parse`]
//! the XDP program runs, so a file and a replay of it through XDP produce the same events and
//! the same filter counters.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::{DataLink, PcapError};
use sensor_ebpf::{counter, parse, L4};

use super::record::{event_from_header, DecodeError};
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
pub fn read_frames(path: &Path, mut f: impl FnMut(Timestamp, &[u8])) -> anyhow::Result<ReadReport> {
    let mut file =
        BufReader::new(File::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|_| anyhow::anyhow!("{}: too short to be a capture file", path.display()))?;
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
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            let mut reader = PcapNgReader::new(file)
                .map_err(|e| anyhow::anyhow!("{}: bad pcapng header: {e}", path.display()))?;
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
                        visit(&mut report, link, Timestamp(ns as u64), &epb.data);
                    }
                    Ok(Block::SimplePacket(spb)) => {
                        let link = interfaces.first().map_or(LinkLayer::Ethernet, |i| i.0);
                        visit(&mut report, link, Timestamp(0), &spb.data);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        report.error = Some(describe(e));
                        break;
                    }
                }
            }
        }
        _ => {
            let mut reader = PcapReader::new(file).map_err(|e| {
                anyhow::anyhow!("{}: not a pcap or pcapng file ({e})", path.display())
            })?;
            let link = LinkLayer::from(reader.header().datalink);
            while let Some(packet) = reader.next_packet() {
                match packet {
                    Ok(p) => {
                        let ts = Timestamp(p.timestamp.as_nanos() as u64);
                        visit(&mut report, link, ts, &p.data);
                    }
                    Err(e) => {
                        report.error = Some(describe(e));
                        break;
                    }
                }
            }
        }
    }
    Ok(report)
}

fn describe(e: PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "truncated capture (the last packet is cut off)".into(),
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
    mut f: impl FnMut(&PacketEvent<'_>),
) -> anyhow::Result<(CounterSnapshot, ReadReport)> {
    let mut counters = CounterSnapshot::default();
    let mut decode_errors = 0u64;
    let report = read_frames(path, |ts, frame| {
        counters.0[counter::PACKETS as usize] += 1;
        match prefilter_frame(frame, ts, snaplen, &mut counters) {
            Ok(Some(event)) => f(&event),
            Ok(None) => {}
            Err(_) => decode_errors += 1,
        }
    })?;
    debug_assert_eq!(decode_errors, 0, "parse() only forwards decodable headers");
    counters.0[counter::NON_IP as usize] += report.unsupported_link;
    Ok((counters, report))
}

/// One frame through the pre-filter: the event it forwards, if any, with `counters` updated as
/// the XDP program updates its own (except `PACKETS`, which the caller counts).
pub fn prefilter_frame<'a>(
    frame: &'a [u8],
    ts: Timestamp,
    snaplen: u32,
    counters: &mut CounterSnapshot,
) -> Result<Option<PacketEvent<'a>>, DecodeError> {
    let parsed = match parse(frame, snaplen, &mut |slot| counters.0[slot as usize] += 1) {
        Ok(parsed) => parsed,
        Err(slot) => {
            counters.0[slot as usize] += 1;
            return Ok(None);
        }
    };
    counters.0[parsed.counter as usize] += 1;
    let (tcp, head) = match parsed.l4 {
        L4::Tcp { seq, ack, window } => (Some((seq, ack, window)), &frame[..0]),
        L4::Udp { payload_off } => (
            None,
            &frame[payload_off..payload_off + usize::from(parsed.hdr.cap_len)],
        ),
    };
    event_from_header(&parsed.hdr, tcp, head, ts).map(Some)
}
