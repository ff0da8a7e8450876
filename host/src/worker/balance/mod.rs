//! Accept balancing over the workers sharing a listening socket: a worker holding more open
//! connections than its least-loaded peer (plus a slack) leaves new connections to its peers,
//! unless one waits `rule::HOLD` with no peer taking any. Counts live on a shared-memory board.
pub mod board;
pub mod rule;

use board::WorkerSeat;
use rule::Patience;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

/// How often a worker that is waiting its turn looks at the board again.
const RECHECK: Duration = Duration::from_millis(5);

/// Returns when this worker should accept its next connection on `listener`: at once unless it
/// is ahead of a peer; otherwise when the peers have caught up (or it has closed connections),
/// or when a connection has waited `rule::HOLD` in the queue with no peer accepting anything.
/// `patience` carries over between calls, so a stalled peer costs the hold once, not per connection.
pub async fn wait_turn(seat: &WorkerSeat, listener: BorrowedFd<'_>, patience: &mut Patience) {
    loop {
        if rule::may_accept(seat.open(), &seat.peers(), rule::SLACK) {
            return;
        }
        if patience.run_out(Instant::now(), connection_waiting(listener), seat.peers_progress(), rule::HOLD) {
            return;
        }
        tokio::time::sleep(RECHECK).await;
    }
}

/// Whether a connection waits in the listening socket's accept queue (POLLIN, no waiting).
fn connection_waiting(listener: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0].revents().is_some_and(|r| r.contains(PollFlags::POLLIN))
}
