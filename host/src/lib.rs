//! rustcorn: Gunicorn's pre-fork process model for `wasi:http/proxy` WebAssembly components.
//!
//! The arbiter (single-threaded, never runs tokio or wasmtime) binds the listeners, has the app
//! compiled once in a short-lived child, and forks workers. Each worker builds its own tokio
//! runtime and wasmtime engine, maps the compiled app and serves HTTP/1.1 with a fresh instance
//! per request.

pub mod access_log;
pub mod app;
pub mod arbiter;
pub mod binds;
pub mod cli;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod deadline;
pub mod engine;
pub mod guest_output;
pub mod heartbeat;
pub mod layers;
pub mod logging;
pub mod pidfile;
pub mod privileges;
pub mod process_name;
pub mod reload_watch;
pub mod request;
pub mod response_body;
pub mod sd_notify;
pub mod signals;
pub mod upgrade;
pub mod worker;
