//! The arbiter's published status (the `X_RUSTCORN_*` fields it sends to `NOTIFY_SOCKET`), collected
//! for a test to wait on state (generation, ready count, which workers live) rather than on the
//! wording of log lines.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One status notification.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub pid: u32,
    pub state: String,
    pub generation: u64,
    pub target: usize,
    pub ready: usize,
    /// (pid, generation, phase) of every worker the arbiter tracks.
    pub workers: Vec<(u32, u64, String)>,
    pub failed_reloads: u64,
    pub upgrade: String,
}

impl Status {
    /// Parses a notification; None when it carries no status fields (READY=1 alone, ...).
    pub fn parse(text: &str) -> Option<Status> {
        let mut status = Status::default();
        let mut seen = false;
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else { continue };
            let Some(key) = key.strip_prefix("X_RUSTCORN_") else { continue };
            seen = true;
            match key {
                "PID" => status.pid = value.parse().unwrap_or(0),
                "STATE" => status.state = value.to_string(),
                "GENERATION" => status.generation = value.parse().unwrap_or(0),
                "TARGET" => status.target = value.parse().unwrap_or(0),
                "READY" => status.ready = value.parse().unwrap_or(0),
                "FAILED_RELOADS" => status.failed_reloads = value.parse().unwrap_or(0),
                "UPGRADE" => status.upgrade = value.to_string(),
                "WORKERS" => {
                    status.workers = value
                        .split(',')
                        .filter(|w| !w.is_empty())
                        .filter_map(|w| {
                            let mut parts = w.split(':');
                            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.to_string()))
                        })
                        .collect()
                }
                _ => {}
            }
        }
        seen.then_some(status)
    }

    /// Pids of the workers of `generation` that serve.
    pub fn serving(&self, generation: u64) -> Vec<u32> {
        self.workers.iter().filter(|(_, g, phase)| *g == generation && phase == "serving").map(|(p, _, _)| *p).collect()
    }

    pub fn has_worker(&self, pid: impl std::borrow::Borrow<u32>) -> bool {
        self.workers.iter().any(|(p, _, _)| p == pid.borrow())
    }
}

/// Every status the server's arbiters sent, in order.
pub struct StatusLog {
    statuses: Mutex<Vec<Status>>,
    changed: Condvar,
    pub socket_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl StatusLog {
    /// Binds a notify socket and collects what arrives on it.
    pub fn listen() -> Arc<StatusLog> {
        let dir = crate::support::scratch_dir("status");
        let socket_path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&socket_path).expect("bind the status socket");
        let log =
            Arc::new(StatusLog { statuses: Mutex::new(Vec::new()), changed: Condvar::new(), socket_path, _dir: dir });
        let weak = Arc::downgrade(&log);
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let received = socket.recv(&mut buf);
                let Some(log) = weak.upgrade() else { return };
                let Ok(n) = received else { continue };
                if let Some(status) = Status::parse(&String::from_utf8_lossy(&buf[..n])) {
                    log.statuses.lock().unwrap().push(status);
                    log.changed.notify_all();
                }
            }
        });
        log
    }

    /// Every worker pid arbiter `pid` has reported so far.
    pub fn workers_seen(&self, pid: u32) -> std::collections::HashSet<u32> {
        let statuses = self.statuses.lock().unwrap();
        statuses.iter().filter(|s| s.pid == pid).flat_map(|s| s.workers.iter().map(|w| w.0)).collect()
    }

    /// Waits until the latest status from arbiter `pid` satisfies `condition`; panics after `timeout`.
    pub fn wait(&self, pid: u32, what: &str, timeout: Duration, condition: impl Fn(&Status) -> bool) -> Status {
        self.try_wait(pid, timeout, condition).unwrap_or_else(|last| panic!("timed out waiting for {what}; {last}"))
    }

    /// Like `wait`, but a timeout returns the last status seen, as text.
    pub fn try_wait(&self, pid: u32, timeout: Duration, condition: impl Fn(&Status) -> bool) -> Result<Status, String> {
        let deadline = Instant::now() + timeout;
        let mut statuses = self.statuses.lock().unwrap();
        loop {
            if let Some(status) = statuses.iter().rev().find(|s| s.pid == pid) {
                if condition(status) {
                    return Ok(status.clone());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let last = statuses.iter().rev().find(|s| s.pid == pid).cloned();
                return Err(format!("last status of {pid}: {last:?}"));
            }
            statuses = self.changed.wait_timeout(statuses, deadline - now).unwrap().0;
        }
    }
}
