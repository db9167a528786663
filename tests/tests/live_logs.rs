//! `sensor run --log-dir` through the kernel (a veth pair in a lab namespace, as in replay.rs):
//! the live logs have the offline schema and the same uids for the same traffic, SIGHUP after a
//! rename reopens them (logrotate's `postrotate`) without stopping the sensor, and SIGTERM
//! closes them.
//!
//! Needs root and tcpreplay (`cargo xtask setup` installs it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sensor_tests::lab::{self, Lab, SensorProcess, METRICS_PORT};
use sensor_tests::privilege::privileged;

const LOGS: [&str; 5] = ["notice", "suppressed", "attempts", "predictions", "stats"];
const ENGINE_ARGS: [&str; 4] = ["--suppress", "none", "--threshold", "3"];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-live-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The data rows of a TSV log, split into fields.
fn rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

/// Notices raised on a connection, without their time: (uid, id.*, proto, note, msg).
fn conn_notices(path: &Path) -> BTreeSet<Vec<String>> {
    rows(path)
        .into_iter()
        .filter(|r| r[1] != "-")
        .map(|r| r[1..9].to_vec())
        .collect()
}

/// A Zeek TSV log opened and closed: its header (with `#open`), then `#close` last.
fn assert_complete(path: &Path, name: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#separator \\x09", "{}", path.display());
    assert_eq!(lines[4], format!("#path\t{name}"), "{}", path.display());
    assert!(lines[5].starts_with("#open\t20"), "{}", path.display());
    assert!(lines[6].starts_with("#fields\tts\t"), "{}", path.display());
    assert!(
        lines.last().unwrap().starts_with("#close\t20"),
        "{}: {text}",
        path.display()
    );
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn live_logs_join_on_uid_rotate_on_sighup_and_close_on_sigterm() {
    if !privileged("live_logs_join_on_uid_rotate_on_sighup_and_close_on_sigterm") {
        return;
    }
    // The demo capture's ten seconds around its scanner (as replay.rs replays at capture
    // speed, so the live verdicts equal the file's).
    let mut capture = sensor_tests::synth::demo_capture();
    let start = capture.packets[0].ts;
    capture.packets.retain(|p| {
        let t = p.ts.checked_sub(start).expect("time-ordered").as_secs_f64();
        (69.0..79.0).contains(&t)
    });
    let original = scratch("scans.pcap");
    capture.write_pcap_file(&original).unwrap();
    let pcap = lab::mtu_safe_copy(&original, scratch("").parent().unwrap()).unwrap();
    let binary = lab::sensor_binary(false).expect("build sensor");

    // Offline: the same capture through `analyze --out`.
    let offline_dir = scratch("offline");
    let out = Command::new(&binary)
        .arg("analyze")
        .args(ENGINE_ARGS)
        .arg("--out")
        .arg(&offline_dir)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    let offline = conn_notices(&offline_dir.join("notice.log"));
    assert!(offline.len() >= 3, "the test needs notices: {offline:?}");

    // Live.
    let live_dir = scratch("live");
    let lab = Lab::new().expect("create lab namespace");
    let mut args = vec![
        "--log-dir",
        live_dir.to_str().unwrap(),
        "--stats-interval",
        "1",
    ];
    args.extend(ENGINE_ARGS);
    let sensor = SensorProcess::start(&lab, &binary, &args).expect("start sensor");
    let pid = libc::pid_t::try_from(sensor.pid()).unwrap();
    let stats = lab.replay_timed(&pcap).expect("tcpreplay");
    lab::wait_caught_up(&lab, stats.packets, Duration::from_secs(20)).expect("catch up");
    // The last attempts fail 5 s after their SYNs; lines reach the file within a second.
    let notice_log = live_dir.join("notice.log");
    wait_for("the live notices", Duration::from_secs(20), || {
        conn_notices(&notice_log).len() >= offline.len()
    });
    let live = conn_notices(&notice_log);
    // Same connections in the same order: same uids, live and offline.
    assert_eq!(
        live, offline,
        "live vs offline notices (uid, id, note, msg)"
    );
    // And they join attempts.log on uid, with the same endpoints.
    let attempts: BTreeSet<Vec<String>> = rows(&live_dir.join("attempts.log"))
        .into_iter()
        .map(|r| r[1..7].to_vec())
        .collect();
    for n in &live {
        assert!(attempts.contains(&n[..6]), "{n:?} not in attempts.log");
    }

    // logrotate: rename every log, then SIGHUP.
    for name in LOGS {
        std::fs::rename(
            live_dir.join(format!("{name}.log")),
            live_dir.join(format!("{name}.log.1")),
        )
        .unwrap();
    }
    // SAFETY: signalling the sensor this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    wait_for("the reopened logs", Duration::from_secs(5), || {
        LOGS.iter()
            .all(|name| live_dir.join(format!("{name}.log")).exists())
    });
    // Still running and serving.
    lab.http_get(METRICS_PORT, "/metrics")
        .expect("the sensor survived SIGHUP");
    for name in LOGS {
        assert_complete(&live_dir.join(format!("{name}.log.1")), name);
    }

    // More traffic goes to the new files.
    let again = lab.replay(&pcap, Some(20_000), 1).expect("tcpreplay");
    lab::wait_caught_up(&lab, stats.packets + again.packets, Duration::from_secs(20))
        .expect("catch up");
    let new_attempts = live_dir.join("attempts.log");
    wait_for("attempts in the new file", Duration::from_secs(10), || {
        !rows(&new_attempts).is_empty()
    });
    assert!(sensor.stop().expect("stop sensor").success());

    // SIGTERM closed every file, old and new, each with its own header.
    for name in LOGS {
        assert_complete(&live_dir.join(format!("{name}.log")), name);
        assert_complete(&live_dir.join(format!("{name}.log.1")), name);
    }
    assert!(!rows(&live_dir.join("stats.log.1")).is_empty());
    // The final stats row went to the new file: every event of both replays counted.
    let last = rows(&live_dir.join("stats.log"))
        .pop()
        .expect("final stats row");
    let events: u64 = last[1].parse().unwrap();
    assert!(events > 0, "{last:?}");
    eprintln!(
        "live logs: {} notices joined on uid, as offline; rotated on SIGHUP, closed on SIGTERM",
        live.len()
    );
}
