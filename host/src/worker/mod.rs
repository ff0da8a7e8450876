//! A worker process, after the fork: its own tokio runtime, wasmtime engine and epoch ticker;
//! it maps the compiled app, accepts on the inherited listeners, beats its heartbeat from the
//! event loop, reopens its log files on USR1, drains on TERM and exits at once on INT/QUIT.
pub mod accept;
pub mod connection;
pub mod dry_run;
pub mod framing;
pub mod guard;
pub mod http2;
pub mod protocol;
pub mod request_cap;
pub mod tls;
pub mod validate;

use crate::app::engine::{self, PoolSizing};
use crate::app::prepare::PreparedApp;
use crate::config::settings::Settings;
use crate::guest::handle::AppRuntime;
use crate::log::access::AccessLog;
use crate::sys::binds::Listener;
use crate::sys::heartbeat::{Heartbeat, WorkerReport};
use crate::{log_error, log_info, log_warning};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// Exit status of a worker that could not start (the arbiter does not respawn it in a loop).
pub const EXIT_BOOT_ERROR: i32 = 3;

/// How often a worker beats and checks on its arbiter.
pub const BEAT_INTERVAL: Duration = Duration::from_millis(200);

/// What the arbiter hands a worker at fork.
pub struct WorkerSpec<'a> {
    pub settings: Arc<Settings>,
    pub app: &'a PreparedApp,
    pub listeners: Vec<&'a Listener>,
    pub heartbeat: Heartbeat,
    pub arbiter_pid: nix::unistd::Pid,
    /// Requests after which this worker asks to be recycled; 0 = never.
    pub max_requests: u64,
    /// `--user`/`--group`: who the worker becomes once it has opened what it needs.
    pub credentials: Option<crate::sys::privileges::Credentials>,
    /// Where this worker records its metrics (its slot of the arbiter's shared arena).
    pub metrics: crate::metrics::Recorder,
}

/// Runs a worker to completion and returns its exit status.
pub fn run(spec: WorkerSpec<'_>) -> i32 {
    crate::sys::process_name::set(crate::sys::process_name::Role::Worker, &spec.settings.name);
    let runtime = if spec.settings.threads > 1 {
        tokio::runtime::Builder::new_multi_thread().worker_threads(spec.settings.threads).enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            log_error!("worker cannot start its runtime: {e}");
            return EXIT_BOOT_ERROR;
        }
    };
    runtime.block_on(async move {
        let (app, listeners, setup) = match boot(&spec) {
            Ok(booted) => booted,
            Err(e) => {
                log_error!("worker failed to boot: {e:#}");
                return EXIT_BOOT_ERROR;
            }
        };
        serve(spec, app, listeners, setup).await
    })
}

fn boot(spec: &WorkerSpec<'_>) -> Result<(Arc<AppRuntime>, Vec<accept::WorkerListener>, Arc<protocol::Setup>)> {
    let settings = &spec.settings;
    let listeners = accept::open_listeners(spec)?;
    // Read before privileges drop: the key file is often readable by root only.
    let tls = tls::Tls::load(settings).context("cannot load the TLS certificate")?;
    let setup = Arc::new(protocol::Setup {
        tls,
        plain: settings.protocols(false),
        first_bytes_timeout: settings.handshake_timeout,
        h2_streams: Arc::new(Semaphore::new(http2::stream_permits(settings))),
    });
    let pool = PoolSizing { instance_slots: settings.instance_slots, max_memory: settings.max_memory };
    let engine = engine::engine(Some(pool), false).context("cannot create the wasmtime engine")?;
    // The file the arbiter opened and digest-checked, inherited open: no path is re-opened.
    let component = spec.app.load(&engine)?;
    let linker = engine::linker(&engine)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;
    let access_log = match &settings.access_log {
        Some(target) => Some(Arc::new(AccessLog {
            format: settings.access_log_format.clone(),
            sink: target.open().with_context(|| format!("cannot open the access log {target:?}"))?,
        })),
        None => None,
    };
    // Sockets, the compiled app and the logs are open: drop privileges before any thread starts
    // and before the first request.
    if let Some(credentials) = spec.credentials {
        // Our unix socket files belong to the workers' identity (idempotent across workers).
        crate::sys::binds::chown_unix_sockets(
            &spec.listeners,
            &settings.binds,
            credentials.uid.as_raw(),
            credentials.gid.as_raw(),
        )?;
        crate::sys::privileges::drop_to(credentials).with_context(|| format!("cannot switch to {credentials}"))?;
    }
    crate::guest::clock::start_epoch_ticker(engine.clone()).context("cannot start the epoch ticker")?;
    let app = AppRuntime::new(pre, settings.clone(), access_log)
        .with_max_requests(spec.max_requests)
        .with_metrics(spec.metrics);
    Ok((Arc::new(app), listeners, setup))
}

async fn serve(
    spec: WorkerSpec<'_>,
    app: Arc<AppRuntime>,
    listeners: Vec<accept::WorkerListener>,
    setup: Arc<protocol::Setup>,
) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
    ) else {
        log_error!("worker cannot install its signal handlers");
        return EXIT_BOOT_ERROR;
    };
    let settings = spec.settings.clone();
    let (drain_tx, drain_rx) = watch::channel(false);
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(settings.worker_connections));
    for listener in listeners {
        let name = listener.listener.to_string();
        let accept = match accept::accept_loop(
            listener,
            app.clone(),
            slots.clone(),
            connections.clone(),
            drain_rx.clone(),
            setup.clone(),
        ) {
            Ok(accept) => accept,
            Err(e) => {
                log_error!("worker cannot use listener {name}: {e:#}");
                return EXIT_BOOT_ERROR;
            }
        };
        // Tracked like connections: the drain waits for an accept loop emptying its own queue.
        connections.spawn(accept);
    }
    spec.heartbeat.report(WorkerReport::Ready);
    crate::sys::signals::wake_arbiter();

    let mut beat = tokio::time::interval(BEAT_INTERVAL);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retirement_requested = false;
    let reason = loop {
        tokio::select! {
            _ = beat.tick() => {
                spec.heartbeat.beat();
                account_log_drops(&spec.metrics, &app);
                if nix::unistd::getppid() != spec.arbiter_pid {
                    break "its arbiter died";
                }
            }
            // The replacement starts first; this worker serves on until the arbiter retires it.
            _ = app.quota_reached.notified(), if spec.max_requests > 0 && !retirement_requested => {
                retirement_requested = true;
                log_info!("worker served {} requests (--max-requests); asking for a replacement", app.requests_served());
                spec.heartbeat.report(WorkerReport::WantsRetirement);
                crate::sys::signals::wake_arbiter();
            }
            _ = usr1.recv() => reopen_logs(&app),
            _ = term.recv() => break "TERM",
            _ = int.recv() => return exit_now("INT"),
            _ = quit.recv() => return exit_now("QUIT"),
        }
    };

    log_info!("worker draining ({reason})");
    let _ = drain_tx.send(true);
    connections.close();
    let drained = async {
        loop {
            tokio::select! {
                _ = connections.wait() => return true,
                _ = beat.tick() => {
                    spec.heartbeat.beat();
                    account_log_drops(&spec.metrics, &app);
                }
                _ = usr1.recv() => reopen_logs(&app),
                _ = int.recv() => return false,
                _ = quit.recv() => return false,
            }
        }
    };
    match tokio::time::timeout(settings.graceful_timeout, drained).await {
        Ok(true) => log_info!("worker exiting: drained"),
        Ok(false) => log_info!("worker exiting: told to stop now while draining"),
        Err(_) => log_warning!("worker exiting: in-flight requests still running after --graceful-timeout"),
    }
    0
}

/// USR1 from the arbiter: reopen the error log and the access log at their paths.
fn reopen_logs(app: &AppRuntime) {
    if let Err(e) = crate::log::reopen_error_log() {
        log_error!("worker cannot reopen the error log: {e}");
    }
    if let (Some(log), Some(target)) = (&app.access_log, &app.settings.access_log) {
        if let Err(e) = log.sink.reopen(target) {
            log_error!("worker cannot reopen the access log {target:?}: {e}");
            return;
        }
    }
    log_info!("worker reopened its log files");
}

/// After a beat: the dropped-lines notes of the logs that take lines again, and the counts into
/// this worker's metrics slot.
fn account_log_drops(metrics: &crate::metrics::Recorder, app: &AppRuntime) {
    crate::log::report_drops(app.access_log.as_deref().map(|log| &log.sink));
    metrics.log_lines_dropped(crate::log::dropped_counts());
}

fn exit_now(signal: &str) -> i32 {
    log_info!("worker exiting at once ({signal})");
    0
}
