//! The container image's command line (deploy/Dockerfile's ENTRYPOINT + CMD) run as PID 1 of a new
//! PID namespace with a read-only root filesystem, as in a container: it serves the precompiled
//! `.cwasm`, reaps orphans that the kernel re-parents to it, drains an in-flight request on TERM
//! and exits 0.

use super::{compile, read_deploy_file, skip};
use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The JSON array of the last `INSTRUCTION [...]` line (the runtime stage's).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .filter_map(|l| l.trim().strip_prefix(instruction).filter(|rest| rest.starts_with(' ')))
        .last()
        .unwrap_or_else(|| panic!("no {instruction} in deploy/Dockerfile"));
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{instruction} is not exec form (a JSON array): {e}"))
}

/// The image's command line: ENTRYPOINT followed by CMD.
pub fn image_command() -> Vec<String> {
    let dockerfile = read_deploy_file("Dockerfile");
    let mut command = exec_form(&dockerfile, "ENTRYPOINT");
    command.extend(exec_form(&dockerfile, "CMD"));
    command
}

#[test]
fn dockerfile_compiles_the_app_for_the_image_and_runs_rustcorn_directly() {
    let dockerfile = read_deploy_file("Dockerfile");
    let command = image_command();
    assert_eq!(command[0], "/usr/local/bin/rustcorn", "rustcorn itself is the entrypoint (PID 1), no shell");
    assert!(command.contains(&"/app/app.cwasm".to_string()), "serves the precompiled app: {command:?}");
    assert!(
        dockerfile.contains("rustcorn compile /app/app.wasm -o /app/app.cwasm --target"),
        "a build stage compiles the app with `rustcorn compile`"
    );
    assert!(dockerfile.contains("chmod 0444 /app/app.cwasm"), "the served .cwasm is read-only for everyone");
    assert!(dockerfile.contains("ARG APP_WASM"), "a build arg takes the user's own component");
    let user = dockerfile.lines().filter_map(|l| l.strip_prefix("USER ")).last().expect("a USER line");
    assert!(!user.starts_with("0") && !user.starts_with("root"), "runs as a non-root user: {user}");
}

/// A new PID namespace (the first process in it is PID 1) with its own mount table and /proc.
const NAMESPACE: &[&str] = &["--pid", "--fork", "--mount-proc", "--"];
/// Run inside the namespace: make its root mount read-only, as `readOnlyRootFilesystem: true`
/// does, then exec the command (same pid, so the command itself is PID 1). `remount,bind` changes
/// only this namespace's mount, never the filesystem the host sees.
const READ_ONLY_ROOT: &[&str] = &["sh", "-c", "mount -o remount,bind,ro / && exec \"$0\" \"$@\""];

/// The pid of `parent`'s first child, waiting for it to appear.
fn first_child(parent: u32) -> u32 {
    let mut child = None;
    wait_until("unshare forked PID 1 of the namespace", WAIT, || {
        child = child_pids(parent).first().copied();
        child.is_some()
    });
    child.unwrap()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// Every child of `pid` including zombies, from /proc (the support helper leaves zombies out).
fn children_with_zombies(pid: u32) -> Vec<(u32, char)> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).unwrap_or('?');
            children.push((child, state));
        }
    }
    children
}

#[test]
fn image_command_as_pid_1_reaps_orphans_drains_on_term_and_exits_zero() {
    let test = "image_command_as_pid_1_reaps_orphans_drains_on_term_and_exits_zero";
    let probe = Command::new("unshare").args(NAMESPACE).args(READ_ONLY_ROOT).arg("true").output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        skip(
            test,
            &format!("a PID + mount namespace with a read-only root is not permitted here (needs root): {probe:?}"),
        );
        return;
    }
    // The app, compiled the way the image's `compiled` stage does it, read-only like in the image.
    let dir = scratch_dir("pid1");
    let cwasm = dir.path().join("app.cwasm");
    let (ok, output) =
        compile(&guest("faults"), &cwasm, Some(&format!("{}-unknown-linux-gnu", std::env::consts::ARCH)));
    assert!(ok, "rustcorn compile: {output}");
    std::fs::set_permissions(&cwasm, std::os::unix::fs::PermissionsExt::from_mode(0o444)).unwrap();

    // The image's command, with only the binary's and the app's paths and the binds (0.0.0.0:8000
    // and the admin 0.0.0.0:9000 become loopback ports picked by the kernel) changed.
    let command: Vec<String> = image_command()
        .into_iter()
        .map(|arg| match arg.as_str() {
            "/usr/local/bin/rustcorn" => rustcorn_bin().to_string(),
            "/app/app.cwasm" => cwasm.display().to_string(),
            "0.0.0.0:8000" | "0.0.0.0:9000" => "127.0.0.1:0".to_string(),
            _ => arg,
        })
        .collect();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let status = StatusLog::listen();
    let mut unshare = Command::new("unshare")
        .args(NAMESPACE)
        .args(READ_ONLY_ROOT)
        .args(&command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("NOTIFY_SOCKET", &status.socket_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let _guard = ProcessGuard(unshare.id());
    let arbiter = first_child(unshare.id());
    let _arbiter_guard = ProcessGuard(arbiter);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let stdout = unshare.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let (stderr_tx, stderr_rx) = mpsc::channel::<String>();
    let stderr = unshare.stderr.take().unwrap();
    let stderr_log = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            stderr_log.lock().unwrap().push(line.clone());
            let _ = stderr_tx.send(line);
        }
    });
    let ready = lines_rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        panic!("no readiness line from the image command {command:?}; log:\n{}", log.lock().unwrap().join("\n"))
    });
    assert!(ready.starts_with("rustcorn: listening on http://"), "{ready}");
    assert!(ready.contains("(pid 1,"), "rustcorn is PID 1 of the namespace: {ready}");
    let addr = ready.trim_start_matches("rustcorn: listening on http://").split(' ').next().unwrap().to_string();
    assert!(comm(arbiter).starts_with("rustcorn"), "PID 1 is rustcorn itself: {}", comm(arbiter));
    status.wait(1, "every worker serving", WAIT, |s| s.state == "running" && s.ready == s.target && s.target > 0);
    let mounts = std::fs::read_to_string(format!("/proc/{arbiter}/mountinfo")).unwrap();
    let root = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/")).expect("a root mount");
    assert!(root.split(' ').nth(5).is_some_and(|o| o.split(',').any(|f| f == "ro")), "root is read-only: {root}");

    // An orphan: a shell entered into the namespace starts `sleep` and exits at once; the kernel
    // re-parents `sleep` to the namespace's PID 1, which must reap it when it exits.
    let entered = Command::new("nsenter")
        .args(["--target", &arbiter.to_string(), "--pid", "--", "sh", "-c", "sleep 1 & exit 0"])
        .status()
        .expect("run nsenter");
    assert!(entered.success());
    let mut orphan = 0;
    wait_until("the orphaned sleep is re-parented to rustcorn", WAIT, || {
        orphan = children_with_zombies(arbiter).iter().map(|c| c.0).find(|&c| comm(c) == "sleep").unwrap_or(0);
        orphan != 0
    });
    wait_until("rustcorn reaps the orphan (no zombie left)", WAIT, || {
        !std::path::Path::new(&format!("/proc/{orphan}")).exists()
    });
    let zombies: Vec<_> = children_with_zombies(arbiter).into_iter().filter(|c| c.1 == 'Z').collect();
    assert!(zombies.is_empty(), "zombie children of PID 1: {zombies:?}");

    // TERM with a request in flight: the request completes, then PID 1 exits 0.
    let slow_addr = addr.clone();
    let slow = std::thread::spawn(move || http(&slow_addr, "GET", "/sleep?ms=1500", &[], b""));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let line = stderr_rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
        match line {
            Ok(line) if line.contains("sleeping for 1500 ms") => break,
            Ok(_) => continue,
            Err(_) => panic!("the guest never started the request; log:\n{}", log.lock().unwrap().join("\n")),
        }
    }
    send_signal(arbiter, libc::SIGTERM);
    status.wait(1, "draining after TERM", WAIT, |s| s.state == "draining");
    let reply = slow.join().unwrap().expect("the in-flight request completes");
    assert_eq!((reply.status, reply.text().as_str()), (200, "slept\n"));
    let exit = wait_with_timeout(&mut unshare, WAIT).expect("PID 1 exits after draining");
    assert_eq!(exit.code(), Some(0), "exit status of PID 1; log:\n{}", log.lock().unwrap().join("\n"));
}
