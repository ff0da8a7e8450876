//! Resolved settings: turns CLI arguments (and the environment) into validated `Settings`, failing
//! with one line that names the setting and the fix. Settings are plain data: each process
//! builds its own runtime objects (outbound client, TLS acceptor, engine) from them.
use crate::config::access_format::AccessLogFormat;
use crate::config::binds::BindSpec;
use crate::config::bounds;
use crate::config::cli::ServeArgs;
use crate::config::logging::{Level, LogTarget};
use crate::config::outbound::{outbound_settings, OutboundSettings};
use crate::config::queue::{queue_settings, QueueSettings};
use crate::config::state::{state_settings, StateSettings};
use crate::config::tls::{http_protocols, tls_settings, HttpProtocols, TlsSettings};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A bad setting: printed as one line, before any worker forks.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

pub(crate) fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// HTTP request-head limits, with Gunicorn's names and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request line in bytes; 0 = unlimited.
    pub line: usize,
    /// Most header fields.
    pub fields: usize,
    /// Longest header field (name + ": " + value) in bytes; 0 = unlimited.
    pub field_size: usize,
}

/// Everything the arbiter and workers need, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub app: PathBuf,
    pub binds: Vec<BindSpec>,
    pub workers: usize,
    pub threads: usize,
    pub worker_connections: usize,
    pub backlog: i32,
    /// Request deadline without progress; None = disabled.
    pub request_timeout: Option<Duration>,
    /// Absolute cap per request; None = disabled.
    pub max_request_time: Option<Duration>,
    /// How long a worker may stay silent before the watchdog replaces it.
    pub watchdog_timeout: Duration,
    pub graceful_timeout: Duration,
    pub keep_alive: Duration,
    /// `--keep-alive-max-requests`: requests (HTTP/2 streams) per connection; 0 = unlimited.
    pub keep_alive_max_requests: u64,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub limits: RequestLimits,
    /// `--header-timeout`; None = only the keep-alive bound.
    pub header_timeout: Option<Duration>,
    /// `--limit-request-body` in bytes; 0 = unlimited.
    pub body_limit: u64,
    /// `--body-buffer-size`, `--body-timeout`, `--body-min-rate`.
    pub body_pace: BodyPace,
    pub access_log: Option<LogTarget>,
    pub access_log_format: AccessLogFormat,
    pub error_log: LogTarget,
    pub log_level: Level,
    pub pid_file: Option<PathBuf>,
    pub guest_env: Vec<(String, String)>,
    pub guest_dirs: Vec<(PathBuf, String)>,
    /// Outbound HTTP policy and limits (`--allow-outbound` and friends); each worker builds its
    /// outbound client from them.
    pub outbound: OutboundSettings,
    /// Key-value buckets and config values granted to the guest (`--keyvalue`, `--config-var`...).
    pub state: StateSettings,
    pub worker_tmp_dir: PathBuf,
    pub max_memory: usize,
    pub instance_slots: u32,
    /// Requests per guest instance (1 = fresh instance per request).
    pub instance_reuse: u32,
    /// Requests one WASI 0.3 instance serves at once (with `instance_reuse` > 1).
    pub instance_concurrency: u32,
    /// `--instance-keep-resident` in bytes (at most `max_memory`).
    pub instance_keep_resident: usize,
    /// `--instance-trim-after`; None = never.
    pub instance_trim_after: Option<Duration>,
    pub cache_dir: PathBuf,
    /// `-n/--name`: what `ps` shows for the arbiter and workers.
    pub name: String,
    /// `--certfile` and friends: TLS on every TCP bind.
    pub tls: Option<TlsSettings>,
    /// `--http-protocols` as given; `protocols()` applies the default.
    pub http_protocols: Option<HttpProtocols>,
    /// `--handshake-timeout`.
    pub handshake_timeout: Duration,
    /// `--admin-bind`: where the arbiter serves /metrics, /livez and /readyz.
    pub admin_bind: Option<BindSpec>,
    /// `--max-queue-time` and `--forwarded-allow-ips`.
    pub queue: QueueSettings,
}

/// Watchdog timeout used when `--timeout 0` disables the request deadline.
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(30);

/// Smallest and largest `--max-memory`.
const MIN_MAX_MEMORY: usize = 64 * 1024;
const MAX_MAX_MEMORY: usize = 4 << 30;
/// Largest `--limit-request-body` (0 = unlimited): a terabyte, so byte counts never overflow.
pub const MAX_BODY_LIMIT: usize = 1 << 40;

impl Settings {
    /// Validates CLI arguments against the process environment (variables, directories, the
    /// open-files limit). The TLS files are read by the `tls` module.
    pub fn from_args(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        Self::resolve(args, &env)
    }

    /// The HTTP versions served on a TLS (or plain) connection: `--http-protocols`, else h1+h2
    /// with TLS and h1 alone without.
    pub fn protocols(&self, tls: bool) -> HttpProtocols {
        self.http_protocols.unwrap_or(HttpProtocols { h1: true, h2: tls })
    }

    /// What is valid but worth a warning at startup: grants that cover every address.
    pub fn warnings(&self) -> Vec<String> {
        self.outbound.allow.warnings()
    }

    fn resolve(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        bounds::check_ranges(args)?;
        let binds = binds(args, env)?;
        let admin_bind = admin_bind(args, &binds)?;
        let logs = LogSettings::resolve(args)?;
        let request_timeout = seconds(args.timeout);
        Ok(Settings {
            app: args.app.clone(),
            workers: worker_count(args, env)?,
            threads: args.threads,
            worker_connections: args.worker_connections,
            backlog: args.backlog,
            request_timeout,
            max_request_time: seconds(args.max_request_time),
            watchdog_timeout: request_timeout.unwrap_or(DEFAULT_WATCHDOG_TIMEOUT),
            graceful_timeout: Duration::from_secs(args.graceful_timeout),
            keep_alive: Duration::from_secs(args.keep_alive),
            keep_alive_max_requests: args.keep_alive_max_requests,
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            limits: RequestLimits {
                line: args.limit_request_line,
                fields: args.limit_request_fields,
                field_size: args.limit_request_field_size,
            },
            header_timeout: seconds(args.header_timeout),
            body_limit: body_limit(args)?,
            body_pace: body_pace(args)?,
            access_log: logs.access_log,
            access_log_format: logs.access_log_format,
            error_log: logs.error_log,
            log_level: logs.log_level,
            pid_file: args.pid.clone(),
            guest_env: guest_env(args)?,
            guest_dirs: guest_dirs(args)?,
            outbound: outbound_settings(args)?,
            state: state_settings(args)?,
            worker_tmp_dir: worker_tmp_dir(args)?,
            max_memory: max_memory(args)?,
            instance_slots: args.instance_slots,
            instance_reuse: args.instance_reuse,
            instance_concurrency: args.instance_concurrency,
            instance_keep_resident: instance_keep_resident(args)?,
            instance_trim_after: seconds(args.instance_trim_after),
            cache_dir: match &args.cache_dir {
                Some(dir) => dir.clone(),
                None => default_cache_dir(env, nix::unistd::geteuid().is_root())?,
            },
            name: process_name(args),
            tls: tls_settings(&args.tls)?,
            http_protocols: http_protocols(&args.tls)?,
            handshake_timeout: Duration::from_secs(args.tls.handshake_timeout),
            binds,
            admin_bind,
            queue: queue_settings(args)?,
        })
    }
}

/// `secs` as a duration; 0 = off.
fn seconds(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// `--bind`, else `0.0.0.0:$PORT`, else 127.0.0.1:8000.
fn binds(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<BindSpec>, ConfigError> {
    if !args.bind.is_empty() {
        return args.bind.iter().map(|b| BindSpec::parse(b).map_err(|e| bad(format!("--bind {b}: {e}")))).collect();
    }
    let default = match env("PORT") {
        Some(port) => format!("0.0.0.0:{port}"),
        None => "127.0.0.1:8000".to_string(),
    };
    Ok(vec![BindSpec::parse(&default).map_err(|e| bad(format!("$PORT: {e}")))?])
}

/// `--admin-bind`, which must not be one of the app's binds.
fn admin_bind(args: &ServeArgs, binds: &[BindSpec]) -> Result<Option<BindSpec>, ConfigError> {
    let admin_bind = args
        .admin_bind
        .as_deref()
        .map(|b| BindSpec::parse(b).map_err(|e| bad(format!("--admin-bind {b}: {e}"))))
        .transpose()?;
    let ephemeral = |spec: &BindSpec| matches!(spec, BindSpec::Tcp(text) if text.ends_with(":0"));
    if admin_bind.as_ref().is_some_and(|a| !ephemeral(a) && binds.contains(a)) {
        return Err(bad("--admin-bind must differ from every --bind (the admin endpoint is not the app's port)"));
    }
    Ok(admin_bind)
}

/// `--workers`, else `$WEB_CONCURRENCY`, else the CPUs this process may use.
fn worker_count(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<usize, ConfigError> {
    let workers = match (args.workers, env("WEB_CONCURRENCY")) {
        (Some(n), _) => n,
        (None, Some(v)) => {
            let n = v.trim().parse::<usize>().map_err(|_| {
                bad(format!("$WEB_CONCURRENCY={v:?} is not a whole number; set it to the worker count or unset it"))
            })?;
            bounds::WORKERS.check(n).map_err(|e| bad(format!("$WEB_CONCURRENCY: {e}")))?
        }
        (None, None) => available_cpus().min(bounds::WORKERS.max as usize),
    };
    bounds::WORKERS.check(workers)
}

/// The error log, the access log and its format, the log level.
struct LogSettings {
    access_log: Option<LogTarget>,
    access_log_format: AccessLogFormat,
    error_log: LogTarget,
    log_level: Level,
}

impl LogSettings {
    fn resolve(args: &ServeArgs) -> Result<LogSettings, ConfigError> {
        let format = args.access_logformat.as_deref().unwrap_or(crate::config::access_format::DEFAULT_FORMAT);
        let access_log_format = AccessLogFormat::parse(format).map_err(|e| bad(format!("--access-logformat: {e}")))?;
        let log_level = Level::parse(&args.log_level).ok_or_else(|| {
            bad(format!("--log-level {:?}: expected one of debug, info, warning, error, critical", args.log_level))
        })?;
        Ok(LogSettings {
            access_log: args.access_logfile.as_deref().map(LogTarget::parse_stdout_default),
            access_log_format,
            error_log: LogTarget::parse_stderr_default(&args.error_logfile),
            log_level,
        })
    }
}

/// `--max-memory`: a size from 64K to 4G.
fn max_memory(args: &ServeArgs) -> Result<usize, ConfigError> {
    let max_memory = parse_bytes(&args.max_memory)
        .ok_or_else(|| bad(format!("--max-memory {:?}: expected a size such as 512M, 1G or 65536", args.max_memory)))?;
    if !(MIN_MAX_MEMORY..=MAX_MAX_MEMORY).contains(&max_memory) {
        return Err(bad(format!("--max-memory must be between 64K and 4G (got {})", args.max_memory)));
    }
    Ok(max_memory)
}

/// `--instance-keep-resident`: a size up to the largest `--max-memory` (the engine keeps at most
/// `--max-memory` of it).
fn instance_keep_resident(args: &ServeArgs) -> Result<usize, ConfigError> {
    let text = &args.instance_keep_resident;
    parse_bytes(text).filter(|&bytes| bytes <= MAX_MAX_MEMORY).ok_or_else(|| {
        bad(format!("--instance-keep-resident {text:?}: expected a size from 0 to 4G such as 16M or 65536"))
    })
}

/// `--limit-request-body`: a size up to a terabyte; 0 = unlimited.
fn body_limit(args: &ServeArgs) -> Result<u64, ConfigError> {
    let text = &args.limit_request_body;
    let limit = parse_bytes(text).ok_or_else(|| {
        bad(format!("--limit-request-body {text:?}: expected a size such as 100M, 1G or 65536 (0 = unlimited)"))
    })?;
    if limit > MAX_BODY_LIMIT {
        return Err(bad(format!("--limit-request-body must be between 0 (unlimited) and 1T (got {text})")));
    }
    Ok(limit as u64)
}

/// How a request body is read before and while the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    /// Bytes read before the app is instantiated; 0 = none.
    pub buffer: usize,
    /// Time a body gets before it must keep up `min_rate`; None = no bound.
    pub grace: Option<Duration>,
    /// Bytes per second a body must average after `grace`.
    pub min_rate: u64,
}

/// `--body-buffer-size` (up to 64M), `--body-timeout` and `--body-min-rate` (ranges checked in
/// `bounds`).
fn body_pace(args: &ServeArgs) -> Result<BodyPace, ConfigError> {
    let text = &args.body_buffer_size;
    let buffer = parse_bytes(text).filter(|&bytes| bytes as u64 <= bounds::MAX_BODY_BUFFER).ok_or_else(|| {
        bad(format!("--body-buffer-size {text:?}: expected a size from 0 to 64M such as 1M or 65536"))
    })?;
    Ok(BodyPace { buffer, grace: seconds(args.body_timeout), min_rate: args.body_min_rate })
}

/// `--env KEY=VALUE`: the guest's whole environment.
fn guest_env(args: &ServeArgs) -> Result<Vec<(String, String)>, ConfigError> {
    args.env
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(bad(format!("--env {kv:?}: expected KEY=VALUE"))),
        })
        .collect()
}

/// `--dir HOST[::GUEST]`: each host side must be a directory.
fn guest_dirs(args: &ServeArgs) -> Result<Vec<(PathBuf, String)>, ConfigError> {
    args.dir
        .iter()
        .map(|spec| {
            let (host, guest) = spec.split_once("::").unwrap_or((spec.as_str(), spec.as_str()));
            let host = PathBuf::from(host);
            if !host.is_dir() {
                return Err(bad(format!("--dir {spec:?}: {} is not a directory", host.display())));
            }
            Ok((host, guest.to_string()))
        })
        .collect()
}

/// `--worker-tmp-dir`, else /dev/shm if it exists, else the temp dir.
fn worker_tmp_dir(args: &ServeArgs) -> Result<PathBuf, ConfigError> {
    match &args.worker_tmp_dir {
        Some(dir) if !dir.is_dir() => Err(bad(format!("--worker-tmp-dir {}: not a directory", dir.display()))),
        Some(dir) => Ok(dir.clone()),
        None => {
            let shm = PathBuf::from("/dev/shm");
            Ok(if shm.is_dir() { shm } else { std::env::temp_dir() })
        }
    }
}

/// `--name`, else the app file's stem.
fn process_name(args: &ServeArgs) -> String {
    args.name.clone().unwrap_or_else(|| {
        args.app.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_else(|| "app".into())
    })
}

/// CPUs this process may run on: honours CPU affinity and the cgroup CPU quota.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// `$XDG_CACHE_HOME/rustcorn`, `$HOME/.cache/rustcorn`, or for root `/var/cache/rustcorn`; never
/// a directory shared with other users (the compiled code in it runs as native code).
fn default_cache_dir(env: &dyn Fn(&str) -> Option<String>, is_root: bool) -> Result<PathBuf, ConfigError> {
    // The XDG base directory spec ignores relative paths: so do we.
    let absolute = |key: &str| env(key).map(PathBuf::from).filter(|path| path.is_absolute());
    if let Some(xdg) = absolute("XDG_CACHE_HOME") {
        return Ok(xdg.join("rustcorn"));
    }
    if let Some(home) = absolute("HOME") {
        return Ok(home.join(".cache").join("rustcorn"));
    }
    if is_root {
        return Ok(PathBuf::from(ROOT_CACHE_DIR));
    }
    Err(bad(
        "no private directory for the compile cache (neither HOME nor XDG_CACHE_HOME is set): pass --cache-dir DIR",
    ))
}

/// The compile cache of a root process with no HOME (e.g. a systemd unit without `User=`).
pub const ROOT_CACHE_DIR: &str = "/var/cache/rustcorn";

/// Parses `65536`, `64K`, `64KiB`, `512M`, `1G`, `1T` (binary multiples); None on overflow.
pub fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number: usize = number.parse().ok()?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    number.checked_mul(1usize << shift)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::ClientAuth;

    fn resolve_args(extra: &[&str]) -> Result<Settings, ConfigError> {
        use clap::Parser;
        let argv = ["rustcorn", "serve", "app.wasm"].iter().chain(extra.iter());
        let cli = crate::config::cli::Cli::try_parse_from(argv).expect("valid command line");
        let crate::config::cli::Command::Serve(args) = cli.command else { panic!("serve") };
        Settings::resolve(&args, &|_| None)
    }

    #[test]
    fn tls_flags_must_be_consistent() {
        let err = |extra: &[&str]| resolve_args(extra).unwrap_err().to_string();
        assert!(err(&["--cert-reqs", "3"]).contains("--cert-reqs must be 0"));
        assert!(err(&["--cert-reqs", "2"]).contains("--cert-reqs needs TLS"));
        assert!(err(&["--certfile", "c.pem", "--cert-reqs", "1"]).contains("need --ca-certs"));
        assert!(err(&["--http-protocols", "h3"]).contains("--http-protocols"));
        assert!(err(&["--handshake-timeout", "0"]).contains("--handshake-timeout"));
        let plain = resolve_args(&[]).unwrap();
        assert_eq!((plain.protocols(false).h2, plain.protocols(true).h2), (false, true));
        let tls = resolve_args(&["--certfile", "c.pem", "--http-protocols", "h1"]).unwrap();
        assert_eq!(tls.tls.as_ref().map(|t| t.client_auth), Some(ClientAuth::None));
        assert!(!tls.protocols(true).h2, "an explicit --http-protocols applies to TLS too");
    }

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| vars.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_cache_dir_is_never_a_shared_temp_dir() {
        let dir = |vars, root| default_cache_dir(&env_of(vars), root).map_err(|e| e.0);
        assert_eq!(dir(&[("HOME", "/home/a"), ("XDG_CACHE_HOME", "/x")], false), Ok("/x/rustcorn".into()));
        assert_eq!(dir(&[("HOME", "/home/a")], false), Ok("/home/a/.cache/rustcorn".into()));
        assert_eq!(dir(&[("HOME", "relative")], true), Ok(ROOT_CACHE_DIR.into()));
        assert_eq!(dir(&[], true), Ok(ROOT_CACHE_DIR.into()));
        let e = dir(&[], false).unwrap_err();
        assert!(e.contains("--cache-dir") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn extreme_timeouts_and_jitter_are_rejected_at_validation() {
        use clap::Parser;
        let settings = |extra: &[&str]| {
            let mut argv = vec!["rustcorn", "serve", "app.wasm", "--cache-dir", "/c", "-w", "1"];
            argv.extend_from_slice(extra);
            let crate::config::cli::Command::Serve(args) =
                crate::config::cli::Cli::try_parse_from(argv).unwrap().command
            else {
                unreachable!("parsed a serve command line")
            };
            Settings::resolve(&args, &env_of(&[])).map(|_| ()).map_err(|e| e.0)
        };
        assert_eq!(settings(&["--max-requests", "10", "--max-requests-jitter", "5"]), Ok(()));
        let max = u64::MAX.to_string();
        for (flag, value) in [
            ("--max-requests-jitter", max.as_str()),
            ("--max-requests", max.as_str()),
            ("--timeout", max.as_str()),
            ("--graceful-timeout", max.as_str()),
            ("--keep-alive", "604801"),
            ("--max-request-time", max.as_str()),
        ] {
            let e = settings(&[flag, value]).unwrap_err();
            assert!(e.starts_with(&format!("{flag} must be between 0 and")), "{e}");
        }
        assert_eq!(settings(&["--timeout", "604800", "--graceful-timeout", "604800"]), Ok(()));
    }

    #[test]
    fn sizes_and_counts_beyond_their_bounds_are_refused_with_one_line() {
        let err = |extra: &[&str]| resolve_args(extra).map(|_| ()).map_err(|e| e.0);
        let huge = u64::MAX.to_string();
        for (flag, value, message) in [
            (
                "--limit-request-field_size",
                huge.as_str(),
                "--limit-request-field_size must be between 0 (unlimited) and 65536",
            ),
            (
                "--limit-request-field_size",
                "65537",
                "--limit-request-field_size must be between 0 (unlimited) and 65536",
            ),
            ("-w", "1025", "--workers must be between 1 and 1024"),
            ("--threads", "1025", "--threads must be between 1 and 1024"),
            ("--worker-connections", "1048577", "--worker-connections must be between 1 and 1048576"),
            ("--backlog", "65536", "--backlog must be between 1 and 65535"),
            ("--instance-slots", "10001", "--instance-slots must be between 1 and 10000"),
            ("--instance-reuse", "4294967295", "--instance-reuse must be between 1 and 1000000"),
            ("--limit-request-line", "8191", "--limit-request-line must be between 0 (unlimited) and 8190"),
            ("--limit-request-fields", "32769", "--limit-request-fields must be between 1 and 32768"),
            ("--handshake-timeout", "3601", "--handshake-timeout must be between 1 and 3600 seconds"),
            ("--header-timeout", "3601", "--header-timeout must be between 0 and 3600 seconds"),
            ("--max-memory", "5G", "--max-memory must be between 64K and 4G"),
            ("--instance-keep-resident", "5G", "--instance-keep-resident \"5G\": expected a size from 0 to 4G"),
            ("--instance-keep-resident", "lots", "--instance-keep-resident \"lots\": expected a size"),
            ("--instance-trim-after", "86401", "--instance-trim-after must be between 0 (never) and 86400 seconds"),
            ("--limit-request-body", "2T", "--limit-request-body must be between 0 (unlimited) and 1T"),
            (
                "--limit-request-body",
                "99999999999999999999",
                "--limit-request-body \"99999999999999999999\": expected a size",
            ),
            ("--outbound-max-concurrency", "4097", "--outbound-max-concurrency must be between 1 and 4096"),
            ("--max-queue-time", "1e300", "--max-queue-time must be a number of seconds above 0 and below"),
        ] {
            let e = err(&[flag, value]).unwrap_err();
            assert!(e.starts_with(message), "{flag} {value}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        for (flag, value) in [
            ("--limit-request-field_size", "65536"),
            ("-w", "1024"),
            ("--instance-slots", "10000"),
            ("--limit-request-body", "1T"),
            ("--backlog", "65535"),
            ("--instance-keep-resident", "4G"),
            ("--instance-keep-resident", "0"),
            ("--instance-trim-after", "0"),
        ] {
            assert_eq!(err(&[flag, value]), Ok(()), "{flag} {value}");
        }
    }

    #[test]
    fn web_concurrency_is_bounded_like_workers() {
        let settings = |vars| {
            let cli =
                <crate::config::cli::Cli as clap::Parser>::try_parse_from(["rustcorn", "serve", "app.wasm"]).unwrap();
            let crate::config::cli::Command::Serve(args) = cli.command else { unreachable!("a serve command line") };
            Settings::resolve(&args, &env_of(vars)).map_err(|e| e.0)
        };
        assert_eq!(settings(&[("WEB_CONCURRENCY", "3"), ("HOME", "/h")]).map(|s| s.workers), Ok(3));
        let e = settings(&[("WEB_CONCURRENCY", "100000"), ("HOME", "/h")]).unwrap_err();
        assert!(e.starts_with("$WEB_CONCURRENCY: --workers must be between 1 and 1024"), "{e}");
    }

    #[test]
    fn settings_are_comparable_plain_data() {
        let a = resolve_args(&["--allow-outbound", "https://example.com", "--max-queue-time", "2"]).unwrap();
        let b = resolve_args(&["--allow-outbound", "https://example.com", "--max-queue-time", "2"]).unwrap();
        assert_eq!(a, b);
        let c = resolve_args(&["--allow-outbound", "https://example.org", "--max-queue-time", "2"]).unwrap();
        assert_ne!(a, c);
        assert!(format!("{a:?}").contains("example.com"), "printable");
    }

    #[test]
    fn grants_of_every_address_are_warned_about() {
        assert!(resolve_args(&["--allow-outbound", "http://*:*"]).unwrap().warnings().is_empty());
        let warnings = resolve_args(&["--allow-outbound", "http://0.0.0.0/0:*"]).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("--allow-outbound \"http://0.0.0.0/0:*\" grants every IPv4 address"));
    }

    #[test]
    fn byte_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("65536"), Some(65536));
        assert_eq!(parse_bytes("64K"), Some(64 * 1024));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("1T"), Some(1 << 40));
        assert_eq!(parse_bytes("12X"), None);
        assert_eq!(parse_bytes("99999999999T"), None, "overflow is no size");
        assert_eq!(parse_bytes(""), None);
    }
}
