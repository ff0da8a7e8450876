//! Prometheus metrics across forked workers: a shared-memory arena written by workers
//! ([`recorder`]), summed and rendered by the arbiter at scrape time ([`render`]).
pub mod arena;
pub mod kernel;
pub mod labels;
pub mod queue_time;
pub mod recorder;
pub mod render;

#[cfg(test)]
mod tests;

pub use recorder::{OutcomeLatch, Recorder, RequestTimer};
