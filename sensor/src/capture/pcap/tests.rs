use super::*;
use crate::event::{EventKind, Transport};
use std::borrow::Cow;
use std::path::PathBuf;

use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
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

fn prefilter_bytes(bytes: &[u8], f: impl FnMut(&PacketEvent<'_>)) -> (CounterSnapshot, ReadReport) {
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
        // Every datagram, as the reader saw it: the full UDP policy.
        let full = FilterConfig {
            snaplen: 1472,
            udp_policy: udp_policy::FULL,
        };
        prefilter_file(&corpus("ntop-nDPI/lru_ipv6_caches.pcapng"), full, |ev| {
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
    // AF_INET in host order (DLT_NULL, little-endian here) and network order (DLT_LOOP).
    for af in [[2, 0, 0, 0], [0, 0, 0, 2]] {
        let frame = [&af[..], &l3].concat();
        assert_eq!(event_of(LinkLayer::Loopback, &frame), reference);
    }
    assert_eq!(LinkLayer::from(DataLink::NULL), LinkLayer::Loopback);
    assert_eq!(LinkLayer::from(DataLink::LOOP), LinkLayer::Loopback);
    let mut buf = Vec::new();
    assert!(as_ethernet(LinkLayer::LinuxSll, &sll[..10], &mut buf).is_none());
    assert!(as_ethernet(LinkLayer::Unsupported(147), &l3, &mut buf).is_none());
}

/// A classic pcap with `header`'s link type and snap length, each frame stored cut to it
/// (`orig_len` the whole frame), as `tcpdump -s` writes them.
fn pcap_cut(header: PcapHeader, frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut w = PcapWriter::with_header(Vec::new(), header).unwrap();
    for (micros, data) in frames {
        let ts = std::time::Duration::from_micros(*micros);
        let orig_len = u32::try_from(data.len()).unwrap();
        let kept = &data[..data.len().min(header.snaplen as usize)];
        w.write_packet(&PcapPacket::new(ts, orig_len, kept))
            .unwrap();
    }
    w.into_writer()
}

/// A TCP SYN as nmap -sS sends it: 24 bytes of header (an MSS option), 58-byte frame.
fn syn(dst_port: u16) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2; 6], [3; 6])
        .ipv4([203, 0, 113, 66], [198, 51, 100, 7], 64)
        .tcp(61234, dst_port, 1, 1024)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
        .unwrap()
        .write(&mut out, &[])
        .unwrap();
    out
}

/// A KRPC ping padded to `len` bytes (trailing whitespace, as earlier tests pad it).
fn krpc(len: usize) -> Vec<u8> {
    let mut m = KRPC_PING.to_vec();
    m.resize(len, b' ');
    m
}

#[test]
fn snap_length_cut_frames_are_processed_and_counted() {
    let dht = udp4([192, 0, 2, 1], [198, 51, 100, 2], &krpc(200));
    let mut frames: Vec<(u64, Vec<u8>)> = (0..5u16).map(|i| (u64::from(i), syn(20 + i))).collect();
    frames.push((10, dht.clone()));
    frames.push((11, syn(80)));
    let header = PcapHeader {
        snaplen: 96,
        ..PcapHeader::default()
    };
    let mut events = Vec::new();
    let (counters, report) = prefilter_bytes(&pcap_cut(header, &frames), |ev| {
        let udp = match &ev.transport {
            Transport::Udp(udp) => Some((usize::from(udp.payload_len), udp.head.len())),
            _ => None,
        };
        events.push((ev.ts, ev.kind(), udp));
    });
    assert_eq!(report.error, None, "a cut frame is no damage");
    assert_eq!(report.frames, 7, "every frame, not up to the first cut one");
    assert_eq!(
        (report.frames_cut, report.bytes_not_captured),
        (1, dht.len() as u64 - 96)
    );
    let warnings = report.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with("1 frames cut by a snap length (146 bytes not captured)"),
        "{warnings:?}"
    );
    assert_eq!(counters.get(counter::PACKETS), 7);
    assert_eq!(counters.get(counter::REC_SYN), 6);
    assert_eq!(counters.get(counter::REC_UDP), 1);
    assert_eq!(
        counters.get(counter::UDP_TRUNCATED),
        1,
        "as XDP counts a short packet"
    );
    // The datagram's own length stands; the head is what the 96 bytes held of it.
    assert_eq!(
        events[5],
        (
            Timestamp::from_nanos(10_000),
            EventKind::Udp,
            Some((dht.len() - 42, 96 - 42))
        )
    );
    assert_eq!(
        events[6].1,
        EventKind::Syn,
        "the frames after a cut one are read"
    );
}

/// Cut inside the SYN's TCP options (`-s 54`): the SYN is still one.
#[test]
fn frames_cut_inside_tcp_options_still_give_their_syn() {
    let header = PcapHeader {
        snaplen: 54,
        ..PcapHeader::default()
    };
    let frames: Vec<_> = (0..3u16).map(|i| (u64::from(i), syn(1000 + i))).collect();
    let (counters, report) = prefilter_bytes(&pcap_cut(header, &frames), |_| {});
    assert_eq!((report.frames, report.frames_cut), (3, 3));
    assert_eq!(report.bytes_not_captured, 3 * 4);
    assert_eq!(counters.get(counter::REC_SYN), 3);
}

/// A snap length of 0 in the file header means no limit, as libpcap reads it.
#[test]
fn snaplen_zero_header_reads_every_frame() {
    let frames: Vec<_> = (0..4u32)
        .map(|i| {
            (
                (1_000, i),
                udp4([192, 0, 2, 1], [198, 51, 100, 2], KRPC_PING),
            )
        })
        .collect();
    let mut bytes = pcap_bytes(&frames);
    bytes[16..20].copy_from_slice(&0u32.to_le_bytes());
    assert!(
        bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian header"
    );
    let (counters, report) = prefilter_bytes(&bytes, |_| {});
    assert_eq!(report.error, None);
    assert_eq!((report.frames, report.frames_cut), (4, 0));
    assert_eq!(counters.get(counter::REC_UDP), 4);
}

/// `cat a.pcapng b.pcapng`: the second section declares its own interfaces, whose ids start
/// at 0 again, with another link type, another timestamp resolution and another byte order.
#[test]
fn pcapng_sections_each_have_their_own_interfaces() {
    let v4 = udp4([192, 0, 2, 1], [198, 51, 100, 2], KRPC_PING);
    let first = pcapng_bytes(&[None], &[(0, 1_631_961_258_000_001, v4.clone())]);
    // Section 2: big-endian, raw IP on interface 0 with nanosecond timestamps, and a
    // packet stored cut to 40 of its bytes.
    let mut w = PcapNgWriter::with_endianness(Vec::new(), pcap_file::Endianness::Big).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::RAW,
        snaplen: 0,
        options: vec![InterfaceDescriptionOption::IfTsResol(9)],
    })
    .unwrap();
    let l3 = &v4[14..];
    for (raw, data) in [
        (1_631_961_259_123_456_789, l3),
        (1_631_961_259_123_456_790, &l3[..40]),
    ] {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: std::time::Duration::from_nanos(raw),
            original_len: u32::try_from(l3.len()).unwrap(),
            data: Cow::Borrowed(data),
            options: vec![],
        })
        .unwrap();
    }
    let bytes = [first, w.into_inner()].concat();
    let mut events = Vec::new();
    let (counters, report) = prefilter_bytes(&bytes, |ev| events.push((ev.ts, ev.src)));
    assert_eq!(report.error, None);
    assert_eq!((report.frames, report.sections), (3, 2));
    assert_eq!(
        (report.frames_cut, report.bytes_not_captured),
        (1, l3.len() as u64 - 40)
    );
    assert_eq!(counters.get(counter::REC_UDP), 3);
    let ts: Vec<_> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        ts,
        [
            Timestamp::from_nanos(1_631_961_258_000_001_000),
            Timestamp::from_nanos(1_631_961_259_123_456_789),
            Timestamp::from_nanos(1_631_961_259_123_456_790),
        ],
        "each section's own if_tsresol, not the first section's"
    );
    assert!(events
        .iter()
        .all(|e| e.1 == "192.0.2.1:40000".parse().unwrap()));
}

/// A packet whose interface the current section never declared is damage, even when an
/// earlier section declared that id.
#[test]
fn pcapng_interface_ids_do_not_leak_across_sections() {
    let v4 = udp4([192, 0, 2, 1], [198, 51, 100, 2], KRPC_PING);
    let first = pcapng_bytes(&[None, None], &[(1, 1, v4.clone())]);
    let mut second = pcapng_bytes(&[None], &[(0, 2, v4.clone())]);
    // pcap-file's writer refuses an undeclared interface: the block by hand (native order,
    // as the writer's), for interface 1 with 60 bytes of the frame.
    let epb = |words: [u32; 7]| words.map(u32::to_ne_bytes).concat();
    second.extend(epb([6, 32 + 60, 1, 0, 3, 60, 60]));
    second.extend_from_slice(&v4[..60]);
    second.extend(92u32.to_ne_bytes());
    let (_, report) = prefilter_bytes(&[first, second].concat(), |_| {});
    assert_eq!(report.frames, 2);
    let error = report.error.expect("undeclared interface");
    assert!(
        error.contains("undeclared interface 1 (section 2)"),
        "{error}"
    );
}

#[test]
fn unsupported_link_types_are_counted_and_named() {
    let header = PcapHeader {
        datalink: DataLink::USER0,
        ..PcapHeader::default()
    };
    let frames: Vec<_> = (0..3).map(|i| (i, syn(22))).collect();
    let (counters, report) = prefilter_bytes(&pcap_cut(header, &frames), |_| {
        panic!("nothing is forwarded from an unknown link type")
    });
    assert_eq!(report.frames, 3);
    assert_eq!(report.frames_unsupported_link(), 3);
    assert_eq!(
        counters.get(counter::PACKETS),
        3,
        "every frame accounted for"
    );
    assert_eq!(counters.get(counter::NON_IP), 3);
    assert_eq!(
        report.warnings(),
        ["link type 147 (USER0) is not supported: 3 frames skipped"]
    );
    let named: BTreeMap<_, _> = report.counters().into_iter().collect();
    assert_eq!(named["frames_unsupported_link"], 3);

    let header = PcapHeader {
        datalink: DataLink::Unknown(4242),
        ..PcapHeader::default()
    };
    let (_, report) = prefilter_bytes(&pcap_cut(header, &frames), |_| {});
    assert_eq!(
        report.warnings(),
        ["link type 4242 is not supported: 3 frames skipped"]
    );
}

#[test]
fn paths_that_are_no_capture_say_what_they_are() {
    let dir = scratch("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    let err = format!("{:#}", prefilter_file(&dir, 1472, |_| {}).unwrap_err());
    assert!(
        err.ends_with("a-directory: is a directory, not a capture file"),
        "{err}"
    );
    let err = format!("{:#}", probe(&dir).unwrap_err());
    assert!(err.contains("is a directory"), "{err}");

    let missing = scratch("missing.pcap");
    let err = format!("{:#}", read_frames(&missing, |_, _| {}).unwrap_err());
    assert!(err.ends_with("missing.pcap: no such file"), "{err}");

    let text = scratch("probe.txt");
    std::fs::write(&text, "not a capture\n").unwrap();
    let err = format!("{:#}", probe(&text).unwrap_err());
    assert!(
        err.ends_with("probe.txt: not a pcap or pcapng file"),
        "{err}"
    );
    let good = scratch("probe.pcap");
    std::fs::write(&good, pcap_bytes(&[((1, 0), syn(1))])).unwrap();
    probe(&good).unwrap();

    // A pcap magic number over a header cut short.
    let err = read_frames_from("short", &pcap_bytes(&[])[..10], |_, _| {}).unwrap_err();
    assert!(
        format!("{err:#}").contains("short: bad pcap header"),
        "{err:#}"
    );
}
