//! State across restarts through the kernel (issue 11, item 3; README "State across
//! restarts"): `sensor run --state-file F` on a veth in a lab namespace (as in replay.rs and
//! live_logs.rs) is stopped mid-capture with SIGTERM, started again with the same `F`, given
//! the rest of the capture, and reports what one uninterrupted `sensor analyze` reports on the
//! whole capture.
//!
//! The capture is `synth::labelled_capture(40, 40)` (1.0–8.9 s), cut with `pcapcut::cut` (the
//! helper `tests/state.rs` uses) at 3.31 s, after 37 of its 375 packets: the BitTorrent host's
//! tracker announce (1.0–1.1 s) comes before the cut and all its failed attempts after it (its
//! SYNs start at 2.0 s and fail 5 s later; those sent before the cut are retransmitted after
//! it); the address scanner has sent 15 of its 40 SYNs at the cut, none failed yet, so it
//! crosses its threshold (20 hosts) in the second run, counting attempts of both halves. The
//! port scanner (4.0–5.0 s) and the web client come after the cut. The first run is stopped as
//! soon as it has read the first half, with those attempts in flight.
//!
//! Both halves are replayed at the capture's own timing. Live packet time is the wall clock,
//! so the second half comes later than in the file by the restart's duration G (about 1 s).
//! The SYNs in flight at the stop still fail 5 s after they were sent, before any attempt of
//! the second half, so the scan detector counts the same hosts in the same order; when G
//! exceeds 2 s a retransmission arrives after its attempt failed, and is a segment of the same
//! tracked connection (kept until 5 min idle), not a new attempt. So nothing compared depends
//! on G, while G stays well under the connection idle timeout and the prediction TTL (30 min).
//!
//! Compared, live (the two runs' `--notices` files and logs together) against one
//! uninterrupted `sensor analyze --json --out` on the whole file:
//! * notices as (note, src, dst, n, msg), as a multiset, so that a notice raised twice (once
//!   per run) fails the test;
//! * attempts.log and suppressed.log rows without `ts` and `uid`.
//!
//! Differences that are inherent, and so not compared:
//! * End-of-run summaries (`ScanSummary`, `PortScanSummary`): `analyze` without `--state-out`
//!   closes its run at the end of the file and raises them; with a state file a stop is not the
//!   end of the run (README), so neither live run raises them. The test asserts that the
//!   notices in which the two differ are exactly those summaries.
//! * `ts`: live stamps are the replay's wall clock.
//! * `uid`: a uid is the connection's serial in its tracker; a restored tracker numbers the
//!   restored connections afresh from 1 (the serial counter is not in the state file), so uids
//!   after a restart are not those of the uninterrupted run.
//!
//! The control: the second half alone, live without the state file, reports the BitTorrent
//! host as a scanner, so the quiet host above is the state file's doing; and the scanner's
//! AddressScan names another 20th host, as its 15 attempts in flight at the cut are lost.
//!
//! Needs root and tcpreplay (`cargo xtask setup` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sensor_tests::lab::{self, Lab, SensorProcess};
use sensor_tests::pcapcut::{self, index_at, packet_times};
use sensor_tests::privilege::privileged;
use sensor_tests::synth::{self, labelled};

/// The first AddressScan threshold at 20 hosts, as `tests/state.rs` sets it (the scanner sweeps
/// 40, the BitTorrent host tries 40 peers).
const ENGINE_ARGS: [&str; 2] = ["--threshold", "20"];

/// The notes `analyze` raises only when it closes its run.
const CLOSING: [&str; 2] = ["ScanSummary", "PortScanSummary"];

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-live-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir().join(name)
}

/// (note, src, dst, n, msg) of a notice.
type Notice = [String; 5];

/// The notices of JSON-lines files (`--notices`, `analyze --json`), sorted, duplicates kept.
fn notices(paths: &[&Path]) -> Vec<Notice> {
    let mut out: Vec<Notice> = paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    let field = |k: &str| match &v[k] {
                        serde_json::Value::Null => "-".to_string(),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    [
                        field("note"),
                        field("src"),
                        field("dst"),
                        field("n"),
                        field("msg"),
                    ]
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

fn count(notices: &[Notice], note: &str, src: [u8; 4]) -> usize {
    let src = std::net::Ipv4Addr::from(src).to_string();
    notices
        .iter()
        .filter(|n| n[0] == note && n[1] == src)
        .count()
}

fn any_from(notices: &[Notice], src: [u8; 4]) -> bool {
    let src = std::net::Ipv4Addr::from(src).to_string();
    notices.iter().any(|n| n[1] == src)
}

/// The data rows of TSV logs without their `ts` and `uid`, sorted, duplicates kept.
fn rows(paths: &[PathBuf]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = paths
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split('\t').skip(2).map(String::from).collect())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One live run: `sensor run` with `extra` on the lab's veth and `pcap` replayed at its own
/// timing. With `settle`, the sensor keeps running until every attempt of the replay is due
/// (5 s after its last SYN, plus the agent's 1 s lag behind the wall clock) and `settle`
/// holds; without, it stops as soon as it has read every record, attempts still in flight.
/// Then SIGTERM.
fn live_run(
    lab: &Lab,
    binary: &Path,
    extra: &[&str],
    pcap: &Path,
    settle: Option<&dyn Fn() -> bool>,
) {
    let mut args = extra.to_vec();
    args.extend(ENGINE_ARGS);
    let sensor = SensorProcess::start(lab, binary, &args).expect("start sensor");
    let stats = lab.replay_timed(pcap).expect("tcpreplay");
    assert_eq!(stats.failed, 0, "tcpreplay failed to send some packets");
    let sent = Instant::now();
    lab::wait_caught_up(lab, stats.packets, Duration::from_secs(20)).expect("catch up");
    if let Some(done) = settle {
        let due = sent + Duration::from_millis(6500);
        wait_for(
            "the live run's notices and attempts",
            Duration::from_secs(30),
            || Instant::now() >= due && done(),
        );
    }
    let status = sensor.stop().expect("stop sensor");
    assert!(status.success(), "sensor exit: {status}");
}

#[test]
fn a_restart_mid_capture_gives_the_notices_of_one_uninterrupted_run() {
    if !privileged("a_restart_mid_capture_gives_the_notices_of_one_uninterrupted_run") {
        return;
    }
    let started = Instant::now();
    let binary = lab::sensor_binary(false).expect("build sensor");
    let original = scratch("labelled.pcap");
    synth::labelled_capture(40, 40)
        .write_pcap_file(&original)
        .unwrap();
    let pcap = lab::mtu_safe_copy(&original, &scratch_dir()).unwrap();
    let times = packet_times(&pcap);
    // At 3.31 s: 2.31 s after the first packet, the tracker request at 1.0 s.
    let n = index_at(&times, 2.31);
    let (first, second) = pcapcut::cut(&pcap, n, &scratch_dir(), "cut").unwrap();

    // One uninterrupted offline run over the whole capture.
    let offline_dir = scratch("offline");
    let out = Command::new(&binary)
        .arg("analyze")
        .args(ENGINE_ARGS)
        .arg("--json")
        .arg("--out")
        .arg(&offline_dir)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline_notices = scratch("offline.jsonl");
    std::fs::write(&offline_notices, &out.stdout).unwrap();
    let offline = notices(&[&offline_notices]);
    assert_eq!(
        count(&offline, "AddressScan", labelled::ADDRESS_SCANNER),
        1,
        "{offline:#?}"
    );
    assert!(!any_from(&offline, labelled::BITTORRENT), "{offline:#?}");
    let (closing, ongoing): (Vec<Notice>, Vec<Notice>) = offline
        .iter()
        .cloned()
        .partition(|n| CLOSING.contains(&n[0].as_str()));
    let offline_attempts = rows(&[offline_dir.join("attempts.log")]);
    // Summaries withheld as predicted are end-of-run summaries too.
    let offline_suppressed: Vec<Vec<String>> = rows(&[offline_dir.join("suppressed.log")])
        .into_iter()
        .filter(|r| !CLOSING.contains(&r[5].as_str()))
        .collect();
    assert!(
        offline_attempts
            .iter()
            .any(|r| r.contains(&"T".to_string())),
        "the BitTorrent host's attempts are predicted"
    );

    // Live: the first half, SIGTERM (which saves the state), the second half from the state.
    let lab = Lab::new().expect("create lab namespace");
    let state = scratch("sensor.state");
    let _ = std::fs::remove_file(&state);
    let (d1, d2, n1, n2) = (
        scratch("live1"),
        scratch("live2"),
        scratch("live1.jsonl"),
        scratch("live2.jsonl"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |dir: &Path, notices: &Path| {
        vec![
            "--state-file".to_string(),
            s(&state),
            "--log-dir".to_string(),
            s(dir),
            "--notices".to_string(),
            s(notices),
        ]
    };
    let a1 = args(&d1, &n1);
    live_run(
        &lab,
        &binary,
        &a1.iter().map(String::as_str).collect::<Vec<_>>(),
        &first,
        None,
    );
    let saved = std::fs::read(&state).expect("the state file, saved on SIGTERM");
    assert!(saved.starts_with(b"SXSTATE\0"), "not a state file");
    let first_notices = notices(&[&n1]);
    // The scenario: the scanner crosses its threshold after the stop.
    assert_eq!(
        count(&first_notices, "AddressScan", labelled::ADDRESS_SCANNER),
        0,
        "{first_notices:#?}"
    );

    let live_attempts = || rows(&[d1.join("attempts.log"), d2.join("attempts.log")]);
    let a2 = args(&d2, &n2);
    live_run(
        &lab,
        &binary,
        &a2.iter().map(String::as_str).collect::<Vec<_>>(),
        &second,
        Some(&|| {
            notices(&[&n1, &n2]).len() >= ongoing.len()
                && live_attempts().len() >= offline_attempts.len()
        }),
    );
    let live = notices(&[&n1, &n2]);

    // The same notices as the uninterrupted run, but for the summaries only a closed run
    // raises.
    assert_eq!(live, ongoing, "live (restarted) vs offline (uninterrupted)");
    assert!(!any_from(&live, labelled::BITTORRENT), "{live:#?}");
    assert_eq!(
        count(&live, "AddressScan", labelled::ADDRESS_SCANNER),
        1,
        "{live:#?}"
    );
    assert_eq!(live_attempts(), offline_attempts, "attempts.log");
    let live_suppressed = rows(&[d1.join("suppressed.log"), d2.join("suppressed.log")]);
    assert_eq!(live_suppressed, offline_suppressed, "suppressed.log");

    // The control: the second half without the state file, and the BitTorrent host is a
    // scanner.
    let (d3, n3) = (scratch("control"), scratch("control.jsonl"));
    live_run(
        &lab,
        &binary,
        &["--log-dir", &s(&d3), "--notices", &s(&n3)],
        &second,
        Some(&|| count(&notices(&[&n3]), "AddressScan", labelled::BITTORRENT) > 0),
    );
    let control = notices(&[&n3]);
    let address_scan = |notices: &[Notice]| -> Vec<Notice> {
        let scanner = std::net::Ipv4Addr::from(labelled::ADDRESS_SCANNER).to_string();
        notices
            .iter()
            .filter(|n| n[0] == "AddressScan" && n[1] == scanner)
            .cloned()
            .collect()
    };
    assert_eq!(address_scan(&control).len(), 1, "{control:#?}");
    assert_ne!(address_scan(&control), address_scan(&live), "{control:#?}");

    eprintln!(
        "live restart at packet {n} of {} ({} bytes of state): {} notices as the uninterrupted \
         run ({} before the stop), {} attempts, {} suppressed; only in the closed offline run: \
         {closing:?}; control without the state: {} notices, {} from the BitTorrent host; {:.1} s",
        times.len(),
        saved.len(),
        live.len(),
        first_notices.len(),
        offline_attempts.len(),
        offline_suppressed.len(),
        control.len(),
        control
            .iter()
            .filter(|n| n[1] == std::net::Ipv4Addr::from(labelled::BITTORRENT).to_string())
            .count(),
        started.elapsed().as_secs_f64()
    );
    for n in &live {
        eprintln!("  live {n:?}");
    }
    for n in &control {
        eprintln!("  control {n:?}");
    }
    drop(lab);
    std::fs::remove_dir_all(scratch_dir()).unwrap();
}
