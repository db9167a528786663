//! Cuts the committed BitTorrent fixture from a lab capture:
//! `cargo run -p sensor-tests --bin cut-fixture -- LAB_PCAP [OUT]`, with `LAB_PCAP` the lab's
//! `bt-heavy-1/bt-heavy.pcap` and `OUT` (default `tests/fixtures/bt-heavy-rtorrent.pcap`).
//! Keeps the frames to or from `attacks::FIXTURE_HOST` within `attacks::FIXTURE_WINDOW`.

use std::path::PathBuf;

use anyhow::Context as _;
use sensor_tests::attacks::{cut_host, read_capture, FIXTURE, FIXTURE_HOST, FIXTURE_WINDOW};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let input = PathBuf::from(args.next().context("usage: cut-fixture LAB_PCAP [OUT]")?);
    let out = args.next().map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(FIXTURE),
        PathBuf::from,
    );
    let capture = read_capture(&input)?;
    let cut = cut_host(&capture, FIXTURE_HOST.into(), FIXTURE_WINDOW);
    cut.write_pcap_file(&out)?;
    println!(
        "{}: {} of {} frames to or from {FIXTURE_HOST}",
        out.display(),
        cut.packets.len(),
        capture.packets.len()
    );
    Ok(())
}
