//! The supervisor's rules, with no syscalls: given an event (a signal, a worker's exit, a tick with
//! the heartbeats, a prepared or failed reload), it updates the lifecycle and returns the actions
//! for the shell in `arbiter/mod.rs` to carry out (fork, kill, log, notify). Respawn backoff,
//! rollback, the TTOU victim, max-requests overlap, watchdog escalation and the drain deadline
//! each live in one place here.
use super::lifecycle::{Generation, LeaveReason, Lifecycle, Phase, Timing, Upgrade, WorkerRecord};
use crate::log::Level;
use crate::worker::EXIT_BOOT_ERROR;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A worker that dies sooner than this after it was forked counts towards the respawn backoff.
pub const QUICK_DEATH: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a worker gets between SIGABRT (watchdog) or QUIT and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(1);
/// After a failed fork, the next try.
pub const SPAWN_RETRY: Duration = Duration::from_secs(1);

/// The signals the arbiter acts on, in the order they were delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Int,
    Quit,
    Hup,
    Ttin,
    Ttou,
    Usr1,
    Usr2,
    Winch,
}

/// A signal the supervisor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Term,
    Quit,
    Abrt,
    Kill,
    Usr1,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by this signal number.
    Signal(i32, &'static str),
}

/// What a worker's heartbeat page says at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub pid: i32,
    /// The worker reported that it accepts connections.
    pub ready: bool,
    pub wants_retirement: bool,
    pub silence: Duration,
}

#[derive(Debug)]
pub enum Event<P> {
    Signal(Sig),
    /// A forked worker of the current generation.
    Spawned {
        pid: i32,
    },
    SpawnFailed {
        error: String,
    },
    Exited {
        pid: i32,
        exit: Exit,
    },
    Tick {
        beats: Vec<Beat>,
    },
    ReloadPrepared(P, usize, Timing),
    ReloadFailed(String),
    UpgradeStarted {
        pid: i32,
    },
    /// The old arbiter of an upgrade exited (we were reparented).
    OldArbiterGone,
}

#[derive(Debug)]
pub enum Action<P> {
    Log(Level, String),
    /// Fork this many workers of the current generation (report each with `Event::Spawned`).
    Spawn(usize),
    Signal(i32, Kill),
    /// Start re-resolving the settings and compiling the app (answer with `ReloadPrepared`/`ReloadFailed`).
    PrepareReload,
    /// Abandon a reload being prepared.
    CancelReload,
    /// The current generation changed back to the previous one: re-apply its process settings.
    RolledBack,
    /// A generation that will never run again: release what it holds (sockets only it used).
    Release(Generation<P>),
    /// Print the readiness line (once) and tell systemd.
    AnnounceReady,
    /// systemd: READY=1 with this status after a reload (successful or not).
    NotifyReady(String),
    NotifyStopping,
    /// systemd: MAINPID is this arbiter again.
    NotifyMainPid,
    StartUpgrade,
    ReopenLogs,
    /// Stop accepting in the arbiter (its listener copies).
    CloseListeners,
    /// Take over the pid file from the exited old arbiter.
    TakeOverPidFile,
}

/// The supervisor's whole state.
pub struct Supervisor<P> {
    pub current: Generation<P>,
    pub lifecycle: Lifecycle<P>,
    pub workers: Vec<WorkerRecord>,
    pub upgrade: Upgrade,
    pub exit_code: i32,
    /// A reload is being prepared (resolving, compiling) outside the supervisor.
    preparing_reload: bool,
    announced: bool,
    quick_deaths: u32,
    next_spawn_at: Instant,
    next_generation: u64,
    /// Workers replaced, by reason label.
    pub restarts: BTreeMap<&'static str, u64>,
    pub failed_reloads: u64,
    now: Instant,
}

impl<P> Supervisor<P> {
    pub fn new(payload: P, target: usize, timing: Timing, upgrade: Upgrade, now: Instant) -> Supervisor<P> {
        Supervisor {
            current: Generation { id: 1, target, timing, payload },
            lifecycle: Lifecycle::Booting,
            workers: Vec::new(),
            upgrade,
            exit_code: 0,
            preparing_reload: false,
            announced: false,
            quick_deaths: 0,
            next_spawn_at: now,
            next_generation: 2,
            restarts: BTreeMap::new(),
            failed_reloads: 0,
            now,
        }
    }

    /// Applies one event at time `now`; the actions come out in the order to carry them out.
    pub fn handle(&mut self, event: Event<P>, now: Instant) -> Vec<Action<P>> {
        self.now = now;
        let mut out = Actions(Vec::new());
        match event {
            Event::Signal(sig) => self.on_signal(sig, &mut out),
            Event::Spawned { pid } => self.workers.push(WorkerRecord {
                pid,
                generation: self.current.id,
                spawned_at: now,
                phase: Phase::Booting,
                ever_ready: false,
                wants_retirement: false,
                leave_reason: None,
            }),
            Event::SpawnFailed { error } => {
                out.log(Level::Error, format!("cannot start a worker: {error}"));
                self.next_spawn_at = now + SPAWN_RETRY;
            }
            Event::Exited { pid, exit } => self.on_exit(pid, exit, &mut out),
            Event::Tick { beats } => {
                self.on_beats(&beats, &mut out);
                self.manage(&mut out);
            }
            Event::ReloadPrepared(payload, target, timing) => {
                self.on_reload_prepared(payload, target, timing, &mut out)
            }
            Event::ReloadFailed(why) => {
                self.preparing_reload = false;
                self.failed_reloads += 1;
                out.log(Level::Error, format!("reload failed, still serving the previous generation: {why}"));
                out.0.push(Action::NotifyReady("reload failed; serving the previous generation".into()));
            }
            Event::UpgradeStarted { pid } => {
                self.upgrade = Upgrade::Child(pid);
                out.log(Level::Info, format!("upgrade: new arbiter pid {pid}"));
            }
            Event::OldArbiterGone => {
                if let Upgrade::Parent(old) = self.upgrade {
                    self.upgrade = Upgrade::None;
                    out.log(
                        Level::Info,
                        format!("upgrade: the old arbiter (pid {old}) has exited; this arbiter is now the only one"),
                    );
                    out.0.push(Action::TakeOverPidFile);
                }
            }
        }
        out.0
    }

    pub fn is_stopped(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Stopped)
    }

    /// When the next spawn may happen (the shell sleeps no longer than this).
    pub fn next_spawn_at(&self) -> Instant {
        self.next_spawn_at
    }

    /// Workers of the current generation that serve.
    pub fn ready_in_current(&self) -> usize {
        self.workers.iter().filter(|w| w.is_active(self.current.id) && w.phase == Phase::Serving).count()
    }

    /// The generation a worker runs, if it is the previous one of a reload in progress.
    pub fn previous(&self) -> Option<&Generation<P>> {
        match &self.lifecycle {
            Lifecycle::Reloading { previous } => Some(previous),
            _ => None,
        }
    }

    fn on_signal(&mut self, sig: Sig, out: &mut Actions<P>) {
        let draining = self.lifecycle.is_draining();
        match sig {
            Sig::Term => self.begin_shutdown(true, out),
            Sig::Int | Sig::Quit => self.begin_shutdown(false, out),
            _ if draining => out.log(Level::Info, format!("{sig:?} ignored while shutting down")),
            Sig::Hup => {
                out.log(Level::Info, "Handling signal: hup; reloading settings and the app".into());
                self.preparing_reload = true;
                out.0.push(Action::PrepareReload);
            }
            Sig::Ttin => {
                self.current.target += 1;
                out.log(Level::Info, format!("TTIN: now {} workers", self.current.target));
            }
            Sig::Ttou if self.current.target > 1 => {
                self.current.target -= 1;
                out.log(Level::Info, format!("TTOU: now {} workers", self.current.target));
            }
            Sig::Ttou => out.log(Level::Info, format!("TTOU ignored: already at {} worker(s)", self.current.target)),
            Sig::Usr1 => {
                out.log(Level::Info, "Handling signal: usr1; reopening the log files".into());
                out.0.push(Action::ReopenLogs);
                for worker in self.workers.iter().filter(|w| w.phase != Phase::Killed) {
                    out.0.push(Action::Signal(worker.pid, Kill::Usr1));
                }
            }
            Sig::Usr2 => match self.upgrade {
                Upgrade::Child(pid) => out.log(
                    Level::Warning,
                    format!("USR2 ignored: the new arbiter (pid {pid}) from the last USR2 is still running"),
                ),
                Upgrade::Parent(pid) => out.log(
                    Level::Warning,
                    format!("USR2 ignored: the old arbiter (pid {pid}) is still running; stop it first"),
                ),
                Upgrade::None => {
                    out.log(
                        Level::Info,
                        "Handling signal: usr2; starting a new arbiter with the same command line".into(),
                    );
                    out.0.push(Action::StartUpgrade);
                }
            },
            Sig::Winch => {
                out.log(
                    Level::Info,
                    "Handling signal: winch; stopping all workers (the arbiter stays; HUP or TTIN starts them again)"
                        .into(),
                );
                self.current.target = 0;
                for index in 0..self.workers.len() {
                    if self.workers[index].is_up() {
                        self.retire(index, LeaveReason::Removed, out);
                    }
                }
            }
        }
    }

    /// TERM: graceful (workers finish in-flight requests); INT/QUIT: quick.
    fn begin_shutdown(&mut self, graceful: bool, out: &mut Actions<P>) {
        let now = self.now;
        if let Lifecycle::Draining { graceful: was_graceful, .. } = self.lifecycle {
            if graceful || !was_graceful {
                return;
            }
            out.log(Level::Info, "Quick shutdown requested while draining".into());
        } else {
            out.log(Level::Info, format!("Handling signal: {}", if graceful { "term" } else { "quick shutdown" }));
            // After a USR2 the new arbiter is the service now: our exit is not its stop.
            if !matches!(self.upgrade, Upgrade::Child(_)) {
                out.0.push(Action::NotifyStopping);
            }
            out.0.push(Action::CloseListeners);
            if std::mem::take(&mut self.preparing_reload) {
                out.0.push(Action::CancelReload);
            }
        }
        let previous = std::mem::replace(&mut self.lifecycle, Lifecycle::Stopped);
        if let Lifecycle::Reloading { previous } = previous {
            out.0.push(Action::Release(previous));
        }
        let deadline = now + if graceful { self.current.timing.graceful } else { KILL_GRACE };
        self.lifecycle = Lifecycle::Draining { deadline, graceful };
        out.log(Level::Info, "arbiter -> draining".into());
        for index in 0..self.workers.len() {
            let worker = &mut self.workers[index];
            if graceful && worker.is_up() {
                self.retire(index, LeaveReason::Removed, out);
            } else if !graceful && worker.phase != Phase::Killed {
                worker.phase = Phase::Stopping(now);
                worker.leave_reason.get_or_insert(LeaveReason::Removed);
                out.0.push(Action::Signal(worker.pid, Kill::Quit));
            }
        }
    }

    /// Sends TERM: the worker stops accepting and finishes its in-flight requests.
    fn retire(&mut self, index: usize, reason: LeaveReason, out: &mut Actions<P>) {
        let worker = &mut self.workers[index];
        worker.phase = Phase::Retiring(self.now);
        worker.leave_reason = Some(reason);
        out.0.push(Action::Signal(worker.pid, Kill::Term));
    }

    /// SIGKILL, after which nothing more is sent to the worker.
    fn kill(worker: &mut WorkerRecord, out: &mut Actions<P>) {
        out.0.push(Action::Signal(worker.pid, Kill::Kill));
        worker.phase = Phase::Killed;
    }

    fn on_exit(&mut self, pid: i32, exit: Exit, out: &mut Actions<P>) {
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
    fn back_off(&mut self) -> Duration {
        self.quick_deaths += 1;
        let backoff = Duration::from_millis(100u64 << self.quick_deaths.min(6)).min(MAX_BACKOFF);
        self.next_spawn_at = self.now + backoff;
        backoff
    }

    /// A worker that cannot boot will not boot on retry: give up on its generation.
    fn on_boot_failure(&mut self, generation: u64, out: &mut Actions<P>) {
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
    fn on_beats(&mut self, beats: &[Beat], out: &mut Actions<P>) {
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
                out.0.push(Action::Signal(worker.pid, Kill::Abrt));
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
    fn manage(&mut self, out: &mut Actions<P>) {
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

    fn on_reload_prepared(&mut self, payload: P, target: usize, timing: Timing, out: &mut Actions<P>) {
        let id = self.next_generation;
        let generation = Generation { id, target, timing, payload };
        if self.lifecycle.is_draining() || !std::mem::take(&mut self.preparing_reload) {
            out.0.push(Action::Release(generation));
            return;
        }
        self.next_generation += 1;
        let booting = std::mem::replace(&mut self.current, generation);
        match std::mem::replace(&mut self.lifecycle, Lifecycle::Stopped) {
            Lifecycle::Reloading { previous } => {
                // A newer reload replaces the one still booting; `previous` keeps serving.
                for index in 0..self.workers.len() {
                    if self.workers[index].generation == booting.id && self.workers[index].is_up() {
                        self.retire(index, LeaveReason::Removed, out);
                    }
                }
                out.0.push(Action::Release(booting));
                self.lifecycle = Lifecycle::Reloading { previous };
            }
            _ => self.lifecycle = Lifecycle::Reloading { previous: booting },
        }
        self.quick_deaths = 0;
        self.next_spawn_at = self.now;
        out.log(Level::Info, format!("reload: starting generation {id}"));
    }
}

/// The action list being built for one event.
struct Actions<P>(Vec<Action<P>>);

impl<P> Actions<P> {
    fn log(&mut self, level: Level, message: String) {
        self.0.push(Action::Log(level, message));
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
