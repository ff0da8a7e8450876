//! Forking a worker of the current generation (the only fork of a worker in the arbiter). The
//! child resets its signal handling, then closes every descriptor but the ones a worker of its
//! generation needs before it runs any worker code.
use super::Arbiter;
use crate::log_info;
use crate::metrics::arena::{Arena, SlotId};
use crate::sys::heartbeat::{monotonic_ms, Heartbeat};
use crate::sys::signals::{BlockedInChild, Forked};
use crate::worker::{self, WorkerSpec};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// What the forked child needs, prepared in the arbiter before the fork.
struct ChildSetup {
    settings: Arc<crate::config::settings::Settings>,
    heartbeat: Heartbeat,
    metrics: crate::metrics::Recorder,
    max_requests: u64,
    arbiter_pid: nix::unistd::Pid,
    seat: Option<crate::worker::balance::board::WorkerSeat>,
}

impl Arbiter {
    /// Forks a worker of the current generation; returns its pid.
    pub(super) fn spawn_worker(&mut self) -> Result<i32> {
        let settings = self.supervisor.current.payload.settings.clone();
        let heartbeat = Heartbeat::create(&settings.worker_tmp_dir)?;
        let (slot, metrics) = self.claim_metrics_slot();
        let max_requests = match settings.max_requests {
            0 => 0,
            n => n.saturating_add(jitter(settings.max_requests_jitter)),
        };
        let arbiter_pid = nix::unistd::getpid();
        let (seat_id, seat) = match self.board.claim() {
            Some((id, seat)) => (Some(id), Some(seat)),
            None => {
                crate::log_warning!("no free seat on the load board: this worker accepts without balancing");
                (None, None)
            }
        };
        let setup = ChildSetup { settings, heartbeat: heartbeat.view(), metrics, max_requests, arbiter_pid, seat };
        // SAFETY: the arbiter is single-threaded (no runtime, no wasmtime threads), so the child
        // starts from a consistent copy; it builds its own runtime and engine.
        let forked = match unsafe { crate::sys::signals::fork() } {
            Ok(Forked::Child(blocked)) => self.become_worker(blocked, setup),
            Ok(Forked::Parent(child)) => Ok(child.as_raw()),
            Err(e) => Err(e),
        };
        settle_metrics_slot(self.metrics.as_mut(), &mut self.metric_slots, slot, forked.as_ref().ok().copied());
        match (seat_id, forked.as_ref()) {
            (Some(id), Ok(&pid)) => {
                self.seats.insert(pid, id);
            }
            (Some(id), Err(_)) => self.board.release(id),
            (None, _) => {}
        }
        let child = forked.context("fork failed")?;
        log_info!("Booting worker with pid: {child}");
        self.heartbeats.insert(child, heartbeat);
        Ok(child)
    }

    /// In the forked child: from here on this process is a worker of the current generation.
    fn become_worker(&mut self, blocked: BlockedInChild, setup: ChildSetup) -> ! {
        blocked.reset();
        crate::log::forget_inherited_drops();
        // Only the arbiter may tell the foreground process it is ready, or serve the admin endpoint.
        drop(self.ready_pipe.take());
        drop(self.admin.take());
        let generation = &self.supervisor.current;
        let mut keep = generation.payload.worker_fds();
        keep.extend(crate::log::held_fds());
        keep.extend(crate::sys::signals::arbiter_wake_fd());
        // Everything else the arbiter holds (other generations' sockets and app, the signal pipe,
        // a reload's compiler socket, ...) is closed; the objects owning them are never dropped
        // here, since the worker leaves through `exit`.
        if let Err(e) = crate::sys::fds::keep_only(&keep) {
            crate::log_warning!("worker could not close the arbiter's descriptors: {e}");
        }
        let code = worker::run(WorkerSpec {
            settings: setup.settings,
            app: &generation.payload.app,
            listeners: generation.payload.listeners(),
            heartbeat: setup.heartbeat,
            arbiter_pid: setup.arbiter_pid,
            max_requests: setup.max_requests,
            credentials: self.credentials,
            metrics: setup.metrics,
            seat: setup.seat,
        });
        std::process::exit(code);
    }
}

/// Where a spawn attempt's metrics slot goes: to the forked worker (`child`), whose slot is
/// released when it is reaped, or straight back to the arena when the fork failed (None).
fn settle_metrics_slot(
    arena: Option<&mut Arena>,
    owners: &mut HashMap<i32, SlotId>,
    slot: Option<SlotId>,
    child: Option<i32>,
) {
    match (slot, child) {
        (Some(slot), Some(pid)) => {
            owners.insert(pid, slot);
        }
        (Some(slot), None) => {
            if let Some(arena) = arena {
                arena.release(slot);
            }
        }
        (None, _) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_fork_gives_its_metrics_slot_back() {
        let mut arena = Arena::create(2).unwrap();
        let mut owners = HashMap::new();
        // More failed forks than there are slots: each one's slot is free again at once.
        for _ in 0..5 {
            let slot = arena.claim();
            assert!(slot.is_some(), "a slot is free after every failed fork");
            settle_metrics_slot(Some(&mut arena), &mut owners, slot, None);
        }
        assert!(owners.is_empty());
        // A worker forked after them gets a slot, and keeps it until it is reaped.
        let slot = arena.claim();
        settle_metrics_slot(Some(&mut arena), &mut owners, slot, Some(41));
        assert_eq!(owners.get(&41), slot.as_ref());
        let second = arena.claim();
        assert!(second.is_some() && second != slot, "the other slot is still free");
        assert_eq!(arena.claim(), None, "both slots are taken by live workers");
    }
}
