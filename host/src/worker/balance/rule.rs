//! The pure accept-balancing rule: whether a worker takes the next connection now, given the
//! open connections of its peers, and when it stops waiting for peers that take none.
use std::time::{Duration, Instant};

/// A worker may hold this many connections more than the least-loaded peer that could take one.
pub const SLACK: u32 = 1;

/// How long a waiting connection is left to the peers before a worker that is ahead takes it
/// anyway: a busy peer's event loop turns within a few epoch ticks; a stopped or wedged one never.
pub const HOLD: Duration = Duration::from_millis(100);

/// What a worker reads of one peer's seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLoad {
    /// The peer runs its accept loops (booted, not draining).
    pub accepting: bool,
    pub open: u32,
    /// Its `--worker-connections`: a peer at its cap cannot take a connection.
    pub capacity: u32,
}

impl PeerLoad {
    fn could_take_one(&self) -> bool {
        self.accepting && self.open < self.capacity
    }
}

/// Whether a worker holding `open` connections accepts now: yes unless some peer that could take
/// a connection holds more than `slack` fewer.
pub fn may_accept(open: u32, peers: &[PeerLoad], slack: u32) -> bool {
    match peers.iter().filter(|p| p.could_take_one()).map(|p| p.open).min() {
        Some(least) => open <= least.saturating_add(slack),
        None => true,
    }
}

/// How long a worker that is ahead has watched a connection wait while its peers took none.
#[derive(Debug, Default)]
pub struct Patience {
    /// The peers' accepted-connection total when last seen.
    progress: u64,
    /// Since when a connection has waited with no peer accepting anything.
    waiting_since: Option<Instant>,
}

impl Patience {
    /// Given whether a connection waits in the queue and the peers' accepted total now: true once
    /// one has waited `hold` with no peer accepting anything (and for as long as that lasts).
    pub fn run_out(&mut self, now: Instant, pending: bool, progress: u64, hold: Duration) -> bool {
        if progress != self.progress {
            self.progress = progress;
            self.waiting_since = None;
        }
        if !pending {
            self.waiting_since = None;
            return false;
        }
        let since = *self.waiting_since.get_or_insert(now);
        now.saturating_duration_since(since) >= hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(open: u32) -> PeerLoad {
        PeerLoad { accepting: true, open, capacity: 1000 }
    }

    #[test]
    fn alone_a_worker_always_accepts() {
        assert!(may_accept(500, &[], SLACK));
    }

    #[test]
    fn a_worker_ahead_of_its_least_loaded_peer_by_more_than_the_slack_waits() {
        assert!(may_accept(0, &[peer(0)], 1));
        assert!(may_accept(1, &[peer(0)], 1));
        assert!(!may_accept(2, &[peer(0)], 1));
        assert!(may_accept(2, &[peer(1)], 1));
        // The least-loaded peer counts, not the average.
        assert!(!may_accept(5, &[peer(3), peer(9)], 1));
        assert!(may_accept(4, &[peer(3), peer(9)], 1));
        assert!(!may_accept(1, &[peer(0)], 0));
    }

    #[test]
    fn peers_that_cannot_take_a_connection_are_not_waited_for() {
        let draining = PeerLoad { accepting: false, open: 0, capacity: 1000 };
        let full = PeerLoad { accepting: true, open: 10, capacity: 10 };
        assert!(may_accept(40, &[draining, full], 1));
        assert!(!may_accept(40, &[draining, full, peer(3)], 1));
    }

    #[test]
    fn no_overflow_at_the_top() {
        assert!(may_accept(u32::MAX, &[peer(u32::MAX - 1)], u32::MAX));
    }

    #[test]
    fn patience_runs_out_after_a_connection_waited_the_hold_with_no_peer_accepting() {
        let hold = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut patience = Patience::default();
        assert!(!patience.run_out(t0, true, 7, hold));
        assert!(!patience.run_out(t0 + Duration::from_millis(99), true, 7, hold));
        assert!(patience.run_out(t0 + hold, true, 7, hold));
        // While the peers still take nothing, the next waiting connection is taken at once.
        assert!(patience.run_out(t0 + hold + Duration::from_millis(5), true, 7, hold));
    }

    #[test]
    fn a_peer_accepting_restarts_the_wait() {
        let hold = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut patience = Patience::default();
        assert!(!patience.run_out(t0, true, 0, hold));
        assert!(!patience.run_out(t0 + Duration::from_millis(90), true, 1, hold));
        assert!(!patience.run_out(t0 + Duration::from_millis(150), true, 1, hold));
        assert!(patience.run_out(t0 + Duration::from_millis(190), true, 1, hold));
    }

    #[test]
    fn an_empty_queue_restarts_the_wait() {
        let hold = Duration::from_millis(100);
        let t0 = Instant::now();
        let mut patience = Patience::default();
        assert!(!patience.run_out(t0, true, 0, hold));
        assert!(!patience.run_out(t0 + Duration::from_millis(50), false, 0, hold));
        // An idle peer has accepted nothing either: the next connection gets the whole hold.
        assert!(!patience.run_out(t0 + Duration::from_millis(200), true, 0, hold));
        assert!(patience.run_out(t0 + Duration::from_millis(300), true, 0, hold));
    }
}
