//! `cargo xtask`: set-up and orchestration. It never builds the eBPF object itself
//! (`sensor/build.rs` does), and it links none of the project's crates, because it must build
//! on a machine that does not yet have the eBPF toolchain it installs.
//!
//! - `cargo xtask setup`: install what the build and the tests need (idempotent).
//! - `cargo xtask test`: every test: unit, BPF_PROG_TEST_RUN, and veth replay. The tests on
//!   third-party captures read the corpus named by `SENSOR_CORPUS` (default in
//!   `.cargo/config.toml`) and are skipped, with one line saying so, when it is absent (under
//!   `CI` that is an error instead).
//! - `cargo xtask run`: the demo; `cargo xtask run -- <sensor args>` runs the sensor itself.
//! - `cargo xtask bench`: replay throughput, XDP per-packet cost, and the engine side by side with
//!   the pre-filter, `cat`, tshark and nDPI, and the LRU source tables against `hashlink` and
//!   `lru` (`lru-bench`), written to BENCHMARKS.md; `--live` only the live
//!   section (fast sender, sustained record rate, flood on the agent).
//! - `cargo xtask snapshot OUTDIR`: a build's notices and predictions over the corpus, one file
//!   per capture, to compare two builds with `diff -r`.
//! - `cargo xtask install [--prefix DIR] [--destdir DIR]`: the binary, the systemd unit, the
//!   logrotate file and the sample configuration, for a gateway (see `install.rs`).
//! - `cargo xtask eval --lab DIR`: `sensor eval` over the lab's labelled captures, all together
//!   and per scenario; regenerates EVALUATION.md and its figures under `tests/evaluation/`.

mod corpus;
mod eval;
mod install;
mod setup;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Build, test and run the sensor")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the nightly rust-src component, bpf-linker and the Debian packages the tests use.
    Setup,
    /// Run every test layer. Needs root: the kernel layers may not be skipped. The tests on
    /// third-party captures (`corpus::` in their names) read the directory `SENSOR_CORPUS`
    /// names (default in `.cargo/config.toml`); without it they are skipped, with
    /// one line saying so, unless `CI` is set, which makes that an error.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Without arguments: the demo (lab namespace, veth pair, replay, report, clean-up).
    /// With arguments after `--`: run the sensor binary with them, e.g. `-- --iface eth1`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure replay throughput and XDP program cost; writes BENCHMARKS.md.
    Bench {
        /// Only the live section (generator rate, sustained record rate, flood against the
        /// agent), replacing that section of BENCHMARKS.md.
        #[arg(long)]
        live: bool,
        /// With --live: the worker counts to measure, comma-separated (default 1,2); the
        /// sustained rates of all come from one run, with their ratio.
        #[arg(long, value_name = "N,N", requires = "live")]
        workers: Option<String>,
    },
    /// Write, per capture of the corpus, the notices (`analyze --json`, suppressing all and
    /// none) and the sorted predictions (`peers --json`), to compare two builds with `diff -r`.
    Snapshot {
        /// Directory for the files (created).
        outdir: PathBuf,
        /// A sensor binary to use instead of building this checkout's release one.
        #[arg(long)]
        sensor: Option<PathBuf>,
    },
    /// Install the sensor as a systemd service: PREFIX/bin/sensor, /etc/systemd/system/sensor.service,
    /// /etc/logrotate.d/sensor, /etc/sensor/sensor.toml (the sample, unless one exists), and
    /// the `sensor` system user. Idempotent.
    Install {
        /// Where the binary (PREFIX/bin) and the README (PREFIX/share/doc/sensor) go.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Stage every file under this directory instead of / (no user, no daemon-reload).
        #[arg(long)]
        destdir: Option<PathBuf>,
        /// A sensor binary to install instead of building this checkout's release one.
        #[arg(long)]
        sensor: Option<PathBuf>,
    },
    /// Score the detector on labelled captures: `sensor eval` over every capture together and
    /// per scenario, then EVALUATION.md (ROC tables, the paper's numbers beside ours, predicted
    /// share per client, BitTorrent hosts still flagged) and its figures under
    /// tests/evaluation/. Lab runs not yet complete (no SCENARIO.counts.json) are skipped.
    Eval {
        /// A directory searched recursively for `SCENARIO.pcap` beside `SCENARIO.labels.csv`
        /// (what the lab writes); repeatable.
        #[arg(long)]
        lab: Vec<PathBuf>,
        /// A labels file and the capture it labels (e.g. one of the shared corpus); repeatable.
        /// The capture's file stem names its scenario.
        #[arg(long, num_args = 2, value_names = ["FILE", "PCAP"])]
        labels: Vec<PathBuf>,
        /// Where `sensor eval` writes (OUT/all, OUT/SCENARIO, and the links it reads in
        /// OUT/inputs).
        #[arg(long, default_value = "target/eval")]
        out: PathBuf,
        /// A sensor binary to use instead of building this checkout's release one.
        #[arg(long)]
        sensor: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Setup => {
            setup::ensure(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { args } => test(&root, &args),
        Cmd::Run { args } => run(&root, &args),
        Cmd::Bench { live, workers } => bench(&root, live, workers.as_deref()),
        Cmd::Install {
            prefix,
            destdir,
            sensor,
        } => {
            install::run(
                &root,
                &install::Options {
                    prefix,
                    destdir,
                    sensor,
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Snapshot { outdir, sensor } => corpus::snapshot(&root, &outdir, sensor.as_deref()),
        Cmd::Eval {
            lab,
            labels,
            out,
            sensor,
        } => eval::run(
            &root,
            &eval::Inputs {
                labs: lab,
                labelled: labels
                    .chunks_exact(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
                out,
                sensor,
            },
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cargo run` of one of sensor-tests' benchmark binaries, release build; its arguments follow.
fn bench_bin(root: &Path, bin: &str) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["run", "--locked", "--release", "--quiet"]);
    cmd.args(["-p", "sensor-tests", "--bin", bin, "--"]);
    cmd
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a child to completion while Ctrl-C is left to it: the child cleans up and exits, and
/// we report its status instead of dying first.
fn status_of(cmd: &mut Command) -> anyhow::Result<std::process::ExitStatus> {
    let _ = ctrlc::set_handler(|| {});
    cmd.status().with_context(|| format!("running {cmd:?}"))
}

fn test(root: &Path, extra: &[String]) -> anyhow::Result<ExitCode> {
    // First, so that CI without its corpus fails before any build.
    let corpus = corpus::plan()?;
    if !is_root() {
        bail!("`cargo xtask test` runs the kernel test layers, which need root (CAP_BPF + CAP_NET_ADMIN)");
    }
    setup::ensure(root)?;
    let started = std::time::Instant::now();
    // sensor-ebpf is not a default member (its binary only builds for BPF); its library,
    // which holds the pre-filter's parse policy, is tested on the host here.
    let runs: [&[&str]; 2] = [
        &["test", "--locked", "-p", "sensor-ebpf", "--lib"],
        &["test", "--locked"],
    ];
    let mut tally = Tally::default();
    for (i, base) in runs.iter().enumerate() {
        let mut args: Vec<OsString> = base.iter().map(OsString::from).collect();
        if i == 1 {
            args.extend(extra.iter().map(OsString::from));
        }
        let mut cmd = cargo();
        cmd.current_dir(root).env("SENSOR_REQUIRE_PRIVILEGED", "1");
        match &corpus {
            corpus::Plan::Run(dir) => cmd.args(args).env(corpus::VAR, dir),
            corpus::Plan::Skip => cmd.args(corpus::skip_args(&args)),
        };
        let status = run_counting(&mut cmd, &mut tally)?;
        if !status.success() {
            println!(
                "xtask: {} passed, {} failed",
                tally.passed,
                tally.failed.max(1)
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    // The fuzz targets live in their own workspace (cargo-fuzz builds them with nightly and
    // sanitizers), out of reach of the runs above: check that they still build against the
    // parsers' current API, so a change cannot leave them broken unnoticed.
    let fuzz = root.join("sensor/fuzz/Cargo.toml");
    let status = Command::new("cargo")
        .current_dir(root)
        .args(["+nightly", "check", "--locked", "--bins", "--manifest-path"])
        .arg(&fuzz)
        .status()
        .context("cargo +nightly check (fuzz targets)")?;
    if !status.success() {
        println!(
            "xtask: {} passed, 1 failed (the fuzz targets do not build)",
            tally.passed
        );
        return Ok(ExitCode::FAILURE);
    }
    let leftovers = lab_namespaces()?;
    if !leftovers.is_empty() {
        bail!("tests left network namespaces behind: {leftovers:?}");
    }
    eprintln!(
        "xtask: all test layers passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // One closing line for the whole run (cargo prints one per test binary).
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.ignored
    );
    Ok(ExitCode::SUCCESS)
}

/// Test results summed over cargo's per-binary `test result:` lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs `cargo test`, echoing its output and adding up its `test result:` lines.
fn run_counting(cmd: &mut Command, tally: &mut Tally) -> anyhow::Result<std::process::ExitStatus> {
    use std::io::BufRead as _;
    let _ = ctrlc::set_handler(|| {});
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            // "ok. 7 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.6s"
            let words: Vec<&str> = rest.split_whitespace().collect();
            for pair in words.windows(2) {
                let n: u64 = pair[0].parse().unwrap_or(0);
                match pair[1].trim_end_matches(';') {
                    "passed" => tally.passed += n,
                    "failed" => tally.failed += n,
                    "ignored" => tally.ignored += n,
                    _ => {}
                }
            }
        }
    }
    Ok(child.wait()?)
}

/// Lab namespaces (ours are named `sxlab-*`) that currently exist.
fn lab_namespaces() -> anyhow::Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running ip netns list")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("sxlab-"))
        .map(str::to_string)
        .collect())
}

fn run(root: &Path, args: &[String]) -> anyhow::Result<ExitCode> {
    if !is_root() {
        bail!("loading XDP needs root (CAP_BPF + CAP_NET_ADMIN)");
    }
    setup::ensure(root)?;
    let mut cmd = cargo();
    cmd.current_dir(root)
        .args(["run", "--locked", "--release", "--quiet"]);
    if args.is_empty() {
        cmd.args(["-p", "sensor-tests", "--bin", "demo"]);
    } else {
        cmd.args(["-p", "sensor", "--bin", "sensor", "--"]);
        // `cargo xtask run -- --iface eth1` means `sensor run --iface eth1`.
        if args[0].starts_with('-') {
            cmd.arg("run");
        }
        cmd.args(args);
    }
    let status = status_of(&mut cmd)?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn bench(root: &Path, live: bool, workers: Option<&str>) -> anyhow::Result<ExitCode> {
    if !is_root() {
        bail!("the benchmarks load XDP and need root");
    }
    setup::ensure(root)?;
    // The side-by-side section runs the `sensor` binary beside `bench`.
    let built = status_of(cargo().current_dir(root).args([
        "build",
        "--locked",
        "--release",
        "--quiet",
        "-p",
        "sensor",
        "--bin",
        "sensor",
    ]))?;
    if !built.success() {
        return Ok(ExitCode::FAILURE);
    }
    let mut cmd = bench_bin(root, "bench");
    cmd.args(live.then_some("--live"))
        .args(workers.map(|w| ["--workers", w]).into_iter().flatten())
        .arg(root.join("BENCHMARKS.md"));
    let mut status = status_of(&mut cmd)?;
    if status.success() && !live {
        // The LRU tables section, from a binary of its own (its counting allocator must not
        // slow the other sections), spliced into the file `bench` just wrote.
        status = status_of(bench_bin(root, "lru-bench").arg(root.join("BENCHMARKS.md")))?;
    }
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
