//! `blast`: the bounded SYN-flood sender of `sensor_tests::blast` as a command, prints what it
//! sent as JSON.
//!
//! ```text
//! blast [--netns sxlab-… --iface IF] --count N --seconds S [--pps P] [--sources N] [--seed N]
//!       [--mix PCAP] [--mix-every K]
//! ```
//!
//! Without `--netns`, it creates a lab namespace of its own (a veth pair, nothing attached),
//! sends into it, prints the veth counters too, and deletes the namespace: the generator's own
//! rate. With `--netns`, the namespace must be a lab namespace (`sxlab-…`) holding `IF` as a
//! veth; anything else is refused.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use sensor_tests::blast::{self, Spec};
use sensor_tests::lab::Lab;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut spec = Spec::flood(0, None, Duration::ZERO);
    let (mut netns, mut iface, mut mix, mut sources) = (None, None, None::<PathBuf>, None);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--netns" => netns = Some(value()?),
            "--iface" => iface = Some(value()?),
            "--count" => spec.count = value()?.parse()?,
            "--seconds" => spec.max_duration = Duration::from_secs_f64(value()?.parse()?),
            "--pps" => spec.pps = Some(value()?.parse()?),
            "--sources" => sources = Some(value()?.parse()?),
            "--seed" => spec.seed = value()?.parse()?,
            "--mix" => mix = Some(value()?.into()),
            "--mix-every" => spec.mix_every = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: blast [--netns sxlab-… --iface IF] --count N --seconds S [--pps P] \
                     [--sources N] [--seed N] [--mix PCAP] [--mix-every K]"
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other} (--help)"),
        }
    }
    anyhow::ensure!(
        spec.count > 0 && spec.max_duration > Duration::ZERO,
        "a flood needs a bound in count and in time: --count N --seconds S"
    );
    spec.sources = sources
        .unwrap_or_else(|| u32::try_from(spec.count.min(blast::MAX_SOURCES)).unwrap_or(u32::MAX));
    let mut mix_skipped = 0;
    if let Some(path) = &mix {
        (spec.mix, mix_skipped) = blast::read_pcap_frames(path)?;
    }
    let report = match (netns, iface) {
        (Some(netns), Some(iface)) => blast::send(&netns, &iface, &spec)?.to_json(),
        (None, None) => {
            // Our own lab, deleted when `lab` drops (also on error).
            let lab = Lab::new()?;
            let before = blast::link_stats(&lab.netns, &lab.rx)?;
            let stats = blast::send(&lab.netns, &lab.tx, &spec)?;
            let after = blast::link_stats(&lab.netns, &lab.rx)?;
            let tx = blast::link_stats(&lab.netns, &lab.tx)?;
            let mut v = stats.to_json();
            v["peer_rx_packets"] = (after.rx_packets - before.rx_packets).into();
            v["peer_rx_dropped"] = (after.rx_dropped - before.rx_dropped).into();
            v["tx_packets"] = tx.tx_packets.into();
            v["tx_dropped"] = tx.tx_dropped.into();
            v
        }
        _ => anyhow::bail!("--netns and --iface go together"),
    };
    let mut report = report;
    report["mix_skipped_too_long_or_short"] = mix_skipped.into();
    println!("{report}");
    Ok(())
}
