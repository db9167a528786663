//! Cuts the committed fixtures from a lab capture (`bt-heavy-1/bt-heavy.pcap`):
//!
//! ```sh
//! cargo run -p sensor-tests --bin cut-fixture -- LAB_PCAP [OUT]
//! cargo run -p sensor-tests --bin cut-fixture -- --window START_S SECONDS LAB_PCAP OUT
//! ```
//!
//! The first keeps the frames to or from `attacks::FIXTURE_HOST` within
//! `attacks::FIXTURE_WINDOW` (default OUT: `tests/fixtures/bt-heavy-rtorrent.pcap`); the second
//! every frame from START_S to START_S + SECONDS after the first frame (the UDP policy
//! fixture). See tests/fixtures/README.md.

use std::path::PathBuf;

use anyhow::Context as _;
use sensor_tests::attacks::{
    cut_host, cut_window, read_capture, FIXTURE, FIXTURE_HOST, FIXTURE_WINDOW,
};

const USAGE: &str =
    "usage: cut-fixture LAB_PCAP [OUT] | cut-fixture --window START_S SECONDS LAB_PCAP OUT";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cut, input, out) = match args.as_slice() {
        [flag, start, seconds, input, out] if flag == "--window" => {
            let start: f64 = start.parse().context("START_S")?;
            let seconds: f64 = seconds.parse().context("SECONDS")?;
            let capture = read_capture(input.as_ref())?;
            let cut = cut_window(&capture, (start, start + seconds));
            (cut, capture, PathBuf::from(out))
        }
        [input] | [input, _] if !input.starts_with("--") => {
            let capture = read_capture(input.as_ref())?;
            let cut = cut_host(&capture, FIXTURE_HOST.into(), FIXTURE_WINDOW);
            let out = args.get(1).map_or_else(
                || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
                PathBuf::from,
            );
            (cut, capture, out)
        }
        _ => anyhow::bail!(USAGE),
    };
    cut.write_pcap_file(&out)?;
    println!(
        "{}: {} of {} frames",
        out.display(),
        cut.packets.len(),
        input.packets.len()
    );
    Ok(())
}
