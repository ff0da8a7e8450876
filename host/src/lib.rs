//! rustcorn: Gunicorn's pre-fork process model for `wasi:http/proxy` WebAssembly components.
//!
//! The tree is laid out by the process that runs the code:
//! - `commands/`: the `serve`, `compile` and `check` entry points;
//! - `config/`: the command line, the config layers and the validated settings;
//! - `arbiter/`: the supervising process (its loop, the pure supervisor rules, reload, upgrade);
//! - `worker/`: a worker process (boot, accept loop, signals, drain);
//! - `http/`: the HTTP front every request of both versions passes before any guest code (TLS and
//!   version negotiation, h1 and h2 connections, socket timers, framing, admission, refusals);
//! - `guest/`: an admitted request inside a worker (store, instance, response body, request clock);
//! - `app/`: compiling and loading the component;
//! - `state/`: what the host keeps for guests across requests and workers (`wasi:keyvalue`
//!   buckets, `wasi:config` values);
//! - `net/`: IP networks, public addresses and host syntax (pure, no I/O);
//! - `sys/`: thin wrappers over the OS (signals, heartbeat pages, sockets, pid file, privileges);
//! - `log/`: the error log and the access log;
//! - `metrics/`: Prometheus metrics in shared memory across workers; `admin/`: the arbiter's
//!   admin endpoint (/metrics, /livez, /readyz).

mod admin;
mod app;
mod arbiter;
pub mod commands;
pub mod config;
mod guest;
mod http;
mod log;
mod metrics;
mod net;
mod state;
mod sys;
mod tls;
mod worker;

/// The request path up to where the guest would run, for the fuzz target in `fuzz/`.
pub mod fuzzing {
    #[cfg(feature = "fuzzing")]
    pub use crate::http::dry_run::with_default_settings;
    pub use crate::http::dry_run::{default_settings, exchange, split_by_both};
}
