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
