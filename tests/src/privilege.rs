//! Gate for tests that need root (CAP_BPF, CAP_NET_ADMIN).
//!
//! Plain `cargo test` as an ordinary user skips them with a message, as aya's own tests do.
//! `cargo xtask test` sets `SENSOR_REQUIRE_PRIVILEGED=1`, which turns a skip into a failure, so
//! CI cannot pass with a layer silently skipped.

/// Whether the calling test may proceed. Prints why not, or panics if privileged tests are
/// required.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("SENSOR_REQUIRE_PRIVILEGED").is_none_or(|v| v != "1"),
        "{test}: needs root (CAP_BPF + CAP_NET_ADMIN) and SENSOR_REQUIRE_PRIVILEGED=1 forbids skipping"
    );
    eprintln!("SKIPPED {test}: needs root (CAP_BPF + CAP_NET_ADMIN)");
    false
}
