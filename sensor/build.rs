//! Builds the XDP object (`sensor-ebpf`'s `sensor` bin) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker; `src/lib.rs` embeds it. `cargo xtask setup` installs both.
//!
//! Also records the git commit being built (`SENSOR_BUILD_COMMIT`, exported as
//! `sensor_build_info{commit}`); `unknown` when the source is not a git checkout.
use std::path::Path;
use std::process::Command;

fn main() -> anyhow::Result<()> {
    build_commit();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../sensor-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "sensor-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn build_commit() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SENSOR_BUILD_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it names (a commit), and
    // packed-refs. Only files that exist: cargo reruns the script every time for a missing one.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}
