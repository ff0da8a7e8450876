//! USR2 binary upgrade: a new arbiter inherits the listening sockets, both serve, the old one is
//! retired with WINCH + TERM (or the new one rolled back) without a failed request.

use crate::support::*;
use std::path::Path;

/// Sends USR2 to `server` and waits until the new arbiter it starts is ready; returns its pid.
fn upgrade(server: &Server) -> u32 {
    server.signal(libc::SIGUSR2);
    let status = server.wait_status("a new arbiter", |s| s.upgrade.starts_with("child:"));
    let new_pid = number_after(&status.upgrade, "child:");
    assert_ne!(new_pid, server.pid);
    // The new arbiter shares the old one's stdout and stderr: its readiness line lands in the log.
    server.log.wait_for(&["rustcorn: listening on", &format!("(pid {new_pid},")], WAIT);
    new_pid
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn usr2_then_winch_and_term_hands_over_with_no_failed_request() {
    let dir = scratch_dir("upgrade");
    let pid_file = dir.path().join("rustcorn.pid");
    let pid_file_2 = dir.path().join("rustcorn.pid.2");
    let socket = dir.path().join("app.sock");
    let mut old = ServerCommand::new(&guest("hello"))
        .args(["-w", "2", "-b", "127.0.0.1:0", "-b"])
        .arg(format!("unix:{}", socket.display()))
        .arg("-p")
        .arg(&pid_file)
        .args(["--access-logfile", "-", "--access-logformat", "served-by %(p)s %(s)s"])
        .own_process_group()
        .start();
    let old_workers = old.worker_pids();
    assert_eq!(old_workers.len(), 2);
    let load = BackgroundLoad::start(&old.addr, "/", 4);

    let new_pid = upgrade(&old);
    let _new_guard = ProcessGuard(new_pid);
    assert_eq!(read_pid(&pid_file), Some(old.pid), "the old arbiter keeps PIDFILE");
    assert_eq!(read_pid(&pid_file_2), Some(new_pid), "the new arbiter writes PIDFILE.2");
    old.status.wait(new_pid, "the new arbiter's workers", WAIT, |s| s.ready == 2);
    // Both generations serve side by side before the old one is retired.
    let new_workers = child_pids(new_pid);
    wait_until("a new worker serves a request", WAIT, || {
        new_workers.iter().any(|w| old.log.count(&[&format!("served-by <{w}> 200")]) > 0)
    });

    // Retire the old arbiter: its workers first, then itself.
    old.signal(libc::SIGWINCH);
    old.wait_status("target 0", |s| s.target == 0);
    for pid in &old_workers {
        old.wait_status("worker gone", |s| !s.has_worker(pid));
    }
    old.signal(libc::SIGTERM);
    assert!(old.wait_exit(WAIT).success());
    old.status.wait(new_pid, "the new arbiter alone", WAIT, |s| s.upgrade == "none");
    wait_until("PIDFILE names the new arbiter", WAIT, || read_pid(&pid_file) == Some(new_pid));
    assert!(!pid_file_2.exists(), "PIDFILE.2 was renamed to PIDFILE");
    assert!(socket.exists(), "the old arbiter left the unix socket to the new one");

    let served = old.log.count(&["served-by"]);
    old.log.wait_for_nth(&["served-by"], served + 20, WAIT);
    let (ok, failures) = load.finish();
    assert!(ok > 0);
    assert!(failures.is_empty(), "{} failed requests during the upgrade: {failures:?}", failures.len());
    assert_eq!(http(&old.addr, "GET", "/", &[], b"").unwrap().text(), "Hello, world!\n");
    let over_unix = raw_unix(&socket, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(over_unix.status, 200);

    // The new arbiter now owns everything and cleans up after itself.
    send_signal(new_pid, libc::SIGTERM);
    wait_until("the new arbiter exits", WAIT, || !process_alive(new_pid));
    assert!(!pid_file.exists(), "the new arbiter removes its pid file");
    assert!(!socket.exists(), "the new arbiter removes its unix socket");
}

#[test]
fn usr2_rolled_back_by_stopping_the_new_arbiter() {
    let dir = scratch_dir("upgrade-rollback");
    let pid_file = dir.path().join("rustcorn.pid");
    let socket = dir.path().join("app.sock");
    let old = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "-b", "127.0.0.1:0", "-b"])
        .arg(format!("unix:{}", socket.display()))
        .arg("-p")
        .arg(&pid_file)
        .own_process_group()
        .start();
    let new_pid = upgrade(&old);
    let _new_guard = ProcessGuard(new_pid);

    old.signal(libc::SIGUSR2);
    old.log.wait_for(&["USR2 ignored", &format!("pid {new_pid}")], WAIT);

    // Roll back: the new arbiter goes, the old one notices and serves on with its files intact.
    send_signal(new_pid, libc::SIGTERM);
    old.wait_status("the new arbiter gone", |s| s.upgrade == "none");
    assert_eq!(read_pid(&pid_file), Some(old.pid));
    assert!(!dir.path().join("rustcorn.pid.2").exists(), "the new arbiter removed PIDFILE.2");
    assert!(socket.exists(), "an unpromoted arbiter leaves the unix socket alone");
    assert_eq!(old.get("/").status, 200);

    // And a second upgrade can start.
    let second = upgrade(&old);
    let _second_guard = ProcessGuard(second);
    assert_ne!(second, new_pid);
}
