//! Signals sent to the whole process group (issue 17, item 8), as `kill -TTIN -PGID` or a
//! terminal does: the arbiter handles each delivery once (a child being forked never runs the
//! arbiter's handler), and workers, booting or serving, ignore the arbiter's control signals
//! instead of being stopped (TTIN's default action) or killed (HUP's).

use crate::support::*;

#[test]
fn group_wide_ttins_are_counted_once_and_never_stop_a_worker() {
    let server = ServerCommand::new(&guest("hello")).args(["-w", "1"]).own_process_group().start();
    const ROUNDS: usize = 6;
    for round in 1..=ROUNDS {
        // SAFETY: kill(2) on the server's own process group: its arbiter and workers.
        assert_eq!(unsafe { libc::kill(-(server.pid as i32), libc::SIGTTIN) }, 0);
        // Published once the arbiter has forked the new worker: the next TTIN reaches that
        // worker while it boots, and every worker spawned so far.
        let status = server.wait_status("one more worker wanted", |s| s.target > round);
        assert_eq!(status.target, 1 + round, "each group-wide TTIN counted once: {status:?}");
    }
    let status = server.wait_status("every worker serving", |s| s.ready == 1 + ROUNDS && s.workers.len() == 1 + ROUNDS);
    assert_eq!(status.target, 1 + ROUNDS);
    for (pid, _, _) in &status.workers {
        assert_ne!(process_state(*pid), Some('T'), "worker {pid} was stopped by a group-wide TTIN");
    }
    let (ok, failed) = load(&server.addr, "/", 4, 40);
    assert_eq!((ok, failed), (40, 0));
    let after = server.wait_status("the same workers", |s| s.ready == 1 + ROUNDS);
    assert_eq!(after.workers, status.workers, "no worker was lost or replaced");
}
