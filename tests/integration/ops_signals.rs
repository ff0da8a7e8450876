//! Operations: systemd notifications, WINCH, max-requests recycling, --reload, --daemon, --user.

use crate::support::*;
use std::os::unix::net::UnixDatagram;

/// A NOTIFY_SOCKET for one test: each datagram is one notification.
struct NotifySocket {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = scratch_dir("notify");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(WAIT)).unwrap();
        NotifySocket { socket, path, _dir: dir }
    }

    /// The next notification; panics if none arrives in time.
    fn next(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).expect("a notification on NOTIFY_SOCKET");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[test]
fn sd_notify_ready_reloading_and_stopping() {
    let notify = NotifySocket::new();
    let mut server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1"])
        .env("NOTIFY_SOCKET", notify.path.to_str().unwrap())
        .start();
    let ready = notify.next();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.lines().any(|l| l == format!("MAINPID={}", server.pid)), "{ready:?}");

    server.signal(libc::SIGHUP);
    let reloading = notify.next();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading:?}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading:?}");
    let reloaded = notify.next();
    assert!(reloaded.lines().any(|l| l == "READY=1"), "READY=1 once the new generation serves: {reloaded:?}");
    server.log.wait_for(&["reload: generation 2 is serving"], WAIT);

    server.signal(libc::SIGTERM);
    let stopping = notify.next();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(server.wait_exit(WAIT).success());
}

#[test]
fn winch_stops_all_workers_and_ttin_or_hup_brings_them_back() {
    use std::io::{Read, Write};
    let server = ServerCommand::new(&guest("hello")).args(["-w", "2"]).own_process_group().start();
    let workers = server.worker_pids();
    server.signal(libc::SIGWINCH);
    server.log.wait_for(&["Handling signal: winch"], WAIT);
    for pid in &workers {
        server.log.wait_for(&[&format!("Worker exiting (pid: {pid})")], WAIT);
    }
    wait_until("no worker is left", WAIT, || server.worker_pids().is_empty());
    assert!(process_alive(server.pid), "the arbiter stays");

    // The socket stays open: a connection made now waits in the queue until a worker returns.
    let mut waiting = std::net::TcpStream::connect(&server.addr).unwrap();
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    server.signal(libc::SIGTTIN);
    server.log.wait_for(&["TTIN: now 1 workers"], WAIT);
    let mut reply = String::new();
    waiting.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(server.worker_pids().len(), 1);

    // WINCH again, then HUP restores the configured worker count (Gunicorn's way back).
    server.signal(libc::SIGWINCH);
    wait_until("no worker is left", WAIT, || server.worker_pids().is_empty());
    server.signal(libc::SIGHUP);
    server.log.wait_for(&["reload: generation 2 is serving"], WAIT);
    assert_eq!(server.worker_pids().len(), 2);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn max_requests_recycles_workers_with_no_failed_request() {
    let server = Server::start(&guest("hello"), &["-w", "2", "--max-requests", "50", "--max-requests-jitter", "10"]);
    let load = BackgroundLoad::start(&server.addr, "/", 4);
    // Two workers at start, then at least four replacements.
    server.log.wait_for_nth(&["Worker ready"], 6, WAIT);
    let (ok, failures) = load.finish();
    assert!(ok >= 200, "only {ok} requests");
    assert!(failures.is_empty(), "{} failed requests while recycling: {failures:?}", failures.len());

    // The replacement was serving before the recycled worker was told to stop.
    let log = server.log.text();
    let lines: Vec<&str> = log.lines().collect();
    let asks = lines.iter().position(|l| l.contains("(--max-requests); asking for a replacement")).unwrap();
    let recycled = number_after(lines[asks], "] [");
    let retired = lines.iter().position(|l| l.contains(&format!("retiring worker {recycled} "))).unwrap();
    assert!(
        lines[asks..retired].iter().any(|l| l.contains("Worker ready")),
        "a replacement became ready between the request for one and the retirement:\n{}",
        lines[asks..=retired].join("\n")
    );
    wait_until("back to two workers", WAIT, || server.worker_pids().len() == 2);
}

#[test]
fn reload_follows_changes_to_the_app_and_extra_files() {
    let dir = scratch_dir("reload");
    let app = dir.path().join("app.wasm");
    let extra = dir.path().join("settings.txt");
    std::fs::copy(guest("hello"), &app).unwrap();
    std::fs::write(&extra, "one").unwrap();
    let server = ServerCommand::new(&app)
        .args(["-w", "1", "--reload", "--reload-extra-file"])
        .arg(&extra)
        .start();
    assert_eq!(server.get("/ok").text(), "Hello, world!\n");

    // Replace the app atomically, as an editor or a build tool would.
    let staged = dir.path().join("app.wasm.new");
    std::fs::copy(guest("faults"), &staged).unwrap();
    std::fs::rename(&staged, &app).unwrap();
    server.log.wait_for(&["reload:", "app.wasm changed"], WAIT);
    server.log.wait_for(&["reload: generation 2 is serving"], WAIT);
    assert_eq!(server.get("/ok").text(), "ok\n");

    std::fs::write(&extra, "two, longer").unwrap();
    server.log.wait_for(&["reload:", "settings.txt changed"], WAIT);
    server.log.wait_for(&["reload: generation 3 is serving"], WAIT);
    assert_eq!(server.get("/ok").text(), "ok\n");
    assert_eq!(server.log.count(&["reload failed"]), 0, "{}", server.log.text());
}
