//! Decoding of ring records: the agent must reject, never trust, a malformed record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::capture::record::{decode, MonotonicClock};
use sensor::event::Transport;

fuzz_target!(|record: &[u8]| {
    if let Ok(ev) = decode(record, &MonotonicClock::identity()) {
        if let Transport::Udp(udp) = ev.transport {
            assert!(udp.head.len() <= usize::from(udp.payload_len));
            // After at least the compact (32-byte IPv4) header.
            assert!(udp.head.len() + 32 <= record.len());
        }
    }
});
