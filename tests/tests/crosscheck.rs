//! Independent cross-check of the coordination parsers: tshark's `bt-dht` dissector on the
//! shared captures must find exactly the DHT peers we predict from, and the UDP tracker peer
//! counts must match `../shared/pcaps/CATALOG.md`.
//!
//! Needs tshark (`cargo xtask setup` installs it); unprivileged.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/pcaps")
        .join(rel)
}

type Peer = (IpAddr, IpAddr, u16); // (host told, peer address, peer port)

/// Every `bt-dht.peer` in every frame, as tshark decodes it, for the frame's receiver.
fn tshark_dht_peers(pcap: &Path) -> BTreeSet<Peer> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "--enable-heuristic",
            "bittorrent_dht_udp",
            "-T",
            "json",
            "--no-duplicate-keys",
        ])
        .args(["-Y", "bt-dht.peers"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Value = serde_json::from_slice(&out.stdout).expect("tshark JSON");
    let mut peers = BTreeSet::new();
    for frame in frames.as_array().unwrap() {
        let layers = &frame["_source"]["layers"];
        let dst = layers["ip"]["ip.dst"]
            .as_str()
            .or_else(|| layers["ipv6"]["ipv6.dst"].as_str())
            .unwrap();
        let host: IpAddr = dst.parse().unwrap();
        collect(&layers["bt-dht"], host, &mut peers);
    }
    peers
}

/// Walks the dissection tree for `bt-dht.peer` entries (an object, or a list of them).
fn collect(v: &Value, host: IpAddr, out: &mut BTreeSet<Peer>) {
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                if key == "bt-dht.peer" {
                    let entries = match child {
                        Value::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for e in entries {
                        let ip = e["bt-dht.ip"].as_str().or_else(|| e["bt-dht.ip6"].as_str());
                        if let (Some(ip), Some(port)) = (ip, e["bt-dht.port"].as_str()) {
                            out.insert((host, ip.parse().unwrap(), port.parse().unwrap()));
                        }
                    }
                } else {
                    collect(child, host, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, host, out)),
        _ => {}
    }
}

/// Our TCP predictions from one channel, via `sensor peers --json`.
fn our_peers(pcap: &Path, channel: &str) -> BTreeSet<Peer> {
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    let out = Command::new(sensor)
        .args(["peers", "--json"])
        .arg(pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["channel"] == channel && v["transport"] == "tcp")
        .map(|v| {
            (
                v["host"].as_str().unwrap().parse().unwrap(),
                v["peer"].as_str().unwrap().parse().unwrap(),
                v["port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

#[test]
fn dht_values_equal_tsharks() {
    for rel in [
        "OISF-suricata-verify/bittorrent-dht/input.pcap",
        "goncalo-rodrigues-360BitScoping/small_torrent.pcap",
        "ntop-nDPI/bittorrent_transmission.pcapng",
    ] {
        let pcap = shared(rel);
        let theirs = tshark_dht_peers(&pcap);
        let ours = our_peers(&pcap, "dht");
        // Our documented filters: a peer on port 0 or a host listed back to itself is no
        // prediction. Nothing else may differ.
        let usable: BTreeSet<Peer> = theirs
            .iter()
            .copied()
            .filter(|&(host, ip, port)| port != 0 && ip != host)
            .collect();
        let missing: Vec<_> = usable.difference(&ours).collect();
        let extra: Vec<_> = ours.difference(&usable).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{rel}: missing {missing:?}, extra {extra:?}"
        );
        assert!(!ours.is_empty(), "{rel}: nothing to compare");
        eprintln!("{rel}: {} DHT peers, as tshark", ours.len());
    }
}

#[test]
fn udp_tracker_peer_counts_match_the_catalog() {
    use sensor::bt::Coordination;
    use sensor::event::Transport;
    use sensor::predict::{Channel, PeerTransport};
    // CATALOG.md counts every peer entry of every announce response: small_torrent "announce
    // 5/5, 26 peers"; bittorrent_transmission "announce 8/8, 200 peers", one of them on port 0
    // (no prediction).
    for (rel, catalog, unusable) in [
        ("goncalo-rodrigues-360BitScoping/small_torrent.pcap", 26, 0),
        ("ntop-nDPI/bittorrent_transmission.pcapng", 200, 1),
    ] {
        let mut coordination = Coordination::default();
        let mut out = Vec::new();
        sensor::capture::pcap::prefilter_file(&shared(rel), 1472, |ev| {
            if let Transport::Udp(udp) = &ev.transport {
                coordination.on_udp(ev, udp, &mut out);
            }
        })
        .unwrap();
        let entries = out
            .iter()
            .filter(|p| p.channel == Channel::UdpTracker && p.transport == PeerTransport::Tcp)
            .count();
        assert_eq!(entries, catalog - unusable, "{rel}");
    }
}
