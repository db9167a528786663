//! The Vuze DHT test vectors VZ-D1..D5 (built from BiglyBT's `serialise` code; the same bytes as
//! the unit tests of `sensor::bt::vuze_dht`) as a capture: tshark's `vuze-dht` dissector must
//! decode the fields we decode wherever it decodes correctly (all of VZ-D1, D3, D4; the header
//! of D2 and D5, before its two defects), and `sensor peers` must predict the expected targets.
//!
//! Needs tshark (`cargo xtask setup` installs it); unprivileged.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etherparse::PacketBuilder;
use sensor::bt::vuze_dht::{
    self, FindNodeReply, FindValueResult, Message, Reply, ReplyBody, Request, RequestBody,
};
use sensor_tests::synth::{Capture, SynthPacket};
use serde_json::Value;

const D1: &str = "9a3b5c7d1e2f4a6b 00000406 00c0ffee 32 00 00000000 32 04c00002632c09 11223344
    0000018bcfe56800 14 0f1e2d3c4b5a69788796a5b4c3d2e1f001122334 00 10";
const D2: &str = "00000407 00c0ffee 9a3b5c7d1e2f4a6b 32 00 00000000 55667788 00 01 01 0002
    00000001 0000018bcfe540f0 0007 35313431333b43 01 32 04c00002142c09 01 00 ff
    00000001 0000018bcfe519e0 0016 3230332e302e3131332e37373a363838313b36383832 01 32
    04c00002159c40 02 00 ff";
const D3: &str = "00000405 00c0ffef 9a3b5c7d1e2f4a6b 32 00 00000000 55667788 0badf00d 00000001
    000f4240 01 01 10 3f800000 40000000 40400000 40800000 0002 01 32 04c000021e2c09 01 32
    04c000021f1ae1";
const D4: &str = "9a3b5c7d1e2f4a6b 00000406 00c0ffee 37 00 00000004 37 04c00002632c09 11223344
    0000018bcfe56800 00 00 14 0f1e2d3c4b5a69788796a5b4c3d2e1f001122334 00 10";

const REQUESTER: [u8; 4] = [192, 0, 2, 99];
const RESPONDER: [u8; 4] = [192, 0, 2, 1];
const PORT: u16 = 11273;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(s).unwrap()
}

/// VZ-D5 = VZ-D2 with a v55 header (BiglyBT 3.x: packet flags, flags2, processing time) and
/// contact versions 0x37.
fn d5() -> Vec<u8> {
    let d2 = unhex(D2);
    let mut v = unhex("00000407 00c0ffee 9a3b5c7d1e2f4a6b 37 00 00000004 55667788 00 00 0003");
    let mut body = d2[26..].to_vec();
    for at in [26, 74] {
        assert_eq!(&body[at..at + 3], &[1, 0x32, 4]);
        body[at + 1] = 0x37;
    }
    v.extend_from_slice(&body);
    v
}

/// The vectors in order (requests before their replies), one second apart.
fn vectors() -> Vec<(&'static str, bool, Vec<u8>)> {
    vec![
        ("VZ-D1", true, unhex(D1)),
        ("VZ-D2", false, unhex(D2)),
        ("VZ-D3", false, unhex(D3)),
        ("VZ-D4", true, unhex(D4)),
        ("VZ-D5", false, d5()),
    ]
}

fn write_capture(dir: &Path) -> PathBuf {
    let mut packets = Vec::new();
    for (i, (_, is_request, payload)) in vectors().into_iter().enumerate() {
        let (src, dst) = if is_request {
            (REQUESTER, RESPONDER)
        } else {
            (RESPONDER, REQUESTER)
        };
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, src[3]], [2, 0, 0, 0, 0, dst[3]])
            .ipv4(src, dst, 64)
            .udp(PORT, PORT)
            .write(&mut frame, &payload)
            .unwrap();
        packets.push(SynthPacket {
            ts: Duration::from_secs(1_767_225_600 + i as u64),
            frame,
        });
    }
    let path = dir.join("vuze-dht-vectors.pcap");
    Capture { packets }.write_pcap_file(&path).unwrap();
    path
}

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-vuze-dht-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// tshark's `vuze-dht` tree of every frame.
fn tshark_frames(pcap: &Path) -> Vec<Value> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-d", "udp.port==11273,vuze-dht", "-T", "json"])
        .arg("--no-duplicate-keys")
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: Value = serde_json::from_slice(&out.stdout).expect("tshark JSON");
    frames
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["_source"]["layers"]["vuze-dht"].clone())
        .collect()
}

/// A field tshark shows as a decimal string.
fn num(tree: &Value, key: &str) -> u64 {
    tree[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {tree:#}"))
        .parse()
        .unwrap()
}

/// A contact or address subtree as (ip, port).
fn addr(tree: &Value) -> SocketAddr {
    let a = &tree["vuze-dht.address"];
    let ip: Ipv4Addr = a["vuze-dht.address.ipv4"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    SocketAddr::new(
        ip.into(),
        u16::try_from(num(a, "vuze-dht.address.port")).unwrap(),
    )
}

fn hex_bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap().replace(':', "")).unwrap()
}

/// A field that may be one object or a list of them, as a list.
fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

#[test]
fn tshark_decodes_the_header_fields_we_decode() {
    let pcap = write_capture(&scratch());
    let theirs = tshark_frames(&pcap);
    let vectors = vectors();
    assert_eq!(theirs.len(), vectors.len());
    for ((name, _, raw), t) in vectors.iter().zip(&theirs) {
        match vuze_dht::parse(raw).unwrap_or_else(|e| panic!("{name}: {e:?}")) {
            Message::Request(q) => check_request(name, t, &q),
            Message::Reply(r) => check_reply(name, t, &r),
        }
    }
}

/// tshark's fields of a request against ours.
fn check_request(name: &str, t: &Value, q: &Request<'_>) {
    let fields = |k: &str| num(t, &format!("vuze-dht.{k}"));
    let h = q.header;
    assert_eq!(fields("connection_id"), h.connection_id, "{name}");
    assert_eq!(fields("action"), u64::from(h.action.code()), "{name}");
    assert_eq!(fields("transaction_id"), u64::from(h.txid), "{name}");
    assert_eq!(fields("proto_ver"), u64::from(h.version), "{name}");
    assert_eq!(fields("vendor_id"), u64::from(h.vendor), "{name}");
    assert_eq!(fields("network_id"), u64::from(h.network), "{name}");
    assert_eq!(
        fields("local_proto_ver"),
        u64::from(h.originator_version),
        "{name}"
    );
    assert_eq!(addr(t), h.originator, "{name}");
    assert_eq!(fields("instance_id"), u64::from(h.instance), "{name}");
    assert_eq!(fields("time"), h.time_ms, "{name}");
    match h.flags {
        Some(f) => assert_eq!(fields("generic_flags"), u64::from(f), "{name}"),
        None => assert!(t["vuze-dht.generic_flags"].is_null(), "{name}"),
    }
    match h.flags2 {
        Some(f) => assert_eq!(fields("generic_flags2"), u64::from(f), "{name}"),
        None => assert!(t["vuze-dht.generic_flags2"].is_null(), "{name}"),
    }
    let RequestBody::FindValue(f) = q.body else {
        panic!("{name}: not FIND_VALUE")
    };
    let key = &t["vuze-dht.key"];
    assert_eq!(num(key, "vuze-dht.key.len"), f.key.len() as u64, "{name}");
    assert_eq!(hex_bytes(&key["vuze-dht.key.data"]), f.key, "{name}");
    assert_eq!(fields("flags"), u64::from(f.flags), "{name}");
    assert_eq!(fields("max_values"), u64::from(f.max_values), "{name}");
}

/// tshark's fields of a reply against ours, up to where tshark 4.0 misreads.
fn check_reply(name: &str, t: &Value, r: &Reply<'_>) {
    let fields = |k: &str| num(t, &format!("vuze-dht.{k}"));
    let h = r.header;
    assert_eq!(fields("action"), u64::from(h.action.code()), "{name}");
    assert_eq!(fields("transaction_id"), u64::from(h.txid), "{name}");
    assert_eq!(fields("connection_id"), h.connection_id, "{name}");
    assert_eq!(fields("proto_ver"), u64::from(h.version), "{name}");
    assert_eq!(fields("vendor_id"), u64::from(h.vendor), "{name}");
    assert_eq!(fields("network_id"), u64::from(h.network), "{name}");
    assert_eq!(fields("instance_id"), u64::from(h.instance), "{name}");
    if let Some(f) = h.flags {
        assert_eq!(fields("generic_flags"), u64::from(f), "{name}");
    }
    if let Some(f) = h.flags2 {
        assert_eq!(fields("generic_flags2"), u64::from(f), "{name}");
    }
    // tshark 4.0 has no processing time (v54+): the rest of VZ-D5 is misread.
    if h.processing_time_ms.is_some() {
        assert_eq!(name, "VZ-D5");
        return;
    }
    match r.body {
        ReplyBody::FindValue(f) => {
            // Before the values-branch defect: the two booleans.
            assert_eq!(
                fields("has_continuation"),
                u64::from(f.has_continuation),
                "{name}"
            );
            let is_value = matches!(f.result, FindValueResult::Values { .. });
            assert_eq!(fields("has_values"), u64::from(is_value), "{name}");
            assert_eq!(name, "VZ-D2");
        }
        ReplyBody::FindNode(f) => check_find_node(name, t, &f),
        ReplyBody::Other(_) => panic!("{name}: unexpected body"),
    }
}

/// A FIND_NODE reply's body: network positions and contacts.
// tshark prints the coordinates we decode from the same four bytes: exact equality is the test.
#[allow(clippy::float_cmp)]
fn check_find_node(name: &str, t: &Value, f: &FindNodeReply<'_>) {
    let fields = |k: &str| num(t, &format!("vuze-dht.{k}"));
    assert_eq!(fields("spoof_id"), u64::from(f.spoof_id), "{name}");
    assert_eq!(fields("node_type"), u64::from(f.node_status), "{name}");
    assert_eq!(fields("dht_size"), u64::from(f.estimated_size), "{name}");
    assert_eq!(
        fields("network_coordinates_count"),
        f.positions.len() as u64
    );
    let coords = list(&t["vuze-dht.network_coordinates"]["vuze-dht.network_coordinate"]);
    let ours: Vec<_> = f.positions.iter().collect();
    assert_eq!(coords.len(), ours.len());
    for (c, p) in coords.iter().zip(&ours) {
        assert_eq!(num(c, "vuze-dht.network_coordinate.type"), 1);
        assert_eq!(
            num(c, "vuze-dht.network_coordinate.size"),
            p.data.len() as u64
        );
        let v = p.vivaldi().unwrap();
        for (k, want) in ["x", "y", "height", "error"].iter().zip(v) {
            let got: f32 = c[format!("vuze-dht.network_coordinate.{k}")]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(got, want, "{name} {k}");
        }
    }
    assert_eq!(fields("contacts_count"), f.contacts.len() as u64);
    let contacts = list(&t["vuze-dht.contacts"]["vuze-dht.contact"]);
    let ours: Vec<_> = f.contacts.iter().collect();
    assert_eq!(contacts.len(), ours.len());
    for (c, o) in contacts.iter().zip(&ours) {
        assert_eq!(num(c, "vuze-dht.contact.type"), 1);
        assert_eq!(num(c, "vuze-dht.proto_ver"), u64::from(o.version));
        assert_eq!(addr(c), o.addr);
    }
    assert_eq!(name, "VZ-D3");
}

#[test]
fn sensor_peers_predicts_the_spec_targets() {
    let pcap = write_capture(&scratch());
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    let out = Command::new(sensor)
        .args(["peers", "--json"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeSet<(String, String, u64, String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            (
                s("host"),
                s("peer"),
                v["port"].as_u64().unwrap(),
                s("transport"),
                s("channel"),
            )
        })
        .collect();
    // VZ-D2/D5 (as BiglyBT's `DHTTrackerPlugin` reads their values): TCP 192.0.2.20:51413 (UDP 11273), TCP 203.0.113.77:6881 (UDP
    // 6882), for the requester. The v50 vectors are below BiglyBT's minimum version 51, so
    // only the D4/D5 exchange counts (D3's contacts are v50 too).
    let want: BTreeSet<_> = [
        ("192.0.2.20", 51413, "tcp"),
        ("192.0.2.20", 11273, "udp"),
        ("203.0.113.77", 6881, "tcp"),
        ("203.0.113.77", 6882, "udp"),
    ]
    .into_iter()
    .map(|(ip, port, t)| {
        (
            "192.0.2.99".to_string(),
            ip.to_string(),
            port,
            t.to_string(),
            "azureus_dht".to_string(),
        )
    })
    .collect();
    assert_eq!(got, want);
}
