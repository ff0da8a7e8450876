//! The arbiter: resolves settings, validates and compiles the app (in a child), binds, forks and
//! supervises workers (respawn with backoff, heartbeat watchdog, max-requests recycling), and
//! handles Gunicorn's signals (including the USR2 upgrade dance). Single-threaded, with no tokio
//! runtime and no wasmtime state, so every fork is safe.
pub mod reload_watch;
pub mod upgrade;

use crate::admin::server::AdminServer;
use crate::admin::{ArbiterView, RestartCounts};
use crate::app::prepare::{self as app, PreparedApp};
use crate::config::cli::ServeArgs;
use crate::config::settings::Settings;
use crate::metrics::arena::{Arena, SlotId};
use crate::sys::binds::{self, Listener};
use crate::sys::heartbeat::{monotonic_ms, Heartbeat, WorkerReport};
use crate::sys::signals::SignalPipe;
use crate::sys::{daemon, pidfile, privileges, sd_notify};
use crate::worker::{self, WorkerSpec, EXIT_BOOT_ERROR};
use crate::{log_critical, log_error, log_info, log_warning};
use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use reload_watch::ReloadWatch;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use upgrade::StartContext;

/// The arbiter's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Workers of the first generation are starting.
    Booting,
    /// Every first-generation worker has served as ready; the readiness line is printed.
    Running,
    /// Shutting down: workers are finishing (TERM) or being stopped (INT/QUIT).
    Draining,
    /// All workers are gone.
    Stopped,
}

/// The longest the main loop sleeps between checks of the watchdog and the workers.
const LOOP_INTERVAL: Duration = Duration::from_millis(100);
/// A worker that dies sooner than this after it was forked counts towards the respawn backoff.
const QUICK_DEATH: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a worker gets between SIGABRT (watchdog) or QUIT and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerPhase {
    Booting,
    Serving,
    /// Sent TERM at this instant: finishing in-flight requests.
    Retiring(Instant),
    /// Sent SIGABRT/QUIT at this instant; SIGKILL follows after KILL_GRACE.
    Stopping(Instant),
    Killed,
}

struct WorkerHandle {
    pid: Pid,
    generation: u64,
    heartbeat: Heartbeat,
    spawned_at: Instant,
    phase: WorkerPhase,
    ever_ready: bool,
    /// Its metrics slot, folded into the totals at reap.
    slot: Option<SlotId>,
    /// Why the arbiter asked it to go, for `rustcorn_worker_restarts_total` (None: not replaced).
    retire_reason: Option<&'static str>,
}

impl WorkerHandle {
    /// Counts towards the worker target: current generation, not leaving, not asking to leave.
    fn is_active(&self, generation: u64) -> bool {
        self.generation == generation
            && matches!(self.phase, WorkerPhase::Booting | WorkerPhase::Serving)
            && self.heartbeat.read_report() != WorkerReport::WantsRetirement
    }
}

/// The arbiter process.
pub struct Arbiter {
    args: ServeArgs,
    settings: Arc<Settings>,
    app: PreparedApp,
    listeners: Vec<Listener>,
    signals: SignalPipe,
    workers: Vec<WorkerHandle>,
    generation: u64,
    target_workers: usize,
    lifecycle: Lifecycle,
    drain_deadline: Option<Instant>,
    quick_deaths: u32,
    next_spawn_at: Instant,
    exit_code: i32,
    /// The command line and directory to re-execute on USR2.
    start_context: StartContext,
    /// After USR2: the new arbiter (our child) while it runs.
    new_arbiter: Option<Pid>,
    /// In an arbiter started by USR2: the old arbiter, until it exits.
    old_arbiter: Option<Pid>,
    /// A reload started and its generation is not serving yet (systemd gets READY=1 when it is).
    reload_in_progress: bool,
    /// The pid file this arbiter wrote (`PIDFILE`, or `PIDFILE.2` while the old arbiter runs).
    pid_file: Option<PathBuf>,
    /// `--daemon`: the pipe to the foreground process, until the readiness line is sent.
    ready_pipe: Option<daemon::ReadyPipe>,
    /// `--user`/`--group` for the workers.
    credentials: Option<privileges::Credentials>,
    /// `--reload`: the files whose change triggers a reload.
    reload_watch: Option<ReloadWatch>,
    /// Unix socket files this arbiter owns and removes on exit (not inherited fd:// or systemd ones).
    socket_files: Vec<PathBuf>,
    /// The listeners come from our own `--bind`s (not an upgrade or systemd), in their order.
    binds_are_ours: bool,
    /// `--admin-bind`: the metrics arena shared with workers, and the admin listener.
    metrics: Option<Arena>,
    admin: Option<AdminServer>,
    restarts: RestartCounts,
}

impl Arbiter {
    /// Validates the app, binds (or adopts inherited sockets), detaches with `--daemon`, installs
    /// signal handlers and writes the pid file. Nothing has been forked (except the compiler
    /// child, already reaped, and with `--daemon` the daemon itself) when this returns an error.
    pub fn start(args: ServeArgs, settings: Settings) -> Result<Arbiter> {
        let start_context = StartContext::capture()?;
        log_info!("Starting rustcorn {}", env!("CARGO_PKG_VERSION"));
        crate::sys::process_name::set(crate::sys::process_name::Role::Arbiter, &settings.name);
        // An arbiter started by USR2 is detached already if its predecessor was.
        let upgraded = std::env::var_os(upgrade::FD_ENV).is_some();
        let old_arbiter = upgrade::old_arbiter();
        let credentials = privileges::resolve(args.ops.user.as_deref(), args.ops.group.as_deref())?;
        let app = app::prepare(&settings.app, &settings.cache_dir)?;
        // Sockets we bound from --bind ourselves can be re-bound on HUP; inherited ones cannot.
        let binds_are_ours = !upgraded && std::env::var_os("LISTEN_FDS").is_none();
        let (listeners, socket_files) = open_listeners(&settings, &args)?;
        let (metrics, admin) = open_admin(&settings, upgraded)?;
        let ready_pipe = if args.ops.daemon && !upgraded {
            if settings.error_log == crate::log::LogTarget::Stderr {
                log_warning!(
                    "--daemon: the error log goes to /dev/null once detached; pass --error-logfile FILE to keep it"
                );
            }
            Some(daemon::daemonize()?)
        } else {
            None
        };
        for listener in &listeners {
            log_info!("Listening at: {listener} ({})", std::process::id());
        }
        let signals = SignalPipe::install()?;
        let pid_file = match &settings.pid_file {
            // The old arbiter still owns PIDFILE; ours is PIDFILE.2 until it exits.
            Some(path) if old_arbiter.is_some() => Some(pidfile::upgrade_path(path)),
            other => other.clone(),
        };
        if let Some(path) = &pid_file {
            pidfile::write(path, std::process::id())?;
        }
        if let Some(old) = old_arbiter {
            log_info!("upgrade: started by the arbiter with pid {old}; it keeps serving until it exits");
        }
        if args.ops.daemon {
            daemon::detach_stdio()?;
        }
        if let Some(credentials) = credentials {
            log_info!("workers run as {credentials}");
        }
        let reload_watch = args.ops.reload.then(|| {
            let files: Vec<PathBuf> =
                std::iter::once(settings.app.clone()).chain(args.ops.reload_extra_file.iter().cloned()).collect();
            ReloadWatch::new(files)
        });
        if let Some(watch) = &reload_watch {
            let files: Vec<String> = watch.files().map(|f| f.display().to_string()).collect();
            log_info!("--reload: watching {}", files.join(", "));
        }
        let target_workers = settings.workers;
        Ok(Arbiter {
            args,
            settings: Arc::new(settings),
            app,
            listeners,
            signals,
            workers: Vec::new(),
            generation: 1,
            target_workers,
            lifecycle: Lifecycle::Booting,
            drain_deadline: None,
            quick_deaths: 0,
            next_spawn_at: Instant::now(),
            exit_code: 0,
            start_context,
            new_arbiter: None,
            old_arbiter,
            reload_in_progress: false,
            reload_watch,
            ready_pipe,
            credentials,
            pid_file,
            socket_files,
            binds_are_ours,
            metrics,
            admin,
            restarts: RestartCounts::default(),
        })
    }

    /// The main loop, until every worker is gone after a shutdown. Returns the exit status.
    pub fn run(mut self) -> i32 {
        loop {
            self.reap();
            self.check_old_arbiter();
            self.check_reload_watch();
            self.check_workers();
            self.manage_workers();
            if self.lifecycle == Lifecycle::Stopped {
                break;
            }
            self.wait_for_event();
            for signal in self.signals.take() {
                self.on_signal(signal);
            }
            // After the signals: a TERM that arrived before an admin request is seen by it.
            self.serve_admin();
        }
        self.cleanup();
        log_info!("Shutting down: Master");
        self.exit_code
    }

    fn wait_for_event(&self) {
        let mut timeout = LOOP_INTERVAL;
        if self.next_spawn_at > Instant::now() {
            timeout = timeout.min(self.next_spawn_at - Instant::now());
        }
        let mut fds = vec![nix::poll::PollFd::new(self.signals.fd(), nix::poll::PollFlags::POLLIN)];
        if let Some(admin) = &self.admin {
            fds.extend(admin.poll_fds());
        }
        let ms =
            nix::poll::PollTimeout::try_from(timeout.as_millis().max(1) as i32).unwrap_or(nix::poll::PollTimeout::NONE);
        let _ = nix::poll::poll(&mut fds, ms);
    }

    /// Answers whatever the admin endpoint has ready, without blocking.
    fn serve_admin(&mut self) {
        let Some(mut admin) = self.admin.take() else { return };
        admin.service(Instant::now(), &mut |request| {
            let view = self.admin_view();
            crate::admin::routes::respond(&request.method, &request.path, request.accept.as_deref(), &view, |om| {
                crate::admin::scrape(&view, self.metrics.as_ref(), &self.listeners, om)
            })
        });
        self.admin = Some(admin);
    }

    /// What the admin endpoint reports about the workers.
    fn admin_view(&self) -> ArbiterView {
        ArbiterView {
            draining: self.lifecycle == Lifecycle::Draining,
            generation: self.generation,
            ready_workers: self.workers.iter().filter(|w| w.phase == WorkerPhase::Serving).count(),
            workers_by_state: crate::admin::count_states(self.workers.iter().map(|w| match w.phase {
                WorkerPhase::Booting => "booting",
                WorkerPhase::Serving => "ready",
                WorkerPhase::Retiring(_) => "retiring",
                WorkerPhase::Stopping(_) | WorkerPhase::Killed => "stopping",
            })),
            restarts_by_reason: self.restarts.by_reason(),
            worker_pids: self.workers.iter().map(|w| w.pid.as_raw()).collect(),
        }
    }

    fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        if self.lifecycle != lifecycle {
            log_info!("arbiter {:?} -> {:?}", self.lifecycle, lifecycle);
            self.lifecycle = lifecycle;
        }
    }

    fn on_signal(&mut self, signal: Signal) {
        match signal {
            Signal::SIGCHLD => {}
            Signal::SIGTERM => self.begin_shutdown(true),
            Signal::SIGINT | Signal::SIGQUIT => self.begin_shutdown(false),
            Signal::SIGHUP if self.lifecycle != Lifecycle::Draining => self.reload("Handling signal: hup"),
            Signal::SIGTTIN if self.lifecycle != Lifecycle::Draining => {
                self.target_workers += 1;
                log_info!("TTIN: now {} workers", self.target_workers);
            }
            Signal::SIGTTOU if self.lifecycle != Lifecycle::Draining => {
                if self.target_workers > 1 {
                    self.target_workers -= 1;
                    log_info!("TTOU: now {} workers", self.target_workers);
                } else {
                    log_info!("TTOU ignored: already at {} worker(s)", self.target_workers);
                }
            }
            Signal::SIGUSR1 => self.reopen_logs(),
            Signal::SIGUSR2 if self.lifecycle != Lifecycle::Draining => self.upgrade(),
            Signal::SIGWINCH if self.lifecycle != Lifecycle::Draining => self.stop_all_workers(),
            other => log_info!("{other} ignored"),
        }
    }

    /// TERM: graceful (workers finish in-flight requests); INT/QUIT: quick.
    fn begin_shutdown(&mut self, graceful: bool) {
        let now = Instant::now();
        if self.lifecycle == Lifecycle::Draining {
            if graceful {
                return;
            }
            log_info!("Quick shutdown requested while draining");
        } else {
            log_info!("Handling signal: {}", if graceful { "term" } else { "quick shutdown" });
            // After a USR2 the new arbiter is the service now: our exit is not its stop.
            if self.new_arbiter.is_none() {
                sd_notify::stopping();
            }
        }
        self.set_lifecycle(Lifecycle::Draining);
        // Stop accepting in the arbiter's copies too; workers close theirs as they drain.
        self.listeners.clear();
        if graceful {
            self.drain_deadline = Some(now + self.settings.graceful_timeout);
            for index in 0..self.workers.len() {
                if matches!(self.workers[index].phase, WorkerPhase::Booting | WorkerPhase::Serving) {
                    self.retire(index, now);
                }
            }
        } else {
            self.drain_deadline = Some(now + KILL_GRACE);
            for worker in &mut self.workers {
                if worker.phase != WorkerPhase::Killed {
                    let _ = kill(worker.pid, Signal::SIGQUIT);
                    worker.phase = WorkerPhase::Stopping(now);
                }
            }
        }
    }

    /// HUP with changed binds: keeps the sockets of binds that stay (so no connection is refused),
    /// binds the new ones, closes the dropped ones. The new generation gets the new set; the old
    /// workers keep their inherited sockets until they retire. Nothing changes if a bind fails.
    fn rebind(&mut self, settings: &Settings) -> Result<()> {
        if !self.binds_are_ours {
            log_warning!("reload: --bind changed but the sockets were inherited (upgrade or systemd); keeping them");
            return Ok(());
        }
        for (i, spec) in settings.binds.iter().enumerate() {
            if settings.binds[..i].contains(spec) {
                anyhow::bail!("--bind {spec:?} is given twice");
            }
        }
        let reuse_port = self.args.ops.reuse_port;
        let mut fresh = Vec::new();
        for spec in settings.binds.iter().filter(|spec| !self.settings.binds.contains(spec)) {
            fresh.push(binds::bind_all(std::slice::from_ref(spec), settings.backlog, reuse_port)?.remove(0));
        }
        let mut old: Vec<Option<Listener>> = std::mem::take(&mut self.listeners).into_iter().map(Some).collect();
        let mut fresh = fresh.into_iter();
        for spec in &settings.binds {
            let kept = self.settings.binds.iter().position(|s| s == spec).and_then(|i| old[i].take());
            // Every spec is either kept or was bound above (specs are distinct).
            self.listeners.extend(kept.or_else(|| fresh.next()));
        }
        for (spec, dropped) in self.settings.binds.iter().zip(old) {
            if let (Some(listener), binds::BindSpec::Unix(path)) = (dropped, spec) {
                drop(listener);
                let _ = std::fs::remove_file(path);
                self.socket_files.retain(|owned| owned != path);
            }
        }
        for spec in &settings.binds {
            if let binds::BindSpec::Unix(path) = spec {
                if !self.socket_files.contains(path) {
                    self.socket_files.push(path.clone());
                }
            }
        }
        log_info!("reload: now listening at {}", self.listening_addresses());
        Ok(())
    }

    /// Runs the whole settings resolution again (config file, RUSTCORN_CMD_ARGS, the original
    /// command line) from the directory the arbiter started in.
    fn resolve_settings_again(&mut self) -> Result<Settings, String> {
        let _ = std::env::set_current_dir(self.start_context.directory());
        let resolved = crate::config::layers::resolve(self.start_context.serve_args()).map_err(|e| e.to_string());
        let settings = resolved.and_then(|resolved| {
            crate::commands::serve::apply_process_settings(&resolved.args).map_err(|e| format!("{e:#}"))?;
            let settings = Settings::from_args(&resolved.args)
                .map_err(|e| crate::commands::serve::attribute_to_layer(&resolved, &e.to_string()))?;
            self.args = resolved.args;
            Ok(settings)
        });
        if settings.is_err() {
            // Back to where the serving generation runs.
            let _ = crate::commands::serve::apply_process_settings(&self.args);
        }
        settings
    }

    /// HUP: re-resolve settings and re-prepare the app; start a new generation, retire the old
    /// one once the new one is ready. A bad new app or setting keeps the old generation serving.
    fn reload(&mut self, why: &str) {
        log_info!("{why}; reloading settings and the app");
        // RELOADING=1 also names us the main pid: a HUP to the old arbiter of an upgrade is the
        // first step of a rollback, and systemd must not lose the service when the new one stops.
        sd_notify::reloading();
        let settings = match self.resolve_settings_again() {
            Ok(settings) => settings,
            Err(e) => {
                log_error!("reload failed, still serving the previous generation: {e}");
                sd_notify::ready("reload failed; serving the previous generation");
                return;
            }
        };
        let app = match app::prepare(&settings.app, &settings.cache_dir) {
            Ok(app) => app,
            Err(e) => {
                log_error!("reload failed, still serving the previous generation: {e:#}");
                sd_notify::ready("reload failed; serving the previous generation");
                return;
            }
        };
        if settings.binds != self.settings.binds {
            if let Err(e) = self.rebind(&settings) {
                log_error!("reload failed, still serving the previous generation: {e:#}");
                sd_notify::ready("reload failed; serving the previous generation");
                return;
            }
        }
        if settings.admin_bind != self.settings.admin_bind {
            log_warning!("reload: --admin-bind changes take effect at the next restart");
        }
        self.reload_in_progress = true;
        self.target_workers = settings.workers;
        self.settings = Arc::new(settings);
        self.app = app;
        self.generation += 1;
        self.quick_deaths = 0;
        self.next_spawn_at = Instant::now();
        log_info!("reload: starting generation {}", self.generation);
    }

    /// USR1: reopen the error log here and tell every worker to reopen its error and access logs.
    fn reopen_logs(&mut self) {
        log_info!("Handling signal: usr1; reopening the log files");
        match crate::log::reopen_error_log() {
            Ok(()) => log_info!("reopened the error log"),
            Err(e) => log_error!("cannot reopen the error log {:?}: {e}", self.settings.error_log),
        }
        for worker in &self.workers {
            if worker.phase != WorkerPhase::Killed {
                let _ = kill(worker.pid, Signal::SIGUSR1);
            }
        }
    }

    /// USR2: start a new arbiter from the same command line, handing it the listening sockets.
    /// Both serve until the old one is told to stop (WINCH, then TERM) or the new one is (rollback:
    /// HUP the old one, TERM the new one).
    fn upgrade(&mut self) {
        if let Some(pid) = self.new_arbiter {
            log_warning!("USR2 ignored: the new arbiter (pid {pid}) from the last USR2 is still running");
            return;
        }
        if let Some(pid) = self.old_arbiter {
            log_warning!("USR2 ignored: the old arbiter (pid {pid}) is still running; stop it first");
            return;
        }
        log_info!("Handling signal: usr2; starting a new arbiter with the same command line");
        match upgrade::reexec(&self.start_context, &self.listeners) {
            Ok(pid) => {
                self.new_arbiter = Some(pid);
                log_info!("upgrade: new arbiter pid {pid}");
            }
            Err(e) => log_error!("upgrade failed, still serving: {e:#}"),
        }
    }

    /// WINCH: stop every worker but keep the arbiter (and its sockets); HUP or TTIN starts
    /// workers again. Ignored in the foreground of a terminal, where WINCH means "resized".
    fn stop_all_workers(&mut self) {
        if crate::sys::signals::in_terminal_foreground() {
            log_info!("WINCH ignored: running in the foreground of a terminal (a window resize sends WINCH)");
            return;
        }
        log_info!("Handling signal: winch; stopping all workers (the arbiter stays; HUP or TTIN starts them again)");
        self.target_workers = 0;
        let now = Instant::now();
        for index in 0..self.workers.len() {
            if matches!(self.workers[index].phase, WorkerPhase::Booting | WorkerPhase::Serving) {
                self.retire(index, now);
            }
        }
    }

    /// `--reload`: a HUP-style reload when a watched file changed.
    fn check_reload_watch(&mut self) {
        if self.lifecycle == Lifecycle::Draining {
            return;
        }
        let Some(changed) = self.reload_watch.as_mut().and_then(|watch| watch.poll(Instant::now())) else {
            return;
        };
        self.reload(&format!("reload: {} changed", changed.display()));
    }

    /// In the new arbiter of an upgrade: once the old arbiter has exited (we were reparented),
    /// take over its pid file.
    fn check_old_arbiter(&mut self) {
        let Some(old) = self.old_arbiter else { return };
        if nix::unistd::getppid() == old {
            return;
        }
        self.old_arbiter = None;
        log_info!("upgrade: the old arbiter (pid {old}) has exited; this arbiter is now the only one");
        if let (Some(current), Some(wanted)) = (&self.pid_file, &self.settings.pid_file) {
            match std::fs::rename(current, wanted) {
                Ok(()) => self.pid_file = Some(wanted.clone()),
                Err(e) => log_error!("cannot rename {} to {}: {e}", current.display(), wanted.display()),
            }
        }
    }

    /// Sends TERM: the worker stops accepting and finishes its in-flight requests.
    fn retire(&mut self, index: usize, now: Instant) {
        let worker = &mut self.workers[index];
        let _ = kill(worker.pid, Signal::SIGTERM);
        worker.phase = WorkerPhase::Retiring(now);
    }

    /// Collects exited workers and decides whether a failure is fatal.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => status,
            };
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, signal, _) => (pid, None, Some(signal)),
                _ => continue,
            };
            if self.new_arbiter == Some(pid) {
                self.new_arbiter = None;
                // Rolled back (or the new arbiter failed): we are the service's main process again.
                sd_notify::notify(&format!("MAINPID={}", std::process::id()));
                match (code, signal) {
                    (Some(code), _) => {
                        log_warning!("upgrade: the new arbiter (pid {pid}) exited with code {code}")
                    }
                    (_, Some(signal)) => {
                        log_warning!("upgrade: the new arbiter (pid {pid}) was stopped by {signal}")
                    }
                    _ => {}
                }
                continue;
            }
            let Some(index) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(index);
            if let (Some(arena), Some(slot)) = (self.metrics.as_mut(), worker.slot) {
                arena.release(slot);
            }
            let expected =
                matches!(worker.phase, WorkerPhase::Retiring(_) | WorkerPhase::Stopping(_) | WorkerPhase::Killed);
            if self.lifecycle != Lifecycle::Draining {
                let reason = match (expected, signal) {
                    (true, _) => worker.retire_reason,
                    (false, Some(_)) => Some("crash"),
                    (false, None) => Some("exit"),
                };
                if let Some(reason) = reason {
                    self.restarts.count(reason);
                }
            }
            match (code, signal) {
                (Some(0), _) if expected => log_info!("Worker exiting (pid: {pid})"),
                (Some(code), _) => log_error!("Worker (pid:{pid}) exited with code {code}"),
                (_, Some(Signal::SIGKILL)) if !expected => {
                    log_error!("Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
                }
                (_, Some(signal)) if !expected => {
                    log_error!("Worker (pid:{pid}) was sent {signal}!")
                }
                (_, Some(signal)) => log_info!("Worker (pid:{pid}) stopped by {signal}"),
                _ => {}
            }
            if expected || self.lifecycle == Lifecycle::Draining {
                continue;
            }
            if code == Some(EXIT_BOOT_ERROR) && !worker.ever_ready {
                self.on_boot_failure(worker.generation);
            } else if worker.spawned_at.elapsed() < QUICK_DEATH {
                self.quick_deaths += 1;
                let backoff = Duration::from_millis(100u64 << self.quick_deaths.min(6)).min(MAX_BACKOFF);
                log_warning!(
                    "worker died {:?} after it started; next spawn in {backoff:?}",
                    worker.spawned_at.elapsed()
                );
                self.next_spawn_at = Instant::now() + backoff;
            } else {
                self.quick_deaths = 0;
            }
        }
    }

    /// A worker that cannot boot will not boot on retry: give up on its generation.
    fn on_boot_failure(&mut self, generation: u64) {
        let generation_has_served = self.workers.iter().any(|w| w.generation == generation && w.ever_ready);
        if generation_has_served {
            self.quick_deaths += 1;
            self.next_spawn_at =
                Instant::now() + Duration::from_millis(100u64 << self.quick_deaths.min(6)).min(MAX_BACKOFF);
            return;
        }
        let older_serving = self.workers.iter().any(|w| w.generation < generation && w.ever_ready);
        if older_serving && generation == self.generation {
            log_error!("generation {generation} failed to boot; keeping the previous generation");
            for worker in &mut self.workers {
                if worker.generation == generation && worker.phase != WorkerPhase::Killed {
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Killed;
                }
            }
            self.generation -= 1;
            if std::mem::take(&mut self.reload_in_progress) {
                sd_notify::ready("reload failed; serving the previous generation");
            }
            return;
        }
        log_critical!("Worker failed to boot.");
        eprintln!("rustcorn: error: worker failed to boot (see the error log above)");
        self.exit_code = EXIT_BOOT_ERROR;
        self.begin_shutdown(false);
    }

    /// Readiness, the heartbeat watchdog, and escalation of TERM/ABRT to KILL.
    fn check_workers(&mut self) {
        let now = Instant::now();
        let watchdog_ms = self.settings.watchdog_timeout.as_millis() as u64;
        let graceful = self.settings.graceful_timeout;
        for worker in &mut self.workers {
            if worker.phase == WorkerPhase::Booting && worker.heartbeat.read_report() != WorkerReport::Booting {
                worker.phase = WorkerPhase::Serving;
                worker.ever_ready = true;
                log_info!("Worker ready (pid: {}, generation {})", worker.pid, worker.generation);
                self.quick_deaths = 0;
            }
            match worker.phase {
                WorkerPhase::Booting | WorkerPhase::Serving | WorkerPhase::Retiring(_) => {
                    let silence = worker.heartbeat.silence_ms();
                    if silence > watchdog_ms {
                        log_critical!("WORKER TIMEOUT (pid:{}): no heartbeat for {} ms", worker.pid, silence);
                        let _ = kill(worker.pid, Signal::SIGABRT);
                        worker.phase = WorkerPhase::Stopping(now);
                        worker.retire_reason = Some("watchdog");
                        continue;
                    }
                }
                _ => {}
            }
            match worker.phase {
                WorkerPhase::Retiring(since) if now.duration_since(since) > graceful + KILL_GRACE => {
                    log_warning!("Worker (pid:{}) still running after --graceful-timeout; killing it", worker.pid);
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Killed;
                }
                WorkerPhase::Stopping(since) if now.duration_since(since) > KILL_GRACE => {
                    let _ = kill(worker.pid, Signal::SIGKILL);
                    worker.phase = WorkerPhase::Killed;
                }
                _ => {}
            }
        }
    }

    /// Keeps the worker count at the target, rolls generations and recycles workers.
    fn manage_workers(&mut self) {
        let now = Instant::now();
        if self.lifecycle == Lifecycle::Draining {
            if self.workers.is_empty() {
                self.set_lifecycle(Lifecycle::Stopped);
            } else if self.drain_deadline.is_some_and(|deadline| now > deadline) {
                for worker in &mut self.workers {
                    if worker.phase != WorkerPhase::Killed {
                        log_warning!("Worker (pid:{}) did not stop in time; killing it", worker.pid);
                        let _ = kill(worker.pid, Signal::SIGKILL);
                        worker.phase = WorkerPhase::Killed;
                    }
                }
            }
            return;
        }

        let generation = self.generation;
        let active = self.workers.iter().filter(|w| w.is_active(generation)).count();
        if active < self.target_workers && now >= self.next_spawn_at {
            for _ in active..self.target_workers {
                if let Err(e) = self.spawn_worker() {
                    log_error!("cannot start a worker: {e:#}");
                    self.next_spawn_at = now + Duration::from_secs(1);
                    break;
                }
            }
        }
        if active > self.target_workers {
            // TTOU: retire the oldest active workers.
            let mut surplus: Vec<usize> =
                (0..self.workers.len()).filter(|&i| self.workers[i].is_active(generation)).collect();
            surplus.sort_by_key(|&i| self.workers[i].spawned_at);
            for &index in surplus.iter().take(active - self.target_workers) {
                log_info!("retiring worker {} (TTOU)", self.workers[index].pid);
                self.retire(index, now);
            }
        }

        // Retire old generations and recycled workers only once their replacements serve.
        let ready = self.workers.iter().filter(|w| w.is_active(generation) && w.phase == WorkerPhase::Serving).count();
        if ready >= self.target_workers {
            for index in 0..self.workers.len() {
                let worker = &self.workers[index];
                let replaceable = matches!(worker.phase, WorkerPhase::Booting | WorkerPhase::Serving)
                    && (worker.generation != generation
                        || worker.heartbeat.read_report() == WorkerReport::WantsRetirement);
                if replaceable {
                    log_info!("retiring worker {} (generation {})", worker.pid, worker.generation);
                    let reason = if worker.generation != generation { "reload" } else { "max_requests" };
                    self.retire(index, now);
                    self.workers[index].retire_reason = Some(reason);
                }
            }
            if self.lifecycle == Lifecycle::Booting && self.target_workers > 0 {
                self.set_lifecycle(Lifecycle::Running);
                self.reload_in_progress = false;
                self.announce_ready();
            } else if self.reload_in_progress && self.target_workers > 0 {
                self.reload_in_progress = false;
                log_info!("reload: generation {} is serving", self.generation);
                sd_notify::ready(&format!("reloaded; serving with {} workers", self.target_workers));
            }
        }
    }

    /// Where clients reach us, as the readiness line shows it: `http://HOST:PORT unix:PATH ...`.
    fn listening_addresses(&self) -> String {
        self.listeners.iter().map(Listener::display_address).collect::<Vec<_>>().join(" ")
    }

    fn announce_ready(&mut self) {
        let line = format!(
            "rustcorn: listening on {} (pid {}, {} workers)",
            self.listening_addresses(),
            std::process::id(),
            self.target_workers
        );
        match self.ready_pipe.take() {
            // --daemon: the foreground process prints it and exits.
            Some(pipe) => pipe.send_ready(&line),
            None => println!("{line}"),
        }
        sd_notify::ready(&format!("serving with {} workers", self.target_workers));
    }

    fn spawn_worker(&mut self) -> Result<()> {
        let heartbeat = Heartbeat::create(&self.settings.worker_tmp_dir)?;
        let max_requests = match self.settings.max_requests {
            0 => 0,
            n => n + jitter(self.settings.max_requests_jitter),
        };
        let arbiter_pid = nix::unistd::getpid();
        let slot = self.metrics.as_mut().and_then(|arena| {
            let slot = arena.claim();
            if slot.is_none() {
                log_warning!("no free metrics slot: this worker's requests will not be counted");
            }
            slot
        });
        let recorder = match (&self.metrics, slot) {
            (Some(arena), Some(slot)) => crate::metrics::Recorder::new(arena.worker_slot(slot)),
            _ => crate::metrics::Recorder::disabled(),
        };
        // SAFETY: the arbiter is single-threaded (no runtime, no wasmtime threads), so the child
        // starts from a consistent copy; it builds its own runtime and engine.
        match unsafe { nix::unistd::fork() }.context("fork failed")? {
            nix::unistd::ForkResult::Child => {
                crate::sys::signals::reset_in_child();
                // Only the arbiter may tell the foreground process it is ready.
                drop(self.ready_pipe.take());
                // Nor serve the admin endpoint: close its sockets in the worker.
                drop(self.admin.take());
                let code = worker::run(WorkerSpec {
                    settings: self.settings.clone(),
                    app: &self.app,
                    listeners: &self.listeners,
                    heartbeat: heartbeat.view(),
                    arbiter_pid,
                    max_requests,
                    credentials: self.credentials,
                    metrics: recorder,
                });
                std::process::exit(code);
            }
            nix::unistd::ForkResult::Parent { child } => {
                log_info!("Booting worker with pid: {child}");
                self.workers.push(WorkerHandle {
                    pid: child,
                    generation: self.generation,
                    heartbeat,
                    spawned_at: Instant::now(),
                    phase: WorkerPhase::Booting,
                    ever_ready: false,
                    slot,
                    retire_reason: None,
                });
                Ok(())
            }
        }
    }

    fn cleanup(&mut self) {
        if let Some(path) = self.admin.as_ref().and_then(|admin| admin.socket_file()) {
            let _ = std::fs::remove_file(path);
        }
        // Another arbiter of an upgrade still serves on our unix sockets: leave their files.
        if self.new_arbiter.is_none() && self.old_arbiter.is_none() {
            for path in &self.socket_files {
                let _ = std::fs::remove_file(path);
            }
        }
        if let Some(pid_file) = &self.pid_file {
            pidfile::remove_if_ours(pid_file, std::process::id());
        }
    }
}

/// The listening sockets: passed by the old arbiter of an upgrade, else by systemd socket
/// activation, else bound (or adopted, for `fd://N`) from `--bind`. Also returns the unix socket
/// files this arbiter owns (removed on exit).
fn open_listeners(settings: &Settings, args: &ServeArgs) -> Result<(Vec<Listener>, Vec<PathBuf>)> {
    let reuse_port = args.ops.reuse_port;
    // Ours are the unix sockets `--bind unix:PATH` names (bound by us, or by the arbiter we
    // upgraded from with the same command line); fd:// and systemd sockets belong to whoever
    // passed them.
    let owned_files = settings
        .binds
        .iter()
        .filter_map(|spec| match spec {
            binds::BindSpec::Unix(path) => Some(path.clone()),
            _ => None,
        })
        .collect();
    if let Some(listeners) = upgrade::inherited_listeners(reuse_port)? {
        log_info!("upgrade: using the {} listening socket(s) of the old arbiter", listeners.len());
        return Ok((listeners, owned_files));
    }
    if let Some(listeners) = binds::systemd_listeners()? {
        log_info!("using the {} listening socket(s) passed by systemd (LISTEN_FDS)", listeners.len());
        if !args.bind.is_empty() {
            log_warning!("--bind is ignored: the sockets come from systemd socket activation");
        }
        return Ok((listeners, Vec::new()));
    }
    let listeners = binds::bind_all(&settings.binds, settings.backlog, reuse_port)?;
    if reuse_port {
        log_info!("--reuse-port: each worker listens on its own socket for the TCP binds");
    }
    Ok((listeners, owned_files))
}

/// `--admin-bind`: the shared metrics arena (mapped before any fork) and the admin listener.
/// An arbiter started by USR2 cannot take the address its predecessor still holds: it runs
/// without the admin endpoint (a warning says so) rather than fail the upgrade.
fn open_admin(settings: &Settings, upgraded: bool) -> Result<(Option<Arena>, Option<AdminServer>)> {
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
    let arena = Arena::create((settings.workers * 4).max(64))?;
    log_info!("Admin endpoint at: {} (/metrics, /livez, /readyz)", admin.address());
    Ok((Some(arena), Some(admin)))
}

/// A value in 0..=max, different per worker.
fn jitter(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let seed = monotonic_ms() ^ (u64::from(std::process::id()) << 17) ^ nanos();
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    mixed % (max + 1)
}

fn nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)
}
