//! Configuration layers: defaults < config file < RUSTCORN_CMD_ARGS < command line; bad config
//! messages; --check-config / --print-config; HUP re-reads the file.

use crate::support::*;
use std::path::Path;

fn write_config(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn toml_app(name: &str) -> String {
    format!("app = {:?}\n", guest(name).display().to_string())
}

#[test]
fn file_then_env_then_command_line() {
    let dir = scratch_dir("layers");
    let config = format!("{}workers = 3\nbind = [\"127.0.0.1:0\"]\n", toml_app("hello"));
    write_config(dir.path(), "rustcorn.toml", &config);

    let from_file = ServerCommand::without_app().current_dir(dir.path()).start();
    assert_eq!(from_file.worker_pids().len(), 3, "./rustcorn.toml is read");
    assert_eq!(from_file.get("/").status, 200);
    drop(from_file);

    let from_env = ServerCommand::without_app().current_dir(dir.path()).env("RUSTCORN_CMD_ARGS", "--workers 2").start();
    assert_eq!(from_env.worker_pids().len(), 2, "RUSTCORN_CMD_ARGS beats the file");
    drop(from_env);

    let from_cli = ServerCommand::without_app()
        .current_dir(dir.path())
        .env("RUSTCORN_CMD_ARGS", "--workers 2")
        .args(["-w", "1"])
        .start();
    assert_eq!(from_cli.worker_pids().len(), 1, "the command line beats both");
}

#[test]
fn a_list_from_a_higher_layer_replaces_the_file_list() {
    let dir = scratch_dir("bind-list");
    let socket = dir.path().join("from-file.sock");
    let config = format!("{}workers = 1\nbind = [\"unix:{}\", \"127.0.0.1:0\"]\n", toml_app("hello"), socket.display());
    let config_path = write_config(dir.path(), "app.toml", &config);
    let server = ServerCommand::without_app().arg("-c").arg(&config_path).args(["-b", "127.0.0.1:0"]).start();
    assert_eq!(server.addresses.len(), 1, "{:?}", server.addresses);
    assert!(!socket.exists(), "the file's unix bind was replaced, not added to");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn bad_config_files_name_the_file_and_the_key() {
    let dir = scratch_dir("bad-config");
    for (text, expected) in [
        ("wokers = 3\n", vec!["unknown key `wokers`", "did you mean `workers`"]),
        ("workers = \"many\"\n", vec!["key `workers`", "invalid value 'many'"]),
        ("workers = 0\n", vec!["key `workers`", "between 1 and"]),
        (
            "limit-request-field_size = 99999999999\n",
            vec!["key `limit-request-field_size`", "between 0 (unlimited) and 65536"],
        ),
        ("reuse_port = \"yes\"\n", vec!["key `reuse_port`", "expected true or false"]),
        ("timeout = [1, 2]\n", vec!["key `timeout`", "one value"]),
        ("workers = \n", vec!["not valid TOML"]),
    ] {
        let path = write_config(dir.path(), "bad.toml", &format!("{}{text}", toml_app("hello")));
        let (status, _, stderr) = ServerCommand::without_app().arg("-c").arg(&path).run_to_exit();
        assert_eq!(status.code(), Some(1), "{text}: {stderr}");
        let line = stderr.lines().find(|l| l.starts_with("rustcorn: error:")).unwrap_or_else(|| panic!("{stderr}"));
        assert!(line.contains("bad.toml"), "names the file: {line}");
        for needle in expected {
            assert!(line.contains(needle), "{text}: expected {needle:?} in {line}");
        }
        assert!(!stderr.contains("Booting worker"), "{stderr}");
    }
}

#[test]
fn bad_rustcorn_cmd_args_are_named() {
    let (status, _, stderr) = ServerCommand::new(&guest("hello")).env("RUSTCORN_CMD_ARGS", "--wrkrs 2").run_to_exit();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("RUSTCORN_CMD_ARGS") && stderr.contains("--wrkrs"), "{stderr}");
}

#[test]
fn check_config_validates_settings_and_app_without_serving() {
    let dir = scratch_dir("check-config");
    let good = write_config(dir.path(), "good.toml", &format!("{}workers = 2\n", toml_app("hello")));
    let (status, stdout, stderr) =
        ServerCommand::without_app().arg("-c").arg(&good).arg("--check-config").run_to_exit();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.starts_with("ok"), "{stdout}");
    assert!(!stderr.contains("Booting worker"));

    let not_wasm = dir.path().join("not.wasm");
    std::fs::write(&not_wasm, "nope").unwrap();
    let bad = write_config(dir.path(), "bad.toml", &format!("app = {:?}\n", not_wasm.display().to_string()));
    let (status, _, stderr) = ServerCommand::without_app().arg("-c").arg(&bad).arg("--check-config").run_to_exit();
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("not a WebAssembly component"), "{stderr}");
}

#[test]
fn print_config_shows_each_value_and_its_source() {
    let dir = scratch_dir("print-config");
    write_config(dir.path(), "rustcorn.toml", &format!("{}workers = 3\ntimeout = 10\n", toml_app("hello")));
    let (status, stdout, _) = ServerCommand::without_app()
        .current_dir(dir.path())
        .env("RUSTCORN_CMD_ARGS", "--timeout 20")
        .args(["--keep-alive", "5", "--print-config"])
        .run_to_exit();
    assert_eq!(status.code(), Some(0));
    let line = |name: &str| {
        stdout.lines().find(|l| l.starts_with(&format!("{name} = "))).unwrap_or_else(|| panic!("{stdout}")).to_string()
    };
    assert_eq!(line("workers"), "workers = \"3\"  # file rustcorn.toml");
    assert_eq!(line("timeout"), "timeout = \"20\"  # RUSTCORN_CMD_ARGS");
    assert_eq!(line("keep-alive"), "keep-alive = \"5\"  # command line");
    assert_eq!(line("graceful-timeout"), "graceful-timeout = \"30\"  # default");
}

#[test]
fn hup_rereads_the_config_file() {
    let (_dir, config, server) = start_from_config_file("hup-config");
    assert_eq!(server.worker_pids().len(), 1);

    std::fs::write(&config, format!("{}workers = 2\nbind = [\"127.0.0.1:0\"]\n", toml_app("hello"))).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_status("two workers of generation 2", |s| s.generation == 2 && s.serving(2).len() == 2);
    wait_until("the old worker gone", WAIT, || server.worker_pids().len() == 2);

    // A config that became invalid: the old generation keeps serving.
    std::fs::write(&config, "workers = \"many\"\n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_status("a failed reload", |s| s.failed_reloads == 1);
    let line = server.log.wait_for(&["reload failed"], WAIT);
    assert!(line.contains("rustcorn.toml") && line.contains("workers"), "{line}");
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.worker_pids().len(), 2);
}

#[test]
fn name_sets_the_process_names() {
    let server = Server::start(&guest("hello"), &["-w", "1", "-n", "shop"]);
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim().to_string();
    assert_eq!(comm(server.pid), "rustcorn:shop");
    assert_eq!(comm(server.worker_pids()[0]), "rcw:shop");
}

#[test]
fn chdir_and_umask() {
    let dir = scratch_dir("chdir");
    std::fs::copy(guest("hello"), dir.path().join("app.wasm")).unwrap();
    let socket = dir.path().join("s.sock");
    let server = ServerCommand::without_app()
        .args(["--chdir"])
        .arg(dir.path())
        .args(["-m", "077", "-b", "127.0.0.1:0", "-b"])
        .arg(format!("unix:{}", socket.display()))
        .arg("app.wasm")
        .start();
    assert_eq!(server.get("/").status, 200, "app.wasm was found relative to --chdir");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "umask 077 leaves no group/other bits on the socket: {mode:o}");
}

#[test]
fn hup_rebinds_changed_binds() {
    let dir = scratch_dir("hup-rebind");
    let first = dir.path().join("first.sock");
    let second = dir.path().join("second.sock");
    let config = dir.path().join("rustcorn.toml");
    let write = |socket: &Path| {
        let text =
            format!("{}workers = 1\nbind = [\"127.0.0.1:0\", \"unix:{}\"]\n", toml_app("hello"), socket.display());
        std::fs::write(&config, text).unwrap();
    };
    write(&first);
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_unix(&first, request).unwrap().status, 200);

    write(&second);
    server.signal(libc::SIGHUP);
    server.wait_status("generation 2 serving", |s| s.generation == 2 && s.state == "running");
    assert_eq!(raw_unix(&second, request).unwrap().status, 200, "the new bind serves");
    assert!(!first.exists(), "the dropped unix bind's socket file is removed");
    assert_eq!(server.get("/").status, 200, "the TCP bind that stayed keeps serving on the same port");
}

/// The one `rustcorn: error:` line of a start that must fail before any worker forks.
fn refused_before_fork(command: ServerCommand) -> String {
    let (status, stdout, stderr) = command.run_to_exit();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stdout.is_empty() && !stderr.contains("Booting worker"), "no worker may start: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    errors[0].to_string()
}

#[test]
fn sizes_and_counts_past_their_upper_bound_stop_startup_with_one_line() {
    for (flag, value, message) in [
        (
            "--limit-request-field_size",
            "99999999999999",
            "--limit-request-field_size must be between 0 (unlimited) and 65536",
        ),
        ("-w", "100000", "--workers must be between 1 and 1024 (got 100000)"),
        ("--threads", "5000", "--threads must be between 1 and 1024"),
        ("--worker-connections", "99999999", "--worker-connections must be between 1 and 1048576"),
        ("--backlog", "1000000", "--backlog must be between 1 and 65535"),
        ("--instance-slots", "1000000", "--instance-slots must be between 1 and 10000"),
        ("--instance-reuse", "4000000000", "--instance-reuse must be between 1 and 1000000"),
        ("--limit-request-body", "2T", "--limit-request-body must be between 0 (unlimited) and 1T"),
        ("--handshake-timeout", "99999999", "--handshake-timeout must be between 1 and 3600 seconds"),
        ("--outbound-max-concurrency", "100000", "--outbound-max-concurrency must be between 1 and 4096"),
    ] {
        let line = refused_before_fork(ServerCommand::new(&guest("hello")).args([flag, value]));
        assert!(line.starts_with(&format!("rustcorn: error: {message}")), "{flag} {value}: {line}");
    }
    let line = refused_before_fork(ServerCommand::new(&guest("hello")).env("WEB_CONCURRENCY", "100000"));
    assert!(line.starts_with("rustcorn: error: $WEB_CONCURRENCY: --workers must be between 1 and 1024"), "{line}");
    let line = refused_before_fork(
        ServerCommand::new(&guest("hello")).env("RUSTCORN_CMD_ARGS", "--limit-request-field_size 70000"),
    );
    assert!(line.starts_with("rustcorn: error: RUSTCORN_CMD_ARGS: --limit-request-field_size must be"), "{line}");
}

#[test]
fn a_reload_with_a_value_past_its_bound_keeps_the_serving_generation() {
    let (_dir, config, server) = start_from_config_file("hup-bounds");
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 1);

    let too_large = format!("{}workers = 100000\nbind = [\"127.0.0.1:0\"]\n", toml_app("hello"));
    std::fs::write(&config, too_large).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_status("a failed reload", |s| s.failed_reloads == 1);
    let line = server.log.wait_for(&["reload failed"], WAIT);
    assert!(line.contains("rustcorn.toml") && line.contains("--workers must be between 1 and 1024"), "{line}");
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.worker_pids(), workers, "no worker was forked or replaced");
}

/// A server started from `./rustcorn.toml` in a scratch directory (the hello app, one worker, an
/// ephemeral port), for tests that rewrite the file and send HUP.
fn start_from_config_file(name: &str) -> (tempfile::TempDir, std::path::PathBuf, Server) {
    let dir = scratch_dir(name);
    let config = dir.path().join("rustcorn.toml");
    std::fs::write(&config, format!("{}workers = 1\nbind = [\"127.0.0.1:0\"]\n", toml_app("hello"))).unwrap();
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    (dir, config, server)
}
