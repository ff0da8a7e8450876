//! Descriptor hygiene (issue 17, item 3): a worker holds only what it needs (its generation's
//! listening sockets, the compiled app, the logs, the arbiter's wake pipe and stdio), checked on
//! a real worker's `/proc/PID/fd` by what each link points to; a bind dropped by a HUP is closed
//! for good; a USR2 re-exec carries the listening sockets only.

use crate::support::*;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::Path;

/// A pipe whose write end the test passes to rustcorn as an extra descriptor (fd 9, not
/// close-on-exec), the way a careless launcher leaks one. Returns both ends and the pipe's inode.
fn leaked_pipe() -> (OwnedFd, OwnedFd, u64) {
    // Close-on-exec here, so no other test's child gets it; fd 9 in our server's is not.
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let inode = nix::sys::stat::fstat(&read).unwrap().st_ino;
    (read, write, inode)
}

const LEAKED_FD: i32 = 9;

fn inodes(fds: &[OpenFd], kind: &str) -> HashSet<u64> {
    fds.iter().filter(|fd| fd.fd > 2).filter_map(|fd| fd.inode_of(kind)).collect()
}

fn describe(fds: &[OpenFd]) -> String {
    fds.iter().map(|fd| format!("  {} -> {} (flags {:o})", fd.fd, fd.target, fd.flags)).collect::<Vec<_>>().join("\n")
}

/// A copy of the hello app with a custom section appended: the same app, another compiled file.
fn hello_copy(dir: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(guest("hello")).unwrap();
    let (name, payload) = (b"rustcorn-fd-test", format!("{:?}", std::time::SystemTime::now()));
    bytes.extend_from_slice(&[0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload.as_bytes());
    let path = dir.join("hello-copy.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn compiled_app(fds: &[OpenFd]) -> &OpenFd {
    let apps: Vec<&OpenFd> = fds.iter().filter(|fd| fd.target.ends_with(".cwasm")).collect();
    assert_eq!(apps.len(), 1, "the arbiter holds one compiled app: {apps:?}");
    apps[0]
}

#[test]
fn a_worker_holds_only_its_listeners_app_logs_and_wake_pipe() {
    let dir = scratch_dir("fd-hygiene");
    let (error_log, access_log) = (dir.path().join("error.log"), dir.path().join("access.log"));
    let config = |app: &Path| {
        let text = format!("app = {:?}\nworkers = 1\nbind = [\"127.0.0.1:0\"]\n", app.display().to_string());
        std::fs::write(dir.path().join("rustcorn.toml"), text).unwrap();
    };
    config(&guest("hello"));
    let (_leak_read, leak_write, leak_inode) = leaked_pipe();
    let server = ServerCommand::without_app()
        .current_dir(dir.path())
        .args(["--admin-bind", "127.0.0.1:0", "--error-logfile"])
        .arg(&error_log)
        .arg("--access-logfile")
        .arg(&access_log)
        .inherit_fd(leak_write, LEAKED_FD)
        .start();
    let first_app = compiled_app(&open_fds(server.pid)).target.clone();
    // The worker to inspect is forked during a reload to another compiled app, while the arbiter
    // still holds the first generation's.
    config(&hello_copy(dir.path()));
    server.signal(libc::SIGHUP);
    let status = server.wait_status("generation 2 alone", |s| {
        s.generation == 2 && s.state == "running" && s.ready == 1 && s.workers.iter().all(|w| w.1 == 2)
    });
    let worker = status.serving(2)[0];
    assert_eq!(server.get("/").status, 200);

    let arbiter_fds = open_fds(server.pid);
    let worker_fds = open_fds(worker);
    let context =
        format!("worker {worker}:\n{}\narbiter {}:\n{}", describe(&worker_fds), server.pid, describe(&arbiter_fds));

    // The arbiter opens everything of its own close-on-exec; only what it inherited is not (the
    // leaked fd, and whatever the test process itself holds without close-on-exec).
    let inherited: HashSet<i32> =
        open_fds(std::process::id()).iter().filter(|fd| !fd.close_on_exec()).map(|fd| fd.fd).collect();
    for fd in arbiter_fds.iter().filter(|fd| fd.fd > 2 && fd.fd != LEAKED_FD && !inherited.contains(&fd.fd)) {
        assert!(fd.close_on_exec(), "arbiter fd {} ({}) is not close-on-exec\n{context}", fd.fd, fd.target);
    }

    // Sockets: the worker's listening sockets are exactly those of our --bind (the admin
    // listener is not among them), and it shares no other socket with the arbiter.
    let ours = listening_tcp_inodes(port_of(&server.addr));
    assert!(!ours.is_empty(), "the bind's listening socket is found in /proc/net/tcp");
    let worker_sockets = inodes(&worker_fds, "socket");
    let listening: HashSet<u64> = worker_sockets.intersection(&all_listening_tcp_inodes()).copied().collect();
    assert_eq!(listening, ours, "the worker listens on its generation's bind only\n{context}");
    let shared: HashSet<u64> = worker_sockets.intersection(&inodes(&arbiter_fds, "socket")).copied().collect();
    assert_eq!(shared, ours, "no other socket of the arbiter's (admin, compiler) is in the worker\n{context}");

    // Pipes: the write end of the arbiter's wake pipe, and nothing else (not its read end, not
    // the pipe the launcher leaked).
    let pipes: Vec<&OpenFd> = worker_fds.iter().filter(|fd| fd.fd > 2 && fd.inode_of("pipe").is_some()).collect();
    assert_eq!(pipes.len(), 1, "one pipe\n{context}");
    assert!(pipes[0].write_only(), "the wake pipe's write end only\n{context}");
    assert_ne!(pipes[0].inode_of("pipe"), Some(leak_inode), "not the leaked pipe\n{context}");
    assert!(
        inodes(&arbiter_fds, "pipe").contains(&pipes[0].inode_of("pipe").unwrap()),
        "the arbiter's pipe\n{context}"
    );

    // Files: the compiled app the arbiter handed over (same descriptor; wasmtime opens it once
    // more to map it), none of the first generation's, and the two logs once each.
    let app = compiled_app(&arbiter_fds);
    assert_ne!(app.target, first_app, "the reload compiled another file");
    assert!(worker_fds.iter().any(|fd| fd.fd == app.fd && fd.target == app.target), "handed the app\n{context}");
    assert!(worker_fds.iter().all(|fd| fd.target != first_app), "nothing of the first generation's app\n{context}");
    let count = |path: &Path| worker_fds.iter().filter(|fd| Path::new(&fd.target) == path).count();
    assert_eq!((count(&error_log), count(&access_log)), (1, 1), "each log once\n{context}");

    // Whatever else the worker holds it opened itself (its runtime's epoll and eventfds, its
    // signal socket pair, wasmtime's mappings): nothing else in it is one of the arbiter's.
    let arbiter_targets: HashSet<&str> =
        arbiter_fds.iter().filter(|fd| fd.fd > 2).map(|fd| fd.target.as_str()).collect();
    for fd in worker_fds.iter().filter(|fd| fd.fd > 2 && arbiter_targets.contains(fd.target.as_str())) {
        let expected = fd.inode_of("socket").is_some_and(|inode| ours.contains(&inode))
            || fd.inode_of("pipe") == pipes[0].inode_of("pipe")
            || fd.target == app.target
            || Path::new(&fd.target) == error_log;
        assert!(expected, "worker fd {} ({}) is the arbiter's\n{context}", fd.fd, fd.target);
    }
}

#[test]
fn a_bind_dropped_by_a_hup_is_closed_and_can_be_bound_again() {
    let dir = scratch_dir("fd-dropped-bind");
    let app = format!("app = {:?}\n", guest("hello").display().to_string());
    let config = |binds: &str| {
        std::fs::write(dir.path().join("rustcorn.toml"), format!("{app}workers = 2\nbind = [{binds}]\n")).unwrap()
    };
    config("\"127.0.0.1:0\", \"127.0.0.2:0\"");
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    assert_eq!(server.addresses.len(), 2, "{:?}", server.addresses);
    let dropped = server.addresses[1].trim_start_matches("http://").to_string();
    assert!(dropped.starts_with("127.0.0.2:"), "{dropped}");
    assert_eq!(http(&dropped, "GET", "/", &[], b"").unwrap().status, 200);

    config("\"127.0.0.1:0\"");
    server.signal(libc::SIGHUP);
    server.wait_status("generation 2 alone", |s| {
        s.generation == 2 && s.state == "running" && s.ready == 2 && s.workers.iter().all(|w| w.1 == 2)
    });
    assert_eq!(server.get("/").status, 200, "the kept bind serves on");
    let refused = std::net::TcpStream::connect(&dropped).map(|_| ()).map_err(|e| e.kind());
    assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused), "nobody listens on {dropped} any more");
    let rebound = std::net::TcpListener::bind(&dropped);
    assert!(rebound.is_ok(), "{dropped} can be bound again: {rebound:?}");
}

#[test]
fn a_usr2_exec_carries_the_listening_sockets_only() {
    let (_leak_read, leak_write, leak_inode) = leaked_pipe();
    let old = ServerCommand::new(&guest("hello"))
        .args(["-w", "1"])
        .inherit_fd(leak_write, LEAKED_FD)
        .own_process_group()
        .start();
    old.signal(libc::SIGUSR2);
    let new_pid =
        number_after(&old.wait_status("a new arbiter", |s| s.upgrade.starts_with("child:")).upgrade, "child:");
    let _guard = ProcessGuard(new_pid);
    old.status.wait(new_pid, "the new arbiter serving", WAIT, |s| s.state == "running" && s.ready == 1);

    let (old_fds, new_fds) = (open_fds(old.pid), open_fds(new_pid));
    let context = format!("new arbiter:\n{}\nold arbiter:\n{}", describe(&new_fds), describe(&old_fds));
    let ours = listening_tcp_inodes(port_of(&old.addr));
    let shared_sockets: HashSet<u64> =
        inodes(&new_fds, "socket").intersection(&inodes(&old_fds, "socket")).copied().collect();
    assert_eq!(shared_sockets, ours, "of the old arbiter's sockets, the listeners only\n{context}");
    let shared_pipes: HashSet<u64> =
        inodes(&new_fds, "pipe").intersection(&inodes(&old_fds, "pipe")).copied().collect();
    assert!(shared_pipes.is_empty(), "no pipe of the old arbiter's\n{context}");
    assert!(!inodes(&new_fds, "pipe").contains(&leak_inode), "not the leaked pipe\n{context}");
    assert_eq!(http(&old.addr, "GET", "/", &[], b"").unwrap().status, 200);
}
