//! Shell completions (`clap_complete`) and man pages (`clap_mangen`), generated from the same
//! clap definitions as the parser, so they cannot fall behind it.

use clap::CommandFactory as _;

/// The completion script of `shell` for `sensor`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "sensor", &mut out);
    out
}

/// The man page `sensor(1)` in roff (it lists the subcommands; each has its own page, see
/// [`man_pages`]).
pub fn man() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(super::Cli::command()).render(&mut out)?;
    Ok(out)
}

/// Writes `sensor.1` and a page per subcommand (`sensor-run.1`, …) into `dir`.
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(super::Cli::command(), dir)
}
