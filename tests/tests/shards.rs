//! `--workers N`: the XDP program's split of records over one ring per worker (under
//! `BPF_PROG_TEST_RUN`, needs root), and the offline split (`analyze --workers N`) giving the
//! results of one engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aya::maps::{MapData, RingBuf};
use etherparse::PacketBuilder;
use sensor::capture::xdp::{XdpConfig, XdpSensor};
use sensor_ebpf::shard::shard_of;
use sensor_ebpf::{counter, tcp_flag};
use sensor_tests::notice_keys;
use sensor_tests::privilege::privileged;
use sensor_tests::xdp::run_frame;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const SEED: u64 = 0x0123_4567_89ab_cdef;

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

/// Two hosts in different shards of `n` under [`SEED`].
fn hosts_apart(n: u32) -> ([u8; 4], [u8; 4]) {
    let a = [192, 0, 2, 10];
    let b = (1..=254u8)
        .map(|i| [203, 0, 113, i])
        .find(|b| shard_of(&v4(*b), SEED, n) != shard_of(&v4(a), SEED, n))
        .expect("some host in another shard");
    (a, b)
}

struct Rings {
    sensor: XdpSensor,
    buffers: Vec<RingBuf<MapData>>,
    counters: sensor::capture::xdp::KernelCounters,
    drops: sensor::capture::xdp::RingStats,
}

impl Rings {
    fn new(shards: u32, ring_bytes: u32) -> Self {
        let mut sensor = XdpSensor::load(&XdpConfig {
            shards,
            shard_seed: SEED,
            ring_bytes,
            wakeup_bytes: 0,
            ..XdpConfig::default()
        })
        .expect("the XDP program with several rings passes the verifier");
        let rings = sensor.take_rings().unwrap();
        assert_eq!(rings.len(), shards as usize);
        let drops = sensor.take_ring_stats().unwrap();
        sensor.set_ifaces(&["lo".into()]).unwrap();
        let counters = sensor.take_counters().unwrap();
        Self {
            sensor,
            buffers: rings,
            counters,
            drops,
        }
    }

    fn run(&mut self, frame: &[u8]) {
        run_frame(&mut self.sensor, frame);
    }

    /// The records each ring holds, drained.
    fn drain(&mut self) -> Vec<Vec<Vec<u8>>> {
        self.buffers
            .iter_mut()
            .map(|r| {
                let mut out = Vec::new();
                while let Some(item) = r.next() {
                    out.push(item.to_vec());
                }
                out
            })
            .collect()
    }

    /// Which rings got a record of `frame` (all identical where there are several).
    fn rings_of(&mut self, frame: &[u8]) -> Vec<usize> {
        self.run(frame);
        let got = self.drain();
        let mut which = Vec::new();
        let mut first: Option<Vec<u8>> = None;
        for (i, records) in got.iter().enumerate() {
            assert!(records.len() <= 1, "ring {i}: {} records", records.len());
            if let Some(r) = records.first() {
                // The copies are the record byte for byte.
                match &first {
                    Some(f) => assert_eq!(f, r, "copy in ring {i} differs"),
                    None => first = Some(r.clone()),
                }
                which.push(i);
            }
        }
        which
    }
}

fn tcp(src: [u8; 4], dst: [u8; 4], flags: u8) -> Vec<u8> {
    sensor_tests::xdp::tcp_frame(src, dst, flags, &[])
}

fn udp(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(6771, 6771)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[test]
fn records_go_to_the_rings_of_their_hosts() {
    if !privileged("records_go_to_the_rings_of_their_hosts") {
        return;
    }
    for n in [2, 3, 4] {
        let (a, b) = hosts_apart(n);
        let (sa, sb) = (
            shard_of(&v4(a), SEED, n) as usize,
            shard_of(&v4(b), SEED, n) as usize,
        );
        let both = {
            let mut v = vec![sa, sb];
            v.sort_unstable();
            v
        };
        let mut h = Rings::new(n, 1 << 16);
        // A SYN only to its sender's worker, the SYN-ACK only to its receiver's: the
        // connection is tracked by its originator's worker alone.
        assert_eq!(
            h.rings_of(&tcp(a, b, tcp_flag::SYN)),
            vec![sa],
            "SYN, n={n}"
        );
        assert_eq!(
            h.rings_of(&tcp(b, a, tcp_flag::SYN | tcp_flag::ACK)),
            vec![sa],
            "SYN-ACK, n={n}"
        );
        assert_eq!(
            h.rings_of(&tcp(b, a, tcp_flag::RST | tcp_flag::ACK)),
            both,
            "RST, n={n}"
        );
        // A DHT-like datagram reaches both hosts' workers.
        assert_eq!(h.rings_of(&udp(a, b, b"d1:ad2:id20:")), both, "UDP, n={n}");
        // An LSD announce to the multicast group reaches every worker.
        let all: Vec<usize> = (0..n as usize).collect();
        assert_eq!(
            h.rings_of(&udp(a, [239, 192, 152, 143], b"BT-SEARCH * HTTP/1.1\r\n")),
            all,
            "multicast, n={n}"
        );
        let (drops, records) = h.drops.read().unwrap();
        assert_eq!(drops, vec![0; n as usize]);
        // Per ring: what it got above, copies included.
        let mut expected = vec![0u64; n as usize];
        for ring in [sa, sa, sa, sb, sa, sb] {
            expected[ring] += 1;
        }
        for ring in &all {
            expected[*ring] += 1;
        }
        assert_eq!(records, expected, "records per ring, n={n}");
    }
}

#[test]
fn one_worker_keeps_one_ring() {
    if !privileged("one_worker_keeps_one_ring") {
        return;
    }
    let (a, b) = hosts_apart(2);
    let mut h = Rings::new(1, 1 << 16);
    assert_eq!(h.rings_of(&tcp(a, b, tcp_flag::SYN)), vec![0]);
    assert_eq!(h.rings_of(&tcp(b, a, tcp_flag::RST)), vec![0]);
}

/// A full ring loses its copies, counted in its own slot; the other ring's copies still go
/// through, and a frame whose first ring is full counts as `ring_full`.
#[test]
fn full_rings_count_their_own_drops() {
    if !privileged("full_rings_count_their_own_drops") {
        return;
    }
    let (a, b) = hosts_apart(2);
    let (sa, sb) = (
        shard_of(&v4(a), SEED, 2) as usize,
        shard_of(&v4(b), SEED, 2) as usize,
    );
    let page = 4096;
    let mut h = Rings::new(2, page);
    // Fill `a`'s ring with SYNs (an IPv4 TCP record, 48 bytes, plus the ring's 8-byte record
    // header: 73 fit a page).
    let runs = 80u64;
    for _ in 0..runs {
        h.run(&tcp(a, b, tcp_flag::SYN));
    }
    let record =
        sensor_ebpf::header_len(sensor_ebpf::kind::TCP, 4) + size_of::<sensor_ebpf::TcpTail>();
    let fit = page as usize / (record + 8);
    let drops = h.drops.read().unwrap().0;
    assert_eq!(drops[sa], runs - fit as u64, "drops of the full ring");
    assert_eq!(drops[sb], 0);
    let snap = h.counters.read().unwrap().ifaces[0];
    assert_eq!(snap.get(counter::RING_FULL), runs - fit as u64);
    // A RST from b: its first ring (b's) has room, a's copy is lost and counted there only.
    h.run(&tcp(b, a, tcp_flag::RST));
    let drops = h.drops.read().unwrap().0;
    assert_eq!(drops[sa], runs - fit as u64 + 1);
    assert_eq!(drops[sb], 0);
    let got = h.drain();
    assert_eq!(got[sa].len(), fit);
    assert_eq!(got[sb].len(), 1, "the RST reached b's ring");
    assert_eq!(got[sb][0].len(), record, "a whole TCP record");
    assert_eq!(
        h.counters.read().unwrap().ifaces[0].get(counter::RING_FULL),
        runs - fit as u64,
        "the frame reached one ring: not a lost frame"
    );
}

// ---- offline: `analyze --workers N` against one engine ----

/// A directory of its own under the system's temporary one, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "sensor-shards-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sensor_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| sensor_tests::lab::sensor_binary(false).unwrap())
        .clone()
}

/// `sensor analyze --workers N` on `inputs`: (notices JSON lines, every log's lines but the
/// `#` headers and stats.log, by file name).
fn analyze(
    inputs: &[&Path],
    workers: u32,
    extra: &[&str],
) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let out = TempDir::new();
    let logs = out.0.join("logs");
    let result = Command::new(sensor_bin())
        .arg("analyze")
        .arg("--json")
        .arg("--workers")
        .arg(workers.to_string())
        .arg("--out")
        .arg(&logs)
        .args(extra)
        .args(inputs)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "analyze --workers {workers}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let notices = String::from_utf8(result.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let lines = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect();
        files.insert(name, lines);
    }
    (notices, files)
}

/// The same lines: attempts and stats rows in the same order; notices, suppressed notices and
/// predictions in the same order of times (several workers' results of one time may change
/// places).
fn assert_same(
    label: &str,
    workers: u32,
    one: &(Vec<String>, BTreeMap<String, Vec<String>>),
    many: &(Vec<String>, BTreeMap<String, Vec<String>>),
) {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&one.0),
        sorted(&many.0),
        "{label}: notices, {workers} workers"
    );
    assert_eq!(
        one.1.keys().collect::<Vec<_>>(),
        many.1.keys().collect::<Vec<_>>(),
        "{label}: log files"
    );
    for (name, lines) in &one.1 {
        if ["attempts.log", "stats.log"].contains(&name.as_str()) {
            // Merged in time order, attempts of one time as one engine orders them.
            let other = &many.1[name];
            if let Some(i) =
                (0..lines.len().max(other.len())).find(|&i| lines.get(i) != other.get(i))
            {
                let window = |v: &[String]| v[i.saturating_sub(2)..(i + 3).min(v.len())].to_vec();
                panic!(
                    "{label}: {name}, {workers} workers, line {i}:\none: {:#?}\nmany: {:#?}",
                    window(lines),
                    window(other)
                );
            }
        } else {
            assert_eq!(
                sorted(lines),
                sorted(&many.1[name]),
                "{label}: {name}, {workers} workers"
            );
            // Only results of one time from several workers may change places (the end-of-run
            // summaries; the predictions of an LSD announce, which every worker reads).
            let times = |v: &[String]| -> Vec<String> {
                v.iter()
                    .map(|l| l.split('\t').next().unwrap_or_default().to_string())
                    .collect()
            };
            assert_eq!(
                times(lines),
                times(&many.1[name]),
                "{label}: {name} times, {workers} workers"
            );
        }
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out
}

#[test]
fn workers_give_one_engines_results_on_the_fixtures() {
    for path in fixtures() {
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        let one = analyze(&[&path], 1, &[]);
        assert!(
            one.1.values().map(Vec::len).sum::<usize>() > 100,
            "{label}: too little output to compare"
        );
        for workers in [2, 3, 4] {
            assert_same(&label, workers, &one, &analyze(&[&path], workers, &[]));
        }
    }
}

/// Generated traffic with scans, floods and BitTorrent coordination (the captures the other
/// offline tests use), with and without suppression: notices that must come out the same.
#[test]
fn workers_give_one_engines_results_on_generated_captures() {
    use sensor_tests::attacks::{scenario, Attack, Sweep};
    let dir = TempDir::new();
    let mut captures = Vec::new();
    let mut add = |name: &str, capture: &sensor_tests::synth::Capture| {
        let path = dir.0.join(format!("{name}.pcap"));
        capture.write_pcap_file(&path).unwrap();
        captures.push(path);
    };
    add("demo", &sensor_tests::synth::demo_capture());
    add("labelled", &sensor_tests::synth::labelled_capture(40, 40));
    for (attack, sweep) in [
        (Attack::DhtValues { query: true }, Sweep::Horizontal),
        (Attack::Pex, Sweep::Vertical),
        (Attack::Lsd { genuine_list: true }, Sweep::Horizontal),
        (Attack::UdpTracker, Sweep::Horizontal),
        (Attack::SlowScan, Sweep::Vertical),
    ] {
        add(
            &format!("{attack:?}-{sweep:?}"),
            &scenario(attack, sweep).capture,
        );
    }
    let mut notices = 0;
    for path in &captures {
        let label = path.file_name().unwrap().to_string_lossy().into_owned();
        for mode in [
            &["--suppress", "all"][..],
            &["--suppress", "none", "--udp-scan"][..],
        ] {
            let one = analyze(&[path], 1, mode);
            notices += one.0.len();
            for workers in [2, 3] {
                assert_same(&label, workers, &one, &analyze(&[path], workers, mode));
            }
        }
    }
    assert!(
        notices > 0,
        "no notice in the generated captures: nothing compared"
    );
}

// ---- live: a replay through the veth lab with `--workers 2` against the file ----

/// The demo capture's scans, replayed at their own timing into `run --workers 2`: the same
/// notices as one engine over the file, nothing lost, and records for two hosts' workers in
/// both rings.
#[test]
fn two_live_workers_give_the_files_notices() {
    use sensor_tests::lab::{self, Lab, SensorProcess};
    if !privileged("two_live_workers_give_the_files_notices") {
        return;
    }
    let dir = TempDir::new();
    let mut capture = sensor_tests::synth::demo_capture();
    let start = capture.packets[0].ts;
    capture.packets.retain(|p| {
        let t = p.ts.checked_sub(start).expect("time-ordered").as_secs_f64();
        (69.0..79.0).contains(&t)
    });
    let pcap = dir.0.join("demo-scans.pcap");
    capture.write_pcap_file(&pcap).unwrap();
    let pcap = lab::mtu_safe_copy(&pcap, &dir.0).unwrap();
    let engine_args = ["--suppress", "none", "--threshold", "3"];
    let offline = Command::new(sensor_bin())
        .arg("analyze")
        .args(engine_args)
        .arg("--json")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(offline.status.success());
    let offline = notice_keys(&String::from_utf8(offline.stdout).unwrap());
    assert!(!offline.is_empty(), "the test needs notices to compare");

    let lab = Lab::new().unwrap();
    let live = dir.0.join("live-notices.jsonl");
    let summary = dir.0.join("summary.json");
    let mut args = vec![
        "--workers",
        "2",
        "--notices",
        live.to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
    ];
    args.extend(engine_args);
    let sensor = SensorProcess::start(&lab, &sensor_bin(), &args).unwrap();
    let stats = lab.replay_timed(&pcap).unwrap();
    lab::wait_caught_up(&lab, stats.packets, std::time::Duration::from_secs(30)).unwrap();
    assert!(sensor.stop().unwrap().success());

    let live = notice_keys(&std::fs::read_to_string(&live).unwrap());
    assert_eq!(
        live, offline,
        "live (2 workers) vs offline (1 engine) notices"
    );
    let summary: sensor::agent::RunSummary =
        serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(summary.ring_drops, vec![0, 0], "ring drops");
    assert_eq!(summary.xdp["ring_full"], 0);
    assert_eq!(summary.ring_records.len(), 2);
    assert!(
        summary.ring_records.iter().all(|&r| r > 0),
        "both rings used: {:?}",
        summary.ring_records
    );
    let frames: u64 = summary
        .xdp
        .iter()
        .filter(|(k, _)| k.starts_with("records_"))
        .map(|(_, v)| v)
        .sum();
    let copies: u64 = summary.ring_records.iter().sum();
    assert!(copies > frames, "no record went to both workers");
    assert_eq!(
        summary.consumed.total() + summary.decode_errors,
        copies,
        "every record of both rings decoded"
    );
    eprintln!(
        "{} notices agree; {frames} records, {copies} with copies, per ring {:?}",
        live.len(),
        summary.ring_records
    );
}
