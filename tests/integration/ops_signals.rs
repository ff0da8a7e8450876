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

    /// The next notification other than a plain status update; panics if none arrives in time.
    fn next(&self) -> String {
        let mut buf = [0u8; 65536];
        loop {
            let n = self.socket.recv(&mut buf).expect("a notification on NOTIFY_SOCKET");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if text.lines().any(|l| !l.starts_with("STATUS=") && !l.starts_with("X_RUSTCORN_")) {
                return text;
            }
        }
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
    server.wait_status("target 0", |s| s.target == 0);
    for pid in &workers {
        server.wait_status("worker gone", |s| !s.has_worker(pid));
    }
    wait_until("no worker is left", WAIT, || server.worker_pids().is_empty());
    assert!(process_alive(server.pid), "the arbiter stays");

    // The socket stays open: a connection made now waits in the queue until a worker returns.
    let mut waiting = std::net::TcpStream::connect(&server.addr).unwrap();
    waiting.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    server.signal(libc::SIGTTIN);
    server.wait_status("target 1", |s| s.target == 1);
    let mut reply = String::new();
    waiting.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(server.worker_pids().len(), 1);

    // WINCH again, then HUP restores the configured worker count (Gunicorn's way back).
    server.signal(libc::SIGWINCH);
    wait_until("no worker is left", WAIT, || server.worker_pids().is_empty());
    server.signal(libc::SIGHUP);
    server.wait_status("generation 2 serving", |s| s.generation == 2 && s.state == "running");
    assert_eq!(server.worker_pids().len(), 2);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn max_requests_recycles_workers_with_no_failed_request() {
    let server = Server::start(&guest("hello"), &["-w", "2", "--max-requests", "50", "--max-requests-jitter", "10"]);
    let load = BackgroundLoad::start(&server.addr, "/", 4);
    // Two workers at start, then at least four replacements.
    wait_until("four replacements", WAIT, || server.status.workers_seen(server.pid).len() >= 6);
    let (ok, failures) = load.finish();
    assert!(ok >= 200, "only {ok} requests");
    assert!(failures.is_empty(), "{} failed requests while recycling: {failures:?}", failures.len());

    // The replacement was serving before the recycled worker was told to stop. (The log is read
    // by another thread than the status: wait for the lines themselves.)
    let first_ask = server.log.wait_for(&["(--max-requests); asking for a replacement"], WAIT);
    let recycled = number_after(&first_ask, "] [");
    server.log.wait_for(&[&format!("retiring worker {recycled} ")], WAIT);
    let log = server.log.text();
    let lines: Vec<&str> = log.lines().collect();
    let asks = lines.iter().position(|l| l.contains("(--max-requests); asking for a replacement")).unwrap();
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
    let server = ServerCommand::new(&app).args(["-w", "1", "--reload", "--reload-extra-file"]).arg(&extra).start();
    assert_eq!(server.get("/ok").text(), "Hello, world!\n");
    let first = server.worker_pids();

    // Replace the app atomically, as an editor or a build tool would.
    let staged = dir.path().join("app.wasm.new");
    std::fs::copy(guest("faults"), &staged).unwrap();
    std::fs::rename(&staged, &app).unwrap();
    server.log.wait_for(&["reload:", "app.wasm changed"], WAIT);
    server.wait_status("generation 2 serving", |s| s.generation == 2 && s.state == "running");
    // The old worker may take a request or two until it has seen its TERM.
    server.wait_status("worker gone", |s| !s.has_worker(first[0]));
    assert_eq!(server.get("/ok").text(), "ok\n");
    let second = server.worker_pids();

    std::fs::write(&extra, "two, longer").unwrap();
    server.log.wait_for(&["reload:", "settings.txt changed"], WAIT);
    server.wait_status("generation 3 serving", |s| s.generation == 3 && s.state == "running");
    server.wait_status("worker gone", |s| !s.has_worker(second[0]));
    assert_eq!(server.get("/ok").text(), "ok\n");
    assert_eq!(server.log.count(&["reload failed"]), 0, "{}", server.log.text());
}

#[test]
fn daemon_detaches_after_startup_and_stops_on_term() {
    use std::io::Read;
    let dir = scratch_dir("daemon");
    let pid_file = dir.path().join("rustcorn.pid");
    let error_log = dir.path().join("error.log");
    let mut foreground = std::process::Command::new(rustcorn_bin())
        .arg("serve")
        .arg(guest("hello"))
        .args(["-D", "-w", "1", "-b", "127.0.0.1:0", "--cache-dir"])
        .arg(cache_dir())
        .arg("-p")
        .arg(&pid_file)
        .arg("--error-logfile")
        .arg(&error_log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_timeout(&mut foreground, WAIT).expect("the command returns once the daemon is ready");
    let mut stdout = String::new();
    foreground.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    assert!(status.success(), "{status}: {stdout}");
    let line = stdout.lines().find(|l| l.starts_with("rustcorn: listening on ")).expect("the readiness line");
    let daemon = number_after(line, "(pid ");
    let _guard = ProcessGuard(daemon);
    assert_ne!(daemon, foreground.id());
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), daemon.to_string(), "the pid file names the daemon");

    // Detached: a session of its own, which it does not lead (so it can never get a terminal).
    let stat = std::fs::read_to_string(format!("/proc/{daemon}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let session: u32 = fields[3].parse().unwrap();
    assert_ne!(session, daemon, "not a session leader");
    assert_ne!(session, unsafe { libc::getsid(0) } as u32, "not in the test's session");
    assert_eq!(std::fs::read_link(format!("/proc/{daemon}/fd/1")).unwrap(), std::path::Path::new("/dev/null"));

    let addr = line.trim_start_matches("rustcorn: listening on http://").split(' ').next().unwrap();
    assert_eq!(http(addr, "GET", "/", &[], b"").unwrap().text(), "Hello, world!\n");

    send_signal(daemon, libc::SIGTERM);
    wait_until("the daemon exits", WAIT, || !process_alive(daemon));
    assert!(!pid_file.exists(), "the daemon removes its pid file");
    assert!(std::fs::read_to_string(&error_log).unwrap().contains("Shutting down: Master"));
}

#[test]
fn workers_drop_to_user_and_group_while_the_arbiter_keeps_root() {
    if !running_as_root("workers_drop_to_user_and_group_while_the_arbiter_keeps_root") {
        return;
    }
    let status_of = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |status: &str, name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap()
    };
    let server = Server::start(&guest("hello"), &["-w", "1", "-u", "nobody", "-g", "nogroup"]);
    server.log.wait_for(&["workers run as user nobody (uid 65534), group nogroup (gid 65534)"], WAIT);
    let worker = status_of(server.worker_pids()[0]);
    assert_eq!(field(&worker, "Uid:"), "65534 65534 65534 65534");
    assert_eq!(field(&worker, "Gid:"), "65534 65534 65534 65534");
    assert_eq!(field(&worker, "Groups:"), "65534");
    assert_eq!(field(&status_of(server.pid), "Uid:"), "0 0 0 0", "the arbiter keeps root");
    assert_eq!(server.get("/").status, 200);

    // A reload still works: the arbiter compiles as root, new workers drop privileges again.
    let old_worker = server.worker_pids()[0];
    server.signal(libc::SIGHUP);
    server.wait_status("generation 2 serving", |s| s.generation == 2 && s.state == "running");
    server.wait_status("worker gone", |s| !s.has_worker(old_worker));
    assert_eq!(field(&status_of(server.worker_pids()[0]), "Uid:"), "65534 65534 65534 65534");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn switching_to_an_unknown_user_fails_at_startup() {
    let (status, _, stderr) = ServerCommand::new(&guest("hello")).args(["-u", "no-such-user-here"]).run_to_exit();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("rustcorn: error: --user no-such-user-here: no such user"), "{stderr}");
}
