//! Process lifecycle with real signals: respawn, watchdog, drain, reload, scaling, shutdown.

use crate::support::*;
use std::time::Duration;

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a pid this test just read from the server's process tree.
    unsafe { libc::kill(pid as i32, signal) };
}

#[test]
fn a_killed_worker_is_replaced_and_only_its_in_flight_requests_fail() {
    let server = Server::start(&guest("faults"), &["-w", "2"]);
    let before = server.worker_pids();
    assert_eq!(before.len(), 2);
    let clients = 4;
    let background = BackgroundLoad::start(&server.addr, "/sleep?ms=20", clients);
    server.log.wait_for_nth(&["sleeping for 20 ms"], 20, WAIT);
    let victim = before[0];
    kill(victim, libc::SIGKILL);
    server.wait_status("the victim replaced", |s| !s.has_worker(victim) && s.serving(1).len() == 2);
    let (ok, failures) = background.finish();
    assert!(ok > 0);
    // Each client has at most one request in flight, so at most `clients` can have been on the
    // killed worker.
    assert!(failures.len() <= clients, "{} failures: {failures:?}", failures.len());
    let after = server.worker_pids();
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&victim) && after.contains(&before[1]), "{before:?} -> {after:?}");
    let (ok, failed) = load(&server.addr, "/ok", 4, 100);
    assert_eq!((ok, failed), (100, 0), "the replacement serves");
}

#[test]
fn the_watchdog_replaces_a_wedged_worker() {
    let server = Server::start(&guest("faults"), &["-w", "1", "-t", "2"]);
    let wedged = server.worker_pids()[0];
    // A stopped process cannot beat: exactly what a worker stuck outside its event loop looks like.
    kill(wedged, libc::SIGSTOP);
    let line = server.log.wait_for(&["WORKER TIMEOUT", &format!("pid:{wedged}")], WAIT);
    assert!(line.contains("CRITICAL"), "{line}");
    server.wait_status("the wedged worker replaced", |s| !s.has_worker(wedged) && s.serving(1).len() == 1);
    wait_until("the wedged worker is gone", WAIT, || !process_alive(wedged));
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn long_requests_do_not_trigger_the_watchdog() {
    // The watchdog timeout is --timeout (2 s); a request that streams for ~5 s keeps its worker
    // busy far longer, but the worker's event loop still beats. Chunks come every 600 ms, well
    // inside the 2 s request clock even on a loaded machine (against 1 s they were not).
    let server = Server::start(&guest("stream"), &["-w", "1", "-t", "2"]);
    let worker = server.worker_pids()[0];
    let started = std::time::Instant::now();
    let reply = server.get("/?chunks=9&interval_ms=600");
    assert!(started.elapsed() > Duration::from_secs(4), "the request outlasted --timeout twice over");
    assert!(reply.complete, "the stream was not cut");
    // The arbiter publishes every worker it tracks: one that the watchdog replaced would be there.
    let seen = server.status.workers_seen(server.pid);
    assert_eq!(seen, std::collections::HashSet::from([worker]), "no worker was replaced");
    assert_eq!(server.log.count(&["WORKER TIMEOUT"]), 0, "{}", server.log.text());
}

#[test]
fn term_drains_an_in_flight_request_then_exits_zero() {
    let dir = scratch_dir("pidfile");
    let pid_file = dir.path().join("rustcorn.pid");
    let mut server = ServerCommand::new(&guest("faults")).args(["-w", "1", "-p"]).arg(&pid_file).start();
    let pid_text = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid_text.trim(), server.pid.to_string());
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || http(&addr, "GET", "/sleep?ms=1500", &[], b""));
    server.log.wait_for(&["sleeping for 1500 ms"], WAIT);
    server.signal(libc::SIGTERM);
    let reply = slow.join().unwrap().expect("the in-flight request completes");
    assert_eq!((reply.status, reply.text().as_str()), (200, "slept\n"));
    assert!(server.wait_exit(WAIT).success());
    assert!(!pid_file.exists(), "the pid file is removed on exit");
}

#[test]
fn int_is_a_quick_shutdown() {
    let mut server = Server::start(&guest("faults"), &["-w", "1", "--graceful-timeout", "60"]);
    let addr = server.addr.clone();
    let slow = std::thread::spawn(move || http(&addr, "GET", "/sleep?ms=30000", &[], b""));
    server.log.wait_for(&["sleeping for 30000 ms"], WAIT);
    server.signal(libc::SIGINT);
    server.wait_exit(Duration::from_secs(10));
    assert!(slow.join().unwrap().is_err(), "the in-flight request is cut, not waited for");
}

#[test]
fn hup_serves_the_new_app_with_no_failed_request() {
    let dir = scratch_dir("hup");
    let app = dir.path().join("app.wasm");
    std::fs::copy(guest("hello"), &app).unwrap();
    let server = Server::start(&app, &["-w", "2"]);
    let old_workers = server.worker_pids();
    assert_eq!(server.get("/ok").text(), "Hello, world!\n");

    let background = BackgroundLoad::start(&server.addr, "/ok", 4);
    // Swap the app file atomically, the way a deploy would.
    let staged = dir.path().join("app.wasm.new");
    std::fs::copy(guest("faults"), &staged).unwrap();
    std::fs::rename(&staged, &app).unwrap();
    server.signal(libc::SIGHUP);
    for pid in &old_workers {
        server.wait_status("worker gone", |s| !s.has_worker(*pid));
    }
    let (ok, failures) = background.finish();
    assert!(ok > 0);
    assert!(failures.is_empty(), "{} failed requests during HUP: {failures:?}", failures.len());
    let new_workers = server.worker_pids();
    assert_eq!(new_workers.len(), 2);
    assert!(new_workers.iter().all(|p| !old_workers.contains(p)), "{old_workers:?} -> {new_workers:?}");
    for _ in 0..10 {
        assert_eq!(server.get("/ok").text(), "ok\n", "every request after the reload sees the new app");
    }
}

#[test]
fn hup_with_a_broken_app_keeps_the_old_generation() {
    let dir = scratch_dir("hup-broken");
    let app = dir.path().join("app.wasm");
    std::fs::copy(guest("hello"), &app).unwrap();
    let server = Server::start(&app, &["-w", "1"]);
    let workers = server.worker_pids();
    std::fs::write(&app, b"this is not wasm").unwrap();
    server.signal(libc::SIGHUP);
    let status = server.wait_status("a failed reload", |s| s.failed_reloads == 1);
    assert_eq!(server.get("/").text(), "Hello, world!\n");
    assert_eq!((status.generation, status.serving(1).len()), (1, 1));
    assert_eq!(server.worker_pids(), workers);
}

#[test]
fn ttin_and_ttou_change_the_worker_count() {
    let server = Server::start(&guest("hello"), &["-w", "2"]);
    assert_eq!(server.worker_pids().len(), 2);
    server.signal(libc::SIGTTIN);
    server.wait_status("three workers", |s| s.target == 3 && s.ready == 3);
    assert_eq!(server.worker_pids().len(), 3);

    let oldest = server.worker_pids()[0];
    server.signal(libc::SIGTTOU);
    server.wait_status("target 2", |s| s.target == 2);
    wait_until("one worker retired", WAIT, || server.worker_pids().len() == 2);
    assert!(!server.worker_pids().contains(&oldest), "TTOU retires the oldest worker");
    server.signal(libc::SIGTTOU);
    server.wait_status("target 1", |s| s.target == 1);
    wait_until("down to one worker", WAIT, || server.worker_pids().len() == 1);

    server.signal(libc::SIGTTOU);
    server.log.wait_for(&["TTOU ignored"], WAIT);
    assert_eq!(server.worker_pids().len(), 1, "never below one worker");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn workers_exit_when_the_arbiter_dies() {
    let server = Server::start(&guest("hello"), &["-w", "2"]);
    let workers = server.worker_pids();
    kill(server.pid, libc::SIGKILL);
    for pid in workers {
        wait_until("an orphaned worker exits", WAIT, || !process_alive(pid));
    }
}
