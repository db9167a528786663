//! Builds the XDP object (`sensor-ebpf`'s `sensor` bin) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker; `src/lib.rs` embeds it. `cargo xtask setup` installs both.
fn main() -> anyhow::Result<()> {
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
