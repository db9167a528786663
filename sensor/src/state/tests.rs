use std::net::SocketAddr;

use sensor_ebpf::tcp_flag::{ACK, RST, SYN};

use super::*;
use crate::detect::{BroScanConfig, NoticeKind};
use crate::engine::{Collect, Engine, EngineConfig, Suppress, SuppressReason};
use crate::event::{EventSink, PacketEvent, TcpFlags, TcpSegment, Transport};
use crate::predict::{Channel, PeerTransport, PredictedPeer};
use crate::time::Duration;

const T0: u64 = 1_700_000_000;
const BT: &str = "192.0.2.10";
const SCANNER: &str = "198.51.100.66";

fn seg(ts: Timestamp, src: SocketAddr, dst: SocketAddr, flags: u8) -> PacketEvent<'static> {
    PacketEvent {
        ts,
        src,
        dst,
        vlan_depth: 0,
        transport: Transport::Tcp(TcpSegment {
            flags: TcpFlags(flags),
            seq: 1,
            ack: 0,
            window: 1,
            payload_len: 0,
            head: &[],
        }),
    }
}

/// What the engine is fed: a packet, or a prediction a coordination channel would have made.
#[derive(Clone)]
enum Input {
    Packet(PacketEvent<'static>),
    Predict(PredictedPeer),
}

impl Input {
    fn ts(&self) -> Timestamp {
        match self {
            Input::Packet(p) => p.ts,
            Input::Predict(p) => p.ts,
        }
    }
}

/// A BitTorrent host told about 60 peers, then failing to reach them over 10 minutes; a
/// scanner sweeping port 22 slowly (one host every 7 s, some refusing) across the same span;
/// and a handful of answered connections.
fn inputs() -> Vec<Input> {
    let at = |ms: u64| Timestamp::from_secs(T0) + Duration::from_millis(ms);
    let mut v = Vec::new();
    let bt_peer = |i: u16| -> SocketAddr {
        format!("203.0.113.{}:{}", i + 1, 20_000 + i * 337)
            .parse()
            .unwrap()
    };
    for i in 0..60u16 {
        v.push(Input::Predict(PredictedPeer {
            ts: at(u64::from(i) * 100),
            host: BT.parse().unwrap(),
            peer: bt_peer(i),
            transport: PeerTransport::Tcp,
            channel: Channel::Dht,
        }));
    }
    for i in 0..60u16 {
        let src: SocketAddr = format!("{BT}:{}", 40_000 + i).parse().unwrap();
        v.push(Input::Packet(seg(
            at(10_000 + u64::from(i) * 10_000),
            src,
            bt_peer(i),
            SYN,
        )));
    }
    for i in 0..90u16 {
        let src: SocketAddr = format!("{SCANNER}:{}", 30_000 + i).parse().unwrap();
        let dst: SocketAddr = format!("10.1.{}.{}:22", i / 200, i % 200 + 1)
            .parse()
            .unwrap();
        let t = 5_000 + u64::from(i) * 7_000;
        v.push(Input::Packet(seg(at(t), src, dst, SYN)));
        if i % 3 == 0 {
            v.push(Input::Packet(seg(at(t + 40), dst, src, RST | ACK)));
        }
    }
    v.sort_by_key(Input::ts);
    v
}

fn config() -> EngineConfig {
    EngineConfig {
        suppress: Suppress::All,
        bro: BroScanConfig::with_first_threshold(20),
        ..EngineConfig::default()
    }
}

fn feed(engine: &mut Engine<Collect>, inputs: &[Input]) {
    for i in inputs {
        match i {
            Input::Packet(p) => engine.event(p),
            Input::Predict(p) => engine.predict(p),
        }
    }
}

type Results = (Vec<String>, Vec<String>);

fn results(engines: &[&Engine<Collect>]) -> Results {
    let mut notices: Vec<String> = Vec::new();
    let mut suppressed: Vec<String> = Vec::new();
    for e in engines {
        notices.extend(e.sink.notices.iter().map(|n| format!("{n:?}")));
        suppressed.extend(
            e.sink
                .suppressed
                .iter()
                .map(|(n, r)| format!("{n:?} {}", r.as_str())),
        );
    }
    notices.sort();
    suppressed.sort();
    (notices, suppressed)
}

fn uninterrupted(inputs: &[Input], end: Timestamp) -> Results {
    let mut e = Engine::new(config(), Collect::default()).unwrap();
    feed(&mut e, inputs);
    e.advance_to(end);
    e.finish();
    results(&[&e])
}

/// Runs `inputs[..cut]`, saves, loads into a fresh engine, runs the rest.
fn cut_at(inputs: &[Input], cut: usize, end: Timestamp) -> Results {
    let mut first = Engine::new(config(), Collect::default()).unwrap();
    first.set_resumable(true);
    feed(&mut first, &inputs[..cut]);
    first.flush(); // a stop: nothing is closed
    let bytes = first.encode_state().unwrap();
    let (meta, records) = decode(&bytes).unwrap();
    let mut second = Engine::new(config(), Collect::default()).unwrap();
    second.restore_state(&meta, records).unwrap();
    feed(&mut second, &inputs[cut..]);
    second.advance_to(end);
    second.finish();
    results(&[&first, &second])
}

#[test]
fn a_cut_anywhere_gives_the_notices_of_one_run() {
    let inputs = inputs();
    let end = inputs.last().unwrap().ts() + Duration::from_secs(30);
    let whole = uninterrupted(&inputs, end);
    // The scanner is reported, the BitTorrent host is not (its failures are predicted).
    assert!(whole
        .0
        .iter()
        .any(|n| n.contains(SCANNER) && n.contains("AddressScan")));
    assert!(!whole.0.iter().any(|n| n.contains(BT)), "{:?}", whole.0);
    // Every cut point, also between a SYN and its 5 s timer, and right at a threshold.
    for cut in 0..=inputs.len() {
        assert_eq!(cut_at(&inputs, cut, end), whole, "cut before input {cut}");
    }
}

/// Every attempt's uid after a restart is the one an uninterrupted run gives it: restored
/// connections keep theirs and new ones continue the numbering, so logs appended to across
/// restarts never give two connections one uid.
#[test]
fn uids_continue_across_a_restart() {
    let inputs = inputs();
    let end = inputs.last().unwrap().ts() + Duration::from_secs(30);
    let uids = |engines: &[&Engine<Collect>]| -> Vec<(String, crate::detect::Uid)> {
        let mut v: Vec<_> = engines
            .iter()
            .flat_map(|e| e.sink.attempts.iter())
            .map(|(o, _)| (format!("{:?} {:?} {:?}", o.ts, o.orig, o.resp), o.uid))
            .collect();
        v.sort();
        v
    };
    let mut whole = Engine::new(config(), Collect::default()).unwrap();
    feed(&mut whole, &inputs);
    whole.advance_to(end);
    whole.finish();
    let expected = uids(&[&whole]);
    assert!(expected.len() > 20, "{}", expected.len());
    for cut in [inputs.len() / 3, inputs.len() / 2, 2 * inputs.len() / 3] {
        let mut first = Engine::new(config(), Collect::default()).unwrap();
        first.set_resumable(true);
        feed(&mut first, &inputs[..cut]);
        first.flush();
        let (meta, records) = decode(&first.encode_state().unwrap()).unwrap();
        let mut second = Engine::new(config(), Collect::default()).unwrap();
        second.restore_state(&meta, records).unwrap();
        feed(&mut second, &inputs[cut..]);
        second.advance_to(end);
        second.finish();
        assert_eq!(uids(&[&first, &second]), expected, "cut before input {cut}");
    }
}

#[test]
fn without_the_state_a_restart_re_raises_and_forgets() {
    // The control for the test above: the same cut without a state file changes the notices.
    let inputs = inputs();
    let end = inputs.last().unwrap().ts() + Duration::from_secs(30);
    let whole = uninterrupted(&inputs, end);
    let cut = inputs.len() / 2;
    let mut first = Engine::new(config(), Collect::default()).unwrap();
    feed(&mut first, &inputs[..cut]);
    first.finish();
    let mut second = Engine::new(config(), Collect::default()).unwrap();
    feed(&mut second, &inputs[cut..]);
    second.advance_to(end);
    second.finish();
    let fresh = results(&[&first, &second]);
    assert_ne!(fresh, whole);
    assert!(
        second.sink.notices.iter().any(|n| n.src.to_string() == BT),
        "the BitTorrent host's failures after the cut are no longer predicted"
    );
}

fn saved_state() -> Vec<u8> {
    let inputs = inputs();
    let mut e = Engine::new(config(), Collect::default()).unwrap();
    feed(&mut e, &inputs[..inputs.len() / 2]);
    e.encode_state().unwrap()
}

fn refused(bytes: &[u8]) -> String {
    match decode(bytes) {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn the_file_round_trips_and_restores_every_table() {
    let bytes = saved_state();
    assert_eq!(&bytes[..8], b"SXSTATE\0");
    let (meta, records) = decode(&bytes).unwrap();
    assert_eq!(meta.suppress, "all");
    let count = |f: fn(&Record) -> bool| records.iter().filter(|r| f(r)).count();
    assert_eq!(count(|r| matches!(r, Record::Prediction(_))), 60);
    assert!(count(|r| matches!(r, Record::Conn(_))) > 0);
    assert!(count(|r| matches!(r, Record::BroSource(Det::Filtered, ..))) > 0);
    assert!(count(|r| matches!(r, Record::BroSource(Det::Baseline, ..))) > 0);
    assert!(count(|r| matches!(r, Record::PprSource(Ppr::Shape, ..))) > 0);
    // Saving the restored engine gives the same records (the wall-clock stamp aside; hash
    // sets compared as sorted lists).
    let mut e = Engine::new(config(), Collect::default()).unwrap();
    e.restore_state(&meta, records).unwrap();
    let again = e.encode_state().unwrap();
    let (_, a) = decode(&bytes).unwrap();
    let (_, b) = decode(&again).unwrap();
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        let (a, b) = (normalized(a), normalized(b));
        assert!(a == b, "{a}\n!=\n{b}");
    }
}

/// A record's Debug form with the characters sorted: equal for equal records whatever order
/// their hash sets iterate in.
fn normalized(r: &Record) -> String {
    let mut c: Vec<char> = format!("{r:?}").chars().collect();
    c.sort_unstable();
    c.into_iter().collect()
}

#[test]
fn a_truncated_file_is_refused() {
    let bytes = saved_state();
    for len in [0, 5, 8, 20, 31, 32, 33, bytes.len() / 2, bytes.len() - 1] {
        let e = refused(&bytes[..len]);
        assert!(e.contains("truncated"), "{len} bytes: {e}");
    }
}

#[test]
fn a_corrupt_file_is_refused() {
    let bytes = saved_state();
    // Any flipped payload bit fails the checksum.
    for at in [32, 40, bytes.len() / 2, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        let e = refused(&b);
        assert!(e.contains("corrupt") && e.contains("checksum"), "{e}");
    }
    // Trailing bytes.
    let mut b = bytes.clone();
    b.extend_from_slice(b"more");
    assert!(refused(&b).contains("corrupt"));
    // A well-framed, correctly summed payload whose record does not decode.
    let mut b = bytes[..32].to_vec();
    let payload = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
    b[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    b[24..28].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    b.extend_from_slice(&payload);
    let e = refused(&b);
    assert!(e.contains("corrupt state file: record 1"), "{e}");
    // A valid file whose end record is missing (cut at a record boundary, header fixed up).
    let (_, records) = decode(&bytes).unwrap();
    assert!(!records.is_empty());
    let payload = &bytes[32..];
    let mut cut = payload.len();
    // The last record is the end record: its length prefix plus its body.
    for i in (0..payload.len() - 4).rev() {
        let len = u32::from_le_bytes(payload[i..i + 4].try_into().unwrap()) as usize;
        if i + 4 + len == payload.len() && len <= 10 {
            cut = i;
            break;
        }
    }
    let payload = &payload[..cut];
    let mut b = bytes[..32].to_vec();
    b[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    b[24..28].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    b.extend_from_slice(payload);
    let e = refused(&b);
    assert!(e.contains("without an end record"), "{e}");
}

#[test]
fn a_foreign_file_is_refused() {
    let pcap = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    for bytes in [
        &pcap[..],
        b"{\"json\": true}",
        b"SXSTATX\0 and more bytes than a header........",
    ] {
        let e = refused(bytes);
        assert!(e.contains("not a sensor state file"), "{e}");
    }
}

#[test]
fn a_future_or_unknown_version_is_refused() {
    let bytes = saved_state();
    let mut b = bytes.clone();
    b[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
    let e = refused(&b);
    assert!(e.contains("newer than this sensor reads"), "{e}");
    b[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(refused(&b).contains("not supported"));
}

#[test]
fn a_state_of_another_suppress_mode_is_refused() {
    let bytes = saved_state();
    let (meta, records) = decode(&bytes).unwrap();
    let mut e = Engine::new(
        EngineConfig {
            suppress: Suppress::None,
            ..config()
        },
        Collect::default(),
    )
    .unwrap();
    let err = format!("{:#}", e.restore_state(&meta, records).unwrap_err());
    assert!(err.contains("--suppress all"), "{err}");
    assert_eq!(e.predictions().len(), 0, "nothing applied");
}

#[test]
fn files_are_written_atomically_and_refused_files_are_named() {
    let dir = std::env::temp_dir().join(format!("sensor-state-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.bin");
    std::fs::write(&path, b"old").unwrap();
    let bytes = saved_state();
    write_atomic(&path, &bytes).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file is left behind");
    std::fs::write(&path, &bytes[..100]).unwrap();
    let mut e = Engine::new(config(), Collect::default()).unwrap();
    let err = format!("{:#}", e.load_state(&path).unwrap_err());
    assert!(
        err.contains("state.bin") && err.contains("truncated"),
        "{err}"
    );
    assert_eq!(e.predictions().len(), 0, "nothing applied");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn expired_entries_go_at_the_first_packet_after_a_long_stop() {
    let inputs = inputs();
    let cut = inputs.len() / 2;
    let mut first = Engine::new(config(), Collect::default()).unwrap();
    feed(&mut first, &inputs[..cut]);
    let (meta, records) = decode(&first.encode_state().unwrap()).unwrap();
    let mut second = Engine::new(config(), Collect::default()).unwrap();
    let loaded = second.restore_state(&meta, records).unwrap();
    assert_eq!(loaded.predictions, 60);
    assert_eq!(second.predictions().len(), 60);
    // Two hours later (past the 30 min prediction TTL and Bro's 15 min read expiry): the
    // BitTorrent host's predictions are gone, so its failures count again, as they would
    // for a sensor that had run through the gap.
    let later = inputs[cut].ts() + Duration::from_secs(2 * 3600);
    let mut rest: Vec<Input> = inputs[cut..].to_vec();
    for i in &mut rest {
        if let Input::Packet(p) = i {
            p.ts = later + p.ts.saturating_since(inputs[cut].ts());
        }
    }
    feed(&mut second, &rest[..1]);
    let tables = second.tables();
    let len = |name: &str| tables.iter().find(|(n, _)| *n == name).unwrap().1.len;
    assert_eq!(len("predictions"), 0);
    assert_eq!(len("connections"), 1, "only the packet just read");
    let rest: Vec<Input> = rest
        .into_iter()
        .filter(|i| matches!(i, Input::Packet(_)))
        .collect();
    feed(&mut second, &rest[1..]);
    second.finish();
    assert!(second
        .sink
        .notices
        .iter()
        .any(|n| n.src.to_string() == BT && n.note == NoticeKind::AddressScan));
    // The baseline's table of the host's peers before the stop expired at that first packet,
    // with the summary Bro raises for it (suppressed: its attempts were predicted then).
    assert!(
        second
            .sink
            .suppressed
            .iter()
            .any(|(n, r)| n.src.to_string() == BT
                && n.note == NoticeKind::PortScanSummary
                && n.ports == 20
                && n.ts == later
                && *r == SuppressReason::Predicted),
        "{:?}",
        second.sink.suppressed
    );
}

#[test]
fn the_live_agent_saves_periodically_and_at_a_stop() {
    use crate::agent::{save_state_now, StateConfig, StateSaver};
    let dir = std::env::temp_dir().join(format!("sensor-state-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("live.state");
    let inputs = inputs();
    let mut engine = Engine::new(config(), Collect::default()).unwrap();
    crate::agent::load_state(&mut engine, &path).unwrap(); // no file yet: a first start
    let mut sink = crate::event::Tee((), engine);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = StateConfig {
        path: path.clone(),
        interval: std::time::Duration::from_millis(20),
    };
    let _runtime = rt.enter();
    let mut saver = StateSaver::new(Some(&state));
    let last_packet = |upto: usize| {
        inputs[..upto]
            .iter()
            .filter(|i| matches!(i, Input::Packet(_)))
            .map(Input::ts)
            .max()
            .unwrap()
    };
    feed(&mut sink.1, &inputs[..inputs.len() / 3]);
    rt.block_on(async {
        saver.due().await;
        saver.save(&mut sink);
        saver.wait().await;
    });
    let (meta, _) = read(&path).unwrap();
    assert_eq!(meta.saved_at, last_packet(inputs.len() / 3));
    // At a stop: the last state, and the engine is not closed (no summaries).
    feed(&mut sink.1, &inputs[inputs.len() / 3..inputs.len() / 2]);
    save_state_now(&mut sink, &path);
    sink.flush();
    assert!(!sink
        .1
        .sink
        .notices
        .iter()
        .any(|n| n.note == NoticeKind::ScanSummary));
    let (meta, records) = read(&path).unwrap();
    assert_eq!(meta.saved_at, last_packet(inputs.len() / 2));
    assert!(records.iter().any(|r| matches!(r, Record::Prediction(_))));
    // A restart: the saved packet time (2023) is far behind the wall clock, so loading moves
    // packet time on and every prediction has expired.
    let mut restarted = Engine::new(config(), Collect::default()).unwrap();
    crate::agent::load_state(&mut restarted, &path).unwrap();
    assert_eq!(restarted.predictions().len(), 0);
    // A file that is refused stops the start.
    std::fs::write(&path, b"SXSTATE\0").unwrap();
    let mut refused = Engine::new(config(), Collect::default()).unwrap();
    let err = format!(
        "{:#}",
        crate::agent::load_state(&mut refused, &path).unwrap_err()
    );
    assert!(err.contains("truncated"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_file_is_bounded_by_the_tables_caps() {
    // Small caps, and a flood far past them: 5,000 spoofed sources each sending a SYN, and
    // 5,000 predictions.
    let mut cfg = config();
    cfg.conn.max_conns = 300;
    cfg.bro.max_sources = 200;
    cfg.ppr.max_sources = 200;
    cfg.prediction.max_total = 400;
    let mut e = Engine::new(cfg, Collect::default()).unwrap();
    let at = |i: u32| Timestamp::from_secs(T0) + Duration::from_millis(u64::from(i));
    for i in 0..5_000u32 {
        let [a, b] = u16::try_from(i).unwrap().to_be_bytes();
        e.predict(&PredictedPeer {
            ts: at(i),
            host: BT.parse().unwrap(),
            peer: SocketAddr::new(std::net::Ipv4Addr::new(203, 0, a, b).into(), 6881),
            transport: PeerTransport::Tcp,
            channel: Channel::Dht,
        });
        let src = SocketAddr::new(std::net::Ipv4Addr::new(10, 9, a, b).into(), 40_000);
        e.event(&seg(at(i), src, "192.0.2.200:80".parse().unwrap(), SYN));
    }
    e.advance_to(at(5_000) + Duration::from_secs(6));
    let bytes = e.encode_state().unwrap();
    let (_, records) = decode(&bytes).unwrap();
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|r| f(r)).count();
    assert_eq!(count(&|r| matches!(r, Record::Prediction(_))), 400);
    assert_eq!(count(&|r| matches!(r, Record::Conn(_))), 300);
    let bro = count(&|r| matches!(r, Record::BroSource(Det::Filtered, ..)));
    let ppr = count(&|r| matches!(r, Record::PprSource(Ppr::Gate, ..)));
    assert!(bro > 0 && bro <= 200, "{bro}");
    assert!(ppr > 0 && ppr <= 200, "{ppr}");
    // Under 100 bytes per entry of these small ones, header and clocks included.
    let entries = records.len();
    assert!(
        bytes.len() < 100 * entries,
        "{} bytes, {entries} records",
        bytes.len()
    );
}
