//! Resolved settings: turns CLI arguments (and the environment) into validated `Settings`, failing
//! with one line that names the setting and the fix.
use crate::config::cli::ServeArgs;
use crate::guest::outbound::policy::AllowList;
use crate::guest::outbound::{Outbound, OutboundSettings};
use crate::log::access::AccessLogFormat;
use crate::log::{Level, LogTarget};
use crate::sys::binds::BindSpec;
use crate::tls::{ClientAuth, HttpProtocols, TlsSettings};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
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

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// HTTP request-head limits, with Gunicorn's names and defaults.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Longest request line in bytes; 0 = unlimited.
    pub line: usize,
    /// Most header fields.
    pub fields: usize,
    /// Longest header field (name + ": " + value) in bytes; 0 = unlimited.
    pub field_size: usize,
}

/// Everything the arbiter and workers need, validated.
#[derive(Debug, Clone)]
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
    /// Outbound HTTP policy and limits (`--allow-outbound` and friends), with each worker's
    /// count of open outbound connections.
    pub outbound: Arc<Outbound>,
    pub worker_tmp_dir: PathBuf,
    pub max_memory: usize,
    pub instance_slots: u32,
    /// Requests per guest instance (1 = fresh instance per request).
    pub instance_reuse: u32,
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
    pub queue: crate::metrics::queue_time::QueuePolicy,
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

/// Largest `--body-buffer-size`.
pub const MAX_BODY_BUFFER: usize = 64 << 20;

/// Watchdog timeout used when `--timeout 0` disables the request deadline.
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(30);

impl Settings {
    /// Validates CLI arguments against the process environment, and reads and checks the TLS
    /// files (so a bad certificate stops a start or a HUP before anything changes).
    pub fn from_args(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let settings = Self::resolve(args, &env)?;
        crate::tls::validate_tls_files(&settings).map_err(|e| bad(format!("{e:#}")))?;
        Ok(settings)
    }

    /// The HTTP versions served on a TLS (or plain) connection: `--http-protocols`, else h1+h2
    /// with TLS and h1 alone without.
    pub fn protocols(&self, tls: bool) -> HttpProtocols {
        self.http_protocols.unwrap_or(HttpProtocols { h1: true, h2: tls })
    }

    fn resolve(args: &ServeArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let binds = if args.bind.is_empty() {
            let default = match env("PORT") {
                Some(port) => format!("0.0.0.0:{port}"),
                None => "127.0.0.1:8000".to_string(),
            };
            vec![BindSpec::parse(&default).map_err(|e| bad(format!("$PORT: {e}")))?]
        } else {
            args.bind
                .iter()
                .map(|b| BindSpec::parse(b).map_err(|e| bad(format!("--bind {b}: {e}"))))
                .collect::<Result<_, _>>()?
        };

        let workers = match args.workers {
            Some(n) => n,
            None => match env("WEB_CONCURRENCY") {
                Some(v) => v.trim().parse::<usize>().map_err(|_| {
                    bad(format!("$WEB_CONCURRENCY={v:?} is not a whole number; set it to the worker count or unset it"))
                })?,
                None => available_cpus(),
            },
        };
        if workers == 0 {
            return Err(bad("--workers must be at least 1 (got 0)"));
        }
        positive("--threads", args.threads)?;
        positive("--worker-connections", args.worker_connections)?;
        if args.backlog < 1 {
            return Err(bad(format!("--backlog must be at least 1 (got {})", args.backlog)));
        }
        if args.limit_request_line > 8190 {
            return Err(bad(format!(
                "--limit-request-line must be between 0 (unlimited) and 8190 (got {})",
                args.limit_request_line
            )));
        }
        if args.limit_request_fields == 0 || args.limit_request_fields > 32768 {
            return Err(bad(format!(
                "--limit-request-fields must be between 1 and 32768 (got {})",
                args.limit_request_fields
            )));
        }
        if args.instance_slots == 0 {
            return Err(bad("--instance-slots must be at least 1 (got 0)"));
        }
        if args.instance_reuse == 0 {
            return Err(bad("--instance-reuse must be at least 1 (1 = a fresh instance per request; got 0)"));
        }

        for (flag, secs) in [
            ("--timeout", args.timeout),
            ("--max-request-time", args.max_request_time),
            ("--graceful-timeout", args.graceful_timeout),
            ("--keep-alive", args.keep_alive),
        ] {
            if secs > MAX_SECONDS {
                return Err(bad(format!("{flag} must be between 0 and {MAX_SECONDS} seconds (7 days; got {secs})")));
            }
        }
        for (flag, count) in [
            ("--max-requests", args.max_requests),
            ("--max-requests-jitter", args.max_requests_jitter),
            ("--keep-alive-max-requests", args.keep_alive_max_requests),
        ] {
            if count > MAX_REQUEST_COUNT {
                return Err(bad(format!("{flag} must be between 0 and {MAX_REQUEST_COUNT} (got {count})")));
            }
        }
        let seconds = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let request_timeout = seconds(args.timeout);
        let max_memory = parse_bytes(&args.max_memory).ok_or_else(|| {
            bad(format!("--max-memory {:?}: expected a size such as 512M, 1G or 65536", args.max_memory))
        })?;
        if !(64 * 1024..=4 << 30).contains(&max_memory) {
            return Err(bad(format!("--max-memory must be between 64K and 4G (got {})", args.max_memory)));
        }

        let body_limit = parse_bytes(&args.limit_request_body).ok_or_else(|| {
            bad(format!(
                "--limit-request-body {:?}: expected a size such as 100M, 1G or 65536 (0 = unlimited)",
                args.limit_request_body
            ))
        })? as u64;
        let body_pace = body_pace(args)?;
        if args.header_timeout > 3600 {
            return Err(bad(format!(
                "--header-timeout must be between 0 and 3600 seconds (got {})",
                args.header_timeout
            )));
        }

        let access_log_format =
            AccessLogFormat::parse(args.access_logformat.as_deref().unwrap_or(crate::log::access::DEFAULT_FORMAT))
                .map_err(|e| bad(format!("--access-logformat: {e}")))?;
        let log_level = Level::parse(&args.log_level).ok_or_else(|| {
            bad(format!("--log-level {:?}: expected one of debug, info, warning, error, critical", args.log_level))
        })?;

        let guest_env = args
            .env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(bad(format!("--env {kv:?}: expected KEY=VALUE"))),
            })
            .collect::<Result<_, _>>()?;
        let guest_dirs = args
            .dir
            .iter()
            .map(|spec| {
                let (host, guest) = match spec.split_once("::") {
                    Some((h, g)) => (h, g),
                    None => (spec.as_str(), spec.as_str()),
                };
                let host = PathBuf::from(host);
                if !host.is_dir() {
                    return Err(bad(format!("--dir {spec:?}: {} is not a directory", host.display())));
                }
                Ok((host, guest.to_string()))
            })
            .collect::<Result<_, _>>()?;

        let outbound = Outbound::new(outbound_settings(args)?);

        let worker_tmp_dir = match &args.worker_tmp_dir {
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(bad(format!("--worker-tmp-dir {}: not a directory", dir.display())));
                }
                dir.clone()
            }
            None => {
                let shm = PathBuf::from("/dev/shm");
                if shm.is_dir() {
                    shm
                } else {
                    std::env::temp_dir()
                }
            }
        };
        let tls = tls_settings(&args.tls)?;
        let http_protocols = match &args.tls.http_protocols {
            Some(text) => Some(HttpProtocols::parse(text).map_err(|e| bad(format!("--http-protocols {text:?}: {e}")))?),
            None => None,
        };
        if args.tls.handshake_timeout == 0 {
            return Err(bad("--handshake-timeout must be at least 1 second (got 0)"));
        }
        let cache_dir = match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir(env, nix::unistd::geteuid().is_root())?,
        };

        let admin_bind = args
            .admin_bind
            .as_deref()
            .map(|b| BindSpec::parse(b).map_err(|e| bad(format!("--admin-bind {b}: {e}"))))
            .transpose()?;
        let ephemeral = |spec: &BindSpec| matches!(spec, BindSpec::Tcp(text) if text.ends_with(":0"));
        if admin_bind.as_ref().is_some_and(|a| !ephemeral(a) && binds.contains(a)) {
            return Err(bad("--admin-bind must differ from every --bind (the admin endpoint is not the app's port)"));
        }
        let max_queue_time = match args.max_queue_time {
            None => None,
            Some(secs) if secs.is_finite() && secs > 0.0 && secs < 86_400.0 => Some(Duration::from_secs_f64(secs)),
            Some(secs) => {
                return Err(bad(format!(
                    "--max-queue-time must be a number of seconds above 0 (got {secs}); omit it to turn shedding off"
                )))
            }
        };
        let trusted = crate::metrics::queue_time::TrustedProxies::parse(&args.forwarded_allow_ips)
            .map_err(|e| bad(format!("--forwarded-allow-ips: {e}")))?;

        Ok(Settings {
            app: args.app.clone(),
            binds,
            workers,
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
            body_limit,
            body_pace,
            access_log: args.access_logfile.as_deref().map(LogTarget::parse_stdout_default),
            access_log_format,
            error_log: LogTarget::parse_stderr_default(&args.error_logfile),
            log_level,
            pid_file: args.pid.clone(),
            guest_env,
            guest_dirs,
            outbound,
            worker_tmp_dir,
            max_memory,
            instance_slots: args.instance_slots,
            instance_reuse: args.instance_reuse,
            cache_dir,
            tls,
            http_protocols,
            handshake_timeout: Duration::from_secs(args.tls.handshake_timeout),
            name: args.name.clone().unwrap_or_else(|| {
                args.app.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_else(|| "app".into())
            }),
            admin_bind,
            queue: crate::metrics::queue_time::QueuePolicy { trusted, max: max_queue_time },
        })
    }
}

/// Most outbound connections a worker may open by default.
const DEFAULT_OUTBOUND_CONNECTIONS: usize = 256;

fn outbound_settings(args: &ServeArgs) -> Result<OutboundSettings, ConfigError> {
    let allow = AllowList::parse(&args.allow_outbound).map_err(|e| bad(format!("--allow-outbound {e}")))?;
    positive("--outbound-max-concurrency", args.outbound_max_concurrency)?;
    let fd_limit = open_files_limit();
    let max_connections = match args.outbound_max_connections {
        None => DEFAULT_OUTBOUND_CONNECTIONS.min(fd_limit / 4).max(1),
        Some(n) if n >= 1 && n <= fd_limit / 2 => n,
        Some(n) => {
            return Err(bad(format!(
                "--outbound-max-connections must be between 1 and half the open-files limit ({}; got {n}): raise `ulimit -n` or lower it",
                fd_limit / 2
            )))
        }
    };
    if !(1..=600).contains(&args.outbound_connect_timeout) {
        return Err(bad(format!(
            "--outbound-connect-timeout must be between 1 and 600 seconds (got {})",
            args.outbound_connect_timeout
        )));
    }
    Ok(OutboundSettings {
        allow,
        max_concurrency: args.outbound_max_concurrency,
        max_connections,
        connect_timeout: Duration::from_secs(args.outbound_connect_timeout),
    })
}

/// The soft RLIMIT_NOFILE of this process (workers inherit it).
fn open_files_limit() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft).unwrap_or(usize::MAX),
        Err(_) => 1024,
    }
}

/// `--certfile`, `--keyfile`, `--ca-certs`, `--cert-reqs`, `--ciphers`: consistent or an error.
fn tls_settings(args: &crate::config::cli::TlsArgs) -> Result<Option<TlsSettings>, ConfigError> {
    let client_auth = match args.cert_reqs {
        0 => ClientAuth::None,
        1 => ClientAuth::Optional,
        2 => ClientAuth::Required,
        n => return Err(bad(format!("--cert-reqs must be 0 (none), 1 (optional) or 2 (required) (got {n})"))),
    };
    let Some(certfile) = args.certfile.clone() else {
        if client_auth != ClientAuth::None {
            return Err(bad("--cert-reqs needs TLS: add --certfile (and --keyfile)"));
        }
        return Ok(None);
    };
    if client_auth != ClientAuth::None && args.ca_certs.is_none() {
        return Err(bad(format!(
            "--cert-reqs {}: client certificates need --ca-certs FILE to check them against",
            args.cert_reqs
        )));
    }
    Ok(Some(TlsSettings {
        certfile,
        keyfile: args.keyfile.clone(),
        ca_certs: args.ca_certs.clone(),
        client_auth,
        ciphers: args.ciphers.clone(),
    }))
}

fn positive(name: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(bad(format!("{name} must be at least 1 (got 0)")));
    }
    Ok(())
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

/// Upper bound for the seconds-valued settings: far beyond any real use, and small enough that
/// `Instant + Duration` and millisecond conversions can never overflow.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Upper bound for `--max-requests` and its jitter: their sum (and jitter's `max + 1`) cannot overflow.
pub const MAX_REQUEST_COUNT: u64 = 1 << 40;

/// Parses `65536`, `64K`, `64KiB`, `512M`, `1G` (binary multiples).
/// `--body-buffer-size`, `--body-timeout` and `--body-min-rate`, bounded.
fn body_pace(args: &ServeArgs) -> Result<BodyPace, ConfigError> {
    let buffer = parse_bytes(&args.body_buffer_size).filter(|&b| b <= MAX_BODY_BUFFER).ok_or_else(|| {
        bad(format!(
            "--body-buffer-size {:?}: expected a size from 0 to 64M such as 1M or 65536",
            args.body_buffer_size
        ))
    })?;
    if args.body_timeout > 3600 {
        return Err(bad(format!("--body-timeout must be at most 3600 seconds (got {})", args.body_timeout)));
    }
    if args.body_min_rate == 0 || args.body_min_rate > 1 << 30 {
        return Err(bad(format!(
            "--body-min-rate must be between 1 and 1G bytes per second (got {})",
            args.body_min_rate
        )));
    }
    let grace = (args.body_timeout > 0).then(|| Duration::from_secs(args.body_timeout));
    Ok(BodyPace { buffer, grace, min_rate: args.body_min_rate })
}

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
        _ => return None,
    };
    number.checked_mul(1usize << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn byte_sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("65536"), Some(65536));
        assert_eq!(parse_bytes("64K"), Some(64 * 1024));
        assert_eq!(parse_bytes("512M"), Some(512 << 20));
        assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("12X"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
