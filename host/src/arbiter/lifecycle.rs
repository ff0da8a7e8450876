//! The arbiter's lifecycle as data: a generation (what its workers run), the lifecycle that owns
//! the previous generation while a reload boots, the upgrade relation, and the worker records.
//! Booting → Running ⇄ Reloading { previous } → Draining { deadline, graceful } → Stopped.
use std::time::{Duration, Instant};

/// Everything one generation of workers runs with. `P` is what the shell needs to fork a worker
/// (settings, compiled app, listeners); the supervisor only moves it around.
#[derive(Debug)]
pub struct Generation<P> {
    pub id: u64,
    /// Workers wanted (`--workers`, then TTIN/TTOU/WINCH).
    pub target: usize,
    pub timing: Timing,
    pub payload: P,
}

/// The clocks the supervisor enforces, from the generation's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A worker silent for longer than this is stopped (SIGABRT, then SIGKILL).
    pub watchdog: Duration,
    /// Time a retiring worker gets to finish its requests (TERM, then SIGKILL).
    pub graceful: Duration,
}

#[derive(Debug)]
pub enum Lifecycle<P> {
    /// The first generation's workers are starting; nothing announced yet.
    Booting,
    /// The current generation serves.
    Running,
    /// A new generation boots while `previous` keeps serving; a boot failure makes `previous`
    /// current again (rollback), readiness retires it.
    Reloading { previous: Generation<P> },
    /// Shutting down: TERM (graceful) or INT/QUIT; workers still alive at `deadline` are killed.
    Draining { deadline: Instant, graceful: bool },
    /// Every worker is gone.
    Stopped,
}

impl<P> Lifecycle<P> {
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Booting => "booting",
            Lifecycle::Running => "running",
            Lifecycle::Reloading { .. } => "reloading",
            Lifecycle::Draining { .. } => "draining",
            Lifecycle::Stopped => "stopped",
        }
    }

    pub fn is_draining(&self) -> bool {
        matches!(self, Lifecycle::Draining { .. } | Lifecycle::Stopped)
    }
}

/// This arbiter's place in a USR2 upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    None,
    /// We started a new arbiter (our child) that serves beside us.
    Child(i32),
    /// We are the new arbiter; the old one (our parent) still runs.
    Parent(i32),
}

/// A worker's phase as the arbiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Booting,
    Serving,
    /// Sent TERM at this instant: finishing in-flight requests.
    Retiring(Instant),
    /// Sent SIGABRT (watchdog) or QUIT at this instant; SIGKILL follows after `KILL_GRACE`.
    Stopping(Instant),
    Killed,
}

/// Why a worker was told to leave (or why it left): the label of a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeaveReason {
    /// Exited on its own with a status (non-zero, or zero unasked).
    Exit,
    /// Killed by a signal nobody in rustcorn sent.
    Crash,
    /// Stopped by the heartbeat watchdog.
    Watchdog,
    /// Replaced after `--max-requests`.
    MaxRequests,
    /// Replaced by a newer generation (HUP).
    Reload,
    /// TTOU, WINCH or shutdown: not replaced.
    Removed,
}

impl LeaveReason {
    /// The `reason` label of `rustcorn_worker_restarts_total`, or None for a worker not replaced.
    pub fn restart_label(self) -> Option<&'static str> {
        match self {
            LeaveReason::Exit => Some("exit"),
            LeaveReason::Crash => Some("crash"),
            LeaveReason::Watchdog => Some("watchdog"),
            LeaveReason::MaxRequests => Some("max_requests"),
            LeaveReason::Reload => Some("reload"),
            LeaveReason::Removed => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerRecord {
    pub pid: i32,
    pub generation: u64,
    pub spawned_at: Instant,
    pub phase: Phase,
    pub ever_ready: bool,
    /// The worker reported that it served its `--max-requests`.
    pub wants_retirement: bool,
    /// Set when the arbiter told it to leave.
    pub leave_reason: Option<LeaveReason>,
}

impl WorkerRecord {
    /// Counts towards the target: of `generation`, not leaving, not asking to leave.
    pub fn is_active(&self, generation: u64) -> bool {
        self.generation == generation && self.is_up() && !self.wants_retirement
    }

    /// Booting or serving: not told to leave.
    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Booting | Phase::Serving)
    }

    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::Booting => "booting",
            Phase::Serving => "serving",
            Phase::Retiring(_) => "retiring",
            Phase::Stopping(_) => "stopping",
            Phase::Killed => "killed",
        }
    }
}
