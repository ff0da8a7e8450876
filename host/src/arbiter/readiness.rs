//! What the arbiter publishes about itself: the readiness line on stdout (or to the foreground
//! process with `--daemon`), and a machine-readable status for systemd and scripts: after every
//! change, a `STATUS=` datagram to `NOTIFY_SOCKET` with `X_RUSTCORN_*` fields (state, generation,
//! target and ready counts, the workers with their generation and phase). Tests and tools wait on
//! these fields, never on the wording of a log line.
use super::lifecycle::Upgrade;
use super::supervisor::Supervisor;
use crate::sys::{daemon, sd_notify};

/// A snapshot of the supervisor, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: &'static str,
    pub generation: u64,
    pub target: usize,
    pub ready: usize,
    /// `pid:generation:phase` for every worker.
    pub workers: Vec<String>,
    pub failed_reloads: u64,
    pub upgrade: String,
}

impl Status {
    pub fn of<P>(supervisor: &Supervisor<P>) -> Status {
        let mut workers: Vec<String> =
            supervisor.workers.iter().map(|w| format!("{}:{}:{}", w.pid, w.generation, w.phase_name())).collect();
        workers.sort();
        Status {
            state: supervisor.lifecycle.name(),
            generation: supervisor.current.id,
            target: supervisor.current.target,
            ready: supervisor.ready_in_current(),
            workers,
            failed_reloads: supervisor.failed_reloads,
            upgrade: match supervisor.upgrade {
                Upgrade::None => "none".into(),
                Upgrade::Child(pid) => format!("child:{pid}"),
                Upgrade::Parent(pid) => format!("parent:{pid}"),
            },
        }
    }

    /// The notification: a human `STATUS=` line and one `X_RUSTCORN_*` field per value.
    pub fn notification(&self) -> String {
        format!(
            "STATUS={} generation {}, {}/{} workers ready\nX_RUSTCORN_PID={}\nX_RUSTCORN_STATE={}\n\
             X_RUSTCORN_GENERATION={}\nX_RUSTCORN_TARGET={}\nX_RUSTCORN_READY={}\nX_RUSTCORN_WORKERS={}\n\
             X_RUSTCORN_FAILED_RELOADS={}\nX_RUSTCORN_UPGRADE={}",
            self.state,
            self.generation,
            self.ready,
            self.target,
            std::process::id(),
            self.state,
            self.generation,
            self.target,
            self.ready,
            self.workers.join(","),
            self.failed_reloads,
            self.upgrade
        )
    }
}

/// Publishes the status when it differs from the last one sent.
#[derive(Default)]
pub struct StatusPublisher {
    last: Option<Status>,
}

impl StatusPublisher {
    pub fn publish(&mut self, status: Status) {
        if self.last.as_ref() != Some(&status) {
            sd_notify::notify(&status.notification());
            self.last = Some(status);
        }
    }
}

/// The readiness line, printed once when the first generation serves.
pub fn announce(addresses: &str, workers: usize, ready_pipe: Option<daemon::ReadyPipe>) {
    let line = format!("rustcorn: listening on {addresses} (pid {}, {workers} workers)", std::process::id());
    match ready_pipe {
        // --daemon: the foreground process prints it and exits.
        Some(pipe) => pipe.send_ready(&line),
        None => crate::log::stdout_line(&line),
    }
    sd_notify::ready(&format!("serving with {workers} workers"));
}
