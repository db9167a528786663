use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;

use super::config::ConfigFile;
use super::*;
use crate::engine::Suppress;

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// A config file with `text` in a scratch directory of this test.
fn config_file(test: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sensor-cli-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sensor.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn parse(args: &[&str]) -> Result<Cli, CliError> {
    try_parse_from(std::iter::once("sensor").chain(args.iter().copied()))
}

fn parse_ok(args: &[&str]) -> Command {
    match parse(args) {
        Ok(cli) => cli.command,
        Err(CliError::Clap(e)) => panic!("{args:?}: {e}"),
        Err(CliError::Config(e)) => panic!("{args:?}: {e:#}"),
    }
}

fn config_error(args: &[&str]) -> String {
    match parse(args) {
        Err(CliError::Config(e)) => format!("{e:#}"),
        other => panic!("{args:?}: expected a config error, got {other:?}"),
    }
}

/// The sample's `# key = value` lines, uncommented: every option the sample documents, set.
fn sample_uncommented() -> String {
    let text = std::fs::read_to_string(repo_file("deploy/sensor.toml")).unwrap();
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                }) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sample_config_is_valid_and_sets_run_iface() {
    let path = repo_file("deploy/sensor.toml");
    let file = ConfigFile::load(&path).unwrap();
    file.validate(&schema()).unwrap();
    let args = file.args_for(&schema(), "run", None).unwrap();
    assert_eq!(args, ["--iface=eth1"]);
    let Command::Run(run) = parse_ok(&["run", "--config", path.to_str().unwrap()]) else {
        panic!()
    };
    assert_eq!(run.iface, ["eth1"]);
    assert_eq!(run.engine.suppress, Suppress::All);
}

/// Every option of every command that reads the file is a key the sample documents, and is
/// accepted with the sample's value: the sample with every example line uncommented is valid
/// and sets every option of every command.
#[test]
fn every_option_of_every_command_is_a_key() {
    let text = sample_uncommented();
    let path = config_file("every-option", &text);
    let file = ConfigFile::load(&path).unwrap();
    let schema = schema();
    file.validate(&schema).unwrap();
    let report = file.effective(&schema, check_values).unwrap();
    let mut checked = 0;
    for cmd in schema.commands() {
        let name = cmd.get_name();
        let set = file.args_for(&schema, name, None).unwrap();
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            // Hidden options are for tests and the bench (e.g. the offline-only classified UDP
            // policy), not for an operator's file.
            if ["help", "version", "config"].contains(&long) || arg.is_hide_set() {
                continue;
            }
            // eval takes neither --suppress nor --threshold: not among its options at all.
            let flag = format!("--{long}");
            assert!(
                set.iter()
                    .any(|a| a.to_str().unwrap().split('=').next() == Some(flag.as_str())),
                "[{name}] {long} is not set by the uncommented sample: {set:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked}");
    assert!(!report.contains("# default"), "{report}");
    assert!(!report.contains("not set"), "{report}");
    // And parsing a real command line with it gives the file's values.
    let Command::Eval(eval) = parse_ok(&["eval", "--config", path.to_str().unwrap(), "x.pcap"])
    else {
        panic!()
    };
    assert_eq!(eval.thresholds, [5, 10, 20, 50, 100, 200, 500, 1000]);
    assert_eq!(eval.labels.as_deref(), Some(Path::new("labels.csv")));
}

#[test]
fn command_line_beats_the_command_table_beats_detection() {
    let path = config_file(
        "precedence",
        "[detection]\nsuppress = \"none\"\nthreshold = 20\nlocal-nets = [\"10.0.0.0/8\", \"192.168.1.7\"]\n\
         [analyze]\nsuppress = \"ppr\"\njson = true\n",
    );
    let path = path.to_str().unwrap();
    let Command::Analyze(a) = parse_ok(&["analyze", "--config", path, "x.pcap"]) else {
        panic!()
    };
    assert_eq!(a.engine.suppress, Suppress::Ppr);
    assert_eq!(a.engine.threshold, Some(20));
    assert!(a.json);
    let nets: Vec<String> = a
        .engine
        .detection
        .local_nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.168.1.7/32"]);
    assert_eq!(a.pcaps, [PathBuf::from("x.pcap")]);
    let Command::Analyze(a) = parse_ok(&[
        "analyze",
        "--suppress",
        "predict",
        "--config",
        path,
        "--local-nets",
        "172.16.0.0/12",
        "x.pcap",
    ]) else {
        panic!()
    };
    assert_eq!(a.engine.suppress, Suppress::Predict);
    assert_eq!(a.engine.threshold, Some(20));
    assert_eq!(
        a.engine.detection.local_nets.len(),
        1,
        "replaced, not added to"
    );
    // [detection] applies to run as well; eval has no --suppress/--threshold and skips them.
    let Command::Eval(e) = parse_ok(&["eval", "--config", path, "x.pcap"]) else {
        panic!()
    };
    assert_eq!(e.engine.local_nets.len(), 2);
}

#[test]
fn a_required_option_may_come_from_the_file_only() {
    let path = config_file("required", "[run]\niface = [\"veth-a\", \"veth-b\"]\n");
    let Command::Run(run) = parse_ok(&["run", "--config", path.to_str().unwrap()]) else {
        panic!()
    };
    assert_eq!(run.iface, ["veth-a", "veth-b"]);
    // Without it, clap's own error, with the real usage line.
    let Err(CliError::Clap(e)) = parse(&["run"]) else {
        panic!()
    };
    assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    let Err(CliError::Clap(e)) = parse(&["analyze", "--bogus"]) else {
        panic!()
    };
    assert!(e.to_string().contains("<PCAPS>..."), "{e}");
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_their_line() {
    let path = config_file(
        "errors",
        "[run]\niface = \"eth1\"\nifac = \"x\"\nxdp_mode = \"skb\"\ndrain-ms = \"abc\"\n\
         [analyze]\nsuppress = \"sometimes\"\nthreshold = [1, 2]\npcaps = [\"a\"]\njson = 1\n\
         [nope]\nx = 1\n",
    );
    let p = path.display().to_string();
    let err = config_error(&["analyze", "--config", &p, "x.pcap"]);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{p}:3: [run] ifac: unknown key: `sensor run --help` lists the options"),
            format!("{p}:4: [run] xdp_mode: unknown key (did you mean xdp-mode?)"),
            format!(
                "{p}:5: [run] drain-ms: invalid value 'abc' for '--drain-ms <DRAIN_MS>': invalid digit found in string"
            ),
            format!(
                "{p}:7: [analyze] suppress: invalid value 'sometimes' for '--suppress <SUPPRESS>'"
            ),
            format!("{p}:8: [analyze] threshold: takes one value, not an array"),
            format!("{p}:9: [analyze] pcaps: unknown key: pcaps are given on the command line"),
            format!("{p}:10: [analyze] json: a switch: expects true or false"),
            format!(
                "{p}:11: unknown table [nope] (tables: run, prefilter, analyze, peers, eval, detection)"
            ),
        ]
    );
    let err = config_error(&["run", "--config", "/nonexistent/sensor.toml"]);
    assert!(err.starts_with("reading /nonexistent/sensor.toml"), "{err}");
    let bad = config_file("syntax", "[run]\niface = [\"eth1\"\n");
    let err = config_error(&["run", "--config", bad.to_str().unwrap()]);
    assert!(err.contains("not a valid TOML file"), "{err}");
    assert!(err.contains("line 2"), "{err}");
    let top = config_file("top", "iface = \"eth1\"\n");
    let err = config_error(&["run", "--config", top.to_str().unwrap()]);
    assert!(err.contains(":1: iface is outside a table"), "{err}");
}

#[test]
fn check_config_checks_values_and_prints_the_effective_settings() {
    let path = config_file(
        "check",
        "[detection]\nthreshold = 0x14\n[run]\niface = [\"eth1\", \"eth2\"]\nno-metrics = true\n",
    );
    let file = ConfigFile::load(&path).unwrap();
    let report = file.effective(&schema(), check_values).unwrap();
    let p = path.display();
    assert!(report.starts_with(&format!("# {p}: valid\n")), "{report}");
    for line in [
        format!("iface = [\"eth1\", \"eth2\"]  # {p}:4 [run]"),
        format!("no-metrics = true  # {p}:5 [run]"),
        format!("threshold = 0x14  # {p}:2 [detection]"),
        "xdp-mode = \"auto\"  # default".to_owned(),
        "metrics = \"127.0.0.1:9899\"  # default".to_owned(),
        "ppr-range = \"0.75,1.0\"  # default".to_owned(),
        "# duration: not set".to_owned(),
    ] {
        assert!(report.lines().any(|l| l == line), "{line:?} in\n{report}");
    }
    // The file's values are checked by the commands' own conversions too.
    let zero = config_file("check-zero", "[analyze]\nthreshold = 0\n");
    let err = ConfigFile::load(&zero)
        .unwrap()
        .effective(&schema(), check_values)
        .unwrap_err();
    assert!(
        format!("{err:#}").ends_with("[analyze]: --threshold must be at least 1"),
        "{err:#}"
    );
    // A run without its interfaces is valid, and says where they must come from.
    let empty = config_file("check-empty", "[run]\nduration = 10\n");
    let report = ConfigFile::load(&empty)
        .unwrap()
        .effective(&schema(), check_values)
        .unwrap();
    assert!(
        report.contains("# iface: not set (required: set it here or on the command line)"),
        "{report}"
    );
}

#[test]
fn ppr_range_parses_as_the_help_writes_it() {
    let Command::Analyze(a) = parse_ok(&["analyze", "--ppr-range", "0.5,1.25", "x.pcap"]) else {
        panic!()
    };
    let config = a.engine.config().unwrap();
    assert_eq!((config.ppr.lo, config.ppr.hi), (0.5, 1.25));
    let Command::Analyze(a) = parse_ok(&["analyze", "x.pcap"]) else {
        panic!()
    };
    assert_eq!(a.engine.detection.ppr_range, PprRange { lo: 0.75, hi: 1.0 });
    for bad in ["1.0,0.5", "0.75", "a,b", "-1,1"] {
        assert!(
            matches!(
                parse(&["analyze", "--ppr-range", bad, "x.pcap"]),
                Err(CliError::Clap(_))
            ),
            "{bad}"
        );
    }
}

#[test]
fn allow_lists_reach_the_scan_detector() {
    let Command::Run(r) = parse_ok(&[
        "run",
        "--iface",
        "x",
        "--skip-scan-sources",
        "192.0.2.66,2001:db8::1",
        "--skip-scan-nets",
        "198.51.100.77/24",
        "--local-nets",
        "10.1.2.3/8,192.168.0.1",
    ]) else {
        panic!()
    };
    let config = r.engine.config().unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let sources = &config.bro.skip_scan_sources;
    assert!(sources.contains(&ip("192.0.2.66")) && sources.contains(&ip("2001:db8::1")));
    assert!(
        sources.contains(&ip("255.255.255.255")),
        "Bro's default kept"
    );
    let nets: Vec<String> = config
        .bro
        .skip_scan_nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["198.51.100.0/24"]);
    let local: Vec<String> = config
        .bro
        .local_nets
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(local, ["10.0.0.0/8", "192.168.0.1/32"]);
    assert_eq!(config.trw.local_nets, config.bro.local_nets);
    let Err(CliError::Clap(e)) = parse(&["analyze", "--skip-scan-nets", "10.0.0.0/33", "x"]) else {
        panic!()
    };
    assert!(e.to_string().contains("is not a network"), "{e}");
}

#[test]
fn eval_takes_thresholds_not_threshold() {
    let Err(CliError::Clap(e)) = parse(&["eval", "--threshold", "20", "x.pcap"]) else {
        panic!()
    };
    assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
    assert!(e.to_string().contains("--thresholds"), "{e}");
}

/// Every subcommand of `sensor`.
fn subcommands() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn completions_and_man_pages_cover_every_subcommand() {
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        let script = String::from_utf8(docs::completions(shell)).unwrap();
        for sub in subcommands() {
            assert!(script.contains(&sub), "{shell}: {sub}");
        }
        assert!(script.contains("skip-scan-nets"), "{shell}: options too");
    }
    let man = String::from_utf8(docs::man().unwrap()).unwrap();
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq") || man.contains(".TH sensor"),
        "{man}"
    );
    for sub in subcommands() {
        assert!(
            man.contains(&format!("sensor\\-{}", sub.replace('-', "\\-"))),
            "{sub}"
        );
    }
    let dir = std::env::temp_dir().join(format!("sensor-man-{}", std::process::id()));
    docs::man_pages(&dir).unwrap();
    for sub in subcommands() {
        let page = std::fs::read_to_string(dir.join(format!("sensor-{sub}.1"))).unwrap();
        assert!(page.contains(".TH"), "{sub}");
    }
    let run = std::fs::read_to_string(dir.join("sensor-run.1")).unwrap();
    assert!(run.contains("\\-\\-iface"), "{run}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Every option in each subcommand's `--help` is documented in the README, and every
/// subcommand is named there.
#[test]
fn readme_mentions_every_option_of_every_subcommand() {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    let mentions = |word: &str| {
        readme.match_indices(word).any(|(at, _)| {
            !readme[at + word.len()..]
                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    };
    let mut missing = Vec::new();
    let mut cmd = Cli::command();
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        if !mentions(&format!("sensor {}", sub.get_name())) {
            missing.push(format!("sensor {}", sub.get_name()));
        }
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long != "help" && !mentions(&format!("--{long}")) {
                missing.push(format!("sensor {} --{long}", sub.get_name()));
            }
        }
    }
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}

/// Every option says what it does, and no help text points to an explanation "below" that
/// the command's `--help` does not print.
#[test]
fn every_option_has_help_and_no_dangling_reference() {
    let mut cmd = Cli::command();
    cmd.build();
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        for arg in sub.get_arguments() {
            let name = format!("sensor {} {}", sub.get_name(), arg.get_id());
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(!help.trim().is_empty(), "{name} has no help");
            assert!(
                !help.contains("below") || sub.get_after_long_help().is_some(),
                "{name}: {help:?} refers to nothing"
            );
        }
    }
}

/// The file is read through whatever clap definitions it is given: a command with kinds of
/// options `sensor` does not use yet (a counter, a switch that turns something off, a
/// repeatable option without a delimiter, a required one) needs nothing added.
#[test]
fn any_clap_option_is_a_key() {
    use clap::{Arg, ArgAction};
    let toy = clap::Command::new("toy")
        .arg(Arg::new("verbose").long("verbose").action(ArgAction::Count))
        .arg(
            Arg::new("no-color")
                .long("no-color")
                .action(ArgAction::SetFalse),
        )
        .arg(Arg::new("tag").long("tag").action(ArgAction::Append))
        .arg(
            Arg::new("ports")
                .long("ports")
                .value_delimiter(',')
                .value_parser(clap::value_parser!(u16)),
        )
        .arg(Arg::new("name").long("name").required(true))
        .arg(Arg::new("config").long("config"));
    let schema = config::Schema {
        root: clap::Command::new("prog").subcommand(toy),
        shared_name: "common",
        shared: clap::Command::new("common").arg(Arg::new("name").long("name")),
    };
    let path = config_file(
        "toy",
        "[common]\nname = \"x\"\n[toy]\nverbose = 3\nno-color = true\ntag = [\"a\", \"b\"]\nports = [80, 0x1bb]\n",
    );
    let file = ConfigFile::load(&path).unwrap();
    let args: Vec<String> = file
        .args_for(&schema, "toy", None)
        .unwrap()
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "--verbose",
            "--verbose",
            "--verbose",
            "--no-color",
            "--tag=a",
            "--tag=b",
            "--ports=80,443",
            "--name=x"
        ]
    );
    let bad = config_file(
        "toy-bad",
        "[toy]\nports = [80, 70000]\nverbose = \"lots\"\n",
    );
    let err = ConfigFile::load(&bad)
        .unwrap()
        .validate(&schema)
        .unwrap_err()
        .to_string();
    let p = bad.display();
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            format!("{p}:2: [toy] ports: invalid value '70000' for '--ports <ports>': 70000 is not in 0..=65535"),
            format!("{p}:3: [toy] verbose: expects a count"),
        ]
    );
}
