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
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "-b", "fd://5"])
        .inherit_fd(listener, 5)
        .start();
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
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "2"])
        .systemd_sockets(vec![listener.into()])
        .start();
    assert_eq!(server.addr, addr);
    server.log.wait_for(&["listening socket(s) passed by systemd"], WAIT);
    let (ok, failed) = load(&server.addr, "/", 4, 40);
    assert_eq!((ok, failed), (40, 0));
}

#[test]
fn listen_fds_for_another_pid_are_ignored() {
    // LISTEN_PID names some other process: the sockets are not ours, --bind applies.
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1"])
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .start();
    assert_eq!(server.log.count(&["passed by systemd"]), 0);
    assert_eq!(server.get("/").status, 200);
}
