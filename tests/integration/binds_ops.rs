//! Sockets opened by someone else: `--bind fd://N`, systemd socket activation (`LISTEN_FDS`), and
//! `--reuse-port`.

use crate::support::*;
use std::net::TcpListener;

fn listening_socket() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[test]
fn bind_fd_adopts_an_inherited_listening_socket() {
    let (listener, addr) = listening_socket();
    let server = ServerCommand::new(&guest("hello")).args(["-w", "1", "-b", "fd://5"]).inherit_fd(listener, 5).start();
    assert_eq!(server.addr, addr, "serves on the inherited socket");
    assert_eq!(server.get("/").text(), "Hello, world!\n");
}

#[test]
fn bind_fd_that_is_not_open_fails_with_one_line() {
    let (status, _, stderr) = ServerCommand::new(&guest("hello")).args(["-b", "fd://57"]).run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("rustcorn: error:")).unwrap_or_default();
    assert!(line.contains("fd://57") && line.contains("not open"), "{stderr}");
}

#[test]
fn systemd_socket_activation_is_adopted() {
    let (listener, addr) = listening_socket();
    let server = ServerCommand::new(&guest("hello")).args(["-w", "2"]).systemd_sockets(vec![listener.into()]).start();
    assert_eq!(server.addr, addr);
    server.log.wait_for(&["listening socket(s) passed by systemd"], WAIT);
    let (ok, failed) = load(&server.addr, "/", 4, 40);
    assert_eq!((ok, failed), (40, 0));
}

#[test]
fn listen_fds_for_another_pid_are_ignored() {
    // LISTEN_PID names some other process: the sockets are not ours, --bind applies.
    let server =
        ServerCommand::new(&guest("hello")).args(["-w", "1"]).env("LISTEN_PID", "1").env("LISTEN_FDS", "1").start();
    assert_eq!(server.log.count(&["passed by systemd"]), 0);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn reuse_port_gives_each_worker_its_own_socket() {
    let server = Server::start(
        &guest("hello"),
        &["-w", "2", "--reuse-port", "--access-logfile", "-", "--access-logformat", "%(p)s %(s)s %(U)s"],
    );
    server.log.wait_for(&["--reuse-port: each worker listens on its own socket"], WAIT);
    // If the arbiter's reservation socket listened, connections hashed to it would hang here.
    let (ok, failed) = load(&server.addr, "/rp", 8, 200);
    assert_eq!((ok, failed), (200, 0));
    wait_until("every request is logged", WAIT, || server.log.count(&[" 200 /rp"]) == 200);
    let served_by: std::collections::HashSet<String> = server
        .log
        .text()
        .lines()
        .filter(|l| l.ends_with(" 200 /rp"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(served_by.len(), 2, "the kernel spreads connections over both sockets: {served_by:?}");

    // Each worker holds a listening socket of its own on the same port.
    let port = server.addr.rsplit(':').next().unwrap();
    let listening = |pid: u32| listening_inodes(pid, port);
    let workers = server.worker_pids();
    let (a, b) = (listening(workers[0]), listening(workers[1]));
    assert!(!a.is_empty() && !b.is_empty() && a.is_disjoint(&b), "{a:?} {b:?}");
    assert!(listening(server.pid).is_empty(), "the arbiter only reserves the port");

    // A new generation binds its own sockets on the same reserved port. (Connections that race
    // an old worker's socket closing can be reset: see the README; so no load during the swap.)
    server.signal(libc::SIGHUP);
    server.wait_status("generation 2 serving", |s| s.generation == 2 && s.state == "running");
    for pid in workers {
        server.wait_status("worker gone", |s| !s.has_worker(pid));
    }
    let (ok, failed) = load(&server.addr, "/", 4, 40);
    assert_eq!((ok, failed), (40, 0));
}

/// Socket inodes of `pid`'s open fds that are TCP sockets listening on `port` (from /proc).
fn listening_inodes(pid: u32, port: &str) -> std::collections::HashSet<String> {
    let port_hex = format!("{:04X}", port.parse::<u16>().unwrap());
    let listening: std::collections::HashSet<String> = std::fs::read_to_string(format!("/proc/{pid}/net/tcp"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is IP:PORT in hex; state 0A is LISTEN; field 9 is the inode.
            (fields[1].ends_with(&format!(":{port_hex}")) && fields[3] == "0A").then(|| fields[9].to_string())
        })
        .collect();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .filter(|inode| listening.contains(inode))
        .collect()
}
