//! The pre-filter's policy (parse and the per-flow TCP payload policy, shared with the XDP
//! program) on arbitrary frame sequences through one flow table.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::capture::pcap::Prefilter;
use sensor::event::{Timestamp, Transport};
use sensor_ebpf::counter::{
    BYTES_FORWARDED, BYTES_ICMP, BYTES_SEEN, BYTES_TCP, BYTES_TCP_DATA, BYTES_UDP, BYTES_UDP_META,
    FLOWS_ENDED, FLOWS_MARKED, IPV4, IPV6, PACKETS, UDP_TRUNCATED, UTP_HEADER_ONLY,
};

fuzz_target!(|input: &[u8]| {
    // First two bytes pick the snap length; then frames, each behind a 2-byte length.
    let Some((snap, mut rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let snaplen = u32::from(u16::from_le_bytes(*snap)) % 2200;
    // A tiny table so eviction is exercised.
    let mut prefilter = Prefilter::new(snaplen);
    prefilter.flows = sensor::capture::flows::FlowMarks::new(4);
    let mut frames = 0u64;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let n = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        frames += 1;
        let event = prefilter
            .frame(frame, Timestamp::from_nanos(frames))
            .expect("the policy only forwards headers that decode");
        // Every frame ends in exactly one outcome: a record or one skip reason (the byte
        // counters, from `BYTES_SEEN` on, and the notes beside an outcome are not outcomes).
        let outcomes: u64 = (0..BYTES_SEEN)
            .filter(|s| {
                ![
                    PACKETS,
                    IPV4,
                    IPV6,
                    UDP_TRUNCATED,
                    FLOWS_MARKED,
                    FLOWS_ENDED,
                    UTP_HEADER_ONLY,
                ]
                .contains(s)
            })
            .map(|s| prefilter.counters.get(s))
            .sum();
        assert_eq!(outcomes, frames, "{:?}", prefilter.counters);
        // Forwarded bytes are the sum of the bytes of each record kind.
        let by_kind: u64 = [
            BYTES_TCP,
            BYTES_TCP_DATA,
            BYTES_UDP,
            BYTES_UDP_META,
            BYTES_ICMP,
        ]
        .into_iter()
        .map(|s| prefilter.counters.get(s))
        .sum();
        assert_eq!(prefilter.counters.get(BYTES_FORWARDED), by_kind);
        assert!(prefilter.flows.len() <= 4);
        match event.map(|e| e.transport) {
            Some(Transport::Udp(udp)) => {
                assert!(udp.head.len() <= usize::from(udp.payload_len));
                assert!(udp.head.len() as u32 <= snaplen.min(sensor_ebpf::MAX_SNAPLEN));
            }
            Some(Transport::Tcp(seg)) => {
                assert!(seg.head.len() <= usize::from(seg.payload_len));
                assert!(seg.head.len() as u32 <= snaplen.min(sensor_ebpf::MAX_SNAPLEN));
                // A SYN never carries a forwarded payload.
                assert!(seg.head.is_empty() || !seg.flags.syn());
            }
            _ => {}
        }
    }
    assert!(prefilter.counters.get(FLOWS_ENDED) <= prefilter.counters.get(FLOWS_MARKED));
});
