//! Where `serve` settings come from: built-in defaults < config file (`-c PATH`, else
//! `./rustcorn.toml`) < `RUSTCORN_CMD_ARGS` < command line. Every layer speaks the CLI's own flag
//! names, so a flag added to `ServeArgs` is settable from every layer with no code here.
use crate::config::cli::{Cli, ServeArgs};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The config file read when no `-c/--config` is given, if it exists in the current directory.
pub const DEFAULT_CONFIG_FILE: &str = "rustcorn.toml";
/// Extra command-line flags from the environment, shell-split, between the file and the CLI.
pub const CMD_ARGS_ENV: &str = "RUSTCORN_CMD_ARGS";

/// One layer of settings, least authoritative first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    EnvCmdArgs,
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::EnvCmdArgs => write!(f, "{CMD_ARGS_ENV}"),
            Source::CommandLine => write!(f, "command line"),
        }
    }
}

/// Settings resolved from every layer, with the layer each given setting came from.
pub struct Resolved {
    pub args: ServeArgs,
    /// Argument id → (raw values, layer), for the settings some layer gave.
    pub given: BTreeMap<String, (Vec<OsString>, Source)>,
}

impl Resolved {
    /// The layer that set the flag `--long`, if any did.
    pub fn source_of_flag(&self, long: &str) -> Option<&Source> {
        let command = serve_command();
        let id = command.get_arguments().find(|a| a.get_long() == Some(long))?.get_id().to_string();
        self.given.get(&id).map(|(_, source)| source)
    }
}

/// Why settings could not be resolved: one line, naming the layer and the setting.
#[derive(Debug)]
pub enum LayerError {
    /// A problem clap reports for the command line itself (usage, --help, --version).
    Clap(clap::Error),
    Message(String),
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::Clap(e) => write!(f, "{}", first_line(&e.to_string())),
            LayerError::Message(m) => f.write_str(m),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim_start_matches("error: ").to_string()
}

/// The `serve` subcommand's definition, with APP optional so a layer may leave it out.
fn serve_command() -> clap::Command {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand").clone();
    serve.bin_name("rustcorn serve").mut_arg("app", |a| a.required(false))
}

/// Resolves `serve`'s settings from `cli_args` (everything after `serve`) and the other layers.
pub fn resolve(cli_args: &[OsString]) -> Result<Resolved, LayerError> {
    let command = serve_command();
    let cli = parse_layer(&command, cli_args).map_err(LayerError::Clap)?;
    let cli_given = given_values(&command, &cli);

    let env_args = match std::env::var_os(CMD_ARGS_ENV) {
        Some(text) => {
            let text = text.to_string_lossy().into_owned();
            let words = shlex::split(&text)
                .ok_or_else(|| LayerError::Message(format!("{CMD_ARGS_ENV}: unbalanced quotes in {text:?}")))?;
            words.into_iter().map(OsString::from).collect()
        }
        None => Vec::new(),
    };
    let env = parse_layer(&command, &env_args)
        .map_err(|e| LayerError::Message(format!("{CMD_ARGS_ENV}: {}", first_line(&e.to_string()))))?;
    let env_given = given_values(&command, &env);

    // -c/--config: the command line wins over RUSTCORN_CMD_ARGS; else ./rustcorn.toml if present.
    let config_path =
        cli_given.get("config").or_else(|| env_given.get("config")).and_then(|values| values.last()).map(PathBuf::from);
    let file_layer = match config_path {
        Some(path) => Some(read_config_file(&command, &path)?),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
            Some(read_config_file(&command, Path::new(DEFAULT_CONFIG_FILE))?)
        }
        None => None,
    };

    // A setting given by a more authoritative layer replaces the lower layer's (lists included).
    let mut given: BTreeMap<String, (Vec<OsString>, Source)> = BTreeMap::new();
    if let Some((path, values)) = file_layer {
        for (id, v) in values {
            given.insert(id, (v, Source::File(path.clone())));
        }
    }
    for (id, v) in env_given {
        given.insert(id, (v, Source::EnvCmdArgs));
    }
    for (id, v) in cli_given {
        given.insert(id, (v, Source::CommandLine));
    }

    let argv = to_argv(&command, &given);
    let full = Cli::command();
    let serve = full.find_subcommand("serve").expect("serve subcommand").clone();
    let matches = serve.try_get_matches_from(argv).map_err(|e| {
        if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
            LayerError::Message(
                "no app given: pass APP on the command line or set `app = \"PATH\"` in the config file".to_string(),
            )
        } else {
            LayerError::Message(first_line(&e.to_string()))
        }
    })?;
    let args = ServeArgs::from_arg_matches(&matches).map_err(|e| LayerError::Message(first_line(&e.to_string())))?;
    Ok(Resolved { args, given })
}

fn parse_layer(command: &clap::Command, args: &[OsString]) -> Result<ArgMatches, clap::Error> {
    let argv = std::iter::once(OsString::from("serve")).chain(args.iter().cloned());
    command.clone().try_get_matches_from(argv)
}

/// The raw values of every argument this layer itself gave.
fn given_values(command: &clap::Command, matches: &ArgMatches) -> BTreeMap<String, Vec<OsString>> {
    let mut given = BTreeMap::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let values: Vec<OsString> = match matches.get_raw(id) {
            Some(raw) => raw.map(|v| v.to_os_string()).collect(),
            None => Vec::new(),
        };
        given.insert(id.to_string(), values);
    }
    given
}

/// Rebuilds one command line from the merged layers (flags as `--long=value`, APP last).
fn to_argv(command: &clap::Command, given: &BTreeMap<String, (Vec<OsString>, Source)>) -> Vec<OsString> {
    let mut argv = vec![OsString::from("serve")];
    let mut app = None;
    for (id, (values, _)) in given {
        let Some(arg) = command.get_arguments().find(|a| a.get_id().as_str() == id) else {
            continue;
        };
        if arg.is_positional() {
            app = values.last().cloned();
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        if takes_no_value(arg) {
            if values.iter().all(|v| v != "false") {
                argv.push(format!("--{long}").into());
            }
            continue;
        }
        for value in values {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            argv.push(flag);
        }
    }
    if let Some(app) = app {
        argv.push("--".into());
        argv.push(app);
    }
    argv
}

fn takes_no_value(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count)
}

fn takes_many(arg: &clap::Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Reads a TOML config file whose keys are the long flag names (`-` or `_`), plus `app`.
/// Returns its path and the raw values of each argument it sets.
fn read_config_file(
    command: &clap::Command,
    path: &Path,
) -> Result<(PathBuf, BTreeMap<String, Vec<OsString>>), LayerError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LayerError::Message(format!("config file {shown}: cannot read it: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        LayerError::Message(format!("config file {shown}: not valid TOML: {}", e.message().trim()))
    })?;
    let mut given = BTreeMap::new();
    for (key, value) in &table {
        let (key, value) = named_table_as_list(key, value)
            .map_err(|why| LayerError::Message(format!("config file {shown}: [{key}]: {why}")))?;
        let (key, value) = (key.as_str(), &value);
        let arg = find_arg(command, key).ok_or_else(|| {
            LayerError::Message(format!(
                "config file {shown}: unknown key `{key}`; keys are `app` and the long flag names of `rustcorn serve --help`{}",
                suggestion(command, key)
            ))
        })?;
        let id = arg.get_id().to_string();
        if id == "config" {
            return Err(LayerError::Message(format!(
                "config file {shown}: key `{key}` is not allowed in a config file (pass -c on the command line)"
            )));
        }
        let values = toml_values(arg, key, value)
            .map_err(|why| LayerError::Message(format!("config file {shown}: key `{key}`: {why}")))?;
        // Let clap check the value itself (numbers, choices), naming the file and key on error.
        let probe =
            to_argv(command, &BTreeMap::from([(id.clone(), (values.clone(), Source::File(path.to_path_buf())))]));
        if let Err(e) = command.clone().try_get_matches_from(probe) {
            return Err(LayerError::Message(format!(
                "config file {shown}: key `{key}`: {}",
                first_line(&e.to_string())
            )));
        }
        given.insert(id, values);
    }
    Ok((path.to_path_buf(), given))
}

/// The tables that stand for a repeatable `NAME=VALUE` flag: `[keyvalue]` (`--keyvalue`) and
/// `[config]` (`--config-var`); any other key is returned as it is.
fn named_table_as_list(key: &str, value: &toml::Value) -> Result<(String, toml::Value), String> {
    let flag = match (key, value) {
        ("keyvalue", toml::Value::Table(_)) => "keyvalue",
        ("config", toml::Value::Table(_)) => "config-var",
        _ => return Ok((key.to_string(), value.clone())),
    };
    let toml::Value::Table(entries) = value else { unreachable!("matched a table above") };
    let items = entries
        .iter()
        .map(|(name, v)| match v {
            toml::Value::String(s) => Ok(toml::Value::String(format!("{name}={s}"))),
            toml::Value::Integer(i) => Ok(toml::Value::String(format!("{name}={i}"))),
            toml::Value::Float(x) => Ok(toml::Value::String(format!("{name}={x}"))),
            toml::Value::Boolean(b) => Ok(toml::Value::String(format!("{name}={b}"))),
            other => Err(format!("`{name}`: expected a string, got {}", other.type_str())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((flag.to_string(), toml::Value::Array(items)))
}

fn find_arg<'a>(command: &'a clap::Command, key: &str) -> Option<&'a clap::Arg> {
    let wanted = key.replace('_', "-");
    command.get_arguments().find(|arg| {
        let id = arg.get_id().as_str();
        let long_matches = arg
            .get_long_and_visible_aliases()
            .into_iter()
            .flatten()
            .chain(arg.get_all_aliases().into_iter().flatten())
            .any(|name| name.replace('_', "-") == wanted);
        long_matches || (arg.is_positional() && id == wanted)
    })
}

/// " (did you mean `x`?)" for a key one or two edits away from a real one.
fn suggestion(command: &clap::Command, key: &str) -> String {
    let key = key.replace('_', "-");
    command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| arg.get_long())
        .map(|long| (edit_distance(&key, long), long))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, long)| format!(" (did you mean `{long}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// A TOML value as the raw strings the flag takes, or why it has the wrong type.
fn toml_values(arg: &clap::Arg, key: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let scalar = |v: &toml::Value| -> Result<OsString, String> {
        match v {
            toml::Value::String(s) => Ok(s.into()),
            toml::Value::Integer(i) => Ok(i.to_string().into()),
            toml::Value::Float(x) => Ok(x.to_string().into()),
            other => Err(format!("expected a string or a number, got {}", other.type_str())),
        }
    };
    if takes_no_value(arg) {
        return match value {
            toml::Value::Boolean(b) => Ok(vec![b.to_string().into()]),
            other => Err(format!("expected true or false, got {}", other.type_str())),
        };
    }
    match value {
        toml::Value::Array(items) if takes_many(arg) => items.iter().map(scalar).collect(),
        toml::Value::Array(_) => Err(format!("takes one value, not a list (`{key} = \"...\"`)")),
        toml::Value::Table(_) => Err("expected a value, got a table".to_string()),
        toml::Value::Boolean(_) => Err("expected a string or a number, got a boolean".to_string()),
        other => Ok(vec![scalar(other)?]),
    }
}

/// `--print-config`: every visible setting, its value and where it came from.
pub fn print_config(resolved: &Resolved) -> String {
    let command = serve_command();
    let mut out = String::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.is_hide_set() || matches!(id, "help" | "version" | "config" | "print_config" | "check_config") {
            continue;
        }
        let name = if arg.is_positional() { "app".to_string() } else { arg.get_long().unwrap_or(id).to_string() };
        let (value, source) = match resolved.given.get(id) {
            Some((values, source)) => (show_values(arg, values), source.to_string()),
            None => default_of(arg, &name),
        };
        out.push_str(&format!("{name} = {value}  # {source}\n"));
    }
    out
}

/// Prefixes a settings error with the config file and key when the flag it names came from a
/// file, or with `RUSTCORN_CMD_ARGS` when it came from there.
pub fn attribute_to_layer(resolved: &Resolved, message: &str) -> String {
    let flag = message
        .split(|c: char| c.is_whitespace() || c == ':')
        .find_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-'));
    match flag.and_then(|flag| resolved.source_of_flag(flag).map(|source| (flag, source))) {
        Some((flag, Source::File(path))) => format!("config file {}: key `{flag}`: {message}", path.display()),
        Some((_, Source::EnvCmdArgs)) => format!("{CMD_ARGS_ENV}: {message}"),
        _ => message.to_string(),
    }
}

fn show_values(arg: &clap::Arg, values: &[OsString]) -> String {
    if takes_no_value(arg) {
        return values.iter().all(|v| v != "false").to_string();
    }
    let quoted: Vec<String> = values.iter().map(|v| format!("{:?}", v.to_string_lossy())).collect();
    if takes_many(arg) {
        format!("[{}]", quoted.join(", "))
    } else {
        quoted.join(" ")
    }
}

/// The default of a setting nobody gave, and where that default comes from.
fn default_of(arg: &clap::Arg, name: &str) -> (String, String) {
    let env_seed = |var: &str| std::env::var(var).ok().map(|v| (format!("{v:?}"), format!("default, from env {var}")));
    let seeded = match name {
        "workers" => env_seed("WEB_CONCURRENCY"),
        "bind" => env_seed("PORT").map(|(port, source)| (format!("[\"0.0.0.0:{}\"]", port.trim_matches('"')), source)),
        _ => None,
    };
    if let Some(seeded) = seeded {
        return seeded;
    }
    let defaults: Vec<OsString> = arg.get_default_values().iter().map(|v| v.to_os_string()).collect();
    let value = if takes_no_value(arg) {
        "false".to_string()
    } else if defaults.is_empty() {
        "(unset)".to_string()
    } else {
        show_values(arg, &defaults)
    };
    (value, "default".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn a_more_authoritative_list_replaces_the_lower_one() {
        let command = serve_command();
        let mut given = BTreeMap::new();
        given.insert("bind".to_string(), (os(&["unix:/a", "127.0.0.1:1"]), Source::File("f".into())));
        given.insert("bind".to_string(), (os(&["127.0.0.1:2"]), Source::CommandLine));
        let argv = to_argv(&command, &given);
        assert_eq!(argv, os(&["serve", "--bind=127.0.0.1:2"]));
    }

    #[test]
    fn toml_types_are_checked_per_flag() {
        let command = serve_command();
        let workers = find_arg(&command, "workers").unwrap();
        assert_eq!(toml_values(workers, "workers", &toml::Value::Integer(3)).unwrap(), os(&["3"]));
        assert!(toml_values(workers, "workers", &toml::Value::Boolean(true)).is_err());
        let bind = find_arg(&command, "bind").unwrap();
        let list = toml::Value::Array(vec![toml::Value::String("a".into()), toml::Value::String("b".into())]);
        assert_eq!(toml_values(bind, "bind", &list).unwrap(), os(&["a", "b"]));
        let field_size = find_arg(&command, "limit_request_field_size");
        assert!(field_size.is_some(), "underscore and dash spellings both find the flag");
    }

    #[test]
    fn near_misses_are_suggested() {
        let command = serve_command();
        assert_eq!(suggestion(&command, "wokers"), " (did you mean `workers`?)");
        assert_eq!(suggestion(&command, "zzzzzzzz"), "");
    }
}
