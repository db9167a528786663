//! The `sensor` command line: the clap definitions ([`args`]), the TOML config file read
//! through them ([`config`]), and the completions and man page generated from them ([`docs`]).

pub mod args;
pub mod config;
pub mod docs;
#[cfg(test)]
mod tests;

use std::ffi::OsString;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

pub use args::*;

#[derive(Parser, Debug)]
#[command(
    name = "sensor",
    version,
    about = "Tells BitTorrent hosts apart from port scanners, at the gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the XDP pre-filter to interfaces and process their traffic until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Run the pre-filter over capture files: what XDP would forward, and its counters.
    Prefilter(PrefilterArgs),
    /// Analyse capture files: scan notices, with BitTorrent prediction and PPR suppression.
    Analyze(AnalyzeArgs),
    /// The peers BitTorrent coordination traffic announced to each host (the predictions).
    Peers(PeersArgs),
    /// Accuracy on labelled captures: TPR/FPR per suppression mode and threshold (ROC).
    Eval(EvalArgs),
    /// Check a config file and print the settings it gives each command.
    CheckConfig(CheckConfigArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page sensor(1) (roff), or write every page into a directory.
    Man(ManArgs),
}

/// Exit statuses besides the offline commands' 0, 1 and 2 (see `sensor analyze --help`), from
/// BSD's sysexits.h so that they cannot be mistaken for those.
pub mod exit {
    /// EX_USAGE: the command line is wrong (an unknown option, a bad value).
    pub const USAGE: i32 = 64;
    /// EX_CONFIG: the config file is wrong (unknown key, bad value, not TOML).
    pub const CONFIG: i32 = 78;
}

/// Why the command line could not be parsed.
#[derive(Debug)]
pub enum CliError {
    /// From clap: a usage error, or `--help`/`--version` (which exit 0).
    Clap(clap::Error),
    /// The config file.
    Config(anyhow::Error),
}

impl CliError {
    /// Prints the error (or the help) and exits with its status.
    pub fn exit(self) -> ! {
        match self {
            CliError::Clap(e) => {
                let _ = e.print();
                std::process::exit(if e.use_stderr() { exit::USAGE } else { 0 });
            }
            CliError::Config(e) => {
                eprintln!("sensor: {e:#}");
                std::process::exit(exit::CONFIG);
            }
        }
    }
}

/// The command line of this process, with its `--config` file merged in; exits on error.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Parses `argv` (program name first). When the subcommand has `--config FILE`, the file's
/// settings for it are inserted before the user's own arguments, except those the command
/// line gave itself (clap's `value_source`): the command line wins.
pub fn try_parse_from<I, T>(argv: I) -> Result<Cli, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    // First pass with nothing required: a required option may come from the file. Its errors
    // (and --help) come from the real definitions, whose usage lines are the true ones.
    let Ok(lenient) = config::relaxed(Cli::command()).try_get_matches_from(&argv) else {
        return Cli::try_parse_from(&argv).map_err(CliError::Clap);
    };
    let mut full = argv.clone();
    if let Some((name, sub)) = lenient.subcommand() {
        if let Some(path) = sub
            .try_get_one::<std::path::PathBuf>("config")
            .ok()
            .flatten()
        {
            let file = config::ConfigFile::load(path).map_err(CliError::Config)?;
            let extra = file
                .args_for(&schema(), name, Some(sub))
                .map_err(CliError::Config)?;
            let at = argv
                .iter()
                .skip(1)
                .position(|a| *a == *name)
                .map_or(argv.len(), |i| i + 2);
            full.splice(at..at, extra);
        }
    }
    Cli::try_parse_from(full).map_err(CliError::Clap)
}

/// What the config file may hold: a table per subcommand that takes `--config`, and the shared
/// `[detection]` table, whose keys are the options of [`EngineArgs`].
pub fn schema() -> config::Schema {
    use clap::Args as _;
    config::Schema {
        root: Cli::command(),
        shared_name: "detection",
        shared: EngineArgs::augment_args(clap::Command::new("detection")),
    }
}

/// Checks what clap cannot: the option values' meaning, through the same conversions the
/// commands use. `fragment` is a subcommand's arguments (no positionals required).
fn check_values(command: &str, fragment: Vec<OsString>) -> anyhow::Result<()> {
    let argv = [OsString::from("sensor"), OsString::from(command)]
        .into_iter()
        .chain(fragment);
    let matches = config::relaxed(Cli::command()).try_get_matches_from(argv)?;
    match Cli::from_arg_matches(&matches)?.command {
        Command::Run(a) => a.engine.config().map(drop),
        Command::Analyze(a) => a.engine.config().map(drop),
        Command::Eval(a) => a.engine.config().map(drop),
        _ => Ok(()),
    }
}

/// `sensor check-config FILE`: every table and key checked, then the settings each command
/// would run with, printed as TOML with where each comes from.
pub fn check_config(args: &CheckConfigArgs) -> Result<(), CliError> {
    let file = config::ConfigFile::load(&args.file).map_err(CliError::Config)?;
    let schema = schema();
    let report = file
        .effective(&schema, check_values)
        .map_err(CliError::Config)?;
    print!("{report}");
    Ok(())
}
