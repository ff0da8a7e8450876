//! The supervisor's rules, with no syscalls: given an event (a signal, a worker's exit, a tick with
//! the heartbeats, a prepared or failed reload), it updates the lifecycle and returns the actions
//! for the shell in `arbiter/mod.rs` to carry out (fork, kill, log, notify). Respawn backoff,
//! rollback, the TTOU victim, max-requests overlap, watchdog escalation and the drain deadline
//! each live in one place here.
use super::lifecycle::{Generation, Lifecycle, Phase, Timing, Upgrade, WorkerRecord};
use crate::log::Level;
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

/// A signal the supervisor sends to a worker (TERM to drain, QUIT to stop at once, ABRT from the
/// watchdog, KILL after the grace, USR1 to reopen logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSignal {
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
    Signal(i32, ChildSignal),
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
}

/// The action list being built for one event.
struct Actions<P>(Vec<Action<P>>);

impl<P> Actions<P> {
    fn log(&mut self, level: Level, message: String) {
        self.0.push(Action::Log(level, message));
    }
}

mod reload;
mod signals;
mod workers;

#[cfg(test)]
mod tests;
