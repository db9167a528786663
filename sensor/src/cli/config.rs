//! The config file: TOML, one table per subcommand (`[run]`, `[analyze]`, …) and a shared
//! table (`[detection]`) for the options several commands take. Keys are the long option names
//! (`xdp-mode`, `ppr-range`), and nothing here lists them: every key is looked up in the
//! command's clap definition, and every value is turned into the argument it stands for
//! (`--key=value`; an array repeats the option) and parsed by clap's own parser, so an option
//! added to a command is a key of its table at once, type-checked like its flag.
//!
//! Precedence: the command line, then the command's own table, then the shared table, then
//! the defaults. "Given on the command line" is clap's `ValueSource::CommandLine`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// What a config file may hold.
pub struct Schema {
    /// The program's command; its subcommands with a `config` argument each have a table.
    pub root: Command,
    /// The shared table's name, and a command holding its options: a key there applies to
    /// every command that has the option.
    pub shared_name: &'static str,
    pub shared: Command,
}

impl Schema {
    /// The subcommands that read the config file.
    pub fn commands(&self) -> impl Iterator<Item = &Command> {
        self.root
            .get_subcommands()
            .filter(|c| c.get_arguments().any(|a| a.get_id() == "config"))
    }

    fn command(&self, name: &str) -> Option<&Command> {
        self.commands().find(|c| c.get_name() == name)
    }

    fn table_names(&self) -> String {
        let mut names: Vec<&str> = self.commands().map(Command::get_name).collect();
        names.push(self.shared_name);
        names.join(", ")
    }
}

/// `cmd` and its subcommands with no argument required: options may come from the file, and
/// a value is checked alone.
pub fn relaxed(cmd: Command) -> Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    let mut cmd = cmd
        .mut_args(|a| a.required(false))
        .color(clap::ColorChoice::Never);
    for name in names {
        cmd = cmd.mut_subcommand(name, relaxed);
    }
    cmd
}

/// One `key = value` of a table.
struct Entry {
    key: String,
    line: usize,
    value: Value,
    /// The value as written in the file.
    raw: String,
}

/// One table of the file.
struct Table {
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

/// A config file, parsed as TOML (its keys not yet checked).
pub struct ConfigFile {
    path: PathBuf,
    tables: Vec<Table>,
}

/// Where an option's effective value comes from.
enum Source<'a> {
    File(&'a Table, &'a Entry),
    Default,
    Unset,
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Self> {
        let doc = DeTable::parse(text).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a valid TOML file: {}",
                path.display(),
                e.to_string().trim()
            )
        })?;
        let line = |at: usize| text[..at].matches('\n').count() + 1;
        let mut tables = Vec::new();
        for (name, value) in doc.get_ref() {
            let DeValue::Table(table) = value.get_ref() else {
                anyhow::bail!(
                    "{}:{}: {} is outside a table: options go under [COMMAND] (e.g. [run])",
                    path.display(),
                    line(name.span().start),
                    name.get_ref(),
                );
            };
            let mut entries: Vec<Entry> = table
                .iter()
                .map(|(k, v)| Entry {
                    key: k.get_ref().to_string(),
                    line: line(k.span().start),
                    value: Value::from_toml(v.get_ref()),
                    raw: text[v.span()].to_owned(),
                })
                .collect();
            // TOML tables come sorted by key: report in the file's order.
            entries.sort_by_key(|e| e.line);
            tables.push(Table {
                name: name.get_ref().to_string(),
                line: line(name.span().start),
                entries,
            });
        }
        tables.sort_by_key(|t| t.line);
        Ok(ConfigFile {
            path: path.to_owned(),
            tables,
        })
    }

    /// Checks every table and key of the file against `schema`: all the errors, one a line.
    pub fn validate(&self, schema: &Schema) -> anyhow::Result<()> {
        let mut errors = Vec::new();
        for table in &self.tables {
            let cmd = if table.name == schema.shared_name {
                &schema.shared
            } else if let Some(cmd) = schema.command(&table.name) {
                cmd
            } else {
                errors.push(format!(
                    "{}:{}: unknown table [{}] (tables: {})",
                    self.path.display(),
                    table.line,
                    table.name,
                    schema.table_names()
                ));
                continue;
            };
            let relaxed = relaxed(cmd.clone());
            for entry in &table.entries {
                if let Err(e) = check_entry(&relaxed, entry) {
                    errors.push(format!(
                        "{}:{}: [{}] {}: {e}",
                        self.path.display(),
                        entry.line,
                        table.name,
                        entry.key
                    ));
                }
            }
        }
        anyhow::ensure!(errors.is_empty(), "{}", errors.join("\n"));
        Ok(())
    }

    /// The arguments the file adds to command `name`'s command line, whose parsed form is
    /// `matches` (options given there are left out). The whole file is validated first.
    pub fn args_for(
        &self,
        schema: &Schema,
        name: &str,
        matches: Option<&ArgMatches>,
    ) -> anyhow::Result<Vec<OsString>> {
        self.validate(schema)?;
        let Some(cmd) = schema.command(name) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for arg in options(cmd) {
            let given = matches.and_then(|m| m.value_source(arg.get_id().as_str()));
            if given == Some(ValueSource::CommandLine) {
                continue;
            }
            if let Source::File(_, entry) = self.source(schema, name, arg) {
                out.extend(fragment(arg, &entry.value).expect("validated"));
            }
        }
        Ok(out)
    }

    /// The setting of `arg` for command `name`: its own table, else the shared table.
    fn source(&self, schema: &Schema, name: &str, arg: &Arg) -> Source<'_> {
        let long = arg.get_long();
        let find = |table: &str| {
            self.tables
                .iter()
                .filter(|t| t.name == table)
                .flat_map(|t| t.entries.iter().map(move |e| (t, e)))
                .find(|(_, e)| Some(e.key.as_str()) == long)
        };
        let shared_has = schema.shared.get_arguments().any(|a| a.get_long() == long);
        let found = find(name).or_else(|| shared_has.then(|| find(schema.shared_name)).flatten());
        match found {
            Some((t, e)) => Source::File(t, e),
            None if arg.get_default_values().is_empty() && takes_values(arg) => Source::Unset,
            None => Source::Default,
        }
    }

    /// For `check-config`: the file validated, each command it configures checked by `check`
    /// (given the command's name and the file's arguments for it), then the effective settings
    /// of those commands as TOML, each line saying where its value comes from.
    pub fn effective(
        &self,
        schema: &Schema,
        check: impl Fn(&str, Vec<OsString>) -> anyhow::Result<()>,
    ) -> anyhow::Result<String> {
        self.validate(schema)?;
        let path = self.path.display();
        let mut out = format!("# {path}: valid\n");
        let mut any = false;
        for cmd in schema.commands() {
            let name = cmd.get_name();
            let settings: BTreeMap<&str, Source> = options(cmd)
                .map(|a| {
                    (
                        a.get_long().unwrap_or_default(),
                        self.source(schema, name, a),
                    )
                })
                .collect();
            if !settings.values().any(|s| matches!(s, Source::File(..))) {
                continue;
            }
            any = true;
            let args = self.args_for(schema, name, None)?;
            check(name, args).with_context(|| format!("{path}: [{name}]"))?;
            let _ = writeln!(out, "\n[{name}]");
            for arg in options(cmd) {
                let long = arg.get_long().unwrap_or_default();
                out.push_str(&setting_line(&path.to_string(), arg, &settings[long]));
            }
        }
        if !any {
            out.push_str("# no settings: every command runs with its defaults\n");
        }
        Ok(out)
    }
}

/// The options of `cmd` a file may set: those with a long name, but not `--help`,
/// `--version`, `--config` itself, or hidden options (test and bench switches, such as the
/// offline-only classified UDP policy, are no operator's settings).
fn options(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments().filter(|a| {
        a.get_long().is_some()
            && !a.is_hide_set()
            && a.get_id() != "config"
            && !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
            )
    })
}

fn takes_values(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

/// `key = value  # where from`, for `check-config`.
fn setting_line(path: &str, arg: &Arg, source: &Source) -> String {
    let key = arg.get_long().unwrap_or_default();
    match source {
        Source::File(table, entry) => {
            let raw = entry.raw.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{key} = {raw}  # {path}:{} [{}]\n", entry.line, table.name)
        }
        Source::Default if !takes_values(arg) => {
            let on = matches!(arg.get_action(), ArgAction::SetFalse);
            format!("{key} = {on}  # default\n")
        }
        Source::Default => {
            let values: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| toml_scalar(&v.to_string_lossy()))
                .collect();
            let value = if values.len() == 1 {
                values[0].clone()
            } else {
                format!("[{}]", values.join(", "))
            };
            format!("{key} = {value}  # default\n")
        }
        Source::Unset if arg.is_required_set() => {
            format!("# {key}: not set (required: set it here or on the command line)\n")
        }
        Source::Unset => format!("# {key}: not set\n"),
    }
}

/// A default value as TOML: numbers bare, anything else a quoted string.
fn toml_scalar(s: &str) -> String {
    if s.parse::<i64>().is_ok() || s.parse::<f64>().is_ok_and(f64::is_finite) {
        s.to_owned()
    } else {
        toml::Value::String(s.to_owned()).to_string()
    }
}

/// Checks one `key = value` of a table whose options are `cmd`'s (relaxed): the key names an
/// option, and clap accepts the value.
fn check_entry(cmd: &Command, entry: &Entry) -> Result<(), String> {
    let arg = find_option(cmd, &entry.key)?;
    let fragment = fragment(arg, &entry.value)?;
    let argv = std::iter::once(OsString::from(cmd.get_name())).chain(fragment);
    match cmd.clone().try_get_matches_from(argv) {
        Ok(_) => Ok(()),
        Err(e) => Err(clap_message(&e)),
    }
}

/// The first line of clap's message, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The option of `cmd` whose long name is `key`.
fn find_option<'a>(cmd: &'a Command, key: &str) -> Result<&'a Arg, String> {
    if let Some(arg) = options(cmd).find(|a| a.get_long() == Some(key)) {
        return Ok(arg);
    }
    if cmd.get_positionals().any(|a| a.get_id() == key) {
        return Err(format!("unknown key: {key} are given on the command line"));
    }
    let dashed = key.replace('_', "-");
    if options(cmd).any(|a| a.get_long() == Some(dashed.as_str())) {
        return Err(format!("unknown key (did you mean {dashed}?)"));
    }
    Err(format!(
        "unknown key: `sensor {} --help` lists the options",
        cmd.get_name()
    ))
}

/// A value of the file, owned: scalars as the text clap would read on a command line.
#[derive(Clone, Debug)]
enum Value {
    Bool(bool),
    Scalar(String),
    Array(Vec<Value>),
    Table,
}

impl Value {
    fn from_toml(value: &DeValue<'_>) -> Value {
        match value {
            DeValue::String(s) => Value::Scalar(s.to_string()),
            // Hexadecimal, octal and binary integers in decimal, as clap's parsers read them.
            DeValue::Integer(i) => Value::Scalar(
                i128::from_str_radix(i.as_str(), i.radix())
                    .map_or_else(|_| i.to_string(), |n| n.to_string()),
            ),
            DeValue::Float(f) => Value::Scalar(f.as_str().to_owned()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::Scalar(d.to_string()),
            DeValue::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| Value::from_toml(v.get_ref()))
                    .collect(),
            ),
            DeValue::Table(_) => Value::Table,
        }
    }

    fn scalar(&self) -> Result<String, String> {
        match self {
            Value::Bool(b) => Ok(b.to_string()),
            Value::Scalar(s) => Ok(s.clone()),
            Value::Array(_) | Value::Table => Err("expects a string, a number or a boolean".into()),
        }
    }
}

/// The command-line arguments that `value` stands for as the setting of `arg`: a switch is
/// given for `true`; an array repeats an option that can be repeated, and is joined with the
/// option's delimiter for one that takes a list (`--thresholds 5,10`).
fn fragment(arg: &Arg, value: &Value) -> Result<Vec<OsString>, String> {
    let flag = format!("--{}", arg.get_long().unwrap_or_default());
    let with = |v: &str| OsString::from(format!("{flag}={v}"));
    match (arg.get_action(), value) {
        (ArgAction::SetTrue | ArgAction::SetFalse, Value::Bool(on)) => {
            Ok(if *on { vec![flag.into()] } else { vec![] })
        }
        (ArgAction::SetTrue | ArgAction::SetFalse, _) => {
            Err("a switch: expects true or false".into())
        }
        (ArgAction::Count, v) => {
            let n: usize = v.scalar()?.parse().map_err(|_| "expects a count")?;
            Ok(vec![flag.into(); n])
        }
        (ArgAction::Append, Value::Array(items)) => {
            items.iter().map(|v| v.scalar().map(|s| with(&s))).collect()
        }
        (_, Value::Array(items)) => {
            let Some(delimiter) = arg.get_value_delimiter() else {
                return Err("takes one value, not an array".into());
            };
            let items = items
                .iter()
                .map(Value::scalar)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(vec![with(&items.join(&delimiter.to_string()))])
        }
        (_, v) => Ok(vec![with(&v.scalar()?)]),
    }
}
