//! The supervisor's rules for workers: exits and the respawn backoff, boot failures and
//! rollback, readiness and the watchdog, the worker count, generation roll-over and recycling.
use super::{Action, Actions, Beat, ChildSignal, Exit, Supervisor, KILL_GRACE, MAX_BACKOFF, QUICK_DEATH};
use crate::arbiter::lifecycle::{LeaveReason, Lifecycle, Phase, Upgrade, WorkerRecord};
use crate::log::Level;
use crate::worker::EXIT_BOOT_ERROR;
use std::time::Duration;

impl<P> Supervisor<P> {
    /// Sends TERM: the worker stops accepting and finishes its in-flight requests.
    pub(super) fn retire(&mut self, index: usize, reason: LeaveReason, out: &mut Actions<P>) {
        let worker = &mut self.workers[index];
        worker.phase = Phase::Retiring(self.now);
        worker.leave_reason = Some(reason);
        out.0.push(Action::Signal(worker.pid, ChildSignal::Term));
    }

    /// SIGKILL, after which nothing more is sent to the worker.
    pub(super) fn kill(worker: &mut WorkerRecord, out: &mut Actions<P>) {
        out.0.push(Action::Signal(worker.pid, ChildSignal::Kill));
        worker.phase = Phase::Killed;
    }

    pub(super) fn on_exit(&mut self, pid: i32, exit: Exit, out: &mut Actions<P>) {
        if self.upgrade == Upgrade::Child(pid) {
            self.upgrade = Upgrade::None;
            // Rolled back (or the new arbiter failed): we are the service's main process again.
            out.0.push(Action::NotifyMainPid);
            match exit {
                Exit::Code(code) => {
                    out.log(Level::Warning, format!("upgrade: the new arbiter (pid {pid}) exited with code {code}"))
                }
                Exit::Signal(_, name) => {
                    out.log(Level::Warning, format!("upgrade: the new arbiter (pid {pid}) was stopped by {name}"))
                }
            }
            return;
        }
        let Some(index) = self.workers.iter().position(|w| w.pid == pid) else { return };
        let worker = self.workers.swap_remove(index);
        let asked = worker.leave_reason;
        let expected = !worker.is_up();
        match exit {
            Exit::Code(0) if expected => out.log(Level::Info, format!("Worker exiting (pid: {pid})")),
            Exit::Code(code) => out.log(Level::Error, format!("Worker (pid:{pid}) exited with code {code}")),
            Exit::Signal(9, _) if !expected => {
                out.log(Level::Error, format!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?"))
            }
            Exit::Signal(_, name) if !expected => out.log(Level::Error, format!("Worker (pid:{pid}) was sent {name}!")),
            Exit::Signal(_, name) => out.log(Level::Info, format!("Worker (pid:{pid}) stopped by {name}")),
        }
        let reason = asked.unwrap_or(match exit {
            Exit::Code(_) => LeaveReason::Exit,
            Exit::Signal(..) => LeaveReason::Crash,
        });
        let replaced = worker.generation == self.current.id || reason == LeaveReason::Reload;
        if let (Some(label), true, false) = (reason.restart_label(), replaced, self.lifecycle.is_draining()) {
            *self.restarts.entry(label).or_default() += 1;
        }
        if expected || self.lifecycle.is_draining() {
            return;
        }
        if exit == Exit::Code(EXIT_BOOT_ERROR) && !worker.ever_ready {
            self.on_boot_failure(worker.generation, out);
        } else if self.now.duration_since(worker.spawned_at) < QUICK_DEATH {
            let backoff = self.back_off();
            out.log(
                Level::Warning,
                format!(
                    "worker died {:?} after it started; next spawn in {backoff:?}",
                    self.now.duration_since(worker.spawned_at)
                ),
            );
        } else {
            self.quick_deaths = 0;
        }
    }

    /// The respawn backoff: 200 ms doubling per quick death, at most `MAX_BACKOFF`.
    pub(super) fn back_off(&mut self) -> Duration {
        self.quick_deaths += 1;
        let backoff = Duration::from_millis(100u64 << self.quick_deaths.min(6)).min(MAX_BACKOFF);
        self.next_spawn_at = self.now + backoff;
        backoff
    }

    /// A worker that cannot boot will not boot on retry: give up on its generation.
    pub(super) fn on_boot_failure(&mut self, generation: u64, out: &mut Actions<P>) {
        let generation_has_served = self.workers.iter().any(|w| w.generation == generation && w.ever_ready);
        if generation_has_served || generation != self.current.id {
            self.back_off();
            return;
        }
        match std::mem::replace(&mut self.lifecycle, Lifecycle::Stopped) {
            Lifecycle::Reloading { previous } => {
                out.log(
                    Level::Error,
                    format!("generation {generation} failed to boot; keeping generation {}", previous.id),
                );
                for worker in self.workers.iter_mut().filter(|w| w.generation == generation && w.phase != Phase::Killed)
                {
                    Self::kill(worker, out);
                }
                let failed = std::mem::replace(&mut self.current, previous);
                self.lifecycle = if self.announced { Lifecycle::Running } else { Lifecycle::Booting };
                self.failed_reloads += 1;
                self.quick_deaths = 0;
                self.next_spawn_at = self.now;
                out.0.push(Action::RolledBack);
                out.0.push(Action::Release(failed));
                out.0.push(Action::NotifyReady("reload failed; serving the previous generation".into()));
            }
            other => {
                self.lifecycle = other;
                out.log(Level::Critical, "Worker failed to boot.".into());
                self.exit_code = EXIT_BOOT_ERROR;
                self.begin_shutdown(false, out);
            }
        }
    }

    /// Readiness and the heartbeat watchdog, then escalation of TERM/ABRT to KILL.
    pub(super) fn on_beats(&mut self, beats: &[Beat], out: &mut Actions<P>) {
        let now = self.now;
        for worker in &mut self.workers {
            let Some(beat) = beats.iter().find(|b| b.pid == worker.pid) else { continue };
            let timing = if worker.generation == self.current.id {
                self.current.timing
            } else {
                match &self.lifecycle {
                    Lifecycle::Reloading { previous } if previous.id == worker.generation => previous.timing,
                    _ => self.current.timing,
                }
            };
            if worker.phase == Phase::Booting && beat.ready {
                worker.phase = Phase::Serving;
                worker.ever_ready = true;
                self.quick_deaths = 0;
                out.log(Level::Info, format!("Worker ready (pid: {}, generation {})", worker.pid, worker.generation));
            }
            worker.wants_retirement = beat.wants_retirement;
            if matches!(worker.phase, Phase::Booting | Phase::Serving | Phase::Retiring(_))
                && beat.silence > timing.watchdog
            {
                out.log(
                    Level::Critical,
                    format!("WORKER TIMEOUT (pid:{}): no heartbeat for {} ms", worker.pid, beat.silence.as_millis()),
                );
                out.0.push(Action::Signal(worker.pid, ChildSignal::Abrt));
                worker.phase = Phase::Stopping(now);
                worker.leave_reason = Some(LeaveReason::Watchdog);
                continue;
            }
            match worker.phase {
                Phase::Retiring(since) if now.duration_since(since) > timing.graceful + KILL_GRACE => {
                    out.log(
                        Level::Warning,
                        format!("Worker (pid:{}) still running after --graceful-timeout; killing it", worker.pid),
                    );
                    Self::kill(worker, out);
                }
                Phase::Stopping(since) if now.duration_since(since) > KILL_GRACE => Self::kill(worker, out),
                _ => {}
            }
        }
    }

    /// Keeps the worker count at the target, rolls generations and recycles workers; ends a drain.
    pub(super) fn manage(&mut self, out: &mut Actions<P>) {
        let now = self.now;
        if let Lifecycle::Draining { deadline, .. } = self.lifecycle {
            if self.workers.is_empty() {
                self.lifecycle = Lifecycle::Stopped;
                out.log(Level::Info, "arbiter -> stopped".into());
            } else if now > deadline {
                for worker in self.workers.iter_mut().filter(|w| w.phase != Phase::Killed) {
                    out.log(Level::Warning, format!("Worker (pid:{}) did not stop in time; killing it", worker.pid));
                    Self::kill(worker, out);
                }
            }
            return;
        }
        let generation = self.current.id;
        let target = self.current.target;
        let active = self.workers.iter().filter(|w| w.is_active(generation)).count();
        if active < target && now >= self.next_spawn_at {
            out.0.push(Action::Spawn(target - active));
        }
        if active > target {
            // TTOU: the oldest active workers leave first.
            let mut surplus: Vec<usize> =
                (0..self.workers.len()).filter(|&i| self.workers[i].is_active(generation)).collect();
            surplus.sort_by_key(|&i| self.workers[i].spawned_at);
            for &index in surplus.iter().take(active - target) {
                out.log(Level::Info, format!("retiring worker {} (TTOU)", self.workers[index].pid));
                self.retire(index, LeaveReason::Removed, out);
            }
        }
        // Old generations and recycled workers leave only once their replacements serve.
        if self.ready_in_current() < target {
            return;
        }
        for index in 0..self.workers.len() {
            let worker = &self.workers[index];
            if !worker.is_up() {
                continue;
            }
            let reason = if worker.generation != generation {
                LeaveReason::Reload
            } else if worker.wants_retirement {
                LeaveReason::MaxRequests
            } else {
                continue;
            };
            out.log(Level::Info, format!("retiring worker {} (generation {})", worker.pid, worker.generation));
            self.retire(index, reason, out);
        }
        if target == 0 {
            return;
        }
        match std::mem::replace(&mut self.lifecycle, Lifecycle::Running) {
            Lifecycle::Reloading { previous } => {
                out.log(Level::Info, format!("reload: generation {generation} is serving"));
                out.0.push(Action::Release(previous));
                if self.announced {
                    out.0.push(Action::NotifyReady(format!("reloaded; serving with {target} workers")));
                }
            }
            Lifecycle::Booting => out.log(Level::Info, "arbiter -> running".into()),
            other => self.lifecycle = other,
        }
        if !self.announced {
            self.announced = true;
            out.0.push(Action::AnnounceReady);
        }
    }
}
