//! pcap/pcapng reading on arbitrary files: a clear error or a report, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor::capture::pcap::read_frames_from;

fuzz_target!(|file: &[u8]| {
    let mut frames = 0u64;
    if let Ok(report) = read_frames_from("fuzz", file, |_, _| frames += 1) {
        assert!(report.frames >= frames);
        assert!(report.frames_cut <= report.frames);
        assert_eq!(
            report.frames_unsupported_link() + report.bad_link_header + frames,
            report.frames
        );
    }
});
