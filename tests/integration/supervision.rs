//! The arbiter's supervision defects found in review (issue 7), each against the real binary:
//! a rejected reload never stays in charge, a failed HUP leaves the process as it was, signals
//! count per delivery, a reload's compile never stops the arbiter's loop, and USR2 hands sockets
//! over by address.

use crate::support::*;
use std::path::{Path, PathBuf};

fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("rustcorn.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn app_line(path: &Path) -> String {
    format!("app = {:?}\n", path.display().to_string())
}

/// A copy of `guest` with a custom section appended: the same app, but a cache miss (a new hash),
/// so serving it compiles it again.
fn recompiled_copy(guest_name: &str, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(guest(guest_name)).unwrap();
    let name = b"rustcorn-test";
    let payload = format!("{:?}", std::time::SystemTime::now());
    let body_len = 1 + name.len() + payload.len();
    assert!(body_len < 128 && name.len() < 128);
    bytes.extend_from_slice(&[0, body_len as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload.as_bytes());
    let path = dir.join(format!("{guest_name}-copy.wasm"));
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_reload_that_fails_to_boot_never_runs_its_settings() {
    let dir = scratch_dir("reload-rollback");
    let hello = app_line(&guest("hello"));
    config(dir.path(), &format!("{hello}workers = 1\nbind = [\"127.0.0.1:0\"]\n"));
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    // Passes validation, fails in the worker: the access log cannot be opened.
    let unopenable = dir.path().join("missing-dir/access.log");
    config(
        dir.path(),
        &format!(
            "{hello}workers = 3\nbind = [\"127.0.0.1:0\"]\naccess-logfile = {:?}\n",
            unopenable.display().to_string()
        ),
    );
    server.signal(libc::SIGHUP);
    let rolled_back = server.wait_status("the reload rolled back", |s| s.failed_reloads == 1 && s.state == "running");
    assert_eq!((rolled_back.generation, rolled_back.target), (1, 1));
    let worker = rolled_back.serving(1)[0];

    // The old generation's worker dies: its replacement runs the old settings, one worker.
    send_signal(worker, libc::SIGKILL);
    let replaced = server.wait_status("a replacement", |s| !s.has_worker(worker) && s.serving(1).len() == 1);
    assert_eq!((replaced.generation, replaced.target), (1, 1));
    assert_eq!(server.get("/").status, 200);
    assert!(!unopenable.exists());
    assert_eq!(replaced.failed_reloads, 1, "no worker of the rejected generation was started again");
}

#[test]
fn a_failed_hup_leaves_directory_and_umask_as_they_were() {
    let dir = scratch_dir("reload-chdir");
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let hello = app_line(&guest("hello"));
    config(dir.path(), &format!("{hello}workers = 1\nbind = [\"127.0.0.1:0\"]\numask = \"022\"\n"));
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    let cwd = || std::fs::read_link(format!("/proc/{}/cwd", server.pid)).unwrap();
    let umask = || {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid)).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())).unwrap()
    };
    let (cwd_before, umask_before) = (cwd(), umask());
    assert_eq!(umask_before, "0022");

    // Valid --chdir and --umask, invalid worker count: the reload fails after both were read.
    config(
        dir.path(),
        &format!("{hello}workers = 0\nbind = [\"127.0.0.1:0\"]\nchdir = \"elsewhere\"\numask = \"077\"\n"),
    );
    server.signal(libc::SIGHUP);
    server.wait_status("a failed reload", |s| s.failed_reloads == 1);
    assert_eq!(cwd(), cwd_before, "the rejected --chdir is not left applied");
    assert_eq!(umask(), umask_before, "the rejected --umask is not left applied");

    // The next HUP reads the same rustcorn.toml again, from the launch directory.
    config(dir.path(), &format!("{hello}workers = 2\nbind = [\"127.0.0.1:0\"]\numask = \"022\"\n"));
    server.signal(libc::SIGHUP);
    server.wait_status("generation 2 serving", |s| s.generation == 2 && s.state == "running" && s.ready == 2);
}

#[test]
fn a_reload_compiling_in_the_background_does_not_stop_supervision() {
    let dir = scratch_dir("reload-nonblocking");
    config(dir.path(), &format!("{}workers = 1\nbind = [\"127.0.0.1:0\"]\n", app_line(&guest("hello"))));
    let cache = dir.path().join("cache");
    let server = ServerCommand::without_app().current_dir(dir.path()).arg("--cache-dir").arg(&cache).start();
    let worker = server.worker_pids()[0];

    // The Python app takes seconds to compile: meanwhile the arbiter must keep supervising.
    let python = recompiled_copy("python-app", dir.path());
    config(dir.path(), &format!("{}workers = 1\nbind = [\"127.0.0.1:0\"]\n", app_line(&python)));
    server.signal(libc::SIGHUP);
    // Three deliveries of the same signal, each handled while the compile runs: the next is sent
    // once the arbiter has published the previous one's effect (two TTINs pending at once would be
    // one signal to the kernel, whatever the arbiter does).
    for added in 1..=3 {
        send_signal(server.pid, libc::SIGTTIN);
        server.wait_status("the TTIN handled", |s| s.target == 1 + added && s.generation == 1);
    }
    send_signal(worker, libc::SIGKILL);
    let during = server
        .wait_status("TTINs and a respawn while compiling", |s| s.target == 4 && s.ready == 4 && !s.has_worker(worker));
    assert_eq!(during.generation, 1, "the reload is still compiling");
    assert_eq!(server.get("/").text(), "Hello, world!\n");

    // Compiling the Python app can take a minute on a loaded 2-core machine.
    let compiled = std::time::Duration::from_secs(180);
    server
        .status
        .wait(server.pid, "the Python generation serving", compiled, |s| s.generation == 2 && s.state == "running");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn term_during_a_reload_compile_stops_at_once() {
    let dir = scratch_dir("reload-term");
    config(dir.path(), &format!("{}workers = 1\nbind = [\"127.0.0.1:0\"]\n", app_line(&guest("hello"))));
    let cache = dir.path().join("cache");
    let mut server = ServerCommand::without_app().current_dir(dir.path()).arg("--cache-dir").arg(&cache).start();
    let python = recompiled_copy("python-app", dir.path());
    config(dir.path(), &format!("{}workers = 1\nbind = [\"127.0.0.1:0\"]\n", app_line(&python)));
    server.signal(libc::SIGHUP);
    wait_until("the compiler child runs", WAIT, || server.worker_pids().len() == 2);
    server.signal(libc::SIGTERM);
    // Well before the compile could have finished.
    assert!(server.wait_exit(std::time::Duration::from_secs(3)).success());
}

#[test]
fn usr2_hands_sockets_over_by_address_after_a_config_edit() {
    let dir = scratch_dir("upgrade-by-address");
    let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let hello = app_line(&guest("hello"));
    let binds = |first: &Path, second: &str| format!("bind = [\"unix:{}\", {second:?}]\n", first.display());
    config(dir.path(), &format!("{hello}workers = 1\n{}", binds(&a, "127.0.0.1:0")));
    let old = ServerCommand::without_app().current_dir(dir.path()).own_process_group().start();
    let tcp = old.addr.clone();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_unix(&a, request).unwrap().status, 200);

    // Before USR2 the config changes: the TCP bind moves to first place, a.sock is replaced by b.sock.
    config(dir.path(), &format!("{hello}workers = 1\nbind = [{tcp:?}, \"unix:{}\"]\n", b.display()));
    old.signal(libc::SIGUSR2);
    let new_pid =
        number_after(&old.wait_status("a new arbiter", |s| s.upgrade.starts_with("child:")).upgrade, "child:");
    let _guard = ProcessGuard(new_pid);
    old.status.wait(new_pid, "the new arbiter serving", WAIT, |s| s.state == "running");
    old.signal(libc::SIGTERM);
    old.status.wait(new_pid, "the new arbiter alone", WAIT, |s| s.upgrade == "none");

    assert_eq!(raw_unix(&b, request).unwrap().status, 200, "the new bind is served");
    assert_eq!(http(&tcp, "GET", "/", &[], b"").unwrap().status, 200, "the kept TCP socket serves on");
    assert!(raw_unix(&a, request).is_err(), "the dropped bind is not served any more");
    send_signal(new_pid, libc::SIGTERM);
    wait_until("the new arbiter exits", WAIT, || !process_alive(new_pid));
    assert!(!b.exists(), "the new arbiter owns and removes b.sock");
}
