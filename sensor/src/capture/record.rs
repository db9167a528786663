//! Decoding of XDP ring records into [`PacketEvent`]s: a pure function over the record bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sensor_ebpf::{
    has_payload, header_len, kind, record_len, FlowHeader, FlowHeaderV4, IcmpQuote, IcmpRecord,
    TcpTail, MAX_SNAPLEN,
};

use crate::event::{
    IcmpUnreachable, PacketEvent, TcpFlags, TcpSegment, Timestamp, Transport, UdpDatagram,
};

/// Why a ring record could not be decoded. Each is counted; none should occur unless the object
/// and the agent were built from different ABIs.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    thiserror::Error,
    strum::IntoStaticStr,
    strum::EnumDiscriminants,
)]
#[strum(serialize_all = "snake_case")]
#[strum_discriminants(
    name(DecodeReason),
    doc = "Why a record was dropped, without the details: the metric label.",
    derive(strum::IntoStaticStr, strum::EnumIter, strum::EnumCount),
    strum(serialize_all = "snake_case")
)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("record kind {kind} has {len} bytes, expected {expected}")]
    BadLength {
        kind: u8,
        len: usize,
        expected: usize,
    },
    #[error("bad IP version {0}")]
    BadIpVersion(u8),
    #[error("cap_len {cap_len} exceeds the record or the payload length {payload_len}")]
    BadCapLen { cap_len: u16, payload_len: u16 },
}

impl DecodeError {
    /// Metric label: the variant's name in snake_case.
    pub fn reason(&self) -> &'static str {
        self.into()
    }
}

/// Maps the kernel's CLOCK_MONOTONIC record timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    /// realtime − monotonic, in nanoseconds, sampled once at start-up.
    offset_ns: i128,
}

impl MonotonicClock {
    pub fn new() -> Self {
        fn now(clock: libc::clockid_t) -> i128 {
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid clock id and out-pointer.
            unsafe { libc::clock_gettime(clock, &raw mut ts) };
            i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
        }
        Self {
            offset_ns: now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC),
        }
    }

    /// A clock that leaves timestamps as they are (tests).
    pub fn identity() -> Self {
        Self { offset_ns: 0 }
    }

    pub fn wall(&self, monotonic_ns: u64) -> Timestamp {
        let ns = (i128::from(monotonic_ns) + self.offset_ns).max(0);
        // Not negative (max above); keeps the low 64 bits as it always has, which only a
        // record stamped past the year 2554 could notice.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Timestamp::from_nanos(ns as u64)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the header of a record, the compact IPv4 one expanded (unaligned: ring records are
/// only 8-byte aligned, and a copy may not be aligned at all).
pub fn header(record: &[u8]) -> Result<FlowHeader, DecodeError> {
    // `kind` and `ip_version` open both layouts.
    let (Some(&kind), Some(&ip_version)) = (record.first(), record.get(1)) else {
        return Err(DecodeError::Short(record.len()));
    };
    if record.len() < header_len(kind, ip_version) {
        return Err(DecodeError::Short(record.len()));
    }
    if header_len(kind, ip_version) == size_of::<FlowHeaderV4>() {
        // SAFETY: length checked; FlowHeaderV4 is plain old data valid for any bit pattern.
        let v4 = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<FlowHeaderV4>()) };
        return Ok(v4.expand());
    }
    // SAFETY: length checked; FlowHeader is plain old data valid for any bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<FlowHeader>()) })
}

/// Decodes one ring record. The event borrows its payload head from `record`.
///
/// A record is its header (the compact [`FlowHeaderV4`] for IPv4 but ICMP, the
/// [`FlowHeader`] otherwise), its kind's fixed fields, and for a payload kind exactly `cap_len`
/// bytes ([`record_len`]). The ring reports each record's own
/// length, so a longer or shorter one is malformed, not padding.
pub fn decode<'a>(
    record: &'a [u8],
    clock: &MonotonicClock,
) -> Result<PacketEvent<'a>, DecodeError> {
    let hdr = header(record)?;
    let expected = record_len(&hdr).ok_or(DecodeError::UnknownKind(hdr.kind))?;
    if has_payload(hdr.kind)
        && (hdr.cap_len > hdr.payload_len || u32::from(hdr.cap_len) > MAX_SNAPLEN)
    {
        return Err(DecodeError::BadCapLen {
            cap_len: hdr.cap_len,
            payload_len: hdr.payload_len,
        });
    }
    if record.len() != expected {
        return Err(DecodeError::BadLength {
            kind: hdr.kind,
            len: record.len(),
            expected,
        });
    }
    let detail = match hdr.kind {
        kind::TCP | kind::TCP_DATA => {
            let at = header_len(hdr.kind, hdr.ip_version);
            // SAFETY: the record holds the header, the tail and `cap_len` bytes (its length
            // was checked against `record_len` above); TcpTail is plain old data.
            let tail = unsafe { std::ptr::read_unaligned(record[at..].as_ptr().cast::<TcpTail>()) };
            Detail::Tcp {
                seq: tail.seq,
                ack: tail.ack,
                window: tail.window,
                head: &record[at + size_of::<TcpTail>()..],
            }
        }
        kind::ICMP => {
            // SAFETY: length checked against size_of::<IcmpRecord>() above.
            let r = unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<IcmpRecord>()) };
            Detail::Icmp(IcmpQuote {
                icmp_type: r.icmp_type,
                icmp_code: r.icmp_code,
                inner_proto: r.inner_proto,
                inner_ip_version: r.inner_ip_version,
                inner_src: r.inner_src,
                inner_dst: r.inner_dst,
                inner_src_port: r.inner_src_port,
                inner_dst_port: r.inner_dst_port,
            })
        }
        // UDP and UDP metadata (`cap_len` bytes, none for metadata: checked above).
        _ => Detail::Udp(&record[header_len(hdr.kind, hdr.ip_version)..]),
    };
    event_from_header(&hdr, detail, clock.wall(hdr.ts_ns))
}

/// What a record holds beyond its header.
#[derive(Clone, Copy, Debug)]
pub enum Detail<'a> {
    Tcp {
        seq: u32,
        ack: u32,
        window: u16,
        /// The copied payload head (data records of marked flows; empty otherwise).
        head: &'a [u8],
    },
    /// The copied UDP payload head.
    Udp(&'a [u8]),
    Icmp(IcmpQuote),
}

/// Builds the event for a record header. Shared by the ring decoder and the offline pre-filter.
pub fn event_from_header<'a>(
    hdr: &FlowHeader,
    detail: Detail<'a>,
    ts: Timestamp,
) -> Result<PacketEvent<'a>, DecodeError> {
    let (src, dst) = endpoints(
        hdr.ip_version,
        &hdr.src_addr,
        hdr.src_port,
        &hdr.dst_addr,
        hdr.dst_port,
    )?;
    let transport = match detail {
        Detail::Tcp {
            seq,
            ack,
            window,
            head,
        } => Transport::Tcp(TcpSegment {
            flags: TcpFlags(hdr.tcp_flags),
            seq,
            ack,
            window,
            payload_len: hdr.payload_len,
            head,
        }),
        Detail::Udp(head) => {
            if head.len() != usize::from(hdr.cap_len) || hdr.cap_len > hdr.payload_len {
                return Err(DecodeError::BadCapLen {
                    cap_len: hdr.cap_len,
                    payload_len: hdr.payload_len,
                });
            }
            Transport::Udp(UdpDatagram {
                payload_len: hdr.payload_len,
                head,
            })
        }
        Detail::Icmp(q) => {
            if q.inner_proto != 6 && q.inner_proto != 17 {
                return Err(DecodeError::BadIpVersion(q.inner_proto));
            }
            let (inner_src, inner_dst) = endpoints(
                q.inner_ip_version,
                &q.inner_src,
                q.inner_src_port,
                &q.inner_dst,
                q.inner_dst_port,
            )?;
            Transport::Icmp(IcmpUnreachable {
                icmp_type: q.icmp_type,
                code: q.icmp_code,
                inner_udp: q.inner_proto == 17,
                inner_src,
                inner_dst,
            })
        }
    };
    Ok(PacketEvent {
        ts,
        src,
        dst,
        vlan_depth: hdr.vlan_depth,
        transport,
    })
}

fn endpoints(
    ip_version: u8,
    src: &[u8; 16],
    src_port: u16,
    dst: &[u8; 16],
    dst_port: u16,
) -> Result<(SocketAddr, SocketAddr), DecodeError> {
    let addr = |raw: &[u8; 16]| -> Result<IpAddr, DecodeError> {
        match ip_version {
            4 => Ok(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(*raw))),
            v => Err(DecodeError::BadIpVersion(v)),
        }
    };
    Ok((
        SocketAddr::new(addr(src)?, src_port),
        SocketAddr::new(addr(dst)?, dst_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_ebpf::TcpRecord;

    fn as_bytes<T>(value: &T) -> &[u8] {
        // SAFETY: test-only view of a POD struct.
        unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
        }
    }

    fn header(kind: u8, ip_version: u8) -> FlowHeader {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if ip_version == 4 {
            src[..4].copy_from_slice(&[192, 0, 2, 10]);
            dst[..4].copy_from_slice(&[203, 0, 113, 7]);
        } else {
            src = "2001:db8::10".parse::<Ipv6Addr>().unwrap().octets();
            dst = "2001:db8::200".parse::<Ipv6Addr>().unwrap().octets();
        }
        FlowHeader {
            kind,
            ip_version,
            vlan_depth: 1,
            tcp_flags: 0,
            ifindex: 3,
            ts_ns: 1_000_000_123,
            src_addr: src,
            dst_addr: dst,
            src_port: 6881,
            dst_port: 51413,
            payload_len: 0,
            cap_len: 0,
        }
    }

    #[test]
    fn decodes_tcp_syn() {
        let mut hdr = header(kind::TCP, 4);
        hdr.tcp_flags = 0x02;
        let rec = TcpRecord {
            hdr,
            seq: 0xdead_beef,
            ack: 0,
            window: 64240,
            pad: [0; 6],
        };
        let bytes = wire(&rec);
        let ev = decode(&bytes, &MonotonicClock::identity()).unwrap();
        assert_eq!(ev.src, "192.0.2.10:6881".parse().unwrap());
        assert_eq!(ev.dst, "203.0.113.7:51413".parse().unwrap());
        assert_eq!(ev.ts, Timestamp::from_nanos(1_000_000_123));
        assert_eq!(ev.vlan_depth, 1);
        assert_eq!(
            ev.transport,
            Transport::Tcp(TcpSegment {
                flags: TcpFlags(0x02),
                seq: 0xdead_beef,
                ack: 0,
                window: 64240,
                payload_len: 0,
                head: &[],
            })
        );
        assert_eq!(ev.kind(), crate::event::EventKind::Syn);
    }

    /// A record as the ring holds it, from its full-layout fixed part (a `FlowHeader` first)
    /// and payload: for IPv4 (but ICMP) the header compacted to 32 bytes, by the offsets of
    /// the full layout: kind to timestamp (0..16), the first 4 bytes of each address (16, 32),
    /// ports and lengths (48..56).
    fn with_payload<T>(fixed: &T, payload: &[u8]) -> Vec<u8> {
        let full = as_bytes(fixed);
        let mut out = if full[1] == 4 && full[0] != kind::ICMP {
            [&full[..20], &full[32..36], &full[48..]].concat()
        } else {
            full.to_vec()
        };
        out.extend_from_slice(payload);
        out
    }

    fn wire<T>(fixed: &T) -> Vec<u8> {
        with_payload(fixed, &[])
    }

    #[test]
    fn decodes_udp_v6_with_truncated_head() {
        let mut hdr = header(kind::UDP, 6);
        hdr.payload_len = 300;
        hdr.cap_len = 100;
        let mut head = [0xaa; 100];
        head[..3].copy_from_slice(b"d1:");
        let rec = with_payload(&hdr, &head);
        assert_eq!(rec.len(), 156, "exactly the (IPv6) header and the head");
        let ev = decode(&rec, &MonotonicClock::identity()).unwrap();
        assert_eq!(ev.src, "[2001:db8::10]:6881".parse().unwrap());
        let Transport::Udp(udp) = ev.transport else {
            panic!("not udp")
        };
        assert_eq!(udp.payload_len, 300);
        assert_eq!(udp.head, &head[..]);
        assert!(!udp.is_complete());
    }

    #[test]
    fn decodes_tcp_data_with_its_exact_head() {
        let mut hdr = header(kind::TCP_DATA, 4);
        hdr.tcp_flags = 0x18;
        hdr.payload_len = 68;
        hdr.cap_len = 68;
        let head: Vec<u8> = (0..68).collect();
        let rec = with_payload(&bare(hdr), &head);
        let ev = decode(&rec, &MonotonicClock::identity()).unwrap();
        let Transport::Tcp(tcp) = ev.transport else {
            panic!("not tcp")
        };
        assert_eq!((tcp.payload_len, tcp.head), (68, &head[..]));
    }

    fn bare(hdr: FlowHeader) -> TcpRecord {
        TcpRecord {
            hdr,
            seq: 0,
            ack: 0,
            window: 0,
            pad: [0; 6],
        }
    }

    #[test]
    fn rejects_malformed_records() {
        let clock = MonotonicClock::identity();
        assert_eq!(
            decode(&[0u8; 10], &clock).unwrap_err(),
            DecodeError::Short(10)
        );

        let rec = bare(header(99, 4));
        assert_eq!(
            decode(&wire(&rec), &clock).unwrap_err(),
            DecodeError::UnknownKind(99)
        );

        let rec = bare(header(kind::TCP, 5));
        assert_eq!(
            decode(&wire(&rec), &clock).unwrap_err(),
            DecodeError::BadIpVersion(5)
        );

        // A payload record cut short, or longer than its `cap_len` says.
        let mut hdr = header(kind::UDP, 4);
        hdr.payload_len = 1000;
        hdr.cap_len = 129;
        let rec = with_payload(&hdr, &[0; 129]);
        assert_eq!(rec.len(), 32 + 129, "the compact IPv4 header");
        assert!(decode(&rec, &clock).is_ok());
        for len in [32, 32 + 128, 32 + 130, 56 + 129] {
            let mut cut = rec.clone();
            cut.resize(len, 0);
            assert_eq!(
                decode(&cut, &clock).unwrap_err(),
                DecodeError::BadLength {
                    kind: kind::UDP,
                    len,
                    expected: 32 + 129
                }
            );
        }
        // Shorter than the header its first two bytes announce.
        assert_eq!(
            decode(&rec[..31], &clock).unwrap_err(),
            DecodeError::Short(31)
        );
        // A header-only record with bytes after it.
        let mut long = wire(&bare(header(kind::TCP, 4)));
        long.push(0);
        assert!(matches!(
            decode(&long, &clock),
            Err(DecodeError::BadLength { .. })
        ));
        // cap_len larger than the payload, or than any record may carry.
        for (payload_len, cap_len) in [(100, 101), (4000, 2049)] {
            let mut hdr = header(kind::TCP_DATA, 4);
            hdr.payload_len = payload_len;
            hdr.cap_len = cap_len;
            let rec = with_payload(&bare(hdr), &vec![0; usize::from(cap_len)]);
            assert_eq!(
                decode(&rec, &clock).unwrap_err(),
                DecodeError::BadCapLen {
                    cap_len,
                    payload_len
                }
            );
        }
        // A metadata record claiming a payload.
        let mut hdr = header(kind::UDP_META, 4);
        hdr.payload_len = 10;
        hdr.cap_len = 10;
        assert!(matches!(
            decode(&wire(&hdr), &clock),
            Err(DecodeError::BadCapLen { .. })
        ));
        // The kinds of the retired fixed-size classes.
        for retired in [3, 4, 7, 8, 9] {
            let rec = with_payload(&header(retired, 4), &[0; 2048]);
            assert_eq!(
                decode(&rec, &clock).unwrap_err(),
                DecodeError::UnknownKind(retired)
            );
        }
    }

    #[test]
    fn clock_offsets_to_wall_time() {
        let clock = MonotonicClock::new();
        let wall = clock.wall(0).as_secs_f64();
        // Boot time lies between 2020 and 2100.
        assert!(wall > 1.5e9 && wall < 4.1e9, "{wall}");
    }

    /// The metric labels of decode errors: derived from the variant names, pinned here.
    #[test]
    fn decode_error_reasons() {
        let reasons = [
            DecodeError::Short(0),
            DecodeError::UnknownKind(0),
            DecodeError::BadLength {
                kind: 0,
                len: 0,
                expected: 0,
            },
            DecodeError::BadIpVersion(0),
            DecodeError::BadCapLen {
                cap_len: 0,
                payload_len: 0,
            },
        ];
        // The metric's label set (every reason, in order) is the same list.
        let labels: Vec<&str> = <DecodeReason as strum::IntoEnumIterator>::iter()
            .map(Into::into)
            .collect();
        assert_eq!(labels, reasons.map(|e| e.reason()));
        let reasons = reasons.map(|e| e.reason());
        assert_eq!(
            reasons,
            [
                "short",
                "unknown_kind",
                "bad_length",
                "bad_ip_version",
                "bad_cap_len"
            ]
        );
    }
}
