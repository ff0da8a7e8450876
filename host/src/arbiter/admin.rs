//! The arbiter's side of `--admin-bind`: the metrics arena (mapped before any fork, one slot per
//! worker), the admin listener answered from the arbiter's loop, and the view it reports.
use super::lifecycle::Phase;
use super::Arbiter;
use crate::admin::server::AdminServer;
use crate::admin::ArbiterView;
use crate::config::settings::Settings;
use crate::metrics::arena::Arena;
use crate::metrics::Recorder;
use crate::{log_info, log_warning};
use anyhow::Result;
use std::time::Instant;

/// `--admin-bind`: the shared metrics arena and the admin listener. An arbiter started by USR2
/// cannot take the address its predecessor still holds: it runs without the admin endpoint (a
/// warning says so) rather than fail the upgrade.
pub fn open(settings: &Settings, upgraded: bool) -> Result<(Option<Arena>, Option<AdminServer>)> {
    let Some(spec) = &settings.admin_bind else {
        return Ok((None, None));
    };
    let admin = match AdminServer::bind(spec) {
        Ok(admin) => admin,
        Err(e) if upgraded => {
            log_warning!("upgrade: no admin endpoint in this arbiter: {e:#}");
            return Ok((None, None));
        }
        Err(e) => return Err(e),
    };
    // Room for two generations side by side during a reload, plus TTIN headroom.
    let arena = Arena::create(settings.workers.saturating_mul(4).max(64))?;
    log_info!("Admin endpoint at: {} (/metrics, /livez, /readyz)", admin.address());
    Ok((Some(arena), Some(admin)))
}

impl Arbiter {
    /// Answers whatever the admin endpoint has ready, without blocking.
    pub(super) fn serve_admin(&mut self) {
        let Some(mut admin) = self.admin.take() else { return };
        let view = self.admin_view();
        let listeners = self.supervisor.current.payload.listeners();
        admin.service(Instant::now(), &mut |request| {
            crate::admin::routes::respond(&request.method, &request.path, request.accept.as_deref(), &view, |om| {
                crate::admin::scrape(&view, self.metrics.as_ref(), &listeners, om)
            })
        });
        self.admin = Some(admin);
    }

    /// What the admin endpoint reports about the workers.
    fn admin_view(&self) -> ArbiterView {
        let workers = &self.supervisor.workers;
        ArbiterView {
            draining: self.supervisor.lifecycle.is_draining(),
            generation: self.supervisor.current.id,
            // Any generation: during a HUP the previous one still serves.
            ready_workers: workers.iter().filter(|w| w.phase == Phase::Serving).count(),
            workers_by_state: crate::admin::count_states(workers.iter().map(|w| match w.phase {
                Phase::Booting => "booting",
                Phase::Serving => "ready",
                Phase::Retiring(_) => "retiring",
                Phase::Stopping(_) | Phase::Killed => "stopping",
            })),
            restarts_by_reason: crate::admin::restarts_by_reason(&self.supervisor.restarts),
            worker_pids: workers.iter().map(|w| w.pid).collect(),
        }
    }

    /// A metrics slot for the worker about to be forked, and its recorder.
    pub(super) fn claim_metrics_slot(&mut self) -> (Option<crate::metrics::arena::SlotId>, Recorder) {
        let Some(arena) = self.metrics.as_mut() else { return (None, Recorder::disabled()) };
        match arena.claim() {
            Some(slot) => (Some(slot), Recorder::new(arena.worker_slot(slot))),
            None => {
                log_warning!("no free metrics slot: this worker's requests will not be counted");
                (None, Recorder::disabled())
            }
        }
    }

    /// A worker exited: its counts fold into the totals, its slot is free again.
    pub(super) fn release_metrics_slot(&mut self, pid: i32) {
        if let (Some(arena), Some(slot)) = (self.metrics.as_mut(), self.metric_slots.remove(&pid)) {
            arena.release(slot);
        }
    }
}
