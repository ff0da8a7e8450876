//! The admin endpoint (`--admin-bind`): `/metrics`, `/livez`, `/readyz`, served by the arbiter
//! itself from its poll loop (requests never reach a worker or a guest). The arbiter fills an
//! [`ArbiterView`]; [`routes::respond`] answers from it; [`server::AdminServer`] does the I/O.
pub mod routes;
pub mod server;

use crate::metrics::arena::Arena;
use crate::metrics::kernel;
use crate::metrics::render::{ArbiterFigures, Snapshot};
use crate::sys::binds::Listener;

/// What the arbiter tells the admin endpoint about itself at request time.
#[derive(Debug, Clone, Default)]
pub struct ArbiterView {
    /// TERM (or INT/QUIT) has arrived: /readyz is 503 from then on.
    pub draining: bool,
    pub generation: u64,
    /// Workers that serve and are not retiring. During a HUP this is the previous generation's
    /// workers until the new generation is ready (the old ones are retired only then): counting
    /// only the new generation would turn /readyz 503 on every reload while requests are served.
    pub ready_workers: usize,
    /// Every state in [`WORKER_STATES`], with its count (zeros included).
    pub workers_by_state: Vec<(&'static str, usize)>,
    /// Every reason in [`RESTART_REASONS`], with its count since the arbiter started.
    pub restarts_by_reason: Vec<(&'static str, u64)>,
    /// Live worker processes (for RSS/PSS).
    pub worker_pids: Vec<i32>,
}

/// `rustcorn_workers{state}` values.
pub const WORKER_STATES: [&str; 4] = ["booting", "ready", "retiring", "stopping"];

/// `rustcorn_worker_restarts_total{reason}` values: why a worker went and was replaced.
/// `exit`: exited on its own with an error code; `crash`: killed by a signal nobody sent on
/// purpose (including the OOM killer's SIGKILL); `watchdog`: stopped for a missed heartbeat;
/// `max_requests`: recycled after `--max-requests`; `reload`: replaced by a new generation (HUP).
pub const RESTART_REASONS: [&str; 5] = ["exit", "crash", "watchdog", "max_requests", "reload"];

/// Restart counts by reason label (as the supervisor keeps them), every reason listed.
pub fn restarts_by_reason(counts: &std::collections::BTreeMap<&'static str, u64>) -> Vec<(&'static str, u64)> {
    RESTART_REASONS.iter().map(|reason| (*reason, counts.get(reason).copied().unwrap_or(0))).collect()
}

/// Counts workers per state (`states` yields one of [`WORKER_STATES`] per worker).
pub fn count_states(states: impl Iterator<Item = &'static str>) -> Vec<(&'static str, usize)> {
    let mut counts: Vec<(&'static str, usize)> = WORKER_STATES.iter().map(|s| (*s, 0)).collect();
    for state in states {
        if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == state) {
            entry.1 += 1;
        }
    }
    counts
}

/// Renders `/metrics`: the arena's totals plus what the arbiter and the kernel know now.
pub fn scrape(view: &ArbiterView, arena: Option<&Arena>, listeners: &[&Listener], openmetrics: bool) -> String {
    let (mut rss_bytes, mut pss_bytes) = (0, 0);
    for pid in &view.worker_pids {
        if let Some((rss, pss)) = kernel::process_memory(*pid) {
            rss_bytes += rss;
            pss_bytes += pss;
        }
    }
    let figures = ArbiterFigures {
        generation: view.generation,
        workers_by_state: view.workers_by_state.clone(),
        restarts_by_reason: view.restarts_by_reason.clone(),
        listen_queues: kernel::listen_queues(listeners),
        rss_bytes,
        pss_bytes,
        log_lines_dropped: crate::log::dropped_counts(),
    };
    let snapshot = match arena {
        Some(arena) => Snapshot::take(arena, figures),
        None => Snapshot { arbiter: figures, ..Snapshot::default() },
    };
    snapshot.encode(openmetrics)
}
