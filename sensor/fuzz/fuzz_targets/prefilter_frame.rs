//! The pre-filter's parse policy (shared with the XDP program) on arbitrary frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::capture::{pcap::prefilter_frame, CounterSnapshot};
use sensor::event::{Timestamp, Transport};

fuzz_target!(|input: &[u8]| {
    // First two bytes pick the snap length, the rest is the frame.
    let Some((snap, frame)) = input.split_first_chunk::<2>() else { return };
    let snaplen = u32::from(u16::from_le_bytes(*snap)) % 2200;
    let mut counters = CounterSnapshot::default();
    let event = prefilter_frame(frame, Timestamp(0), snaplen, &mut counters)
        .expect("parse() only forwards headers that decode");
    // Every frame ends in exactly one outcome: a record or one skip reason.
    use sensor_ebpf::counter::{IPV4, IPV6, PACKETS, UDP_TRUNCATED};
    let outcomes: u64 = (0..sensor_ebpf::counter::COUNT)
        .filter(|s| ![PACKETS, IPV4, IPV6, UDP_TRUNCATED].contains(s))
        .map(|s| counters.get(s))
        .sum();
    assert_eq!(outcomes, 1, "{counters:?}");
    if let Some(ev) = event {
        if let Transport::Udp(udp) = ev.transport {
            assert!(udp.head.len() <= usize::from(udp.payload_len));
            assert!(udp.head.len() as u32 <= snaplen.min(sensor_ebpf::MAX_SNAPLEN));
        }
    }
});
