//! Rebuild the eBPF object whenever the linker changes: aya-build cannot see it otherwise.
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
