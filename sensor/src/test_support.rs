//! Shared by the unit tests.
//!
//! **The corpus.** Tests that read third-party captures (the real traffic of other projects,
//! not shipped with this repository) find them under the directory named by `SENSOR_CORPUS`,
//! whose default `.cargo/config.toml` sets (no source file names the path). Every such test lives in a module named
//! `corpus`, so `cargo xtask test` can leave them out by name (`--skip corpus::`) when the
//! directory is absent, and says so; under `CI` it refuses to. Everything else uses fixtures
//! in the repository.

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

/// Bytes from a hex dump; whitespace is ignored.
pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(s).expect("hex digits")
}
