//! Command-line definitions: `rustcorn serve|compile|check`, with Gunicorn's flag names.
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "rustcorn", version, about = "Gunicorn's process model for wasi:http components")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve a wasi:http component (.wasm) or a precompiled app (.cwasm) with pre-forked workers.
    Serve(Box<ServeArgs>),
    /// Compile a component ahead of time into a .cwasm file that `serve` can map directly.
    Compile(CompileArgs),
    /// Validate a component and print what it imports and exports (exit 0 if servable, 1 if not).
    Check(CheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CompileArgs {
    /// The component to compile.
    pub app: PathBuf,
    /// Where to write the compiled app.
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    pub output: PathBuf,
    /// Compile for another machine: a target triple such as aarch64-unknown-linux-gnu or
    /// x86_64-unknown-linux-gnu. [default: this machine, with its CPU features]
    #[arg(long = "target", value_name = "TRIPLE")]
    pub target: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// The component (.wasm) or precompiled app (.cwasm) to check.
    pub app: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The app: a wasi:http/proxy component (.wasm) or a file made by `rustcorn compile` (.cwasm).
    pub app: PathBuf,

    /// Socket to bind: HOST:PORT, [V6]:PORT or unix:PATH. Repeat for several.
    /// [default: 127.0.0.1:8000, or 0.0.0.0:$PORT when PORT is set]
    #[arg(short = 'b', long = "bind", value_name = "ADDRESS")]
    pub bind: Vec<String>,

    /// Number of worker processes. [default: $WEB_CONCURRENCY, else the CPUs this process may use]
    #[arg(short = 'w', long = "workers", value_name = "INT")]
    pub workers: Option<usize>,

    /// Runtime threads per worker: 1 = current-thread tokio runtime; N > 1 = multi-thread runtime.
    #[arg(long = "threads", value_name = "INT", default_value_t = 1)]
    pub threads: usize,

    /// Maximum simultaneous client connections per worker.
    #[arg(long = "worker-connections", value_name = "INT", default_value_t = 1000)]
    pub worker_connections: usize,

    /// Maximum number of pending connections in the listen queue.
    #[arg(long = "backlog", value_name = "INT", default_value_t = 2048)]
    pub backlog: i32,

    /// Per-request deadline in seconds without progress (response head or body bytes restart it);
    /// also the heartbeat watchdog timeout. 0 disables the request deadline.
    #[arg(short = 't', long = "timeout", value_name = "SECS", default_value_t = 30)]
    pub timeout: u64,

    /// Absolute cap on one request's duration in seconds, progress or not. 0 = no cap.
    #[arg(long = "max-request-time", value_name = "SECS", default_value_t = 0)]
    pub max_request_time: u64,

    /// Seconds workers get to finish in-flight requests after TERM before they are killed.
    #[arg(long = "graceful-timeout", value_name = "SECS", default_value_t = 30)]
    pub graceful_timeout: u64,

    /// Seconds an idle keep-alive connection stays open (longer than a load balancer's 60 s).
    #[arg(long = "keep-alive", value_name = "SECS", default_value_t = 75)]
    pub keep_alive: u64,

    /// Requests one keep-alive connection may carry (HTTP/2: streams) before the server closes
    /// it after the last response (`Connection: close`; GOAWAY on HTTP/2), so keep-alive clients
    /// reconnect now and then and spread over the workers. 0 = unlimited.
    #[arg(long = "keep-alive-max-requests", value_name = "INT", default_value_t = 1000)]
    pub keep_alive_max_requests: u64,

    /// Seconds a client gets to send a complete request head, counted from its first byte (from
    /// the accept for a connection's first request), apart from --keep-alive. 0 = no own limit.
    #[arg(long = "header-timeout", value_name = "SECS", default_value_t = 10)]
    pub header_timeout: u64,

    /// Recycle a worker after this many requests. 0 = never.
    #[arg(long = "max-requests", value_name = "INT", default_value_t = 0)]
    pub max_requests: u64,

    /// Add a random 0..=N to --max-requests per worker so workers do not recycle together.
    #[arg(long = "max-requests-jitter", value_name = "INT", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Maximum size of the HTTP request line in bytes (0 = unlimited, at most 8190).
    #[arg(long = "limit-request-line", value_name = "INT", default_value_t = 4094)]
    pub limit_request_line: usize,

    /// Maximum number of request header fields (at most 32768).
    #[arg(long = "limit-request-fields", value_name = "INT", default_value_t = 100)]
    pub limit_request_fields: usize,

    /// Maximum size of one request header field in bytes (0 = unlimited).
    #[arg(
        long = "limit-request-field_size",
        alias = "limit-request-field-size",
        value_name = "INT",
        default_value_t = 8190
    )]
    pub limit_request_field_size: usize,

    /// Largest request body in bytes (65536, 64K, 100M, 1G; 0 = unlimited): a larger declared
    /// Content-Length gets 413 at once; a chunked body is cut off when it passes the limit.
    #[arg(long = "limit-request-body", value_name = "BYTES", default_value = "100M")]
    pub limit_request_body: String,

    /// Request bodies up to this size (at most 64M; 0 = none) are read in full before the app is
    /// instantiated, so a slow upload holds a connection, never an instance slot (like nginx's
    /// client_body_buffer_size); of a larger body this much is read first, the rest streams.
    #[arg(long = "body-buffer-size", value_name = "BYTES", default_value = "1M")]
    pub body_buffer_size: String,

    /// Seconds a request body may take before it must keep up --body-min-rate: a body not done
    /// after SECS + bytes received / rate is cut, with 408 if the app has not answered yet
    /// (like Apache's mod_reqtimeout body=SECS,MinRate=RATE). 0 = no bound.
    #[arg(long = "body-timeout", value_name = "SECS", default_value_t = 20)]
    pub body_timeout: u64,

    /// Bytes per second a request body must average after --body-timeout (see there).
    #[arg(long = "body-min-rate", value_name = "BYTES", default_value_t = 500)]
    pub body_min_rate: u64,

    /// Access log file, or '-' for stdout. No access log unless set.
    #[arg(long = "access-logfile", value_name = "FILE")]
    pub access_logfile: Option<String>,

    /// Access log format with Gunicorn's atoms (%(h)s %(t)s "%(r)s" %(s)s ...).
    #[arg(long = "access-logformat", value_name = "STRING")]
    pub access_logformat: Option<String>,

    /// Error log file, or '-' for stderr.
    #[arg(long = "error-logfile", alias = "log-file", value_name = "FILE", default_value = "-")]
    pub error_logfile: String,

    /// Error log level: debug, info, warning, error, critical.
    #[arg(long = "log-level", value_name = "LEVEL", default_value = "info")]
    pub log_level: String,

    /// Write the arbiter's pid to this file (removed on exit).
    #[arg(short = 'p', long = "pid", value_name = "FILE")]
    pub pid: Option<PathBuf>,

    /// Environment variable for the guest, KEY=VALUE. Repeatable. The guest sees no other env.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Host directory to preopen for the guest: HOST[::GUEST] (GUEST defaults to HOST). Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    pub dir: Vec<String>,

    /// Key-value bucket the guest may open with wasi:keyvalue, NAME=URL; URL is sqlite:PATH (one
    /// SQLite file shared by every worker, created if missing) or redis://HOST:PORT[/DB]
    /// (rediss:// for TLS; shared by every machine, keys under a prefix of their own per bucket).
    /// Repeatable; also a [keyvalue] table in the config file. Without it the guest can open no
    /// bucket.
    #[arg(long = "keyvalue", value_name = "NAME=URL")]
    pub keyvalue: Vec<String>,

    /// Longest key (UTF-8 bytes) a guest may use in a key-value bucket.
    #[arg(long = "keyvalue-max-key-size", value_name = "BYTES", default_value_t = 1024)]
    pub keyvalue_max_key_size: u64,

    /// Largest value (bytes) a guest may store in a key-value bucket.
    #[arg(long = "keyvalue-max-value-size", value_name = "BYTES", default_value_t = 1 << 20)]
    pub keyvalue_max_value_size: u64,

    /// Config value the guest reads with wasi:config/store, KEY=VALUE. Repeatable; also a
    /// [config] table in the config file. The guest sees no other config.
    #[arg(long = "config-var", value_name = "KEY=VALUE")]
    pub config_var: Vec<String>,

    /// Config value read from a file, KEY=PATH (e.g. a mounted secret): read by each worker at
    /// boot, so again on HUP. --print-config shows the path, never the value. Repeatable.
    #[arg(long = "config-file", value_name = "KEY=PATH")]
    pub config_file: Vec<String>,

    /// Outbound HTTP the guest may make: SCHEME://HOST[:PORT] (scheme http, https or *; host a
    /// name, *.domain, *, an IP or a CIDR such as 10.0.0.0/8 or [fd00::]/8; port a number, * or
    /// omitted for the scheme's default). Repeatable. Without it the guest has no outbound HTTP.
    /// Loopback, private, link-local and other non-public addresses stay refused unless a
    /// pattern names the address (or its network) literally.
    #[arg(long = "allow-outbound", value_name = "PATTERN")]
    pub allow_outbound: Vec<String>,

    /// Outbound HTTP requests one guest instance may have in flight; beyond it the guest gets
    /// the connection-limit-reached error.
    #[arg(long = "outbound-max-concurrency", value_name = "INT", default_value_t = 16)]
    pub outbound_max_concurrency: usize,

    /// Open outbound connections per worker process (keeps the worker's file descriptors for
    /// its clients). [default: 256, or a quarter of RLIMIT_NOFILE if that is less]
    #[arg(long = "outbound-max-connections", value_name = "INT")]
    pub outbound_max_connections: Option<usize>,

    /// Seconds an outbound request may take to resolve, connect and finish its TLS handshake
    /// (a guest may ask for less, never more; also cut to the request's remaining time).
    #[arg(long = "outbound-connect-timeout", value_name = "SECS", default_value_t = 10)]
    pub outbound_connect_timeout: u64,

    /// Directory for the workers' heartbeat files. [default: /dev/shm if it exists, else the temp dir]
    #[arg(long = "worker-tmp-dir", value_name = "DIR")]
    pub worker_tmp_dir: Option<PathBuf>,

    /// Linear memory cap per guest instance, e.g. 512M, 1G, 65536.
    #[arg(long = "max-memory", value_name = "BYTES", default_value = "512M")]
    pub max_memory: String,

    /// Guest instances a worker can run at once (its pooling-allocator slots); beyond it: 503.
    #[arg(long = "instance-slots", value_name = "INT", default_value_t = 128)]
    pub instance_slots: u32,

    /// Bytes of each guest memory that a freed instance slot keeps resident, reset in place, so
    /// the next instance in it starts without page faults; pages past it are given back at once.
    #[arg(long = "instance-keep-resident", value_name = "BYTES", default_value = "16M")]
    pub instance_keep_resident: String,

    /// Seconds after which a worker gives back what its unused instance slots keep resident,
    /// beyond the most instances it ran at once in that time; 0 = never.
    #[arg(long = "instance-trim-after", value_name = "SECS", default_value_t = 20)]
    pub instance_trim_after: u64,

    /// Requests one guest instance may serve before it is dropped; 1 = a fresh instance per
    /// request (full isolation). A WASI 0.2 instance serves them one after another; a WASI 0.3
    /// one up to --instance-concurrency at once. Instances are dropped at once after a trap or
    /// timeout.
    #[arg(long = "instance-reuse", value_name = "INT", default_value_t = 1)]
    pub instance_reuse: u32,

    /// Requests one WASI 0.3 instance may serve at once, with --instance-reuse above 1. A trap or
    /// timeout in any of them fails every request on that instance. WASI 0.2 apps: no effect.
    #[arg(long = "instance-concurrency", value_name = "INT", default_value_t = 16)]
    pub instance_concurrency: u32,

    /// Where compiled apps are cached (created 0700; must be ours and not group/world-writable).
    /// [default: $XDG_CACHE_HOME/rustcorn, ~/.cache/rustcorn, or /var/cache/rustcorn for root]
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Config file (TOML; keys are these long flag names). [default: ./rustcorn.toml if present]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Resolve the settings and validate them and the app, print `ok` or the error, then exit.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// Print the resolved settings, each with where it came from, then exit.
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Change to this directory before loading the app (relative APP and paths resolve there).
    #[arg(long = "chdir", value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// File mode creation mask (octal, e.g. 0o027 or 027) for the arbiter and its workers:
    /// applies to unix sockets, pid and log files.
    #[arg(short = 'm', long = "umask", value_name = "INT")]
    pub umask: Option<String>,

    /// Process name in `ps`/`top`: `rustcorn:NAME` for the arbiter, `rcw:NAME` for workers
    /// (Linux keeps 15 bytes). [default: the app file's stem]
    #[arg(short = 'n', long = "name", value_name = "STRING")]
    pub name: Option<String>,

    /// Serve /metrics (Prometheus), /livez and /readyz at this address (any --bind syntax),
    /// from the arbiter; never reaches the app. [default: off]
    #[arg(long = "admin-bind", value_name = "ADDRESS")]
    pub admin_bind: Option<String>,

    /// Answer 503 at once, without running the app, to a request that waited longer than SECS
    /// (fractions allowed) since a trusted proxy stamped X-Request-Start. [default: off]
    #[arg(long = "max-queue-time", value_name = "SECS")]
    pub max_queue_time: Option<f64>,

    /// Proxies trusted to stamp X-Request-Start: comma-separated IPs or CIDR networks, or `*`.
    /// Peers on unix sockets are trusted.
    #[arg(long = "forwarded-allow-ips", value_name = "IPS", default_value = crate::config::queue::DEFAULT_FORWARDED_ALLOW_IPS)]
    pub forwarded_allow_ips: String,

    #[command(flatten)]
    pub ops: OpsArgs,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub gunicorn_only: GunicornOnlyFlags,
}

/// Operations flags (sockets, processes, development reload), read by the arbiter directly.
#[derive(Args, Debug, Clone, Default)]
pub struct OpsArgs {
    /// Each worker listens on its own SO_REUSEPORT socket (TCP binds); the kernel spreads
    /// connections across them.
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// Development: reload (like HUP) when the app file changes; polled once a second.
    #[arg(long = "reload")]
    pub reload: bool,

    /// With --reload: another file whose change triggers a reload. Repeatable.
    #[arg(long = "reload-extra-file", value_name = "FILE", requires = "reload")]
    pub reload_extra_file: Vec<PathBuf>,

    /// Detach from the terminal once the app is compiled and the sockets are bound; the command
    /// returns when the daemon is ready. Stdio goes to /dev/null: log to files.
    #[arg(short = 'D', long = "daemon")]
    pub daemon: bool,

    /// Workers run as this user (name or uid); the arbiter keeps its own identity.
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,

    /// Workers run with this group (name or gid). [default: the --user's primary group]
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
}

/// TLS and HTTP versions. TLS applies to every TCP bind; unix-socket binds stay plain.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// TLS certificate chain (PEM). Serves https (and HTTP/2 by ALPN) on every TCP bind.
    #[arg(long = "certfile", value_name = "FILE")]
    pub certfile: Option<PathBuf>,

    /// TLS private key (PEM). [default: read from --certfile]
    #[arg(long = "keyfile", value_name = "FILE", requires = "certfile")]
    pub keyfile: Option<PathBuf>,

    /// CA certificates (PEM) that client certificates must chain to (with --cert-reqs 1 or 2).
    #[arg(long = "ca-certs", value_name = "FILE", requires = "certfile")]
    pub ca_certs: Option<PathBuf>,

    /// Client certificates: 0 = not asked for, 1 = optional, 2 = required (mutual TLS).
    #[arg(long = "cert-reqs", value_name = "INT", default_value_t = 0)]
    pub cert_reqs: u8,

    /// TLS cipher suites, ':'-separated IANA or OpenSSL names (rustls has no OpenSSL cipher
    /// strings: names it lacks are reported and skipped). [default: rustls's suites]
    #[arg(long = "ciphers", value_name = "CIPHERS")]
    pub ciphers: Option<String>,

    /// Accepted for Gunicorn compatibility; rustcorn always handshakes in the connection's task.
    #[arg(long = "do-handshake-on-connect", hide = true)]
    pub do_handshake_on_connect: bool,

    /// Seconds a new connection gets to finish its TLS handshake (and, with h2 on a plain bind,
    /// to send its first bytes); it is then closed, freeing its --worker-connections slot.
    #[arg(long = "handshake-timeout", value_name = "SECS", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// HTTP versions to serve: h1, h2 or h1,h2. h2 is by ALPN on TLS and by prior knowledge on
    /// plain binds. [default: h1,h2 with --certfile, else h1]
    #[arg(long = "http-protocols", value_name = "LIST")]
    pub http_protocols: Option<String>,
}

/// Gunicorn flags that have no meaning for rustcorn. They are accepted so a Gunicorn command line
/// works with only the app swapped, and each one given is reported with a one-line warning.
#[derive(Args, Debug, Clone, Default)]
pub struct GunicornOnlyFlags {
    #[arg(short = 'k', long = "worker-class", value_name = "CLASS", hide = true)]
    pub worker_class: Option<String>,
    #[arg(long = "preload", hide = true)]
    pub preload: bool,
    #[arg(long = "no-sendfile", hide = true)]
    pub no_sendfile: bool,
    #[arg(long = "capture-output", hide = true)]
    pub capture_output: bool,
    #[arg(long = "enable-stdio-inheritance", alias = "R", hide = true)]
    pub enable_stdio_inheritance: bool,
    #[arg(long = "proxy-allow-from", value_name = "IPS", hide = true)]
    pub proxy_allow_from: Option<String>,
    #[arg(long = "statsd-host", value_name = "HOST", hide = true)]
    pub statsd_host: Option<String>,
    #[arg(long = "statsd-prefix", value_name = "PREFIX", hide = true)]
    pub statsd_prefix: Option<String>,
    #[arg(long = "log-config", value_name = "FILE", hide = true)]
    pub log_config: Option<String>,
    #[arg(long = "paste", alias = "paster", value_name = "FILE", hide = true)]
    pub paste: Option<String>,
    #[arg(long = "spew", hide = true)]
    pub spew: bool,
    #[arg(long = "initgroups", hide = true)]
    pub initgroups: bool,
    /// rustls negotiates TLS 1.2 or 1.3; Gunicorn deprecated this flag too.
    #[arg(long = "ssl-version", value_name = "VERSION", hide = true)]
    pub ssl_version: Option<String>,
    #[arg(long = "suppress-ragged-eofs", hide = true)]
    pub suppress_ragged_eofs: bool,
}

impl GunicornOnlyFlags {
    /// The flags given on this command line that rustcorn ignores, by name.
    pub fn given(&self) -> Vec<&'static str> {
        let mut given = Vec::new();
        let options: [(&'static str, bool); 14] = [
            ("--worker-class", self.worker_class.is_some()),
            ("--preload", self.preload),
            ("--no-sendfile", self.no_sendfile),
            ("--capture-output", self.capture_output),
            ("--enable-stdio-inheritance", self.enable_stdio_inheritance),
            ("--proxy-allow-from", self.proxy_allow_from.is_some()),
            ("--statsd-host", self.statsd_host.is_some()),
            ("--statsd-prefix", self.statsd_prefix.is_some()),
            ("--log-config", self.log_config.is_some()),
            ("--paste", self.paste.is_some()),
            ("--spew", self.spew),
            ("--initgroups", self.initgroups),
            ("--ssl-version", self.ssl_version.is_some()),
            ("--suppress-ragged-eofs", self.suppress_ragged_eofs),
        ];
        for (name, present) in options {
            if present {
                given.push(name);
            }
        }
        given
    }
}
