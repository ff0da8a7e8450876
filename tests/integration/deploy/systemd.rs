//! `deploy/systemd/rustcorn.{service,socket}`: accepted by `systemd-analyze verify` with no
//! warning, sandboxed, and their ExecStart / ExecReload command lines work against the binary.

use super::{deploy_file, read_deploy_file, skip};
use crate::support::*;
use std::collections::HashMap;
use std::process::Command;

const INSTALLED_BINARY: &str = "/usr/local/bin/rustcorn";

/// `Section.Key` → value of a unit file (the last assignment wins, as in systemd for these keys).
fn parse_unit(text: &str) -> HashMap<String, String> {
    let mut keys = HashMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((key, value)) = line.split_once('=') {
            keys.insert(format!("{section}.{}", key.trim()), value.trim().to_string());
        }
    }
    keys
}

fn service() -> HashMap<String, String> {
    parse_unit(&read_deploy_file("systemd/rustcorn.service"))
}

fn systemd_analyze_available(test: &str) -> bool {
    let found = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        skip(test, "systemd-analyze is not installed (Debian: apt-get install systemd)");
    }
    found
}

/// Copies of both units where only the binary's install path points at the binary under test
/// (`systemd-analyze verify` checks that ExecStart's program exists).
fn units_for_verify(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let service = read_deploy_file("systemd/rustcorn.service");
    assert!(service.contains(INSTALLED_BINARY), "the service runs {INSTALLED_BINARY}");
    let service_path = dir.join("rustcorn.service");
    std::fs::write(&service_path, service.replace(INSTALLED_BINARY, rustcorn_bin())).unwrap();
    let socket_path = dir.join("rustcorn.socket");
    std::fs::copy(deploy_file("systemd/rustcorn.socket"), &socket_path).unwrap();
    (service_path, socket_path)
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_without_a_warning() {
    if !systemd_analyze_available("systemd_units_pass_systemd_analyze_verify_without_a_warning") {
        return;
    }
    let dir = scratch_dir("systemd-verify");
    let (service, socket) = units_for_verify(dir.path());
    let output = Command::new("systemd-analyze").arg("verify").arg(&service).arg(&socket).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Unknown keys and bad values are only warnings (exit 0): any output is a defect.
    assert!(stderr.trim().is_empty(), "systemd-analyze verify warned:\n{stderr}");
}

#[test]
fn systemd_service_is_sandboxed() {
    if !systemd_analyze_available("systemd_service_is_sandboxed") {
        return;
    }
    let dir = scratch_dir("systemd-security");
    let (service_path, _) = units_for_verify(dir.path());
    // Exposure level 0..10 (threshold in tenths): 2.5 or less is "OK" in systemd's own scale.
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=25", "--no-pager"])
        .arg(&service_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let overall = stdout.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_default().to_string();
    assert!(output.status.success(), "exposure above 2.5: {overall}\n{stdout}");

    let unit = service();
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("CacheDirectory", "rustcorn"),
    ] {
        assert_eq!(unit.get(&format!("Service.{key}")).map(String::as_str), Some(value), "{key}=");
    }
}

#[test]
fn systemd_service_matches_rustcorn_readiness_reload_and_shutdown() {
    let unit = service();
    let get = |key: &str| unit.get(&format!("Service.{key}")).cloned().unwrap_or_default();
    assert_eq!(get("Type"), "notify", "rustcorn sends READY=1 when its workers serve");
    assert_eq!(get("NotifyAccess"), "all", "the USR2 upgrade's new arbiter (a child) must be able to notify");
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(get("KillMode"), "mixed", "TERM to the arbiter alone: it drains its workers");
    let exec = shlex::split(&get("ExecStart")).expect("ExecStart splits like a shell line");
    let cache_dir = exec.iter().position(|a| a == "--cache-dir").map(|i| exec[i + 1].clone());
    assert_eq!(cache_dir.as_deref(), Some("/var/cache/rustcorn"), "the compile cache is CacheDirectory=");
    // The stop timeout covers the default --graceful-timeout (30 s) with a margin.
    let graceful = 30;
    let stop: u64 = get("TimeoutStopSec").parse().expect("TimeoutStopSec in seconds");
    assert!(stop >= graceful + 5, "TimeoutStopSec={stop} leaves no margin over --graceful-timeout {graceful}");
    let socket = parse_unit(&read_deploy_file("systemd/rustcorn.socket"));
    assert!(socket.contains_key("Socket.ListenStream"), "rustcorn.socket listens");
    assert_eq!(unit.get("Unit.Requires").map(String::as_str), Some("rustcorn.socket"));
}

/// Runs ExecStart's exact arguments the way systemd would (the socket as fd 3 with LISTEN_FDS and
/// LISTEN_PID, NOTIFY_SOCKET set); only the paths systemd would create are swapped for scratch
/// ones (config file, CacheDirectory, RuntimeDirectory). Then ExecReload, as written.
#[test]
fn systemd_exec_start_serves_on_the_activated_socket_and_exec_reload_reloads() {
    let exec = shlex::split(&service()["Service.ExecStart"]).unwrap();
    assert_eq!(&exec[..2], [INSTALLED_BINARY, "serve"]);
    let dir = scratch_dir("systemd-exec");
    let config = dir.path().join("rustcorn.toml");
    std::fs::write(&config, format!("app = {:?}\nworkers = 1\n", guest("hello").display().to_string())).unwrap();
    let cache = dir.path().join("cache");
    let runtime = dir.path().join("run");
    std::fs::create_dir_all(&runtime).unwrap();
    let args: Vec<std::ffi::OsString> = exec[2..]
        .iter()
        .map(|arg| match arg.as_str() {
            "/etc/rustcorn/rustcorn.toml" => config.clone().into_os_string(),
            "/var/cache/rustcorn" => cache.clone().into_os_string(),
            "/run/rustcorn" => runtime.clone().into_os_string(),
            other => other.into(),
        })
        .collect();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = ServerCommand::without_app().args(args).systemd_sockets(vec![listener.into()]).start();
    assert_eq!(server.addr, addr, "serves on the socket systemd passed");
    server.wait_status("generation 1 serving", |s| s.generation == 1 && s.state == "running");
    assert_eq!(server.get("/").text(), "Hello, world!\n");
    assert!(std::fs::read_dir(&cache).unwrap().count() > 0, "the app was compiled into CacheDirectory=");

    let reload = service()["Service.ExecReload"].replace("$MAINPID", &server.pid.to_string());
    let reload = shlex::split(&reload).unwrap();
    let status = Command::new(&reload[0]).args(&reload[1..]).status().expect("run ExecReload");
    assert!(status.success(), "ExecReload: {reload:?}");
    server.wait_status("generation 2 serving after ExecReload", |s| s.generation == 2 && s.state == "running");
    assert_eq!(server.get("/").status, 200);
}
