//! Cutting a capture in two by packet count, for the restart tests (`tests/state.rs` offline,
//! `tests/live_state.rs` through XDP): the first `n` packets in one file, the rest in another,
//! each keeping the original's format (pcap or pcapng) so that the two parts read as one
//! stream give the original's results.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context as _};

/// Cuts `src` after its first `n` packets into `dir/stem.1.EXT` and `dir/stem.2.EXT`.
///
/// # Errors
/// `src` cannot be read or parsed, or the parts cannot be written.
pub fn cut(src: &Path, n: usize, dir: &Path, stem: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let bytes = std::fs::read(src).with_context(|| format!("reading {}", src.display()))?;
    let pcapng = bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]);
    let ext = if pcapng { "pcapng" } else { "pcap" };
    let (p1, p2) = (
        dir.join(format!("{stem}.1.{ext}")),
        dir.join(format!("{stem}.2.{ext}")),
    );
    let (f1, f2) = (File::create(&p1)?, File::create(&p2)?);
    if pcapng {
        cut_pcapng(&bytes, n, f1, f2)?;
    } else {
        cut_pcap(&bytes, n, f1, f2)?;
    }
    Ok((p1, p2))
}

fn cut_pcap(bytes: &[u8], n: usize, f1: File, f2: File) -> anyhow::Result<()> {
    use pcap_file::pcap::{PcapReader, PcapWriter};
    let mut r = PcapReader::new(bytes)?;
    let header = r.header();
    let mut w1 = PcapWriter::with_header(f1, header)?;
    let mut w2 = PcapWriter::with_header(f2, header)?;
    let mut i = 0;
    while let Some(p) = r.next_packet() {
        let p = p?;
        if i < n {
            w1.write_packet(&p)?;
        } else {
            w2.write_packet(&p)?;
        }
        i += 1;
    }
    Ok(())
}

/// pcapng: the second part starts with the section header and the interface descriptions in
/// force at the cut, so its packets keep their interfaces and timestamp resolution.
fn cut_pcapng(bytes: &[u8], n: usize, f1: File, f2: File) -> anyhow::Result<()> {
    use pcap_file::pcapng::{Block, PcapNgBlock, PcapNgReader, PcapNgWriter};
    let mut r = PcapNgReader::new(bytes)?;
    // The section and interfaces in force, as the reader goes.
    let mut section = r.section().clone();
    let mut interfaces = Vec::new();
    let mut w1 = PcapNgWriter::with_section_header(f1, section.clone())?;
    let mut w2: Option<PcapNgWriter<File>> = None;
    let mut f2 = Some(f2);
    let mut packets = 0;
    while let Some(block) = r.next_block() {
        let block = block?;
        match &block {
            Block::SectionHeader(s) => {
                section = s.clone().into_owned();
                interfaces.clear();
            }
            Block::InterfaceDescription(i) => interfaces.push(i.clone().into_owned()),
            _ => {}
        }
        let is_packet = matches!(
            block,
            Block::EnhancedPacket(_) | Block::SimplePacket(_) | Block::Packet(_)
        );
        if packets < n || (!is_packet && w2.is_none()) {
            if !matches!(block, Block::SectionHeader(_)) || packets > 0 {
                w1.write_block(&block)?;
            }
        } else {
            if w2.is_none() {
                let file = f2.take().context("second part opened twice")?;
                let mut w = PcapNgWriter::with_section_header(file, section.clone())?;
                for idb in &interfaces {
                    w.write_block(&idb.clone().into_block())?;
                }
                w2 = Some(w);
            }
            let w = w2.as_mut().context("second part not opened")?;
            w.write_block(&block)?;
        }
        packets += usize::from(is_packet);
    }
    ensure!(w2.is_some(), "nothing after the cut");
    Ok(())
}

/// The timestamps of the packets in a classic pcap file.
///
/// # Panics
/// The file cannot be read or is not a classic pcap.
pub fn packet_times(path: &Path) -> Vec<Duration> {
    let bytes = std::fs::read(path).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().timestamp);
    }
    out
}

/// The index of the first packet at or after `secs` into the capture.
///
/// # Panics
/// No packet comes that late.
pub fn index_at(times: &[Duration], secs: f64) -> usize {
    let t = times[0] + Duration::from_secs_f64(secs);
    times.iter().position(|&x| x >= t).unwrap()
}
