//! The XDP program under `BPF_PROG_TEST_RUN` (needs root): one frame in, the verdict checked.

use aya::programs::{TestRun, TestRunOptions};
use etherparse::PacketBuilder;
use sensor::capture::xdp::XdpSensor;
use sensor_ebpf::tcp_flag;

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

/// Source and destination MAC of the crafted frames.
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// An Ethernet + IPv4 + TCP frame from `src`:51413 to `dst`:6881 with the `tcp_flag` bits of
/// `flags` (SYN, ACK, RST, FIN, PSH) and `payload`.
///
/// # Panics
/// If etherparse cannot write the frame (it always can for these fields).
pub fn tcp_frame(src: [u8; 4], dst: [u8; 4], flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(51413, 6881, 1000, 64240);
    if flags & tcp_flag::SYN != 0 {
        b = b.syn();
    }
    if flags & tcp_flag::ACK != 0 {
        b = b.ack(7777);
    }
    if flags & tcp_flag::RST != 0 {
        b = b.rst();
    }
    if flags & tcp_flag::FIN != 0 {
        b = b.fin();
    }
    if flags & tcp_flag::PSH != 0 {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}
