//! Cuts a time window out of a classic pcap file, frames kept byte for byte:
//!
//! ```sh
//! cargo run -p sensor-tests --bin cut_fixture -- IN.pcap OUT.pcap START_S SECONDS
//! ```
//!
//! `START_S` counts from the first frame's timestamp. Used to make the small lab fixtures under
//! `tests/fixtures/` from a lab capture (`/var/tmp/lab/bt-heavy-1/bt-heavy.pcap`), so the
//! default tests run on real client traffic without the lab.

use std::fs::File;
use std::io::{BufReader, BufWriter};

use anyhow::{bail, Context};
use pcap_file::pcap::{PcapReader, PcapWriter};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, start, seconds] = args.as_slice() else {
        bail!("usage: cut_fixture IN.pcap OUT.pcap START_S SECONDS");
    };
    let start: f64 = start.parse().context("START_S")?;
    let seconds: f64 = seconds.parse().context("SECONDS")?;
    let mut reader = PcapReader::new(BufReader::new(
        File::open(input).context("opening the input")?,
    ))
    .context("reading the pcap header")?;
    let header = reader.header();
    let mut writer = PcapWriter::with_header(
        BufWriter::new(File::create(output).context("creating the output")?),
        header,
    )?;
    let (mut first, mut kept, mut read) = (None, 0u64, 0u64);
    while let Some(packet) = reader.next_packet() {
        let packet = packet.context("reading a frame")?;
        read += 1;
        let ts = packet.timestamp.as_secs_f64();
        let t0 = *first.get_or_insert(ts);
        if ts - t0 < start {
            continue;
        }
        if ts - t0 >= start + seconds {
            break;
        }
        writer.write_packet(&packet)?;
        kept += 1;
    }
    eprintln!("{kept} of the first {read} frames written to {output}");
    Ok(())
}
