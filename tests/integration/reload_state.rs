//! A failed reload leaves the arbiter's process-wide state as it was (issue 17, item 5): after
//! each way a HUP can fail, the arbiter's umask (`/proc/PID/status`) and working directory
//! (`/proc/PID/cwd`) are those of the serving generation, which here sets no `--umask` or
//! `--chdir`: the inherited umask and the launch directory. A USR2 re-exec starts the new arbiter
//! from the inherited umask too, not from the old arbiter's `--umask`.

use crate::support::*;
use std::path::Path;

/// The serving generation: hello, one worker, no `umask` or `chdir` keys.
fn serving_config() -> String {
    format!("app = {:?}\nworkers = 1\nbind = [\"127.0.0.1:0\"]\n", guest("hello").display().to_string())
}

/// A umask the rejected config sets: one that differs from the inherited `inherited`.
fn other_umask(inherited: &str) -> &'static str {
    if inherited == "0077" {
        "027"
    } else {
        "077"
    }
}

/// Starts the serving generation, rewrites the config with `rejected` (which also sets a
/// `--chdir` and a `--umask` of its own), HUPs, waits until the reload has failed, and checks
/// that the umask and directory are back to the inherited ones. `rejected` gets the umask line.
fn hup_fails_and_restores(name: &str, rejected: impl Fn(&Path, &str) -> String, failed: impl Fn(&Status) -> bool) {
    let dir = scratch_dir(name);
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::fs::write(dir.path().join("rustcorn.toml"), serving_config()).unwrap();
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    let (umask_before, cwd_before) = (umask_of(server.pid), cwd_of(server.pid));
    assert_eq!(cwd_before, dir.path().canonicalize().unwrap(), "serving from the launch directory");

    let umask_line = format!("umask = {:?}\nchdir = \"elsewhere\"\n", other_umask(&umask_before));
    std::fs::write(dir.path().join("rustcorn.toml"), rejected(dir.path(), &umask_line)).unwrap();
    server.signal(libc::SIGHUP);
    let status = server.wait_status("the reload failed", |s| s.failed_reloads == 1 && failed(s));
    assert_eq!(status.generation, 1, "the first generation serves on: {status:?}");
    assert_eq!(umask_of(server.pid), umask_before, "the rejected --umask is undone\n{}", server.log.text());
    assert_eq!(cwd_of(server.pid), cwd_before, "the rejected --chdir is undone\n{}", server.log.text());
    assert_eq!(server.get("/").status, 200);
}

fn running(status: &Status) -> bool {
    status.state == "running"
}

#[test]
fn a_rejected_setting_restores_umask_and_directory() {
    // --workers 0 is refused after --chdir and --umask were applied to read the rest.
    hup_fails_and_restores(
        "reload-state-setting",
        |_, process| format!("{}{process}", serving_config().replace("workers = 1", "workers = 0")),
        running,
    );
}

#[test]
fn a_missing_chdir_restores_umask_and_directory() {
    hup_fails_and_restores(
        "reload-state-chdir",
        |_, process| format!("{}{}", serving_config(), process.replace("elsewhere", "missing")),
        running,
    );
}

#[test]
fn an_app_that_fails_to_compile_restores_umask_and_directory() {
    hup_fails_and_restores(
        "reload-state-compile",
        |dir, process| {
            std::fs::write(dir.join("elsewhere/broken.wasm"), b"\0asm\x0d\0\x01\0 not a component").unwrap();
            let config = serving_config();
            let app_line = config.lines().next().unwrap().to_string();
            format!("{}{process}", config.replace(&app_line, "app = \"broken.wasm\""))
        },
        running,
    );
}

#[test]
fn a_bind_that_fails_restores_umask_and_directory() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    hup_fails_and_restores(
        "reload-state-bind",
        |_, process| {
            let config = serving_config().replace("\"127.0.0.1:0\"", &format!("\"127.0.0.1:{port}\""));
            format!("{config}{process}")
        },
        running,
    );
    drop(taken);
}

#[test]
fn workers_that_fail_to_boot_restore_umask_and_directory_on_rollback() {
    // Valid settings, but the new generation's workers cannot open their access log: the
    // reload is committed, then rolled back.
    hup_fails_and_restores(
        "reload-state-rollback",
        |dir, process| {
            let unopenable = dir.join("missing-dir/access.log");
            format!("{}access-logfile = {:?}\n{process}", serving_config(), unopenable.display().to_string())
        },
        |s| running(s) && s.ready == 1 && s.target == 1,
    );
}

#[test]
fn a_usr2_arbiter_starts_from_the_inherited_umask() {
    // rustcorn inherits the test process's umask.
    let inherited = umask_of(std::process::id());
    let dir = scratch_dir("reload-state-usr2");
    let with_umask = format!("{}umask = {:?}\n", serving_config(), other_umask(&inherited));
    std::fs::write(dir.path().join("rustcorn.toml"), with_umask).unwrap();
    let old = ServerCommand::without_app().current_dir(dir.path()).own_process_group().start();
    assert_ne!(umask_of(old.pid), inherited, "the serving generation's --umask is applied");

    // The new arbiter reads a config with no umask: it must not keep the old arbiter's.
    std::fs::write(dir.path().join("rustcorn.toml"), serving_config()).unwrap();
    old.signal(libc::SIGUSR2);
    let new_pid =
        number_after(&old.wait_status("a new arbiter", |s| s.upgrade.starts_with("child:")).upgrade, "child:");
    let _guard = ProcessGuard(new_pid);
    old.status.wait(new_pid, "the new arbiter serving", WAIT, |s| s.state == "running" && s.ready == 1);
    assert_eq!(umask_of(new_pid), inherited, "the new arbiter starts from the umask rustcorn inherited");
}
