//! A worker process, after the fork: its own tokio runtime, wasmtime engine and epoch ticker;
//! it maps the compiled app, accepts on the inherited listeners, beats its heartbeat from the
//! event loop, reopens its log files on USR1, drains on TERM and exits at once on INT/QUIT.
pub mod accept;
pub mod balance;

use crate::app::engine::{self, PoolSizing};
use crate::app::prepare::PreparedApp;
use crate::app::world::{AppPre, World};
use crate::config::settings::Settings;
use crate::guest::handle::AppRuntime;
use crate::guest::outbound::Outbound;
use crate::http::tls::TlsAcceptor;
use crate::http::Front;
use crate::log::access::AccessLog;
use crate::sys::binds::Listener;
use crate::sys::heartbeat::{Heartbeat, WorkerReport};
use crate::{log_debug, log_error, log_info, log_warning};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

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
    /// The metrics labels of the granted buckets, in grant order (`Arena::bucket_labels`).
    pub keyvalue_labels: Vec<u16>,
    /// Its seat on the load board the workers balance connections with (None: no free seat).
    pub seat: Option<balance::board::WorkerSeat>,
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
        let (front, listeners) = match boot(&spec) {
            Ok(booted) => booted,
            Err(e) => {
                log_error!("worker failed to boot: {e:#}");
                return EXIT_BOOT_ERROR;
            }
        };
        run_until_stopped(spec, front, listeners).await
    })
}

/// Everything a worker opens before it serves: its listeners, TLS acceptor, engine, compiled
/// app and logs; then it drops privileges and starts its epoch ticker.
fn boot(spec: &WorkerSpec<'_>) -> Result<(Arc<Front>, Vec<accept::WorkerListener>)> {
    let settings = &spec.settings;
    let listeners = accept::open_listeners(spec)?;
    // Read before privileges drop: the key file is often readable by root only.
    let tls = TlsAcceptor::load(settings).context("cannot load the TLS certificate")?;
    let pool = PoolSizing {
        instance_slots: settings.instance_slots,
        max_memory: settings.max_memory,
        keep_resident: settings.instance_keep_resident,
    };
    // The file the arbiter opened and digest-checked, inherited open: no path is re-opened.
    let (engine, component, world) = load_app(spec.app, pool)?;
    let linker = engine::linker(&engine, world)?;
    let pre = AppPre::new(linker.instantiate_pre(&component)?, &spec.app.compiled)?;
    let access_log = match &settings.access_log {
        Some(target) => Some(Arc::new(AccessLog {
            format: settings.access_log_format.clone(),
            sink: target.open().with_context(|| format!("cannot open the access log {target:?}"))?,
        })),
        None => None,
    };
    // Like the key file, a --config-file (a mounted secret) is read before privileges drop.
    let config = crate::state::config_store::ConfigValues::read(&settings.state)?;
    // Sockets, the compiled app and the logs are open: drop privileges before the epoch ticker
    // starts and before the first request (with `--threads > 1` the runtime's threads already run,
    // and set*id applies to every thread of the process).
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
    // Opened as the workers' identity, so the files SQLite creates beside the database are theirs.
    // Inside the runtime: a Redis bucket's connection manager belongs to it (and connects lazily).
    let keyvalue = crate::state::keyvalue::Keyvalue::open(&settings.state, spec.metrics, &spec.keyvalue_labels)?;
    let app = AppRuntime::new(pre, settings.clone())
        .with_max_requests(spec.max_requests)
        .with_metrics(spec.metrics)
        .with_outbound(Outbound::new(settings.outbound.clone()))
        .with_state(crate::state::AppState { keyvalue, config });
    let front = Front::new(Arc::new(app), access_log, tls);
    Ok((Arc::new(front), listeners))
}

/// The engine the compiled app was made for (each world has its own configuration, see
/// `engine::config`; the 0.2 one is tried first) and the app mapped into it.
fn load_app(app: &PreparedApp, pool: PoolSizing) -> Result<(wasmtime::Engine, wasmtime::component::Component, World)> {
    let mut first_error = None;
    for world in World::ALL {
        let engine = engine::engine(Some(pool), false, world).context("cannot create the wasmtime engine")?;
        match app.load(&engine) {
            Ok(component) => return Ok((engine, component, world)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| anyhow::anyhow!("cannot load {}", app.compiled.display())))
}

/// Serves until TERM (drain), INT or QUIT (at once), beating the heartbeat and reopening the logs
/// on USR1 meanwhile; returns the exit status.
async fn run_until_stopped(spec: WorkerSpec<'_>, front: Arc<Front>, listeners: Vec<accept::WorkerListener>) -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(term), Ok(int), Ok(quit), Ok(usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::quit()),
        signal(SignalKind::user_defined1()),
    ) else {
        log_error!("worker cannot install its signal handlers");
        return EXIT_BOOT_ERROR;
    };
    let mut signals = Signals { term, int, quit, usr1 };
    let (drain_tx, drain_rx) = watch::channel(false);
    let connections = TaskTracker::new();
    if let Err(e) = start_accepting(listeners, &front, &connections, &drain_rx, spec.seat) {
        log_error!("{e:#}");
        return EXIT_BOOT_ERROR;
    }
    spec.heartbeat.report(WorkerReport::Ready);
    crate::sys::signals::wake_arbiter();

    let mut beat = tokio::time::interval(BEAT_INTERVAL);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reason = match serve_until_told(&spec, &front, &mut signals, &mut beat).await {
        Stop::Drain(reason) => reason,
        Stop::Now(signal) => return exit_now(signal),
    };
    log_info!("worker draining ({reason})");
    if let Some(seat) = spec.seat {
        seat.stop_accepting();
    }
    let _ = drain_tx.send(true);
    connections.close();
    drain(&spec, &front, &connections, &mut signals, &mut beat).await;
    0
}

/// The signals a worker acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

/// Why a worker stops serving.
enum Stop {
    /// TERM or a dead arbiter: finish the requests in flight.
    Drain(&'static str),
    /// INT or QUIT: exit at once.
    Now(&'static str),
}

/// One accept loop per listener, tracked like connections (the drain waits for an accept loop
/// emptying its own queue); all of them share the `--worker-connections` slots and the seat.
fn start_accepting(
    listeners: Vec<accept::WorkerListener>,
    front: &Arc<Front>,
    connections: &TaskTracker,
    draining: &watch::Receiver<bool>,
    seat: Option<balance::board::WorkerSeat>,
) -> Result<()> {
    let capacity = front.settings.worker_connections;
    let slots = Arc::new(Semaphore::new(capacity));
    for listener in listeners {
        let name = listener.listener.to_string();
        let (front, slots, tracker, draining) = (front.clone(), slots.clone(), connections.clone(), draining.clone());
        let accept = accept::accept_loop(listener, front, slots, tracker, draining, seat)
            .with_context(|| format!("worker cannot use listener {name}"))?;
        connections.spawn(accept);
    }
    if let Some(seat) = seat {
        seat.start_accepting(capacity);
    }
    Ok(())
}

/// Serves (the accept loops run on their own tasks) until a signal or the arbiter's death says stop.
async fn serve_until_told(
    spec: &WorkerSpec<'_>,
    front: &Front,
    signals: &mut Signals,
    beat: &mut tokio::time::Interval,
) -> Stop {
    let app = &front.app;
    let mut retirement_requested = false;
    let trim_after = spec.settings.instance_trim_after;
    // Without a period the branch below is off; the interval only needs a valid length.
    let mut trim = tokio::time::interval(trim_after.unwrap_or(Duration::from_secs(3600)));
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    trim.reset();
    loop {
        tokio::select! {
            _ = beat.tick() => {
                spec.heartbeat.beat();
                app.trim.note_live();
                account_log_drops(&spec.metrics, front);
                if nix::unistd::getppid() != spec.arbiter_pid {
                    return Stop::Drain("its arbiter died");
                }
            }
            // The replacement starts first; this worker serves on until the arbiter retires it.
            _ = app.quota_reached.notified(), if spec.max_requests > 0 && !retirement_requested => {
                retirement_requested = true;
                log_info!("worker served {} requests (--max-requests); asking for a replacement", app.requests_served());
                spec.heartbeat.report(WorkerReport::WantsRetirement);
                crate::sys::signals::wake_arbiter();
            }
            _ = trim.tick(), if trim_after.is_some() => trim_unused_slots(app),
            _ = signals.usr1.recv() => reopen_logs(front),
            _ = signals.term.recv() => return Stop::Drain("TERM"),
            _ = signals.int.recv() => return Stop::Now("INT"),
            _ = signals.quit.recv() => return Stop::Now("QUIT"),
        }
    }
}

/// Waits up to `--graceful-timeout` for the connections to finish, still beating; INT or QUIT
/// cut the wait short.
async fn drain(
    spec: &WorkerSpec<'_>,
    front: &Front,
    connections: &TaskTracker,
    signals: &mut Signals,
    beat: &mut tokio::time::Interval,
) {
    let drained = async {
        loop {
            tokio::select! {
                _ = connections.wait() => return true,
                _ = beat.tick() => {
                    spec.heartbeat.beat();
                    account_log_drops(&spec.metrics, front);
                }
                _ = signals.usr1.recv() => reopen_logs(front),
                _ = signals.int.recv() => return false,
                _ = signals.quit.recv() => return false,
            }
        }
    };
    match tokio::time::timeout(front.settings.graceful_timeout, drained).await {
        Ok(true) => log_info!("worker exiting: drained"),
        Ok(false) => log_info!("worker exiting: told to stop now while draining"),
        Err(_) => log_warning!("worker exiting: in-flight requests still running after --graceful-timeout"),
    }
}

/// At the end of each `--instance-trim-after` period: give back what unused instance slots keep
/// resident beyond the period's need.
fn trim_unused_slots(app: &crate::guest::handle::AppRuntime) {
    let released = app.trim.end_period();
    if released > 0 {
        log_debug!("worker gave back {} KiB kept resident by unused instance slots", released >> 10);
    }
}

/// USR1 from the arbiter: reopen the error log and the access log at their paths.
fn reopen_logs(front: &Front) {
    if let Err(e) = crate::log::reopen_error_log() {
        log_error!("worker cannot reopen the error log: {e}");
    }
    if let (Some(log), Some(target)) = (front.access_log(), &front.settings.access_log) {
        if let Err(e) = log.sink.reopen(target) {
            log_error!("worker cannot reopen the access log {target:?}: {e}");
            return;
        }
    }
    log_info!("worker reopened its log files");
}

/// After a beat: the dropped-lines notes of the logs that take lines again, and the counts into
/// this worker's metrics slot.
fn account_log_drops(metrics: &crate::metrics::Recorder, front: &Front) {
    crate::log::report_drops(front.access_log().map(|log| &log.sink));
    metrics.log_lines_dropped(crate::log::dropped_counts());
}

fn exit_now(signal: &str) -> i32 {
    log_info!("worker exiting at once ({signal})");
    0
}
