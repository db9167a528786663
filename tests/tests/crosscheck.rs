//! Independent cross-check of the coordination parsers: tshark's `bt-dht` dissector must find
//! exactly the DHT peers we predict from, on the synthetic demo capture and on the corpus's
//! captures; on the corpus (the `corpus` module), the UDP tracker, HTTP tracker and PEX peer
//! counts must also match the corpus's `CATALOG.md`.
//!
//! Needs tshark (`cargo xtask setup` installs it); unprivileged.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

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
                u16::try_from(v["port"].as_u64().unwrap()).unwrap(),
            )
        })
        .collect()
}

/// tshark's DHT peers in `pcap` equal our DHT predictions, up to our documented filters: a
/// peer on port 0 or a host listed back to itself is no prediction. Nothing else may differ.
fn assert_dht_peers_equal_tsharks(pcap: &Path, name: &str) {
    let theirs = tshark_dht_peers(pcap);
    let ours = our_peers(pcap, "dht");
    let usable: BTreeSet<Peer> = theirs
        .iter()
        .copied()
        .filter(|&(host, ip, port)| port != 0 && ip != host)
        .collect();
    let missing: Vec<_> = usable.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&usable).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: missing {missing:?}, extra {extra:?}"
    );
    assert!(!ours.is_empty(), "{name}: nothing to compare");
    eprintln!("{name}: {} DHT peers, as tshark", ours.len());
}

#[test]
fn dht_values_of_the_synthetic_capture_equal_tsharks() {
    let pcap = std::env::temp_dir().join(format!("sensor-crosscheck-{}.pcap", std::process::id()));
    sensor_tests::synth::demo_capture()
        .write_pcap_file(&pcap)
        .unwrap();
    assert_dht_peers_equal_tsharks(&pcap, "synthetic demo capture");
}

/// Every coordination channel over a capture, as the engine runs them (the pre-filter's
/// forwarding included): the predictions, retractions and counters.
fn coordinate(
    pcap: &Path,
) -> (
    Vec<sensor::predict::PredictedPeer>,
    Vec<sensor::predict::RetractedPeer>,
    sensor::bt::Coordination,
) {
    use sensor::event::Transport;
    let mut coordination = sensor::bt::Coordination::default();
    let (mut out, mut retracted) = (Vec::new(), Vec::new());
    sensor::capture::pcap::prefilter_file(pcap, 1472, |ev| match &ev.transport {
        Transport::Udp(udp) => coordination.on_udp(ev, udp, &mut out, &mut retracted),
        Transport::Tcp(seg) => coordination.on_tcp(ev, seg, &mut out, &mut retracted),
        Transport::Icmp(_) => {}
    })
    .unwrap();
    (out, retracted, coordination)
}

/// PEX `added` peers as tshark reassembles and frames the peer wire: every BEP 10 extended
/// message (id ≠ 0) whose bencoded dict has an `added` string, read here with a plain byte
/// search (no bencode library), for the message's receiver.
fn tshark_pex_added(pcap: &Path) -> BTreeSet<Peer> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "-Y",
            "bittorrent.extended.id",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
        ])
        .args([
            "-E",
            "aggregator=|",
            "-e",
            "ip.dst",
            "-e",
            "bittorrent.extended.id",
        ])
        .args(["-e", "bittorrent.extended"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut peers = BTreeSet::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let host: IpAddr = f[0].parse().unwrap();
        let ids: Vec<&str> = f[1].split('|').collect();
        let payloads: Vec<&str> = f.get(2).map_or(vec![], |p| p.split('|').collect());
        // Extended handshakes (id 0) carry no payload field in this output; pair the rest.
        for hex in payloads
            .iter()
            .take(ids.iter().filter(|i| **i != "0").count())
        {
            let bytes = hex::decode(hex).unwrap();
            let Some(at) = bytes.windows(7).position(|w| w == b"5:added") else {
                continue;
            };
            let rest = &bytes[at + 7..];
            let colon = rest.iter().position(|&b| b == b':').unwrap();
            let len: usize = std::str::from_utf8(&rest[..colon])
                .unwrap()
                .parse()
                .unwrap();
            for e in rest[colon + 1..colon + 1 + len].chunks_exact(6) {
                let ip = IpAddr::from([e[0], e[1], e[2], e[3]]);
                peers.insert((host, ip, u16::from_be_bytes([e[4], e[5]])));
            }
        }
    }
    peers
}

/// Checks on third-party captures.
mod corpus {
    use super::*;
    use sensor_tests::corpus;

    #[test]
    fn dht_values_equal_tsharks() {
        for rel in [
            "OISF-suricata-verify/bittorrent-dht/input.pcap",
            "goncalo-rodrigues-360BitScoping/small_torrent.pcap",
            "ntop-nDPI/bittorrent_transmission.pcapng",
        ] {
            assert_dht_peers_equal_tsharks(&corpus(rel), rel);
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
            let (mut out, mut retracted) = (Vec::new(), Vec::new());
            sensor::capture::pcap::prefilter_file(&corpus(rel), 1472, |ev| {
                if let Transport::Udp(udp) = &ev.transport {
                    coordination.on_udp(ev, udp, &mut out, &mut retracted);
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

    #[test]
    fn http_tracker_responses_and_peers_match_the_catalog() {
        // CATALOG.md "HTTP-trk: N announce req, R bencoded resp / P peers", computed by its own
        // script (dpkt + a bencode decoder), over the XDP-forwarded payloads here.
        for (rel, responses, peers) in [
            ("zeek-zeek/tracker.pcap", 1, 50),
            (
                "goncalo-rodrigues-360BitScoping/model_streams__6.93k__MERGED.pcap",
                2,
                4,
            ),
            (
                "goncalo-rodrigues-360BitScoping/model_streams__2_torrents-11.3k_each__MERGED.pcap",
                4,
                4,
            ),
            ("tcoppi-BittorrentReconstituter/codemonkey.pcap", 2, 4),
            ("tcoppi-BittorrentReconstituter/codemonkey2.pcap", 2, 6),
            (
                "tcoppi-BittorrentReconstituter/codemonkey_and_testtxt.pcap",
                5,
                11,
            ),
            ("tcoppi-BittorrentReconstituter/lookaway.pcap", 3, 10),
            ("tcoppi-BittorrentReconstituter/mippo.pcap", 2, 4),
            ("tcoppi-BittorrentReconstituter/test.txt.pcap", 2, 6),
            ("ntop-nDPI/bt-http.pcapng", 0, 0),
        ] {
            let (_, _, coordination) = coordinate(&corpus(rel));
            let h = &coordination
                .channel::<sensor::bt::http_tracker::HttpTracker>()
                .unwrap()
                .stats();
            assert_eq!(
                (h.counts.parsed, h.entries.decoded + h.dns_names),
                (responses, peers),
                "{rel}: {h:?}"
            );
        }
    }

    #[test]
    fn pex_added_peers_equal_tsharks() {
        // CATALOG.md: torrential-slowness "PEX: 1 msg / 30 added peers" (mid-session, no
        // handshake), small_torrent "2 msg / 2 added peers", lookaway "1 msg / 0 added".
        // small_torrent's two entries are one peer, 217.129.96.104:36360: the receiver's own
        // public address, as its extended handshake's `ipv4` announces it. BEP 11 lets a peer
        // list any address, the receiver's own included, and dialling it is no connection to a
        // peer, so that entry is no prediction and is filtered here too. (The peer sends its
        // PEX after the client's FIN: a half-closed connection must stay followed.)
        // The last column: messages read by the id-1 fallback, only where the handshakes predate
        // the capture; every other PEX is read under the id its receiver announced.
        for (rel, own, catalog, fallback) in [
            ("markofu-pcaps/torrential-slowness.pcap", None, 30, 1),
            (
                "goncalo-rodrigues-360BitScoping/small_torrent.pcap",
                Some("217.129.96.104"),
                0,
                0,
            ),
            ("tcoppi-BittorrentReconstituter/lookaway.pcap", None, 0, 0),
        ] {
            let own: Option<IpAddr> = own.map(|a: &str| a.parse().unwrap());
            let pcap = corpus(rel);
            let theirs = tshark_pex_added(&pcap);
            let ours = our_peers(&pcap, "pex");
            // Our documented filters: port 0 and the receiver itself are no predictions.
            let usable: BTreeSet<Peer> = theirs
                .iter()
                .copied()
                .filter(|&(host, ip, port)| port != 0 && ip != host && Some(ip) != own)
                .collect();
            assert_eq!(ours, usable, "{rel}");
            if own.is_some() {
                assert!(
                    theirs.len() > usable.len(),
                    "{rel}: tshark saw the own-address entry"
                );
            }
            assert_eq!(ours.len(), catalog, "{rel}: distinct peers vs CATALOG.md");
            let (_, _, coordination) = coordinate(&pcap);
            let peer_wire = coordination
                .channel::<sensor::bt::peer_wire::PeerWire>()
                .unwrap()
                .stats();
            assert_eq!(
                peer_wire.pex.rejected_total(),
                0,
                "{rel}: {:?}",
                peer_wire.pex
            );
            assert_eq!(peer_wire.pex_fallback, fallback, "{rel}");
        }
    }
}
