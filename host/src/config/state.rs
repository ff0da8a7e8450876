//! What app state a guest is granted: key-value buckets (`--keyvalue NAME=URL`, their size limits)
//! and config values (`--config-var KEY=VALUE`, `--config-file KEY=PATH`). Plain data; each
//! worker opens the backends and reads the files itself.
use crate::config::cli::ServeArgs;
use crate::config::settings::{bad, ConfigError};
use std::path::PathBuf;

/// Largest file a `--config-file` value may come from (a secret, a certificate, a small JSON).
pub const MAX_CONFIG_FILE_BYTES: u64 = 64 * 1024;
/// Most buckets and most config keys one app may be granted.
pub const MAX_GRANTS: usize = 256;

/// Where a bucket keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:PATH`: one SQLite file (WAL) shared by every worker of every generation.
    Sqlite(PathBuf),
}

/// One granted bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: String,
    pub backend: Backend,
    /// The URL as given, for messages.
    pub url: String,
}

/// The guest's key-value and config grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateSettings {
    pub buckets: Vec<BucketSpec>,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub config_vars: Vec<(String, String)>,
    pub config_files: Vec<(String, PathBuf)>,
}

/// `--keyvalue`, its limits, `--config-var` and `--config-file`, validated.
pub fn state_settings(args: &ServeArgs) -> Result<StateSettings, ConfigError> {
    let buckets = args.keyvalue.iter().map(|spec| bucket(spec)).collect::<Result<Vec<_>, _>>()?;
    no_duplicates("--keyvalue", buckets.iter().map(|b| b.name.as_str()))?;
    let config_vars = args
        .config_var
        .iter()
        .map(|kv| pair("--config-var", kv, "KEY=VALUE").map(|(k, v)| (k.to_string(), v.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let config_files = args.config_file.iter().map(|kv| config_file(kv)).collect::<Result<Vec<_>, _>>()?;
    let keys = config_vars.iter().map(|(k, _)| k.as_str()).chain(config_files.iter().map(|(k, _)| k.as_str()));
    no_duplicates("--config-var/--config-file", keys)?;
    if buckets.len() > MAX_GRANTS || config_vars.len() + config_files.len() > MAX_GRANTS {
        return Err(bad(format!("--keyvalue, --config-var, --config-file: at most {MAX_GRANTS} of each kind")));
    }
    Ok(StateSettings {
        buckets,
        max_key_bytes: args.keyvalue_max_key_size as usize,
        max_value_bytes: args.keyvalue_max_value_size as usize,
        config_vars,
        config_files,
    })
}

/// `NAME=VALUE` with a non-empty name.
fn pair<'a>(flag: &str, text: &'a str, shape: &str) -> Result<(&'a str, &'a str), ConfigError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k, v)),
        _ => Err(bad(format!("{flag} {text:?}: expected {shape}"))),
    }
}

fn bucket(spec: &str) -> Result<BucketSpec, ConfigError> {
    let (name, url) = pair("--keyvalue", spec, "NAME=URL such as default=sqlite:/var/lib/app/kv.db")?;
    let backend = match url.split_once(':') {
        Some(("sqlite", path)) if !path.is_empty() => {
            let path = PathBuf::from(path);
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(bad(format!("--keyvalue {spec:?}: {} is not a directory", parent.display())));
            }
            Backend::Sqlite(path)
        }
        Some(("redis" | "rediss", _)) => {
            return Err(bad(format!("--keyvalue {spec:?}: the Redis backend is not implemented yet; use sqlite:PATH")))
        }
        _ => return Err(bad(format!("--keyvalue {spec:?}: the URL must be sqlite:PATH"))),
    };
    Ok(BucketSpec { name: name.to_string(), backend, url: url.to_string() })
}

fn config_file(spec: &str) -> Result<(String, PathBuf), ConfigError> {
    let (key, path) = pair("--config-file", spec, "KEY=PATH")?;
    let path = PathBuf::from(path);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() && meta.len() <= MAX_CONFIG_FILE_BYTES => Ok((key.to_string(), path)),
        Ok(meta) if meta.is_file() => {
            Err(bad(format!("--config-file {spec:?}: larger than {MAX_CONFIG_FILE_BYTES} bytes")))
        }
        Ok(_) => Err(bad(format!("--config-file {spec:?}: not a regular file"))),
        Err(e) => Err(bad(format!("--config-file {spec:?}: cannot read it: {e}"))),
    }
}

fn no_duplicates<'a>(flag: &str, names: impl Iterator<Item = &'a str>) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            return Err(bad(format!("{flag}: {name:?} is given twice")));
        }
    }
    Ok(())
}
