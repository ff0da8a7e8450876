//! The arbiter's loop: the shell around the pure supervisor (`supervisor.rs`). It turns what the
//! OS reports (signals in delivery order, exited children, heartbeat pages, the reload compiler's
//! answer) into events, and carries out the actions the supervisor returns (fork, kill, log,
//! notify). Single-threaded, with no tokio runtime and no wasmtime state, so every fork is safe.
mod admin;
pub mod generation;
pub mod lifecycle;
pub mod readiness;
pub mod reload;
pub mod reload_watch;
pub mod sockets;
mod spawn;
mod start;
pub mod supervisor;
pub mod upgrade;

use crate::config::cli::ServeArgs;
use crate::config::settings::Settings;
use crate::sys::heartbeat::{Heartbeat, WorkerReport};
use crate::sys::signals::SignalPipe;
use crate::sys::{daemon, pidfile, privileges, sd_notify};
use crate::{log_error, log_info, log_warning};
use generation::{Payload, ProcessSettings};
use lifecycle::{Generation, Timing, Upgrade};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use readiness::{Status, StatusPublisher};
use reload::{Origin, PendingReload};
use reload_watch::ReloadWatch;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use supervisor::{Action, Beat, ChildSignal, Event, Exit, Sig, Supervisor};
use upgrade::StartContext;

/// The longest the main loop sleeps between checks of the watchdog and the workers.
const LOOP_INTERVAL: Duration = Duration::from_millis(100);

/// The arbiter process.
pub struct Arbiter {
    supervisor: Supervisor<Payload>,
    signals: SignalPipe,
    /// Each live worker's heartbeat page, by pid.
    heartbeats: HashMap<i32, Heartbeat>,
    /// The command line and directory to re-execute on USR2 and to re-resolve on HUP.
    start_context: StartContext,
    pending_reload: Option<PendingReload>,
    /// The pid file this arbiter wrote (`PIDFILE`, or `PIDFILE.2` while the old arbiter runs).
    pid_file: Option<PathBuf>,
    /// `--daemon`: the pipe to the foreground process, until the readiness line is sent.
    ready_pipe: Option<daemon::ReadyPipe>,
    credentials: Option<privileges::Credentials>,
    reload_watch: Option<ReloadWatch>,
    /// The sockets come from `--bind` (ours or an upgrade's), so a HUP may re-bind them.
    rebindable: bool,
    status: StatusPublisher,
    /// `--admin-bind`: the metrics arena shared with the workers, and the admin listener.
    metrics: Option<crate::metrics::arena::Arena>,
    admin: Option<crate::admin::server::AdminServer>,
    /// Each live worker's metrics slot, by pid.
    metric_slots: HashMap<i32, crate::metrics::arena::SlotId>,
    /// The load board the workers balance their connections with, and each live worker's seat.
    board: crate::worker::balance::board::Board,
    seats: HashMap<i32, crate::worker::balance::board::SeatId>,
}

/// Settings known before the arbiter starts.
pub struct StartOptions {
    pub args: ServeArgs,
    pub settings: Settings,
    pub process: ProcessSettings,
    pub launch_dir: PathBuf,
}

impl Arbiter {
    /// The main loop, until every worker is gone after a shutdown. Returns the exit status.
    pub fn run(mut self) -> i32 {
        log_info!("arbiter -> booting");
        loop {
            self.reap();
            self.check_old_arbiter();
            self.check_reload_watch();
            self.check_pending_reload();
            let beats = self.beats();
            self.dispatch(Event::Tick { beats });
            self.status.publish(Status::of(&self.supervisor));
            if self.supervisor.is_stopped() {
                break;
            }
            self.wait_for_event();
            for signal in self.signals.take() {
                self.on_signal(signal);
            }
            // After the signals: a TERM that arrived before an admin request is seen by it.
            self.serve_admin();
            crate::log::report_drops(None);
        }
        self.cleanup();
        log_info!("Shutting down: Master");
        self.supervisor.exit_code
    }

    fn dispatch(&mut self, event: Event<Payload>) {
        let actions = self.supervisor.handle(event, Instant::now());
        for action in actions {
            self.carry_out(action);
        }
    }

    fn on_signal(&mut self, signal: Signal) {
        let sig = match signal {
            Signal::SIGTERM => Sig::Term,
            Signal::SIGINT => Sig::Int,
            Signal::SIGQUIT => Sig::Quit,
            Signal::SIGHUP => Sig::Hup,
            Signal::SIGTTIN => Sig::Ttin,
            Signal::SIGTTOU => Sig::Ttou,
            Signal::SIGUSR1 => Sig::Usr1,
            Signal::SIGUSR2 => Sig::Usr2,
            Signal::SIGWINCH if crate::sys::signals::in_terminal_foreground() => {
                log_info!("WINCH ignored: running in the foreground of a terminal (a window resize sends WINCH)");
                return;
            }
            Signal::SIGWINCH => Sig::Winch,
            // SIGCHLD only wakes the loop, which reaps every turn.
            _ => return,
        };
        self.dispatch(Event::Signal(sig));
    }

    fn carry_out(&mut self, action: Action<Payload>) {
        match action {
            Action::Log(level, message) => crate::log::log(level, format_args!("{message}")),
            Action::Spawn(count) => {
                for _ in 0..count {
                    match self.spawn_worker() {
                        Ok(pid) => self.dispatch(Event::Spawned { pid }),
                        Err(e) => {
                            self.dispatch(Event::SpawnFailed { error: format!("{e:#}") });
                            break;
                        }
                    }
                }
            }
            Action::Signal(pid, signal) => {
                let signal = match signal {
                    ChildSignal::Term => Signal::SIGTERM,
                    ChildSignal::Quit => Signal::SIGQUIT,
                    ChildSignal::Abrt => Signal::SIGABRT,
                    ChildSignal::Kill => Signal::SIGKILL,
                    ChildSignal::Usr1 => Signal::SIGUSR1,
                };
                let _ = kill(Pid::from_raw(pid), signal);
            }
            Action::PrepareReload => self.prepare_reload(),
            Action::CancelReload => {
                if let Some(pending) = self.pending_reload.take() {
                    let _ = kill(pending.compiler_pid(), Signal::SIGKILL);
                }
            }
            Action::RolledBack => self.apply_current_process_settings(),
            Action::Release(generation) => self.release(generation),
            Action::AnnounceReady => {
                let payload = &self.supervisor.current.payload;
                readiness::announce(
                    &payload.listening_addresses(),
                    self.supervisor.current.target,
                    self.ready_pipe.take(),
                );
            }
            Action::NotifyReady(status) => sd_notify::ready(&status),
            Action::NotifyStopping => sd_notify::stopping(),
            Action::NotifyMainPid => sd_notify::notify(&format!("MAINPID={}", std::process::id())),
            Action::StartUpgrade => {
                let listeners = self.supervisor.current.payload.listeners();
                match upgrade::reexec(&self.start_context, &listeners) {
                    Ok(pid) => self.dispatch(Event::UpgradeStarted { pid: pid.as_raw() }),
                    Err(e) => log_error!("upgrade failed, still serving: {e:#}"),
                }
            }
            Action::ReopenLogs => match crate::log::reopen_error_log() {
                Ok(()) => log_info!("reopened the error log"),
                Err(e) => log_error!(
                    "cannot reopen the error log {:?}: {e}",
                    self.supervisor.current.payload.settings.error_log
                ),
            },
            // Stop accepting in the arbiter's copies too; workers close theirs as they drain.
            Action::CloseListeners => self.supervisor.current.payload.bound.clear(),
            Action::TakeOverPidFile => {
                if let (Some(current), Some(wanted)) =
                    (&self.pid_file, &self.supervisor.current.payload.settings.pid_file)
                {
                    match std::fs::rename(current, wanted) {
                        Ok(()) => self.pid_file = Some(wanted.clone()),
                        Err(e) => log_error!("cannot rename {} to {}: {e}", current.display(), wanted.display()),
                    }
                }
            }
        }
    }

    /// HUP: re-resolve the settings and start compiling; a newer HUP supersedes a pending one.
    fn prepare_reload(&mut self) {
        // RELOADING=1 also names us the main pid: a HUP to the old arbiter of an upgrade is the
        // first step of a rollback, and systemd must not lose the service when the new one stops.
        sd_notify::reloading();
        if let Some(pending) = self.pending_reload.take() {
            let _ = kill(pending.compiler_pid(), Signal::SIGKILL);
        }
        let origin = Origin { launch_dir: self.start_context.directory(), serve_args: self.start_context.serve_args() };
        match PendingReload::start(&origin, &self.supervisor.current.payload.process) {
            Ok(pending) => self.pending_reload = Some(pending),
            Err(e) => self.dispatch(Event::ReloadFailed(e)),
        }
    }

    /// The reload compiler answered: hand the new generation to the supervisor.
    fn check_pending_reload(&mut self) {
        let Some(answer) = self.pending_reload.as_mut().and_then(PendingReload::poll) else { return };
        let Some(pending) = self.pending_reload.take() else { return };
        // The compiler has answered and is exiting: collect it now, so no stray child outlives the reload.
        let _ = waitpid(pending.compiler_pid(), None);
        let prepared = answer.and_then(|app| pending.finish(app, &self.supervisor.current.payload, self.rebindable));
        match prepared {
            Ok(payload) => {
                if payload.settings.admin_bind != self.supervisor.current.payload.settings.admin_bind {
                    log_warning!("reload: --admin-bind changes take effect at the next restart");
                }
                let (target, timing) = (payload.settings.workers, timing_of(&payload.settings));
                self.dispatch(Event::ReloadPrepared(payload, target, timing));
                self.apply_current_process_settings();
            }
            Err(e) => self.dispatch(Event::ReloadFailed(e)),
        }
    }

    fn apply_current_process_settings(&self) {
        if let Err(e) = self.supervisor.current.payload.process.apply() {
            log_error!("cannot apply the serving generation's process settings: {e:#}");
        }
    }

    /// A generation that will not run again: its sockets close with it, and the unix socket
    /// files that no remaining generation binds are removed.
    fn release(&mut self, generation: Generation<Payload>) {
        let still_bound = |path: &PathBuf| {
            self.supervisor.current.payload.socket_files.contains(path)
                || self.supervisor.previous().is_some_and(|previous| previous.payload.socket_files.contains(path))
        };
        for path in generation.payload.socket_files.iter().filter(|path| !still_bound(path)) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// `--reload`: a HUP-style reload when a watched file changed.
    fn check_reload_watch(&mut self) {
        if self.supervisor.lifecycle.is_draining() {
            return;
        }
        let Some(changed) = self.reload_watch.as_mut().and_then(|watch| watch.poll(Instant::now())) else { return };
        log_info!("reload: {} changed", changed.display());
        self.dispatch(Event::Signal(Sig::Hup));
    }

    /// In the new arbiter of an upgrade: notices when the old arbiter has exited (we were reparented).
    fn check_old_arbiter(&mut self) {
        if let Upgrade::Parent(old) = self.supervisor.upgrade {
            if nix::unistd::getppid().as_raw() != old {
                self.dispatch(Event::OldArbiterGone);
            }
        }
    }

    /// Collects exited children.
    fn reap(&mut self) {
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Exit::Signal(signal as i32, signal.as_str())),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            self.heartbeats.remove(&pid.as_raw());
            self.release_metrics_slot(pid.as_raw());
            if let Some(seat) = self.seats.remove(&pid.as_raw()) {
                self.board.release(seat);
            }
            self.dispatch(Event::Exited { pid: pid.as_raw(), exit });
        }
    }

    fn beats(&self) -> Vec<Beat> {
        self.heartbeats
            .iter()
            .map(|(pid, heartbeat)| {
                let report = heartbeat.read_report();
                Beat {
                    pid: *pid,
                    ready: report != WorkerReport::Booting,
                    wants_retirement: report == WorkerReport::WantsRetirement,
                    silence: Duration::from_millis(heartbeat.silence_ms()),
                }
            })
            .collect()
    }

    fn wait_for_event(&self) {
        let now = Instant::now();
        let timeout = LOOP_INTERVAL.min(self.supervisor.next_spawn_at().saturating_duration_since(now));
        let mut fds = vec![nix::poll::PollFd::new(self.signals.fd(), nix::poll::PollFlags::POLLIN)];
        if let Some(pending) = &self.pending_reload {
            fds.push(nix::poll::PollFd::new(pending.fd(), nix::poll::PollFlags::POLLIN));
        }
        if let Some(admin) = &self.admin {
            fds.extend(admin.poll_fds());
        }
        let ms =
            nix::poll::PollTimeout::try_from(timeout.as_millis().max(1) as i32).unwrap_or(nix::poll::PollTimeout::NONE);
        let _ = nix::poll::poll(&mut fds, ms);
    }

    fn cleanup(&mut self) {
        if let Some(path) = self.admin.as_ref().and_then(|admin| admin.socket_file()) {
            let _ = std::fs::remove_file(path);
        }
        if let Some(pending) = self.pending_reload.take() {
            let _ = kill(pending.compiler_pid(), Signal::SIGKILL);
        }
        // Another arbiter of an upgrade still serves on our unix sockets: leave their files.
        if self.supervisor.upgrade == Upgrade::None {
            for path in &self.supervisor.current.payload.socket_files {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(pid_file) = &self.pid_file {
            pidfile::remove_if_ours(pid_file, std::process::id());
        }
    }
}

fn timing_of(settings: &Settings) -> Timing {
    Timing { watchdog: settings.watchdog_timeout, graceful: settings.graceful_timeout }
}
