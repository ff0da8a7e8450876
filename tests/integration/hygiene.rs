//! Trusted compiled code and process hygiene: the private, digest-checked compile cache,
//! `.cwasm` permissions, the pid file, `--user` without a passwd entry, unix socket ownership
//! and liveness, inherited fds, and extreme settings.

use crate::support::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `serve` expecting a startup failure: exit 1, no readiness line, no worker, and exactly
/// one error line, which is returned.
fn fails_with_one_line(command: ServerCommand) -> String {
    let (status, stdout, stderr) = command.run_to_exit();
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(stdout.is_empty(), "no readiness line: {stdout}");
    assert!(!stderr.contains("Booting worker"), "no worker may start:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("rustcorn: error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line:\n{stderr}");
    errors[0].to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o777
}

/// The one `.cwasm` in a cache directory.
fn cached_cwasm(cache: &Path) -> PathBuf {
    let entries: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries[0].clone()
}

#[test]
fn a_new_cache_dir_and_its_files_are_private() {
    let dir = scratch_dir("cache-private");
    let cache = dir.path().join("new/cache");
    let server = Server::start(&guest("hello"), &["-w", "1", "--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(server.get("/").status, 200);
    assert_eq!(mode(&cache), 0o700);
    let cwasm = cached_cwasm(&cache);
    assert_eq!(mode(&cwasm), 0o600);
    let digest = PathBuf::from(format!("{}.sha256", cwasm.display()));
    assert_eq!(std::fs::read_to_string(&digest).unwrap().len(), 64, "a SHA-256 is recorded with it");
}

#[test]
fn a_world_writable_cache_dir_is_refused() {
    let dir = scratch_dir("cache-shared");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(["--cache-dir", cache.to_str().unwrap()]));
    assert!(line.contains("--cache-dir") && line.contains("world-writable"), "{line}");
}

#[test]
fn a_cache_dir_owned_by_another_user_is_refused() {
    if !running_as_root("a_cache_dir_owned_by_another_user_is_refused") {
        return;
    }
    let dir = scratch_dir("cache-other");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(["--cache-dir", cache.to_str().unwrap()]));
    assert!(line.contains("--cache-dir") && line.contains("owned by uid 65534"), "{line}");
}

#[test]
fn a_tampered_cache_entry_is_never_loaded_but_recompiled() {
    let dir = scratch_dir("cache-tamper");
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let first = Server::start(&guest("hello"), &["-w", "1", "--cache-dir", cache_arg]);
    first.log.wait_for(&["ms; cached at"], WAIT);
    drop(first);
    let cwasm = cached_cwasm(&cache);
    let original = std::fs::read(&cwasm).unwrap();
    // Flip bytes in the middle (machine code): wasmtime itself would load this without noticing.
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    for byte in &mut tampered[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&cwasm, &tampered).unwrap();

    let second = Server::start(&guest("hello"), &["-w", "1", "--cache-dir", cache_arg]);
    second.log.wait_for(&["does not match its recorded SHA-256"], WAIT);
    second.log.wait_for(&["ms; cached at"], WAIT);
    assert_eq!(second.log.count(&["using the compiled app from the cache"]), 0);
    assert_eq!(second.get("/").text(), "Hello, world!\n");
    assert!(std::fs::read(&cwasm).unwrap() == original, "the entry was recompiled over the tampered one");
}

#[test]
fn a_symlinked_cache_entry_is_refused() {
    let dir = scratch_dir("cache-symlink");
    let cache = dir.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    drop(Server::start(&guest("hello"), &["-w", "1", "--cache-dir", cache_arg]));
    let cwasm = cached_cwasm(&cache);
    let elsewhere = dir.path().join("elsewhere.cwasm");
    std::fs::rename(&cwasm, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &cwasm).unwrap();
    let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(["--cache-dir", cache_arg]));
    assert!(line.contains("--cache-dir") && line.contains("symlink"), "{line}");
}

#[test]
fn without_home_a_non_root_user_must_name_a_cache_dir() {
    use std::os::unix::process::CommandExt;
    if !running_as_root("without_home_a_non_root_user_must_name_a_cache_dir") {
        return;
    }
    let output = Command::new(rustcorn_bin())
        .args(["serve", "/nonexistent/app.wasm", "--check-config"])
        .env_remove("HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("RUSTCORN_CMD_ARGS")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("pass --cache-dir DIR"), "{stderr}");
}

/// `rustcorn compile` output, made group-writable.
fn group_writable_cwasm(dir: &Path) -> PathBuf {
    let cwasm = dir.join("hello.cwasm");
    let status =
        Command::new(rustcorn_bin()).arg("compile").arg(guest("hello")).arg("-o").arg(&cwasm).status().unwrap();
    assert!(status.success());
    assert_eq!(mode(&cwasm), 0o644, "compile writes a file only its owner can change");
    std::fs::set_permissions(&cwasm, std::fs::Permissions::from_mode(0o664)).unwrap();
    cwasm
}

#[test]
fn serve_refuses_a_group_writable_cwasm() {
    let dir = scratch_dir("cwasm-perm-serve");
    let cwasm = group_writable_cwasm(dir.path());
    let line = fails_with_one_line(ServerCommand::new(&cwasm));
    assert!(line.contains("hello.cwasm") && line.contains("group-writable"), "{line}");
}

#[test]
fn check_refuses_a_group_writable_cwasm() {
    let dir = scratch_dir("cwasm-perm-check");
    let cwasm = group_writable_cwasm(dir.path());
    let output = Command::new(rustcorn_bin()).arg("check").arg(&cwasm).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("group-writable") && stderr.contains("trusted build"), "{stderr}");
}

#[test]
fn a_symlink_at_the_pid_file_path_is_replaced_not_followed() {
    let dir = scratch_dir("pidfile-symlink");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let pid_file = dir.path().join("app.pid");
    std::os::unix::fs::symlink(&victim, &pid_file).unwrap();
    let server = Server::start(&guest("hello"), &["-w", "1", "-p", pid_file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&pid_file).unwrap().file_type().is_file());
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), format!("{}\n", server.pid));
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).filter(|n| n != "victim").collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("app.pid")], "no temporary file is left behind");
}

/// A uid with no passwd entry on this machine.
const UNNAMED_UID: &str = "54321";

#[test]
fn a_numeric_user_without_passwd_entry_needs_a_group() {
    if !running_as_root("a_numeric_user_without_passwd_entry_needs_a_group") {
        return;
    }
    let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(["-u", UNNAMED_UID]));
    assert!(line.contains(&format!("--user {UNNAMED_UID}")) && line.contains("pass --group"), "{line}");

    // With --group the workers run as exactly that uid/gid, with no way back to root.
    let server = Server::start(&guest("hello"), &["-w", "1", "-u", UNNAMED_UID, "-g", UNNAMED_UID]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.worker_pids()[0])).unwrap();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).unwrap()[name.len()..].split_whitespace().collect::<Vec<_>>()
    };
    assert_eq!(field("Uid:"), [UNNAMED_UID; 4]);
    assert_eq!(field("Gid:"), [UNNAMED_UID; 4]);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn unix_sockets_are_chowned_to_the_worker_user() {
    if !running_as_root("unix_sockets_are_chowned_to_the_worker_user") {
        return;
    }
    let dir = scratch_dir("unix-chown");
    let path = dir.path().join("app.sock");
    let bind = format!("unix:{}", path.display());
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "-b", bind.as_str(), "-u", "nobody", "-g", "nogroup"])
        .start();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    let reply = raw_unix(&path, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(reply.status, 200);
    drop(server);
}

#[test]
fn a_live_unix_socket_of_another_process_is_not_deleted() {
    let dir = scratch_dir("unix-live");
    let path = dir.path().join("taken.sock");
    let other = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let bind = format!("unix:{}", path.display());
    let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(["-b", bind.as_str()]));
    assert!(line.contains(&bind) && line.contains("another process is listening"), "{line}");
    // The other process's socket still works.
    let _client = std::os::unix::net::UnixStream::connect(&path).expect("the socket file is still there");
    other.set_nonblocking(true).unwrap();
    assert!(other.accept().is_ok(), "and the connection reached its owner");
}

#[test]
fn a_stale_unix_socket_is_replaced() {
    let dir = scratch_dir("unix-stale");
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let bind = format!("unix:{}", path.display());
    let server = ServerCommand::new(&guest("hello")).args(["-w", "1", "-b", bind.as_str()]).start();
    let reply = raw_unix(&path, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!(reply.status, 200);
    drop(server);
}

#[test]
fn listen_fds_naming_a_closed_fd_is_one_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // One socket passed (fd 3) but LISTEN_FDS claims two: fd 4 was never passed.
    let command = ServerCommand::new(&guest("hello")).systemd_sockets(vec![listener.into()]).env("LISTEN_FDS", "2");
    let line = fails_with_one_line(command);
    assert!(line.contains("$LISTEN_FDS=2") && line.contains("file descriptor 4 is not open"), "{line}");
}

#[test]
fn bind_fd_naming_a_closed_fd_is_one_clear_error() {
    let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(["-b", "fd://77"]));
    assert!(line.contains("--bind fd://77: file descriptor 77 is not open"), "{line}");
}

#[test]
fn extreme_settings_are_rejected_at_validation() {
    let max = u64::MAX.to_string();
    for (flag, extra) in [
        ("--max-requests-jitter", ["--max-requests", "1"]),
        ("--graceful-timeout", ["-w", "1"]),
        ("--timeout", ["-w", "1"]),
    ] {
        let line = fails_with_one_line(ServerCommand::new(&guest("hello")).args(extra).args([flag, max.as_str()]));
        assert!(line.starts_with(&format!("rustcorn: error: {flag} must be between 0 and")), "{line}");
    }
}
