//! Reconnect backoff for a network backend: after a connection failure, operations fail at once
//! (no I/O, no waiting) until a retry time; then one operation goes through as a probe while the
//! others keep failing fast. Each failed probe doubles the wait, up to [`MAX_DELAY`]; a success
//! resets it. A worker therefore tries a down server at most once per delay, and a request never
//! waits for a server that is known to be down.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The wait after the first failure.
pub const MIN_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two probes of a down server.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    /// Connection failures since the last success.
    failures: u32,
    /// Until when operations fail without trying; `None` while the backend works.
    retry_at: Option<Instant>,
}

#[derive(Default)]
pub struct Backoff {
    state: Mutex<State>,
}

/// The wait after `failures` consecutive failures (`failures` >= 1).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    MIN_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

impl Backoff {
    /// May an operation go to the backend now? `Err(wait)`: not before `wait` from now. Letting one
    /// through after the retry time moves the retry time on, so only that one probes.
    pub fn admit(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match state.retry_at {
            None => Ok(()),
            Some(at) if now < at => Err(at - now),
            Some(_) => {
                state.retry_at = Some(now + delay(state.failures));
                Ok(())
            }
        }
    }

    /// The backend could not be reached (refused, reset, timed out).
    pub fn failed(&self, now: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.failures = state.failures.saturating_add(1);
        state.retry_at = Some(now + delay(state.failures));
    }

    /// The backend answered.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *state = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(delay(1), MIN_DELAY);
        assert_eq!(delay(2), MIN_DELAY * 2);
        assert_eq!(delay(3), MIN_DELAY * 4);
        assert_eq!(delay(100), MAX_DELAY);
    }

    #[test]
    fn a_failure_closes_the_gate_until_one_probe_may_pass() {
        let backoff = Backoff::default();
        let t0 = Instant::now();
        assert!(backoff.admit(t0).is_ok(), "a working backend admits everything");
        backoff.failed(t0);
        assert_eq!(backoff.admit(t0 + Duration::from_millis(40)), Err(Duration::from_millis(60)));
        let probe_time = t0 + MIN_DELAY;
        assert!(backoff.admit(probe_time).is_ok(), "one probe after the delay");
        assert!(backoff.admit(probe_time).is_err(), "the others keep failing fast meanwhile");
        backoff.failed(probe_time);
        assert_eq!(backoff.admit(probe_time + MIN_DELAY), Err(MIN_DELAY), "the second wait is twice the first");
        backoff.succeeded();
        assert!(backoff.admit(probe_time).is_ok());
    }
}
