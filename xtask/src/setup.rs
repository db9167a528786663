//! Idempotent set-up of a fresh machine: each step checks first and does nothing if its
//! result is already there. Non-interactive (CI has no standard input).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

/// Debian packages the tests and the demo use: (a binary it ships, the package).
const PACKAGES: &[(&str, &str)] = &[
    ("tcpreplay", "tcpreplay"),
    ("tshark", "tshark"),
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    // `promtool check metrics` lints the live scrape (tests/tests/replay.rs). Debian ships
    // promtool only with the server; see `stop_prometheus_server`.
    ("promtool", "prometheus"),
    // Runs deploy/sensor.logrotate in a test (xtask/src/install.rs).
    ("logrotate", "logrotate"),
    // `cargo xtask bench` compares the engine with nDPI on the same captures.
    ("ndpiReader", "libndpi-bin"),
];

const BPF_LINKER_VERSION: &str = "0.13";

pub fn ensure(root: &Path) -> anyhow::Result<()> {
    ensure_build(root)?;
    ensure_packages()?;
    Ok(())
}

/// Only what building the sensor needs (what `cargo xtask install` needs on a gateway).
pub fn ensure_build(_root: &Path) -> anyhow::Result<()> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn step(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask setup: {cmd:?}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The eBPF crate is built with `-Z build-std=core`, which needs nightly's library sources.
fn ensure_rust_src() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        step(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        step(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// bpf-linker built against nightly's own LLVM. Nightly ships `libLLVM.so.<ver>-rust-…` but no
/// `libLLVM.so`, which bpf-linker's build looks for, so a prefix directory provides both names.
/// The prefix stays: the linker's RUNPATH points into it.
fn ensure_bpf_linker() -> anyhow::Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(&format!(" {BPF_LINKER_VERSION}."))
        });
    if works {
        return Ok(());
    }
    let sysroot = PathBuf::from(
        output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim(),
    );
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .context("nightly has no libLLVM.so.* to build bpf-linker against")?;
    let soname = lib.file_name().unwrap().to_string_lossy().into_owned();
    // libLLVM.so.22.1-rust-… → LLVM 22 → bpf-linker feature llvm-22.
    let major: String = soname["libLLVM.so.".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    anyhow::ensure!(
        !major.is_empty(),
        "cannot tell the LLVM version of {soname}"
    );

    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let prefix = home.join("sensor-llvm-prefix");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".to_string(), soname.clone()] {
        let link = prefix_lib.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    step(
        Command::new("cargo")
            .args([
                "+nightly",
                "install",
                "--force",
                "bpf-linker",
                "--version",
                &format!("^{BPF_LINKER_VERSION}"),
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix),
    )
}

fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(binary, _)| !on_path(binary))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "missing Debian packages {missing:?}; install them as root (apt-get install {})",
            missing.join(" ")
        );
    }
    step(Command::new("apt-get").args(["update", "-q"]))?;
    step(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if missing.contains(&"prometheus") {
        stop_prometheus_server()?;
    }
    Ok(())
}

/// Installing Debian's `prometheus` for its promtool also enables and starts a Prometheus
/// server where systemd runs; the tests want none, so the set-up stops and disables the one
/// it just installed (never one that was there before).
fn stop_prometheus_server() -> anyhow::Result<()> {
    if Path::new("/run/systemd/system").is_dir() {
        step(Command::new("systemctl").args(["disable", "--now", "prometheus.service"]))?;
    }
    Ok(())
}

fn on_path(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        || Path::new("/usr/sbin").join(binary).is_file()
}
