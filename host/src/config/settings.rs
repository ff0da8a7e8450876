//! Resolved settings: turns CLI arguments (and the environment) into validated `Settings`, failing
//! with one line that names the setting and the fix.
use crate::config::cli::ServeArgs;
use crate::log::access::AccessLogFormat;
use crate::log::{Level, LogTarget};
use crate::sys::binds::BindSpec;
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
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub limits: RequestLimits,
    /// `--header-timeout`; None = only the keep-alive bound.
    pub header_timeout: Option<Duration>,
    /// `--limit-request-body` in bytes; 0 = unlimited.
    pub body_limit: u64,
    pub access_log: Option<LogTarget>,
    pub access_log_format: AccessLogFormat,
    pub error_log: LogTarget,
    pub log_level: Level,
    pub pid_file: Option<PathBuf>,
    pub guest_env: Vec<(String, String)>,
    pub guest_dirs: Vec<(PathBuf, String)>,
    pub worker_tmp_dir: PathBuf,
    pub max_memory: usize,
    pub instance_slots: u32,
    /// Requests per guest instance (1 = fresh instance per request).
    pub instance_reuse: u32,
    pub cache_dir: PathBuf,
    /// `-n/--name`: what `ps` shows for the arbiter and workers.
    pub name: String,
}

/// Watchdog timeout used when `--timeout 0` disables the request deadline.
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(30);

impl Settings {
    /// Validates CLI arguments against the process environment.
    pub fn from_args(args: &ServeArgs) -> Result<Settings, ConfigError> {
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        Self::resolve(args, &env)
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
        let cache_dir = match &args.cache_dir {
            Some(dir) => dir.clone(),
            None => default_cache_dir(env),
        };

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
            max_requests: args.max_requests,
            max_requests_jitter: args.max_requests_jitter,
            limits: RequestLimits {
                line: args.limit_request_line,
                fields: args.limit_request_fields,
                field_size: args.limit_request_field_size,
            },
            header_timeout: seconds(args.header_timeout),
            body_limit,
            access_log: args.access_logfile.as_deref().map(LogTarget::parse_stdout_default),
            access_log_format,
            error_log: LogTarget::parse_stderr_default(&args.error_logfile),
            log_level,
            pid_file: args.pid.clone(),
            guest_env,
            guest_dirs,
            worker_tmp_dir,
            max_memory,
            instance_slots: args.instance_slots,
            instance_reuse: args.instance_reuse,
            cache_dir,
            name: args.name.clone().unwrap_or_else(|| {
                args.app.file_stem().map(|stem| stem.to_string_lossy().into_owned()).unwrap_or_else(|| "app".into())
            }),
        })
    }
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

fn default_cache_dir(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("rustcorn");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".cache").join("rustcorn");
    }
    std::env::temp_dir().join("rustcorn-cache")
}

/// Parses `65536`, `64K`, `64KiB`, `512M`, `1G` (binary multiples).
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
