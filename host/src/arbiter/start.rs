//! Starting the arbiter: validate and compile the app, open the sockets, detach with `--daemon`,
//! install the signal handlers and write the pid file, all before the first fork of a worker.
use super::generation::Payload;
use super::lifecycle::Upgrade;
use super::readiness::StatusPublisher;
use super::reload_watch::ReloadWatch;
use super::supervisor::Supervisor;
use super::upgrade::{self, StartContext};
use super::{sockets, timing_of, Arbiter, StartOptions};
use crate::app::prepare as app;
use crate::sys::signals::SignalPipe;
use crate::sys::{daemon, pidfile, privileges};
use crate::{log_info, log_warning};
use anyhow::Result;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

impl Arbiter {
    /// Validates the app, binds (or adopts inherited sockets), detaches with `--daemon`, installs
    /// signal handlers and writes the pid file. Nothing has been forked (except the compiler
    /// child, already reaped, and with `--daemon` the daemon itself) when this returns an error.
    pub fn start(options: StartOptions) -> Result<Arbiter> {
        let StartOptions { args, settings, process, launch_dir } = options;
        let start_context = StartContext::capture(launch_dir);
        log_info!("Starting rustcorn {}", env!("CARGO_PKG_VERSION"));
        crate::sys::process_name::set(crate::sys::process_name::Role::Arbiter, &settings.name);
        // An arbiter started by USR2 is detached already if its predecessor was.
        let upgraded = std::env::var_os(upgrade::FD_ENV).is_some();
        let old_arbiter = upgrade::old_arbiter();
        let credentials = privileges::resolve(args.ops.user.as_deref(), args.ops.group.as_deref())?;
        let app = app::prepare(&settings.app, &settings.cache_dir)?;
        log_info!("app {} (compiled code sha256 {})", settings.app.display(), app.sha256);
        let (metrics, admin) = super::admin::open(&settings, upgraded)?;
        // Room for two generations side by side during a reload, plus TTIN headroom (as metrics).
        let board = crate::worker::balance::board::Board::create(settings.workers.saturating_mul(4).max(64))?;
        let sockets = sockets::open(&settings, args.ops.reuse_port, !args.bind.is_empty())?;
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
        for bound in &sockets.bound {
            let address = super::generation::display_address(&bound.listener, settings.tls.is_some());
            log_info!("Listening at: {address} ({})", std::process::id());
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
        let (target, timing) = (settings.workers, timing_of(&settings));
        let payload = Payload {
            settings: Arc::new(settings),
            app,
            process,
            bound: sockets.bound,
            socket_files: sockets.socket_files,
        };
        let upgrade = old_arbiter.map_or(Upgrade::None, |pid| Upgrade::Parent(pid.as_raw()));
        Ok(Arbiter {
            supervisor: Supervisor::new(payload, target, timing, upgrade, Instant::now()),
            signals,
            heartbeats: HashMap::new(),
            start_context,
            pending_reload: None,
            pid_file,
            ready_pipe,
            credentials,
            reload_watch,
            rebindable: sockets.rebindable,
            status: StatusPublisher::default(),
            metrics,
            admin,
            metric_slots: HashMap::new(),
            board,
            seats: HashMap::new(),
        })
    }
}
