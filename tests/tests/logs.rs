//! Zeek logs and the notice suppression interval, through `sensor analyze` on generated
//! captures: a slow scanner active for longer than the interval is reported again when Zeek's
//! notice framework would let its notice through, and `--json` agrees with `--json-logs`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sensor_tests::synth::{Capture, SynthPacket};

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;
const SCANNER: [u8; 4] = [10, 9, 9, 9];

/// One unanswered SYN every 10 s from [`SCANNER`] to a new host on port 23, `n` of them: the
/// attempt of SYN `i` fails (S0) 5 s later, at `T0 + 10 i + 5`.
fn slow_scan(n: u32) -> Capture {
    let packets = (0..n)
        .map(|i| {
            let dst = [
                198,
                51,
                u8::try_from(i / 200).unwrap(),
                u8::try_from(i % 200 + 1).unwrap(),
            ];
            let builder =
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(SCANNER, dst, 64)
                    .tcp(40_000 + (i % 20_000) as u16, 23, 1000 + i, 1024)
                    .syn();
            let mut frame = Vec::with_capacity(builder.size(0));
            builder.write(&mut frame, &[]).unwrap();
            SynthPacket {
                ts: Duration::from_secs(T0 + 10 * u64::from(i)),
                frame,
            }
        })
        .collect();
    Capture { packets }
}

fn write_capture(name: &str, capture: &Capture) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sensor-logs-{name}-{}.pcap", std::process::id()));
    capture.write_pcap_file(&path).unwrap();
    path
}

/// `sensor analyze --json ARGS… PCAP`: the notices as JSON values.
fn notices(pcap: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    let out = Command::new(&sensor)
        .args(["analyze", "--json"])
        .args(args)
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (seconds after T0, note, sub present)
fn timeline(notices: &[serde_json::Value]) -> Vec<(u64, String, bool)> {
    notices
        .iter()
        .map(|n| {
            let ts = n["ts"].as_f64().unwrap();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let secs = (ts - T0 as f64).round() as u64;
            (
                secs,
                n["note"].as_str().unwrap().to_string(),
                n.get("sub").is_some(),
            )
        })
        .collect()
}

#[test]
fn default_is_bro_1_5_every_threshold_once() {
    // 210 hosts over 35 minutes.
    let pcap = write_capture("default", &slow_scan(210));
    let got = timeline(&notices(&pcap, &[]));
    // AddressScan at the 20th host, ShutdownThresh at the 100th, AddressScan at the 101st
    // (Bro's vector {20, 100, 1000, …}, ShutdownThresh tested first), the summary at the end of input (the last SYN, 2090 s).
    assert_eq!(
        got,
        [
            (195, "AddressScan".into(), false),
            (995, "ShutdownThresh".into(), false),
            (1005, "AddressScan".into(), false),
            (2090, "ScanSummary".into(), false),
        ]
    );
}

#[test]
fn long_running_scanner_is_reported_again_after_the_interval() {
    let pcap = write_capture("interval", &slow_scan(210));
    let dir = std::env::temp_dir().join(format!("sensor-logs-interval-{}", std::process::id()));
    let all = notices(
        &pcap,
        &[
            "--notice-suppress-for",
            "600",
            "--out",
            dir.to_str().unwrap(),
        ],
    );
    let got = timeline(&all);
    // Reported at 195; the scanner's next counted attempt at or after 195 + 600 = 795 reports
    // it again, and so on every 600 s (1395, 1995). The AddressScan Bro raises at the 101st
    // host (1005) falls inside the interval that began at 795: suppressed, as Zeek's notice
    // framework suppresses a repeated (note, identifier). ShutdownThresh is another note.
    assert_eq!(
        got,
        [
            (195, "AddressScan".into(), false),
            (795, "AddressScan".into(), true),
            (995, "ShutdownThresh".into(), false),
            (1395, "AddressScan".into(), true),
            (1995, "AddressScan".into(), true),
            (2090, "ScanSummary".into(), false),
        ]
    );
    let renewed = &all[1];
    assert_eq!(renewed["suppress_for"], 600.0);
    assert_eq!(renewed["src"], "10.9.9.9");
    assert_eq!(renewed["peers"], 80, "the hosts scanned by then");
    assert!(renewed["sub"]
        .as_str()
        .unwrap()
        .starts_with("still active: 80 hosts"));
    // The renewal names the connection whose attempt renewed it.
    assert_eq!(renewed["id.resp_h"], "198.51.0.80");
    assert_eq!(renewed["id.resp_p"], 23);

    // The suppressed one is counted in stats.log's final row.
    let stats = std::fs::read_to_string(dir.join("stats.log")).unwrap();
    let fields: Vec<&str> = stats
        .lines()
        .find(|l| l.starts_with("#fields"))
        .unwrap()
        .split('\t')
        .skip(1)
        .collect();
    let last: Vec<&str> = stats
        .lines()
        .rfind(|l| !l.starts_with('#'))
        .unwrap()
        .split('\t')
        .collect();
    let col = |name: &str| last[fields.iter().position(|f| *f == name).unwrap()];
    assert_eq!(col("suppressed_interval"), "1");
    assert_eq!(col("notices"), "6");
    // Rows every 300 s of packet time (the default) and a final one.
    let rows = stats.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(rows, 2090 / 300 + 1, "{stats}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_stdout_and_json_logs_agree_line_for_line() {
    let pcap = write_capture("agree", &slow_scan(120));
    let sensor = sensor_tests::lab::sensor_binary(false).unwrap();
    let dir = std::env::temp_dir().join(format!("sensor-logs-agree-{}", std::process::id()));
    let out = Command::new(&sensor)
        .args(["analyze", "--json", "--json-logs", "--out"])
        .arg(&dir)
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let log = std::fs::read_to_string(dir.join("notice.log")).unwrap();
    assert_eq!(stdout, log);
    // Zeek's field order, unset fields omitted (the summary has no connection), fixed precision.
    let first = stdout.lines().next().unwrap();
    assert!(
        first.starts_with(r#"{"ts":1767225795.000000,"uid":"C"#),
        "{first}"
    );
    let summary = stdout.lines().last().unwrap();
    assert!(summary.contains(r#""note":"ScanSummary""#), "{summary}");
    assert!(
        !summary.contains("uid") && !summary.contains("null"),
        "{summary}"
    );
    // The uid joins attempts.log.
    let uid = serde_json::from_str::<serde_json::Value>(first).unwrap()["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let attempts = std::fs::read_to_string(dir.join("attempts.log")).unwrap();
    let joined: Vec<&str> = attempts.lines().filter(|l| l.contains(&uid)).collect();
    assert_eq!(joined.len(), 1, "{uid}");
    assert!(
        joined[0].contains(r#""id.resp_h":"198.51.0.20""#),
        "{}",
        joined[0]
    );
    std::fs::remove_dir_all(&dir).ok();
}
