//! The per-request clock: a deadline that restarts on progress (response head or body bytes), an
//! optional absolute cap, and the worker's epoch ticker that lets wasmtime check both.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the epoch ticker advances the engine's epoch. A running guest yields to other
/// requests at every tick and is interrupted at the first tick after its deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a request ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    NoProgress,
    MaxRequestTime,
}

/// One request's clock, shared by the guest task, the epoch callback and the response body.
#[derive(Debug)]
pub struct RequestClock {
    started: Instant,
    /// Milliseconds after `started` of the last progress.
    last_progress_ms: AtomicU64,
    idle_timeout: Option<Duration>,
    max_time: Option<Duration>,
    expired: AtomicBool,
}

impl RequestClock {
    pub fn new(idle_timeout: Option<Duration>, max_time: Option<Duration>) -> Arc<RequestClock> {
        Arc::new(RequestClock {
            started: Instant::now(),
            last_progress_ms: AtomicU64::new(0),
            idle_timeout,
            max_time,
            expired: AtomicBool::new(false),
        })
    }

    /// Records progress: the guest sent its response head or body bytes.
    pub fn progress(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_progress_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// When the request expires if nothing else happens; None = never.
    pub fn deadline(&self) -> Option<Instant> {
        let idle = self
            .idle_timeout
            .map(|t| self.started + Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed)) + t);
        let cap = self.max_time.map(|t| self.started + t);
        match (idle, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the request is out of time now, and why.
    pub fn check(&self, now: Instant) -> Option<Expiry> {
        if let Some(cap) = self.max_time {
            if now >= self.started + cap {
                return Some(Expiry::MaxRequestTime);
            }
        }
        if let Some(idle) = self.idle_timeout {
            let last = self.started + Duration::from_millis(self.last_progress_ms.load(Ordering::Relaxed));
            if now >= last + idle {
                return Some(Expiry::NoProgress);
            }
        }
        None
    }

    /// Marks the request as cut off; the epoch callback then interrupts the guest at once.
    pub fn expire(&self) {
        self.expired.store(true, Ordering::Relaxed);
    }

    pub fn is_expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed) || self.check(Instant::now()).is_some()
    }

    /// Resolves when the request runs out of time (never, if it has no deadline).
    pub async fn expired(&self) -> Expiry {
        loop {
            match self.deadline() {
                None => std::future::pending::<()>().await,
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            }
            if let Some(why) = self.check(Instant::now()) {
                self.expire();
                return why;
            }
        }
    }
}

/// Starts the OS thread that advances the engine's epoch (tokio tasks are not pre-emptive, so a
/// spinning guest on the runtime thread could starve a task-based ticker).
pub fn start_epoch_ticker(engine: wasmtime::Engine) -> std::io::Result<()> {
    std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || loop {
        std::thread::sleep(EPOCH_TICK);
        engine.increment_epoch();
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_pushes_the_idle_deadline_but_not_the_cap() {
        let clock = RequestClock::new(Some(Duration::from_millis(100)), Some(Duration::from_millis(1000)));
        let start = clock.started;
        assert_eq!(clock.check(start + Duration::from_millis(50)), None);
        assert_eq!(clock.check(start + Duration::from_millis(150)), Some(Expiry::NoProgress));
        clock.last_progress_ms.store(120, Ordering::Relaxed);
        assert_eq!(clock.check(start + Duration::from_millis(150)), None);
        assert_eq!(clock.check(start + Duration::from_millis(1000)), Some(Expiry::MaxRequestTime));
    }

    #[test]
    fn no_timeouts_means_no_deadline() {
        let clock = RequestClock::new(None, None);
        assert_eq!(clock.deadline(), None);
        assert_eq!(clock.check(Instant::now() + Duration::from_secs(3600)), None);
    }
}
