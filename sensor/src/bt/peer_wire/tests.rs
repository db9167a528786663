use super::*;
use crate::bt::stream::{StreamClass, StreamEvent};
use crate::test_support::unhex;
use std::collections::BTreeMap as Map;

// Test vectors, byte for byte. Real messages: the handshake BTH-R1 and the extended handshakes
// EXT-R1 (µTorrent 3.4, unsorted keys) and EXT-R2 (libtorrent 1.1) of nDPI's `bittorrent.pcap`,
// PEX-R1 (nDPI, over uTP) and PEX-R2 (`torrential-slowness.pcap`), PORT of nDPI's capture.
// Constructed per BEP 10/11/55: the PEX-D2 exchange (asymmetric ut_pex ids, `added6`,
// `dropped`) and the holepunch connect HP-D1.
const BTH_R1: &str = "13 426974546f7272656e742070726f746f636f6c 0000000000100005
    dcfcdccfb9e670ccc3dd40c78c161f2bea243126 2d554d313836302d418e124c7011d02f89ddaef0";
const EXT_R1: &str =
    "000000e7 14 00 64313a65693065343a69707634343a5239615331323a636f6d706c6574655f61676f6933
    65313a6d6431313a75706c6f61645f6f6e6c7969336531313a6c745f646f6e746861766569376531323a75
    745f686f6c6570756e636869346531313a75745f6d65746164617461693265363a75745f70657869316531
    303a75745f636f6d6d656e746936656531333a6d657461646174615f73697a6569313930303965313a7069
    353331333765343a726571716932353565313a7631353acebc546f7272656e7420332e342e35323a797069
    353238383765363a796f75726970343a5237cd0165";
const EXT_R2: &str =
    "000000cd 14 00 6431323a636f6d706c6574655f61676f693065313a6d6431313a6c745f646f6e746861
    766569376531303a73686172655f6d6f646569386531313a75706c6f61645f6f6e6c7969336531323a7574
    5f686f6c6570756e636869346531313a75745f6d65746164617461693265363a75745f7065786931656531
    333a6d657461646174615f73697a6569313831383565313a7069353634303065343a726571716935303065
    313a7631383a6c6962746f7272656e742f312e312e302e30363a796f75726970343a4f18be0365";
const PEX_R1: &str =
    "00000094 14 01 64353a616464656436363a4c6d0f74ef29185b63332aaeb915d905e9c4516a63dd679b
    5162771ef37749368b5895ad051dfa483eb44f18be039fffbf21809de86a4f4ef9b5c8d529654e39c06437
    3a61646465642e6631313a0e0a0a0e0a0e0e0c0e060e363a616464656436303a383a6164646564362e6630
    3a373a64726f70706564303a383a64726f7070656436303a65";
const PEX_R2: &str =
    "000000f8140164353a61646465643138303ad890e46447c941175a06efaa56082d0cf714188da450e502
    1851c4cd8bb244c4a54a1ae1415d76c5c05b42cbd14b4e05dce9c698bf5418b3280b1ae147f6361c35ad47
    1c4b5644ea185f28e36b3618af67631ae1432aa3a61ae118deb9b3ef62424379a31ae155354f881ae1598a
    bc5679d44aecf9dc1ae1d31a3c7f1ae13f6e7d0d1ae14496da79c3594caecc86750a43a236291ae1d1a1c5
    2a1ae14495be3a634a40e5b6421ae1459e779fb272520276182710373a61646465642e6633303a00000000
    0000000000000000000000000000000000000000000000000000373a64726f70706564303a65";
const PEX_D2_H: &str = "00000014 14 00 64313a6d64363a75745f7065786933656565";
const PEX_D2_P: &str = "0000001e 14 00 64313a6d64363a75745f70657869316565313a706935313431336565";
const PEX_D2: &str =
    "00000062 14 03 64353a616464656431323ac00002281ae1c6336429c8d5373a61646465642e66323a
    1006363a61646465643631383a20010db80000000000000000000000281ae1383a6164646564362e6631
    3a11373a64726f70706564363ac00002321ae165";
const HP_D1: &str = "0000000e 14 04 01 00 c0000214 1ae1 00000000";
const PORT_R: &str = "00000003 09 c8d5";

/// PEX-D2's host H (the client) and peer P.
const H: &str = "192.0.2.1:50000";
const P: &str = "203.0.113.9:51413";

fn conn(client: &str, server: &str) -> ConnKey {
    ConnKey::tcp(client.parse().unwrap(), server.parse().unwrap())
}

fn at(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

/// A channel and everything it produced.
struct Wire {
    pw: PeerWire,
    out: Vec<PredictedPeer>,
    ret: Vec<RetractedPeer>,
}

impl Wire {
    fn new() -> Self {
        Self::with(PeerWireConfig::default())
    }

    fn with(config: PeerWireConfig) -> Self {
        Self {
            pw: PeerWire::new(config),
            out: Vec::new(),
            ret: Vec::new(),
        }
    }

    fn feed(&mut self, key: ConnKey, dir: Dir, gap: bool, ts: u64, data: &[u8]) {
        let chunk = StreamChunk {
            ts: at(ts),
            conn: key,
            dir,
            gap,
            data,
        };
        self.pw.on_chunk(&chunk, &mut self.out, &mut self.ret);
    }

    fn targets(&self, channel: Channel, transport: PeerTransport) -> Vec<String> {
        self.out
            .iter()
            .filter(|p| p.channel == channel && p.transport == transport)
            .map(|p| format!("{} {}", p.host, p.peer))
            .collect()
    }
}

fn handshake(reserved: [u8; 8]) -> Vec<u8> {
    let mut v = PROTOCOL.to_vec();
    v.extend_from_slice(&reserved);
    v.extend_from_slice(&[0xab; 20]);
    v.extend_from_slice(b"-XX0001-abcdefghijkl");
    v
}

const LTEP: [u8; 8] = [0, 0, 0, 0, 0, 0x10, 0, 0x05];

fn message(id: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (u32::try_from(payload.len()).unwrap() + 1)
        .to_be_bytes()
        .to_vec();
    v.push(id);
    v.extend_from_slice(payload);
    v
}

fn extended(ext: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![ext];
    p.extend_from_slice(body);
    message(MSG_EXTENDED, &p)
}

fn piece(len: usize) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 1, 0, 0, 0x40, 0];
    // Any byte pattern: the low byte of a counter.
    p.extend((0..len).map(|i| (i * 7 + 3).to_le_bytes()[0]));
    message(MSG_PIECE, &p)
}

/// Deterministic high-entropy bytes (MSE keys and padding look like this).
fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

// ---- pure parsers on the test vectors

#[test]
fn spec_bth_r1_handshake() {
    let raw = unhex(BTH_R1);
    assert_eq!(raw.len(), 68);
    let h = parse_handshake(&raw).unwrap();
    assert!(h.extension_protocol() && h.dht() && h.fast());
    assert!(!h.azureus_messaging());
    assert_eq!(&h.peer_id[..8], b"-UM1860-");
    assert_eq!(h.info_hash[0], 0xdc);
    for cut in 0..68 {
        let want = if cut == 0 || starts_like_handshake(&raw[..cut]) {
            Reject::Truncated
        } else {
            Reject::NotHandshake
        };
        assert_eq!(parse_handshake(&raw[..cut]).err(), Some(want));
    }
    let mut bad = raw.clone();
    bad[5] = b'X';
    assert_eq!(parse_handshake(&bad).err(), Some(Reject::NotHandshake));
    assert_eq!(
        parse_handshake(b"GET /announce?info_hash=").err(),
        Some(Reject::NotHandshake)
    );
}

fn ext_body(hex: &str) -> Vec<u8> {
    let raw = unhex(hex);
    let Frame::Complete { id, payload } = frame(&raw, Check::InSync) else {
        panic!("not one whole message")
    };
    assert_eq!(id, MSG_EXTENDED);
    assert_eq!(5 + payload.len(), raw.len());
    payload.to_vec()
}

#[test]
fn spec_ext_r1_unsorted_utorrent_handshake() {
    let p = ext_body(EXT_R1);
    assert_eq!(p[0], 0);
    // Unsorted: `e` before `ipv4` before `complete_ago`.
    assert!(p[1..].starts_with(b"d1:ei0e4:ipv4"));
    let hs = parse_ext_handshake(&p[1..]).unwrap();
    assert!(hs.has_m);
    assert_eq!((hs.ut_pex, hs.ut_holepunch), (Some(1), Some(4)));
    assert_eq!(hs.p, Some(53137));
    assert_eq!(hs.yourip, Some("82.55.205.1".parse().unwrap()));
    assert_eq!(hs.ipv4, Some("82.57.97.83".parse().unwrap()));
    assert_eq!(hs.ipv6, None);
    // U+03BC (Greek mu, `ce bc`), not the micro sign of BEP 10's example.
    assert_eq!(hs.v, Some("\u{3bc}Torrent 3.4.5".as_bytes()));
    assert_eq!(hs.bad_fields, 0);
}

#[test]
fn spec_ext_r2_libtorrent_handshake() {
    let p = ext_body(EXT_R2);
    let hs = parse_ext_handshake(&p[1..]).unwrap();
    assert_eq!((hs.ut_pex, hs.ut_holepunch), (Some(1), Some(4)));
    assert_eq!(hs.p, Some(56400));
    assert_eq!(hs.yourip, Some("79.24.190.3".parse().unwrap()));
    assert_eq!(hs.v, Some(&b"libtorrent/1.1.0.0"[..]));
}

fn added(pex: &Pex<'_>) -> (Vec<(String, Option<u8>)>, EntryCounts) {
    let mut v = Vec::new();
    let n = pex.for_each_added(MAX_ENTRIES, |a, f| v.push((a.to_string(), f)));
    (v, n)
}

#[test]
fn spec_pex_r1_entries_and_flags() {
    let p = ext_body(PEX_R1);
    assert_eq!(p[0], 1);
    let pex = parse_pex(&p[1..]).unwrap();
    let (v, n) = added(&pex);
    let want = [
        ("76.109.15.116:61225", 0x0e),
        ("24.91.99.51:10926", 0x0a),
        ("185.21.217.5:59844", 0x0a),
        ("81.106.99.221:26523", 0x0e),
        ("81.98.119.30:62327", 0x0a),
        ("73.54.139.88:38317", 0x0e),
        ("5.29.250.72:16052", 0x0e),
        ("79.24.190.3:40959", 0x0c),
        ("191.33.128.157:59498", 0x0e),
        ("79.78.249.181:51413", 0x06),
        ("41.101.78.57:49252", 0x0e),
    ];
    let want: Vec<_> = want
        .iter()
        .map(|(a, f)| (a.to_string(), Some(*f)))
        .collect();
    assert_eq!(v, want);
    assert_eq!((n.decoded, n.malformed, n.capped), (11, 0, 0));
    assert_eq!(pex.added6, b"");
    assert_eq!(pex.added6_f, Some(&b""[..]));
    assert_eq!(pex.for_each_dropped(MAX_ENTRIES, |_| {}).decoded, 0);
}

#[test]
fn spec_pex_r2_thirty_peers_without_added6() {
    let p = ext_body(PEX_R2);
    assert_eq!(p[0], 1);
    let pex = parse_pex(&p[1..]).unwrap();
    let (v, n) = added(&pex);
    assert_eq!(n.decoded, 30);
    let addrs: Vec<&str> = v.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        addrs[..3],
        [
            "216.144.228.100:18377",
            "65.23.90.6:61354",
            "86.8.45.12:63252"
        ]
    );
    assert_eq!(addrs[29], "82.2.118.24:10000");
    assert_eq!(addrs.iter().filter(|a| a.ends_with(":6881")).count(), 12);
    assert!(v.iter().all(|(_, f)| *f == Some(0)));
    assert_eq!((pex.added6, pex.added6_f), (&b""[..], None));
}

#[test]
fn spec_pex_d2_entries() {
    let p = ext_body(PEX_D2);
    assert_eq!(p[0], 3);
    let pex = parse_pex(&p[1..]).unwrap();
    let (v, _) = added(&pex);
    assert_eq!(
        v,
        [
            ("192.0.2.40:6881".to_string(), Some(0x10)),
            ("198.51.100.41:51413".to_string(), Some(0x06)),
            ("[2001:db8::28]:6881".to_string(), Some(0x11)),
        ]
    );
    let mut d = Vec::new();
    pex.for_each_dropped(MAX_ENTRIES, |a| d.push(a.to_string()));
    assert_eq!(d, ["192.0.2.50:6881"]);
    // The two handshakes.
    let (hb, pb) = (ext_body(PEX_D2_H), ext_body(PEX_D2_P));
    let h = parse_ext_handshake(&hb[1..]).unwrap();
    assert_eq!((h.ut_pex, h.p), (Some(3), None));
    let p = parse_ext_handshake(&pb[1..]).unwrap();
    assert_eq!((p.ut_pex, p.p), (Some(1), Some(51413)));
}

#[test]
fn spec_hp_d1_connect() {
    let p = ext_body(HP_D1);
    assert_eq!(p[0], 4);
    let h = parse_holepunch(&p[1..]).unwrap();
    assert_eq!(h.msg_type, HOLEPUNCH_CONNECT);
    assert_eq!(h.addr, "192.0.2.20:6881".parse().unwrap());
    assert_eq!(h.error, 0);
    let v6 = unhex("01 01 20010db8000000000000000000000001 1ae1 00000000");
    assert_eq!(
        parse_holepunch(&v6).unwrap().addr,
        "[2001:db8::1]:6881".parse().unwrap()
    );
    assert_eq!(
        parse_holepunch(&unhex("01 02 c0000214 1ae1 00000000")),
        Err(Reject::BadAddressType)
    );
    for cut in 0..p.len() - 1 {
        assert_eq!(parse_holepunch(&p[1..=cut]), Err(Reject::Truncated));
    }
    let mut long = p[1..].to_vec();
    long.push(0);
    assert_eq!(parse_holepunch(&long), Err(Reject::TrailingData));
}

#[test]
fn port_message_frame() {
    let raw = unhex(PORT_R);
    assert_eq!(
        frame(&raw, Check::Resync),
        Frame::Complete {
            id: MSG_PORT,
            payload: &[0xc8, 0xd5]
        }
    );
    assert!(plausible_start(&raw));
    // PORT is always 3 bytes long.
    assert_eq!(
        frame(&unhex("00000004 09 c8d5 00"), Check::InSync),
        Frame::Invalid(Reject::BadLength)
    );
}

#[test]
fn framing_rules() {
    assert_eq!(frame(&[0, 0, 0, 0], Check::InSync), Frame::KeepAlive);
    assert_eq!(frame(&[0, 0], Check::InSync), Frame::NeedMore { needed: 4 });
    assert_eq!(
        frame(&[0, 0, 0, 5], Check::InSync),
        Frame::NeedMore { needed: 5 }
    );
    assert_eq!(
        frame(&[0, 0, 0, 5, 4, 0, 0], Check::InSync),
        Frame::NeedMore { needed: 9 }
    );
    let cases: &[(u32, u8, Check, Result<(), Reject>)] = &[
        (1, 0, Check::Resync, Ok(())),
        (2, 1, Check::InSync, Err(Reject::BadLength)),
        (5, 4, Check::Resync, Ok(())),
        (13, 6, Check::Resync, Ok(())),
        (12, 6, Check::InSync, Err(Reject::BadLength)),
        (0x4009, MSG_PIECE, Check::Resync, Ok(())),
        (0x400a, MSG_PIECE, Check::Resync, Err(Reject::BadLength)),
        (0x8009, MSG_PIECE, Check::InSync, Ok(())),
        (
            MAX_FRAME + 1,
            MSG_PIECE,
            Check::InSync,
            Err(Reject::BadLength),
        ),
        (8, MSG_PIECE, Check::InSync, Err(Reject::BadLength)),
        (1, MSG_EXTENDED, Check::InSync, Err(Reject::BadLength)),
        (0x20000, 5, Check::Resync, Ok(())),
        (0x20001, 5, Check::Resync, Err(Reject::BadLength)),
        (49, 0x15, Check::Resync, Ok(())),
        (100, 0x42, Check::Resync, Err(Reject::UnknownId)),
        (100, 0x42, Check::InSync, Ok(())),
        (u32::MAX, 0x42, Check::InSync, Err(Reject::BadLength)),
    ];
    for &(len, id, check, want) in cases {
        assert_eq!(check_header(len, id, check), want, "len {len} id {id}");
    }
    // Every proper prefix of a message needs more.
    let m = unhex(PEX_R1);
    for cut in 0..m.len() {
        assert!(matches!(
            frame(&m[..cut], Check::InSync),
            Frame::NeedMore { .. }
        ));
    }
    // Resync wants a real message and a plausible chain around it.
    assert!(!plausible_start(&[0, 0, 0, 0, 0, 0, 0, 9, 1]));
    assert!(
        plausible_start(&[0, 0, 0, 0, 0, 0, 0, 1, 2]),
        "keep-alive, interested"
    );
    assert!(!plausible_start(&[0, 0, 0, 1]));
    assert!(!plausible_start(&[0; 1400]), "zero-filled piece data");
    let mut ka = vec![0; 8];
    ka.extend(unhex(PEX_D2));
    assert!(plausible_start(&ka));
    assert!(
        plausible_start(&ka[..20]),
        "whole PEX header after keep-alives"
    );
    assert!(!plausible_start(&ka[..12]), "header cut short");
    let mut chain = unhex(PORT_R);
    chain.extend_from_slice(&[0, 0, 0, 0]);
    chain.extend_from_slice(&message(2, &[]));
    assert!(plausible_start(&chain));
    chain.extend_from_slice(&[0, 0, 0, 9, 1]);
    assert!(!plausible_start(&chain), "unchoke of length 9");
    assert!(plausible_start(&piece(100)[..50]));
    assert!(!plausible_start(&noise(1400, 7)));
}

#[test]
fn every_truncation_of_a_payload_is_rejected() {
    for hex in [EXT_R1, EXT_R2, PEX_D2_H, PEX_D2_P] {
        let p = ext_body(hex);
        for cut in 1..p.len() {
            assert!(parse_ext_handshake(&p[1..cut]).is_err(), "{hex} at {cut}");
        }
    }
    for hex in [PEX_R1, PEX_R2, PEX_D2] {
        let p = ext_body(hex);
        for cut in 1..p.len() {
            assert!(parse_pex(&p[1..cut]).is_err(), "{hex} at {cut}");
        }
    }
}

#[test]
fn malformed_payloads() {
    let cases: &[(&[u8], Reject)] = &[
        (b"le", Reject::NotDict),
        (b"de", Reject::NoPexKeys),
        (b"d8:msg_typei0e5:piecei0ee", Reject::NoPexKeys),
        (b"d5:addedi1ee", Reject::WrongType),
        (b"d5:added0:5:added0:e", Reject::DuplicateKey),
        (b"d5:added0:eXX", Reject::TrailingData),
        (b"d5:added99:abce", Reject::LengthBeyondEnd),
        (b"d5:added0:", Reject::Truncated),
        (b"d5:addedi01ee", Reject::Syntax),
    ];
    for (raw, want) in cases {
        assert_eq!(parse_pex(raw).err(), Some(*want), "{raw:?}");
    }
    let mut deep = b"d1:m".to_vec();
    deep.extend(std::iter::repeat_n(b'l', 1000));
    deep.extend(std::iter::repeat_n(b'e', 1001));
    assert_eq!(parse_ext_handshake(&deep).err(), Some(Reject::TooDeep));
    // Wrong field types are ignored and counted, as clients ignore them.
    let hs = parse_ext_handshake(
        b"d1:md6:ut_pexi300e12:ut_holepunch1:xe1:pi0e6:yourip3:abc4:ipv46:abcdefe",
    )
    .unwrap();
    assert_eq!((hs.ut_pex, hs.ut_holepunch, hs.p), (None, None, None));
    assert_eq!((hs.yourip, hs.ipv4), (None, None));
    assert_eq!(hs.bad_fields, 5);
    // `added` without flags (Transmission-style), a partial tail, flags of the wrong size.
    let pex =
        parse_pex(b"d5:added13:\xc0\x00\x02\x01\x1a\xe1\xc0\x00\x02\x02\x1a\xe1X7:added.f1:\x10e")
            .unwrap();
    let (v, n) = added(&pex);
    assert_eq!(
        v,
        [
            ("192.0.2.1:6881".to_string(), None),
            ("192.0.2.2:6881".to_string(), None)
        ]
    );
    assert_eq!((n.decoded, n.malformed), (2, 1));
}

#[test]
fn entries_are_capped_per_list() {
    let mut raw = b"d5:added3000:".to_vec();
    for i in 0..500u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        raw.extend_from_slice(&[10, 0, hi, lo, 0x1a, 0xe1]);
    }
    raw.extend_from_slice(b"7:dropped3000:");
    raw.extend_from_within(13..3013);
    raw.push(b'e');
    let pex = parse_pex(&raw).unwrap();
    let n = pex.for_each_added(MAX_ENTRIES, |_, _| {});
    assert_eq!((n.decoded, n.capped), (200, 300));
    let n = pex.for_each_dropped(MAX_ENTRIES, |_| {});
    assert_eq!((n.decoded, n.capped), (200, 300));
    // Through the channel (mid-session, id-1 fallback): 200 × (TCP, uTP), 200 retractions.
    let mut w = Wire::new();
    let msg = extended(1, &raw);
    w.feed(conn(P, H), Dir::ToServer, true, 0, &msg);
    assert_eq!(w.out.len(), 400);
    assert_eq!(w.ret.len(), 200);
    let s = w.pw.stats();
    assert_eq!((s.entries.capped, s.dropped.capped), (300, 300));
    assert_eq!(s.pex_fallback, 1);
}

// ---- the channel

/// PEX-D2 as a TCP connection: H (client) and P (server) exchange handshakes, then P sends
/// a bitfield, PORT, a piece, the PEX message (id 3), a holepunch connect and a keep-alive.
fn d2_conversation() -> (Vec<u8>, Vec<u8>) {
    let mut h = handshake(LTEP);
    // H also announces ut_holepunch 4 and its listen port.
    h.extend(extended(
        0,
        b"d1:md6:ut_pexi3e12:ut_holepunchi4ee1:pi6881ee",
    ));
    h.extend(message(2, &[]));
    let mut p = handshake(LTEP);
    p.extend(unhex(PEX_D2_P));
    p.extend(message(5, &[0xff; 9]));
    p.extend(unhex(PORT_R));
    p.extend(piece(3000));
    p.extend(unhex(PEX_D2));
    p.extend(unhex(HP_D1));
    p.extend([0, 0, 0, 0]);
    p.extend(message(4, &[0, 0, 0, 7]));
    (h, p)
}

fn d2_expected(w: &Wire) {
    assert_eq!(
        w.targets(Channel::Pex, PeerTransport::Tcp),
        [
            "192.0.2.1 192.0.2.40:6881",
            "192.0.2.1 198.51.100.41:51413",
            "192.0.2.1 [2001:db8::28]:6881"
        ]
    );
    assert_eq!(
        w.targets(Channel::Pex, PeerTransport::Udp),
        w.targets(Channel::Pex, PeerTransport::Tcp)
    );
    assert_eq!(
        w.targets(Channel::PeerWire, PeerTransport::Udp),
        ["192.0.2.1 203.0.113.9:51413", "192.0.2.1 192.0.2.20:6881"]
    );
    // H initiated: its `p` is news to P; P's `p` is the port H dialled.
    assert_eq!(
        w.targets(Channel::PeerWire, PeerTransport::Tcp),
        ["203.0.113.9 192.0.2.1:6881"]
    );
    let ret: Vec<String> = w
        .ret
        .iter()
        .map(|r| format!("{} {}", r.host, r.peer))
        .collect();
    assert_eq!(ret, ["192.0.2.1 192.0.2.50:6881"]);
    assert!(w.ret.iter().all(|r| r.channel == Channel::Pex));
    let s = w.pw.stats();
    assert_eq!(s.handshakes, 2);
    assert_eq!(
        (s.handshakes_extension, s.handshakes_dht, s.handshakes_fast),
        (2, 2, 2)
    );
    assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (2, 2));
    assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (1, 1, 0));
    assert_eq!((s.holepunch.parsed, s.holepunch_connects), (1, 1));
    assert_eq!(s.port_messages, 1);
    // H: ext handshake, interested. P: ext handshake, bitfield, PORT, piece, PEX,
    // holepunch, keep-alive, have.
    assert_eq!(s.messages, 10);
    assert_eq!(s.skipped_bytes, 9 + 3008 + 4);
    assert_eq!(
        (s.gaps, s.resyncs, s.invalid_frames, s.unknown_extension),
        (0, 0, 0, 0)
    );
    assert_eq!(s.buffered_bytes, 0);
}

#[test]
fn spec_pex_d2_asymmetric_ids() {
    let (h, p) = d2_conversation();
    let key = conn(H, P);
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, false, 0, &h);
    w.feed(key, Dir::ToClient, false, 0, &p);
    d2_expected(&w);
}

#[test]
fn spec_pex_d2_fails_under_the_id_1_assumption() {
    let (_, p) = d2_conversation();
    let key = conn(H, P);
    // H's extended handshake not seen: the fallback takes id 1 only, so id 3 is missed,
    // which is what a decoder assuming id 1 would do.
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
    w.feed(key, Dir::ToClient, false, 0, &p);
    assert!(w.targets(Channel::Pex, PeerTransport::Tcp).is_empty());
    assert!(w.ret.is_empty());
    assert_eq!(w.pw.stats().pex.seen, 0);
    assert_eq!(
        w.pw.stats().unknown_extension,
        2,
        "PEX (3) and holepunch (4)"
    );
    // Using P's own id (1) for P → H is wrong too: H announced 3.
    let (h, _) = d2_conversation();
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, false, 0, &h);
    let mut p1 = handshake(LTEP);
    p1.extend(unhex(PEX_D2_P));
    let mut msg = unhex(PEX_D2);
    msg[5] = 1;
    p1.extend_from_slice(&msg);
    w.feed(key, Dir::ToClient, false, 0, &p1);
    assert!(w.targets(Channel::Pex, PeerTransport::Tcp).is_empty());
    assert_eq!(w.pw.stats().unknown_extension, 1);
    // ...while H → P PEX uses P's id 1.
    let mut w = Wire::new();
    let mut h = handshake(LTEP);
    h.extend(unhex(PEX_D2_H));
    w.feed(key, Dir::ToServer, false, 0, &h);
    let mut p2 = handshake(LTEP);
    p2.extend(unhex(PEX_D2_P));
    w.feed(key, Dir::ToClient, false, 0, &p2);
    w.feed(key, Dir::ToServer, false, 1, &msg);
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert!(w.out.iter().all(|p| p.host.to_string() == "203.0.113.9"));
}

#[test]
fn split_at_every_byte_gives_the_same_result() {
    let (h, p) = d2_conversation();
    let key = conn(H, P);
    let comparable = |w: &Wire| {
        let mut s = w.pw.stats();
        s.chunks = 0;
        (w.out.clone(), w.ret.clone(), s)
    };
    let mut base = Wire::new();
    base.feed(key, Dir::ToServer, false, 0, &h);
    base.feed(key, Dir::ToClient, false, 0, &p);
    d2_expected(&base);
    let want = comparable(&base);
    for cut in 0..=p.len() {
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &h);
        w.feed(key, Dir::ToClient, false, 0, &p[..cut]);
        w.feed(key, Dir::ToClient, false, 0, &p[cut..]);
        assert_eq!(comparable(&w), want, "cut at {cut}");
    }
    for cut in 0..=h.len() {
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &h[..cut]);
        w.feed(key, Dir::ToServer, false, 0, &h[cut..]);
        w.feed(key, Dir::ToClient, false, 0, &p);
        assert_eq!(comparable(&w), want, "cut at {cut}");
    }
    // One byte per chunk.
    let mut w = Wire::new();
    for b in h.chunks(1) {
        w.feed(key, Dir::ToServer, false, 0, b);
    }
    for b in p.chunks(1) {
        w.feed(key, Dir::ToClient, false, 0, b);
    }
    assert_eq!(comparable(&w), want);
}

/// Handshakes and extended handshakes of PEX-D2, then `gap`-free framing from there.
fn d2_synced() -> (Wire, ConnKey) {
    let key = conn(H, P);
    let mut w = Wire::new();
    let mut h = handshake(LTEP);
    h.extend(unhex(PEX_D2_H));
    w.feed(key, Dir::ToServer, false, 0, &h);
    let mut p = handshake(LTEP);
    p.extend(unhex(PEX_D2_P));
    w.feed(key, Dir::ToClient, false, 0, &p);
    (w, key)
}

#[test]
fn a_gap_inside_a_piece_resyncs_at_the_next_plausible_boundary() {
    let (mut w, key) = d2_synced();
    let big = piece(16_384);
    // The piece header and its first bytes, then bytes lost: the next chunk starts inside
    // the piece and the one after too; the chunk after that starts with the PEX message.
    w.feed(key, Dir::ToClient, false, 1, &big[..1000]);
    w.feed(key, Dir::ToClient, true, 2, &big[5000..6400]);
    w.feed(key, Dir::ToClient, false, 3, &big[6400..7800]);
    assert!(w.out.is_empty());
    let s = w.pw.stats();
    assert_eq!((s.gaps, s.resyncs, s.unsynced_chunks), (1, 0, 2));
    let mut tail = unhex(PEX_D2);
    tail.extend(unhex(PORT_R));
    w.feed(key, Dir::ToClient, false, 4, &tail);
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(w.targets(Channel::PeerWire, PeerTransport::Udp).len(), 1);
    assert_eq!(w.ret.len(), 1);
    let s = w.pw.stats();
    assert_eq!((s.resyncs, s.unsynced_bytes), (1, 2800));
    // A gap chunk that itself starts at a boundary resumes at once, and a PEX message cut
    // by a gap is dropped, not misread.
    let (mut w, key) = d2_synced();
    let pex = unhex(PEX_D2);
    w.feed(key, Dir::ToClient, false, 1, &pex[..40]);
    w.feed(key, Dir::ToClient, true, 2, &pex);
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    let s = w.pw.stats();
    assert_eq!((s.pex.seen, s.resyncs, s.buffered_bytes), (1, 1, 0));
}

#[test]
fn hostile_lengths_are_skipped_without_buffering() {
    let (mut w, key) = d2_synced();
    // 0xfffffff0: over any maximum, sync is lost; nothing is buffered; the next chunk that
    // starts at a message resumes.
    let mut bad = vec![0xff, 0xff, 0xff, 0xf0, MSG_EXTENDED, 0];
    bad.extend(noise(1000, 1));
    w.feed(key, Dir::ToClient, false, 1, &bad);
    assert_eq!(w.pw.stats().invalid_frames, 1);
    assert_eq!(w.pw.stats().buffered_bytes, 0);
    w.feed(key, Dir::ToClient, false, 2, &unhex(PEX_D2));
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);

    // An extended handshake of 0x30000 bytes (within MAX_FRAME, over max_message): passed
    // over by counting, across chunks, and the PEX message after it is read.
    let (mut w, key) = d2_synced();
    let len = 0x30000u32;
    let mut stream = len.to_be_bytes().to_vec();
    stream.extend([MSG_EXTENDED, 0]);
    stream.extend(std::iter::repeat_n(b'x', len as usize - 2));
    stream.extend(unhex(PEX_D2));
    for (i, c) in stream.chunks(1400).enumerate() {
        w.feed(key, Dir::ToClient, false, i as u64, c);
        assert_eq!(w.pw.stats().buffered_bytes, 0);
    }
    let s = w.pw.stats();
    assert_eq!((s.oversized, s.skipped_bytes), (1, u64::from(len) - 2));
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(s.ext_handshakes.seen, 2, "the oversized one was not read");
}

#[test]
fn buffering_is_bounded_by_the_global_budget_and_released() {
    let mut w = Wire::with(PeerWireConfig {
        max_buffered: 150,
        ..Default::default()
    });
    let pex = unhex(PEX_D2); // body of 96 bytes after the 6-byte header
    let first = conn(H, P);
    let second = conn("192.0.2.2:50001", P);
    for key in [first, second] {
        let mut h = handshake(LTEP);
        h.extend(unhex(PEX_D2_H));
        w.feed(key, Dir::ToServer, false, 0, &h);
        w.feed(key, Dir::ToClient, false, 0, &handshake(LTEP));
        w.feed(key, Dir::ToClient, false, 0, &pex[..50]);
    }
    let s = w.pw.stats();
    assert_eq!((s.buffered_bytes, s.over_budget), (96, 1));
    // The skipped one still frames correctly; the buffered one completes.
    w.feed(second, Dir::ToClient, false, 1, &pex[50..]);
    w.feed(first, Dir::ToClient, false, 1, &pex[50..]);
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(w.pw.stats().buffered_bytes, 0);
    // A connection closed (or evicted) mid-message gives its bytes back.
    w.feed(first, Dir::ToClient, false, 2, &pex[..50]);
    assert_eq!(w.pw.stats().buffered_bytes, 96);
    w.pw.on_close(first, at(3));
    assert_eq!(w.pw.stats().buffered_bytes, 0);
    let mut w = Wire::with(PeerWireConfig {
        max_connections: 1,
        ..Default::default()
    });
    let mut h = handshake(LTEP);
    h.extend(unhex(PEX_D2_H));
    w.feed(first, Dir::ToServer, false, 0, &h);
    w.feed(first, Dir::ToClient, false, 0, &handshake(LTEP));
    w.feed(first, Dir::ToClient, false, 0, &pex[..50]);
    assert_eq!(w.pw.stats().buffered_bytes, 96);
    // A full table keeps a connection both sides spoke on (fair shares): the new one is
    // refused and nothing is released.
    w.feed(second, Dir::ToServer, false, 1, &handshake(LTEP));
    let s = w.pw.stats();
    assert_eq!((s.buffered_bytes, s.connections.evicted), (96, 0));
    // Once the first has expired, its bytes come back.
    w.feed(second, Dir::ToServer, false, 2_000, &handshake(LTEP));
    let s = w.pw.stats();
    assert_eq!((s.buffered_bytes, s.connections.expired), (0, 1));
}

#[test]
fn encrypted_streams_yield_nothing_and_are_counted() {
    // MSE: Ya + PadA, Yb + PadB, then RC4 traffic.
    let key = conn(H, P);
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, false, 0, &noise(96 + 200, 1));
    w.feed(key, Dir::ToClient, false, 0, &noise(96 + 31, 2));
    for i in 0..50 {
        w.feed(key, Dir::ToServer, false, 1, &noise(1400, 10 + i));
        w.feed(key, Dir::ToClient, i % 7 == 0, 1, &noise(1400, 100 + i));
    }
    assert!(w.out.is_empty() && w.ret.is_empty());
    let s = w.pw.stats();
    assert_eq!((s.opaque_streams, s.handshakes, s.messages), (2, 0, 0));
    assert_eq!((s.resyncs, s.unsynced_bytes), (0, s.bytes));
    // Another protocol, and a handshake that turns out not to be one.
    let mut w = Wire::new();
    w.feed(
        key,
        Dir::ToServer,
        false,
        0,
        b"GET /announce?info_hash=x HTTP/1.1\r\n",
    );
    w.feed(key, Dir::ToClient, false, 0, b"\x13BitTorrent");
    w.feed(key, Dir::ToClient, false, 0, b" protokol and more");
    let s = w.pw.stats();
    assert_eq!(
        (s.opaque_streams, s.bad_handshakes, s.handshakes),
        (2, 1, 0)
    );
}

#[test]
fn azureus_messaging_is_not_read() {
    let key = conn(H, P);
    let mut w = Wire::new();
    let az = [0x80, 0, 0, 0, 0, 0x13, 0, 0x05];
    w.feed(key, Dir::ToServer, false, 0, &handshake(az));
    let mut p = handshake(az);
    p.extend(unhex(PEX_R2));
    w.feed(key, Dir::ToClient, false, 0, &p);
    assert!(w.out.is_empty());
    assert_eq!(w.pw.stats().azureus_messaging, 1);
    // One side only: plain BitTorrent framing.
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, false, 0, &handshake(az));
    let mut p = handshake(LTEP);
    p.extend(unhex(PEX_R2));
    w.feed(key, Dir::ToClient, false, 0, &p);
    assert_eq!(w.out.len(), 60);
}

#[test]
fn spec_pex_r1_through_the_channel_filters_the_receiver() {
    // Sender 82.243.113.43 (libtorrent, EXT-R2, initiator here), receiver 192.168.1.5
    // whose handshake announced ut_pex 1 and whose public address the sender reported.
    let key = conn("82.243.113.43:64969", "192.168.1.5:40959");
    let mut w = Wire::new();
    let mut s = handshake(LTEP);
    s.extend(unhex(EXT_R2));
    w.feed(key, Dir::ToServer, false, 0, &s);
    let mut r = handshake(LTEP);
    r.extend(extended(0, b"d1:md6:ut_pexi1eee"));
    w.feed(key, Dir::ToClient, false, 0, &r);
    w.feed(key, Dir::ToServer, false, 1, &unhex(PEX_R1));
    let expected: Vec<String> = [
        "76.109.15.116:61225",
        "24.91.99.51:10926",
        "185.21.217.5:59844",
        "81.106.99.221:26523",
        "81.98.119.30:62327",
        "73.54.139.88:38317",
        "5.29.250.72:16052",
        "191.33.128.157:59498",
        "79.78.249.181:51413",
        "41.101.78.57:49252",
    ]
    .iter()
    .map(|a| format!("192.168.1.5 {a}"))
    .collect();
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp), expected);
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Udp), expected);
    // EXT-R2: `p` beats the observed source port.
    assert_eq!(
        w.targets(Channel::PeerWire, PeerTransport::Tcp),
        ["192.168.1.5 82.243.113.43:56400"]
    );
    let s = w.pw.stats();
    assert_eq!((s.entries.decoded, s.entries.own_address), (11, 1));
    assert_eq!(s.pex_fallback, 0);
}

#[test]
fn spec_pex_r2_mid_session_uses_the_id_1_fallback() {
    // No handshake in either direction: the capture started mid-session.
    let key = conn("74.57.96.48:6881", "192.168.0.193:4377");
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, true, 0, &unhex(PEX_R2));
    let tcp = w.targets(Channel::Pex, PeerTransport::Tcp);
    assert_eq!(tcp.len(), 30);
    assert_eq!(tcp[0], "192.168.0.193 216.144.228.100:18377");
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Udp), tcp);
    let s = w.pw.stats();
    assert_eq!((s.pex_fallback, s.resyncs, s.pex.parsed), (1, 1, 1));
    // Picked up inside a message: nothing until a chunk starts plausibly.
    let mut w = Wire::new();
    w.feed(key, Dir::ToServer, false, 0, &piece(3000)[1000..2400]);
    w.feed(key, Dir::ToServer, false, 1, &unhex(PEX_R2));
    assert_eq!(w.out.len(), 60);
    let s = w.pw.stats();
    assert_eq!((s.opaque_streams, s.resyncs, s.unsynced_chunks), (1, 1, 1));
    // Another extension on id 1 is not taken for PEX.
    let mut w = Wire::new();
    w.feed(
        key,
        Dir::ToServer,
        true,
        0,
        &extended(1, b"d8:msg_typei0e5:piecei0ee"),
    );
    assert!(w.out.is_empty());
    assert_eq!(w.pw.stats().unknown_extension, 1);
    assert_eq!(w.pw.stats().pex.seen, 0);
}

#[test]
fn extended_handshake_listen_port_and_other_addresses() {
    let utorrent = "82.57.97.83:53137";
    let me = "192.168.1.3:52887";
    let hs = |hex: &str| {
        let mut v = handshake(LTEP);
        v.extend(unhex(hex));
        v
    };
    // EXT-R1 from the responder: `p` is the port already dialled, `ipv4` its own address.
    let mut w = Wire::new();
    let key = conn(me, utorrent);
    w.feed(key, Dir::ToServer, false, 0, &unhex(BTH_R1));
    w.feed(key, Dir::ToClient, false, 0, &hs(EXT_R1));
    assert!(w.out.is_empty());
    // The same from the initiator: one prediction for the receiver.
    let mut w = Wire::new();
    let key = conn(utorrent, me);
    w.feed(key, Dir::ToServer, false, 0, &hs(EXT_R1));
    assert_eq!(
        w.targets(Channel::PeerWire, PeerTransport::Tcp),
        ["192.168.1.3 82.57.97.83:53137"]
    );
    // Other addresses from the responder (whose `p` alone predicts nothing): another IPv4
    // is kept, and a global IPv6, but not link-local or Teredo ones.
    let key = conn(me, utorrent);
    for (ipv6, want) in [
        (&b"\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x09"[..], true),
        (&b"\xfe\x80\0\0\0\0\0\0\0\0\0\0\0\0\0\x09"[..], false),
        (
            &b"\x20\x01\0\0\x5e\xf5\x79\xfb\x38\x68\x20\x29\x41\x98\x3c\xc7"[..],
            false,
        ),
    ] {
        let mut d = b"d4:ipv44:\xc6\x33\x64\x074:ipv616:".to_vec();
        d.extend_from_slice(ipv6);
        d.extend_from_slice(b"1:pi6881ee");
        let mut w = Wire::new();
        w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
        let mut v = handshake(LTEP);
        v.extend(extended(0, &d));
        w.feed(key, Dir::ToClient, false, 0, &v);
        let mut want_v = vec!["192.168.1.3 198.51.100.7:6881".to_string()];
        if want {
            want_v.push("192.168.1.3 [2001:db8::9]:6881".into());
        }
        assert_eq!(w.targets(Channel::PeerWire, PeerTransport::Tcp), want_v);
    }
}

#[test]
fn later_extended_handshakes_add_to_the_id_map() {
    let (mut w, key) = d2_synced();
    // H adds ut_holepunch 9 in a second handshake; ut_pex 3 still stands.
    w.feed(
        key,
        Dir::ToServer,
        false,
        1,
        &extended(0, b"d1:md12:ut_holepunchi9eee"),
    );
    let mut hp = unhex(HP_D1);
    hp[5] = 9;
    w.feed(key, Dir::ToClient, false, 2, &hp);
    w.feed(key, Dir::ToClient, false, 3, &unhex(PEX_D2));
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(
        w.targets(Channel::PeerWire, PeerTransport::Udp),
        ["192.0.2.1 192.0.2.20:6881"]
    );
    // Then disables PEX (id 0): the next PEX message is not read.
    w.feed(
        key,
        Dir::ToServer,
        false,
        4,
        &extended(0, b"d1:md6:ut_pexi0eee"),
    );
    w.feed(key, Dir::ToClient, false, 5, &unhex(PEX_D2));
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(w.pw.stats().unknown_extension, 1);
}

#[test]
fn connections_are_bounded_and_expire_when_idle() {
    let mut w = Wire::with(PeerWireConfig {
        max_connections: 4,
        connection_ttl: Duration::from_mins(1),
        ..Default::default()
    });
    // One host is held to its share (an eighth of the table, at least one).
    for i in 0..10u16 {
        let key = conn(&format!("192.0.2.1:{}", 40000 + i), P);
        w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
    }
    let s = w.pw.stats().connections;
    assert_eq!((s.len, s.evicted), (1, 0));
    assert_eq!(w.pw.conns.fair_stats().host_share, 9);
    // Ten hosts fill the table; the others are refused while the held ones are fresh.
    for i in 0..10u16 {
        let key = conn(&format!("192.0.2.{}:40000", 10 + i), P);
        w.feed(key, Dir::ToServer, false, 0, &handshake(LTEP));
    }
    let s = w.pw.stats().connections;
    assert_eq!((s.len, s.evicted), (4, 0));
    assert_eq!(w.pw.conns.fair_stats().table_full, 7);
    w.pw.expire(at(1000));
    assert_eq!(w.pw.stats().connections.len, 0);
    // An active connection outlives the TTL: its id map is still known at t = 300 s.
    let mut w = Wire::with(PeerWireConfig {
        connection_ttl: Duration::from_mins(1),
        ..Default::default()
    });
    let key = conn(H, P);
    let mut h = handshake(LTEP);
    h.extend(unhex(PEX_D2_H));
    w.feed(key, Dir::ToServer, false, 0, &h);
    w.feed(key, Dir::ToClient, false, 0, &handshake(LTEP));
    for t in (10..300).step_by(10) {
        w.feed(key, Dir::ToClient, false, t, &[0, 0, 0, 0]);
    }
    w.feed(key, Dir::ToClient, false, 300, &unhex(PEX_D2));
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(w.pw.stats().connections.expired, 0);
    // An idle one is forgotten: what comes later is read as a new stream.
    w.feed(key, Dir::ToClient, false, 1000, &unhex(PEX_D2));
    assert_eq!(w.targets(Channel::Pex, PeerTransport::Tcp).len(), 3);
    assert_eq!(w.pw.stats().connections.expired, 1);
}

#[test]
fn port_zero_and_the_receiver_itself_are_dropped() {
    let (mut w, key) = d2_synced();
    // added: port 0, H itself, H's reported address, the sender, one good entry.
    let mut body = b"d5:added30:".to_vec();
    for e in [
        [198, 51, 100, 1, 0, 0],
        [192, 0, 2, 1, 0x1a, 0xe1],
        [198, 51, 100, 99, 0x1a, 0xe1],
        [203, 0, 113, 9, 0x1a, 0xe1],
        [198, 51, 100, 2, 0x1a, 0xe1],
    ] {
        body.extend_from_slice(&e);
    }
    body.push(b'e');
    w.feed(
        key,
        Dir::ToClient,
        false,
        1,
        &extended(0, b"d6:yourip4:\xc6\x33\x64\x63e"),
    );
    w.feed(key, Dir::ToClient, false, 2, &extended(3, &body));
    assert_eq!(
        w.targets(Channel::Pex, PeerTransport::Tcp),
        ["192.0.2.1 198.51.100.2:6881"]
    );
    let s = w.pw.stats();
    assert_eq!(
        (s.entries.decoded, s.entries.unusable, s.entries.own_address),
        (5, 1, 2)
    );
    assert_eq!(s.sender_listed, 1);
    // PORT 0 predicts nothing.
    w.feed(key, Dir::ToClient, false, 3, &unhex("00000003 09 0000"));
    assert!(w.targets(Channel::PeerWire, PeerTransport::Udp).is_empty());
    assert_eq!(w.pw.stats().port_messages, 1);
}

// ---- through the registered channel interface

/// Every event of a connection, as the stream layer hands them to a `Box<dyn Channel>`.
fn on_stream(
    ch: &mut dyn channel::Channel,
    event: &StreamEvent<'_>,
    out: &mut Vec<PredictedPeer>,
    ret: &mut Vec<RetractedPeer>,
) {
    ch.on_stream(
        event,
        &mut Learnt {
            predictions: out,
            retracted: ret,
        },
    );
}

#[test]
fn pex_d2_through_the_channel_trait() {
    let (h, p) = d2_conversation();
    let key = conn(H, P);
    let mut ch: Box<dyn channel::Channel> = Box::new(PeerWire::new(PeerWireConfig::default()));
    assert_eq!(ch.name(), "peer_wire");
    assert_eq!(ch.stream_class(), Some(StreamClass::PeerWire));
    let (mut out, mut ret) = (Vec::new(), Vec::new());
    for (dir, data) in [(Dir::ToServer, &h), (Dir::ToClient, &p)] {
        let chunk = StreamChunk {
            ts: at(0),
            conn: key,
            dir,
            gap: false,
            data,
        };
        on_stream(&mut *ch, &StreamEvent::Chunk(chunk), &mut out, &mut ret);
    }
    // A FIN one way changes nothing.
    let ended = StreamEvent::Ended {
        conn: key,
        dir: Dir::ToClient,
        ts: at(1),
    };
    on_stream(&mut *ch, &ended, &mut out, &mut ret);
    let pw = ch.downcast_ref::<PeerWire>().unwrap();
    assert_eq!(pw.stats().connections.len, 1);
    // The same predictions and retractions as through the inherent methods.
    let mut direct = Wire::new();
    direct.feed(key, Dir::ToServer, false, 0, &h);
    direct.feed(key, Dir::ToClient, false, 0, &p);
    d2_expected(&direct);
    assert_eq!(out, direct.out);
    assert_eq!(ret, direct.ret);
    let mut counts = Vec::new();
    ch.counts(&mut |name, c| counts.push((name, c.seen, c.parsed)));
    assert_eq!(counts, [("peer_wire_ext_handshake", 2, 2), ("pex", 1, 1)]);
    let mut tables = Vec::new();
    ch.tables(&mut |name, t| tables.push((name, t.len)));
    assert_eq!(tables, [("peer_wire_connections", 1)]);
    let json = ch.stats_json();
    assert_eq!(json["handshakes"], 2);
    assert_eq!(json["pex"]["parsed"], 1);
    assert_eq!(
        ch.summary().as_deref(),
        Some(
            "peer wire: 2 handshakes, 10 messages, 0 encrypted or opaque streams, \
             0 PEX by fallback id"
        )
    );
    let closed = StreamEvent::Closed {
        conn: key,
        ts: at(2),
    };
    on_stream(&mut *ch, &closed, &mut out, &mut ret);
    ch.expire(at(3));
    let pw = ch.downcast_ref::<PeerWire>().unwrap();
    assert_eq!(pw.stats().connections.len, 0);
    assert_eq!(pw.stats().buffered_bytes, 0);
}

#[test]
fn reject_names_are_the_metric_labels() {
    for (r, name) in [
        (Reject::Truncated, "truncated"),
        (Reject::NotHandshake, "not_handshake"),
        (Reject::BadLength, "bad_length"),
        (Reject::UnknownId, "unknown_id"),
        (Reject::LengthBeyondEnd, "length_beyond_end"),
        (Reject::TrailingData, "trailing_data"),
        (Reject::TooDeep, "too_deep"),
        (Reject::DuplicateKey, "duplicate_key"),
        (Reject::Syntax, "syntax"),
        (Reject::NotDict, "not_dict"),
        (Reject::WrongType, "wrong_type"),
        (Reject::NoPexKeys, "no_pex_keys"),
        (Reject::BadAddressType, "bad_address_type"),
    ] {
        assert_eq!(r.as_str(), name);
    }
}

/// Tests on third-party captures (the corpus, see [`crate::test_support`]).
mod corpus {
    use super::super::capture::{tcp_chunks, Chunk};
    use super::*;

    // ---- real bytes from the corpus
    //
    // Expected numbers come from tshark 4.0.17 (`-Y 'bittorrent.info_hash'` for handshakes,
    // `-T fields -e bittorrent.msg.type -e bittorrent.extended.id -e bittorrent.port` for
    // messages, `-z follow,tcp,raw` plus a separate Python bencode decoder for the extended
    // payloads), then the documented rules applied by hand, not from this code.

    fn replay(rel: &str) -> (Wire, Vec<Chunk>) {
        let chunks = tcp_chunks(rel);
        let mut w = Wire::new();
        for c in &chunks {
            w.pw.on_chunk(&c.chunk(), &mut w.out, &mut w.ret);
        }
        (w, chunks)
    }

    fn by_channel(out: &[PredictedPeer]) -> Map<(Channel, PeerTransport), usize> {
        let mut m = Map::new();
        for p in out {
            *m.entry((p.channel, p.transport)).or_default() += 1;
        }
        m
    }

    #[test]
    fn torrential_slowness_pex_r2() {
        // 100 frames, all flows mid-session; frame 61 is PEX-R2 from 74.57.96.48:6881 to
        // 192.168.0.193:4377. Nothing else in the capture predicts.
        let (w, chunks) = replay("markofu-pcaps/torrential-slowness.pcap");
        let r2 = unhex(PEX_R2);
        assert!(chunks
            .iter()
            .any(|c| c.data == r2 && c.sender() == "74.57.96.48:6881".parse().unwrap()));
        let tcp = w.targets(Channel::Pex, PeerTransport::Tcp);
        assert_eq!(tcp.len(), 30);
        assert!(tcp.iter().all(|t| t.starts_with("192.168.0.193 ")));
        assert_eq!(
            tcp[..3],
            [
                "192.168.0.193 216.144.228.100:18377",
                "192.168.0.193 65.23.90.6:61354",
                "192.168.0.193 86.8.45.12:63252"
            ]
        );
        assert_eq!(tcp[29], "192.168.0.193 82.2.118.24:10000");
        assert_eq!(w.targets(Channel::Pex, PeerTransport::Udp), tcp);
        assert_eq!(w.out.len(), 60);
        let s = w.pw.stats();
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (1, 1, 1));
        assert_eq!(s.handshakes, 0);
        assert!(w.ret.is_empty());
    }

    #[test]
    fn ndpi_bittorrent_capture() {
        // 24 flows, no SYN captured, many segments missing. tshark: 41 handshakes, 16
        // extended handshakes, 21 PORT messages, no PEX.
        let (w, chunks) = replay("ntop-nDPI/bittorrent.pcap");
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 41);
        assert_eq!(s.handshakes_extension, 41);
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (16, 16));
        assert_eq!(s.port_messages, 21);
        assert_eq!(s.pex.seen, 0);
        assert!(s.gaps > 0 && s.resyncs > 0);
        // BTH-R1 opens 192.168.1.3:52887 → 82.57.97.83:53137; EXT-R1 (unsorted) follows the
        // reply.
        let bth = unhex(BTH_R1);
        let ext = unhex(EXT_R1);
        let utorrent: SocketAddr = "82.57.97.83:53137".parse().unwrap();
        let me: SocketAddr = "192.168.1.3:52887".parse().unwrap();
        assert!(chunks
            .iter()
            .any(|c| c.sender() == me && c.data.starts_with(&bth)));
        let reply: Vec<u8> = chunks
            .iter()
            .filter(|c| c.sender() == utorrent && c.conn.client == me)
            .flat_map(|c| c.data.iter().copied())
            .collect();
        assert!(reply[68..].starts_with(&ext), "EXT-R1 spans two segments");
        // Every PORT is a UDP prediction for its receiver; the µTorrent 1.8.8 one is
        // `00000003 09 c8d5` (stream 2, server → client).
        let m = by_channel(&w.out);
        assert_eq!(m.get(&(Channel::PeerWire, PeerTransport::Udp)), Some(&21));
        assert!(w
            .targets(Channel::PeerWire, PeerTransport::Udp)
            .contains(&"192.168.1.3 83.216.184.241:51413".to_string()));
        let port = unhex(PORT_R);
        assert!(chunks
            .iter()
            .any(|c| c.data.starts_with(&port)
                && c.sender() == "83.216.184.241:51413".parse().unwrap()));
        // Only 192.168.1.3's handshake to 82.58.216.115 (it initiated every flow) gives `p`
        // and its public `ipv4` (82.55.205.1); the others come from responders, whose `ipv4`
        // is their own address and whose `ipv6` is link-local or Teredo.
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            [
                "82.58.216.115 192.168.1.3:40959",
                "82.58.216.115 82.55.205.1:40959"
            ]
        );
        assert_eq!(m.len(), 2, "{m:?}");
        // Messages cut by the end of the capture stay buffered until their connection goes.
        let mut pw = w.pw;
        pw.expire(at(4_000_000_000));
        let s = pw.stats();
        assert_eq!((s.buffered_bytes, s.connections.len), (0, 0));
    }

    #[test]
    fn small_torrent_capture() {
        // tshark: 7 TCP handshakes (the other BitTorrent connections of the capture run over
        // uTP), 4 extended handshakes, 3 PORT messages, 2 ut_pex messages (Transmission 2.84
        // → 192.168.0.102, id 1 as 192.168.0.102's `m` says), each listing 217.129.96.104:36360:
        // the `ipv4` and `p` 192.168.0.102 announced itself, so no PEX prediction.
        let (w, chunks) = replay("goncalo-rodrigues-360BitScoping/small_torrent.pcap");
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 7);
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (4, 4));
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (2, 2, 0));
        assert_eq!((s.entries.decoded, s.entries.own_address), (2, 2));
        assert_eq!(s.port_messages, 3);
        let by = by_channel(&w.out);
        assert_eq!(by.get(&(Channel::Pex, PeerTransport::Tcp)), None);
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Udp),
            [
                "192.168.0.102 200.87.172.190:51413",
                "192.168.0.102 200.87.172.190:51413",
                "200.87.172.190 192.168.0.102:36360"
            ]
        );
        // 192.168.0.102 initiated both connections: its `p` and its `ipv4` (its Teredo
        // `ipv6` is dropped), twice.
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            [
                "200.87.172.190 192.168.0.102:36360",
                "200.87.172.190 217.129.96.104:36360",
                "200.87.172.190 192.168.0.102:36360",
                "200.87.172.190 217.129.96.104:36360"
            ]
        );
        // The MSE connection to 190.88.147.206:51413 (tshark stream 40: 133 bytes of key and
        // padding, no reply) is opaque.
        let mse: SocketAddr = "190.88.147.206:51413".parse().unwrap();
        let mut only = Wire::new();
        let mut n = 0;
        for c in chunks.iter().filter(|c| c.conn.server == mse) {
            only.pw.on_chunk(&c.chunk(), &mut only.out, &mut only.ret);
            n += c.data.len();
        }
        let o = only.pw.stats();
        assert_eq!(
            n,
            133 + 68,
            "stream 24's unanswered handshake plus the MSE stream"
        );
        assert_eq!(
            (o.handshakes, o.opaque_streams, o.unsynced_bytes),
            (1, 1, 133)
        );
        assert!(only.out.is_empty());
    }

    #[test]
    fn lookaway_capture() {
        // One BitTorrent connection, 10.0.0.3:48702 (libTorrent 0.12.2, initiator, `p` 6965)
        // to 10.0.0.2:52833 (Deluge 1.1.9): 2 handshakes, 2 extended handshakes, ~1.9 MB of
        // pieces with losses and retransmissions, then 1 ut_pex message with every list empty
        // (id 1 = 10.0.0.3's `m.ut_pex`). Three HTTP tracker connections (6 directions).
        let (w, _) = replay("tcoppi-BittorrentReconstituter/lookaway.pcap");
        let s = w.pw.stats();
        assert_eq!(s.handshakes, 2);
        assert_eq!((s.ext_handshakes.seen, s.ext_handshakes.parsed), (2, 2));
        assert_eq!((s.pex.seen, s.pex.parsed, s.pex_fallback), (1, 1, 0));
        assert_eq!((s.entries.decoded, s.dropped.decoded), (0, 0));
        assert_eq!(s.opaque_streams, 6);
        assert!(s.skipped_bytes > 1_800_000, "{}", s.skipped_bytes);
        assert_eq!(s.buffered_bytes, 0);
        assert_eq!(
            w.targets(Channel::PeerWire, PeerTransport::Tcp),
            ["10.0.0.2 10.0.0.3:6965"]
        );
        assert_eq!(w.out.len(), 1);
    }
}

/// The tree decoder's reading of ut_pex and extended handshakes
/// (`torrust-tracker-contrib-bencode`, as the parsers did before they read in one pass), kept
/// as the reference the one-pass parsers must agree with.
mod tree_reference {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use bencode::ext::BRefAccessExt;
    use bencode::{BRefAccess, BencodeRef};

    use super::*;
    use crate::bt::test_support::{self, XorShift};

    type Dict<'s, 'a> = &'s dyn bencode::BDictAccess<&'a [u8], BencodeRef<'a>>;

    fn bytes<'a>(d: Dict<'_, 'a>, key: &[u8]) -> Result<Option<&'a [u8]>, Reject> {
        d.lookup(key)
            .map(|v| v.bytes_ext().ok_or(Reject::WrongType))
            .transpose()
    }

    fn pex(payload: &[u8]) -> Result<Pex<'_>, Reject> {
        let root = crate::bt::decode_bencode(payload, MAX_DEPTH)?;
        let d = root.dict().ok_or(Reject::NotDict)?;
        let added = bytes(d, b"added")?;
        let added6 = bytes(d, b"added6")?;
        let dropped = bytes(d, b"dropped")?;
        let dropped6 = bytes(d, b"dropped6")?;
        if added.is_none() && added6.is_none() && dropped.is_none() && dropped6.is_none() {
            return Err(Reject::NoPexKeys);
        }
        Ok(Pex {
            added: added.unwrap_or_default(),
            added_f: bytes(d, b"added.f")?,
            added6: added6.unwrap_or_default(),
            added6_f: bytes(d, b"added6.f")?,
            dropped: dropped.unwrap_or_default(),
            dropped6: dropped6.unwrap_or_default(),
        })
    }

    fn ext_handshake(payload: &[u8]) -> Result<ExtHandshake<'_>, Reject> {
        let root = crate::bt::decode_bencode(payload, MAX_DEPTH)?;
        let d = root.dict().ok_or(Reject::NotDict)?;
        let mut hs = ExtHandshake::default();
        let mut bad = 0u8;
        let mut note = |ok: bool| bad += u8::from(!ok);
        if let Some(m) = d.lookup(b"m") {
            if let Some(m) = m.dict() {
                hs.has_m = true;
                let mut id = |name: &[u8]| {
                    let id = m.lookup(name)?.int().and_then(|i| u8::try_from(i).ok());
                    note(id.is_some());
                    id
                };
                hs.ut_pex = id(b"ut_pex");
                hs.ut_holepunch = id(b"ut_holepunch");
            } else {
                note(false);
            }
        }
        let field = |key: &[u8]| d.lookup(key);
        if let Some(p) = field(b"p") {
            hs.p = p
                .int()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            note(hs.p.is_some());
        }
        if let Some(v) = field(b"v") {
            hs.v = v.bytes_ext();
            note(hs.v.is_some());
        }
        if let Some(y) = field(b"yourip") {
            hs.yourip = y.bytes_ext().and_then(|b| match b.len() {
                4 => <[u8; 4]>::try_from(b).ok().map(|a| IpAddr::V4(a.into())),
                16 => <[u8; 16]>::try_from(b).ok().map(|a| IpAddr::V6(a.into())),
                _ => None,
            });
            note(hs.yourip.is_some());
        }
        if let Some(a) = field(b"ipv4") {
            hs.ipv4 = a
                .bytes_ext()
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(Ipv4Addr::from);
            note(hs.ipv4.is_some());
        }
        if let Some(a) = field(b"ipv6") {
            hs.ipv6 = a
                .bytes_ext()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Ipv6Addr::from);
            note(hs.ipv6.is_some());
        }
        hs.bad_fields = bad;
        Ok(hs)
    }

    /// `data`, its prefixes and `rounds` mutations read alike by both, as PEX and as a handshake.
    fn differential(data: &[u8], rng: &mut XorShift, rounds: usize) {
        test_support::differential(data, rng, rounds, |d| {
            let shown = String::from_utf8_lossy(d);
            assert_eq!(parse_pex(d), pex(d), "pex {shown:?}");
            assert_eq!(parse_ext_handshake(d), ext_handshake(d), "ext {shown:?}");
        });
    }

    #[test]
    fn one_pass_reads_what_the_tree_decoder_reads() {
        let mut rng = XorShift(0x1405_7b7e_f767_814f);
        let mut vectors: Vec<Vec<u8>> =
            [EXT_R1, EXT_R2, PEX_D2_H, PEX_D2_P, PEX_R1, PEX_R2, PEX_D2]
                .iter()
                .map(|h| ext_body(h)[1..].to_vec())
                .collect();
        for extra in [
            &b"d1:md6:ut_pexi300e12:ut_holepunch1:xe1:pi0e6:yourip3:abc4:ipv46:abcdefe"[..],
            b"d1:md6:ut_pexi1e12:ut_holepunchi4ee1:pi6881e1:v4:Tr306:yourip4:\xc0\x00\x02\x014:ipv44:\xc0\x00\x02\x024:ipv616:0123456789abcdefe",
            b"d1:xd6:ut_pexi1ee1:m0:1:pi1ee",
            b"d1:md6:ut_pexi1ee1:xd6:ut_pexi2eee",
            b"d5:added12:\xc0\x00\x02\x01\x1a\xe1\xc0\x00\x02\x02\x1a\xe17:added.f2:\x10\x006:added60:7:dropped6:\xc0\x00\x02\x03\x1a\xe18:dropped60:e",
        ] {
            vectors.push(extra.to_vec());
        }
        for v in &vectors {
            differential(v, &mut rng, 3_000);
        }
    }
}
