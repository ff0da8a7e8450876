//! Forking a worker of the current generation (the only fork of a worker in the arbiter).
use super::Arbiter;
use crate::log_info;
use crate::sys::heartbeat::{monotonic_ms, Heartbeat};
use crate::worker::{self, WorkerSpec};
use anyhow::{Context, Result};

impl Arbiter {
    /// Forks a worker of the current generation; returns its pid.
    pub(super) fn spawn_worker(&mut self) -> Result<i32> {
        let settings = self.supervisor.current.payload.settings.clone();
        let heartbeat = Heartbeat::create(&settings.worker_tmp_dir)?;
        let (slot, metrics) = self.claim_metrics_slot();
        let generation = &self.supervisor.current;
        let max_requests = match settings.max_requests {
            0 => 0,
            n => n.saturating_add(jitter(settings.max_requests_jitter)),
        };
        let arbiter_pid = nix::unistd::getpid();
        // SAFETY: the arbiter is single-threaded (no runtime, no wasmtime threads), so the child
        // starts from a consistent copy; it builds its own runtime and engine.
        match unsafe { nix::unistd::fork() }.context("fork failed")? {
            nix::unistd::ForkResult::Child => {
                crate::sys::signals::reset_in_child();
                crate::log::forget_inherited_drops();
                // Only the arbiter may tell the foreground process it is ready.
                drop(self.ready_pipe.take());
                // Nor serve the admin endpoint: close its sockets in the worker.
                drop(self.admin.take());
                let code = worker::run(WorkerSpec {
                    settings,
                    app: &generation.payload.app,
                    listeners: generation.payload.listeners(),
                    heartbeat: heartbeat.view(),
                    arbiter_pid,
                    max_requests,
                    credentials: self.credentials,
                    metrics,
                });
                std::process::exit(code);
            }
            nix::unistd::ForkResult::Parent { child } => {
                log_info!("Booting worker with pid: {child}");
                self.heartbeats.insert(child.as_raw(), heartbeat);
                if let Some(slot) = slot {
                    self.metric_slots.insert(child.as_raw(), slot);
                }
                Ok(child.as_raw())
            }
        }
    }
}

/// A value in 0..=max, different per worker.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let seed = monotonic_ms() ^ (u64::from(std::process::id()) << 17) ^ nanos();
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    mixed % max.saturating_add(1).max(1)
}

fn nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)
}
