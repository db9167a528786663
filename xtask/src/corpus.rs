//! The optional corpus of third-party captures: where it is, what `cargo xtask test` does
//! without it, and `cargo xtask snapshot`, which records a build's results over it.
//!
//! Tests that read the corpus live in modules named `corpus` (their test paths contain
//! `corpus::`), so they can be left out by name when it is absent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};

/// The variable naming the corpus directory.
pub const VAR: &str = "SENSOR_CORPUS";

/// The test-name filter that leaves out every corpus test.
pub const SKIP: &str = "corpus::";

/// The corpus directory: `$SENSOR_CORPUS`, relative to the current directory (cargo sets its
/// default from `.cargo/config.toml` unless the caller did; unset,
/// there is no corpus). Absolute, so the test binaries, which run in their package
/// directories, find the same one.
pub fn dir() -> anyhow::Result<Option<PathBuf>> {
    let Some(v) = std::env::var_os(VAR).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let dir = std::env::current_dir()
        .context("reading the current directory")?
        .join(v);
    // Without `..` components in messages; an absent directory stays as spelt.
    Ok(Some(std::fs::canonicalize(&dir).unwrap_or(dir)))
}

/// Whether the run is under CI (`CI` set to anything but the empty string or `false`).
fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// What `cargo xtask test` does about the corpus.
pub enum Plan {
    /// The corpus is there: pass its directory to the tests.
    Run(PathBuf),
    /// It is not: leave the corpus tests out (after saying so once).
    Skip,
}

/// Decides whether the corpus tests run. Under CI a missing corpus is an error, never a skip.
pub fn plan() -> anyhow::Result<Plan> {
    let dir = dir()?;
    if let Some(dir) = dir.as_ref().filter(|d| d.is_dir()) {
        return Ok(Plan::Run(dir.clone()));
    }
    let place = dir.map_or_else(
        || format!("({VAR} not set)"),
        |d| format!("at {}", d.display()),
    );
    if under_ci() {
        bail!(
            "corpus not found {place} and CI is set: CI must run the corpus tests (set {VAR} to \
             the directory of third-party captures)"
        );
    }
    println!("xtask: corpus not found {place} (set {VAR}); skipping the corpus tests");
    Ok(Plan::Skip)
}

/// `cargo test` arguments with the corpus tests filtered out: `--skip corpus::` goes to the
/// test binaries, after the `--` that `args` may already have.
pub fn skip_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = args.to_vec();
    if !out.iter().any(|a| a == "--") {
        out.push("--".into());
    }
    out.extend(["--skip".into(), SKIP.into()]);
    out
}

/// `cargo xtask snapshot OUTDIR`: per capture of the corpus, the notices of `analyze --json`
/// (suppressing all, and none) and the sorted predictions of `peers --json`, written by
/// `tests/scripts/snapshot.sh`, so the outputs of two builds compare with `diff -r`.
/// `sensor` names a binary to use instead of building this checkout's release one.
pub fn snapshot(root: &Path, out: &Path, sensor: Option<&Path>) -> anyhow::Result<ExitCode> {
    let Some(corpus) = dir()?.filter(|d| d.is_dir()) else {
        bail!("corpus not found (set {VAR} to the directory of third-party captures)");
    };
    let binary = match sensor {
        Some(path) => path.to_path_buf(),
        None => release_sensor(root)?,
    };
    let status = Command::new("bash")
        .arg(root.join("tests/scripts/snapshot.sh"))
        .arg(&binary)
        .arg(out)
        .arg(&corpus)
        .status()
        .context("running tests/scripts/snapshot.sh")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the release `sensor` binary and returns its path.
pub fn release_sensor(root: &Path) -> anyhow::Result<PathBuf> {
    let status = super::cargo()
        .current_dir(root)
        .args([
            "build",
            "--locked",
            "--release",
            "--quiet",
            "-p",
            "sensor",
            "--bin",
            "sensor",
        ])
        .status()
        .context("building the release sensor")?;
    if !status.success() {
        bail!("building the release sensor failed");
    }
    // A relative CARGO_TARGET_DIR is relative to where cargo ran: `root`.
    let target = root.join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()));
    Ok(target.join("release/sensor"))
}
