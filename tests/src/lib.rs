//! Test support: lab namespaces, privilege gate, the synthetic capture generator, and the
//! corpus of third-party captures.
//!
//! **The corpus.** Tests that read third-party captures (the real traffic of other projects,
//! not shipped with this repository) find them under the directory named by `SENSOR_CORPUS`,
//! whose default `.cargo/config.toml` sets (no source file names the path). Every such test lives in a module named
//! `corpus`, so `cargo xtask test` can leave them out by name (`--skip corpus::`) when the
//! directory is absent, and says so; under `CI` it refuses to. Everything else uses fixtures
//! in the repository, chiefly [`synth::demo_capture`].

pub mod attacks;
pub mod blast;
pub mod flood;
pub mod lab;
pub mod live;
pub mod pcapcut;
pub mod privilege;
pub mod synth;
pub mod xdp;

use std::path::PathBuf;

/// The corpus directory, `$SENSOR_CORPUS`: cargo sets it (`.cargo/config.toml`, `[env]`) unless
/// the caller did.
pub fn corpus_dir() -> PathBuf {
    std::env::var_os("SENSOR_CORPUS")
        .map(PathBuf::from)
        .expect("SENSOR_CORPUS names the corpus directory (cargo sets a default)")
}

/// A capture of the corpus, by its path inside it.
pub fn corpus(rel: &str) -> PathBuf {
    corpus_dir().join(rel)
}

/// (note, msg) of every notice in a JSON-lines text (`analyze --json`, a live `--json` notice
/// file), sorted: what two runs must agree on, whatever their order of equal timestamps.
///
/// # Panics
/// On a line that is not a JSON notice.
pub fn notice_keys(text: &str) -> Vec<(String, String)> {
    let mut v: Vec<_> = text
        .lines()
        .map(|l| {
            let n: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                n["note"].as_str().unwrap().to_string(),
                n["msg"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}
