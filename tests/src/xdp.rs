//! The XDP program under `BPF_PROG_TEST_RUN` (needs root): one frame in, the verdict checked.

use aya::programs::{TestRun, TestRunOptions};
use sensor::capture::xdp::XdpSensor;

/// `XDP_PASS`, the only verdict the sensor gives: it observes and never changes forwarding.
pub const XDP_PASS: u32 = 2;

/// Runs `frame` through the loaded program once, as arriving on the loopback device.
///
/// # Panics
/// If the kernel refuses the run, or the verdict is not `XDP_PASS`.
pub fn run_frame(sensor: &mut XdpSensor, frame: &[u8]) {
    let result = sensor
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(
        result.return_value, XDP_PASS,
        "the sensor must never change forwarding"
    );
}
