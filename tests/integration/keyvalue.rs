//! `wasi:keyvalue` and `wasi:config` against the real binary (issue 19), with the `state` guest:
//! increments from every worker add up exactly, values outlive a HUP and a restart, an ungranted
//! bucket and oversized keys and values are refused, and config values are seen only when given
//! (a `--config-file` re-read on HUP, its value never printed by `--print-config`).

use crate::support::*;
use std::path::Path;

fn sqlite_grant(dir: &Path) -> String {
    format!("default=sqlite:{}", dir.join("kv.db").display())
}

fn put(server: &Server, path: &str, body: &[u8]) -> Reply {
    http(&server.addr, "PUT", path, &[], body).unwrap_or_else(|e| panic!("PUT {path}: {e}"))
}

/// Waits until generation `generation` serves with `workers` workers and the old ones are gone.
fn wait_replaced(server: &Server, generation: u64, workers: usize) {
    server.wait_status("the new generation serving", |s| {
        s.generation == generation && s.serving(generation).len() == workers
    });
    wait_until("the old workers gone", WAIT, || server.worker_pids().len() == workers);
}

#[test]
fn increments_from_four_workers_add_up_exactly() {
    let dir = scratch_dir("kv-increments");
    let grant = sqlite_grant(dir.path());
    let server = Server::start(&guest("state"), &["-w", "4", "--keyvalue", &grant]);
    let (ok, failed) = load(&server.addr, "/incr/default/hits", 16, 8000);
    assert_eq!((ok, failed), (8000, 0), "every increment answered 200\n{}", server.log.text());
    let reply = server.get("/get/default/hits");
    assert_eq!((reply.status, reply.text()), (200, "8000".to_string()), "no increment lost or doubled");
}

#[test]
fn values_survive_a_hup_and_a_restart() {
    let dir = scratch_dir("kv-durable");
    let grant = sqlite_grant(dir.path());
    let args = ["-w", "2", "--keyvalue", grant.as_str()];
    {
        let server = Server::start(&guest("state"), &args);
        for n in 1..=3 {
            assert_eq!(server.get("/incr/default/n").text(), format!("{n}\n"));
        }
        assert_eq!(put(&server, "/set/default/note", b"kept").status, 200);
        server.signal(libc::SIGHUP);
        wait_replaced(&server, 2, 2);
        assert_eq!(server.get("/incr/default/n").text(), "4\n", "the new generation sees the old one's count");
    }
    let server = Server::start(&guest("state"), &args);
    assert_eq!(server.get("/incr/default/n").text(), "5\n", "a restarted server sees the count");
    assert_eq!(server.get("/get/default/note").text(), "kept");
}

#[test]
fn an_ungranted_bucket_is_refused() {
    let server = Server::start(&guest("state"), &[]);
    let reply = server.get("/incr/default/n");
    assert_eq!((reply.status, reply.text()), (403, "no-such-store\n".to_string()), "nothing granted, nothing opens");

    let dir = scratch_dir("kv-ungranted");
    let grant = format!("granted=sqlite:{}", dir.path().join("kv.db").display());
    let server = Server::start(&guest("state"), &["--keyvalue", &grant]);
    assert_eq!(server.get("/incr/granted/n").text(), "1\n");
    let reply = server.get("/incr/other/n");
    assert_eq!((reply.status, reply.text()), (403, "no-such-store\n".to_string()));
    assert_eq!(server.get("/").status, 403, "`default` is not granted either");
}

#[test]
fn oversized_keys_and_values_are_refused() {
    let dir = scratch_dir("kv-limits");
    let grant = sqlite_grant(dir.path());
    let server = Server::start(
        &guest("state"),
        &["--keyvalue", &grant, "--keyvalue-max-key-size", "16", "--keyvalue-max-value-size", "100"],
    );
    assert_eq!(server.get("/key-of/default/16").text(), "false\n", "a key at the limit is looked up");
    let reply = server.get("/key-of/default/17");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("longer than --keyvalue-max-key-size 16"), "{}", reply.text());
    assert_eq!(put(&server, "/set/default/v", &[b'x'; 100]).status, 200, "a value at the limit is stored");
    let reply = put(&server, "/set/default/v", &[b'y'; 101]);
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("larger than --keyvalue-max-value-size 100"), "{}", reply.text());
    assert_eq!(server.get("/get/default/v").text(), "x".repeat(100), "the refused value did not replace it");
}

#[test]
fn config_values_are_seen_only_when_given_and_files_are_reread_on_hup() {
    let server = Server::start(&guest("state"), &[]);
    assert_eq!(server.get("/config/greeting").status, 404, "no config given, none seen");

    let dir = scratch_dir("kv-config");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret-1").unwrap();
    let file_grant = format!("token={}", secret.display());
    let grant = sqlite_grant(dir.path());
    let args =
        ["-w", "1", "--config-var", "greeting=Hi", "--config-file", file_grant.as_str(), "--keyvalue", grant.as_str()];
    let server = Server::start(&guest("state"), &args);
    assert_eq!(server.get("/config/greeting").text(), "Hi");
    assert_eq!(server.get("/config/token").text(), "s3cret-1");
    assert_eq!(server.get("/config/other").status, 404);
    assert_eq!(server.get("/").text(), "Hi, visit 1\n");

    std::fs::write(&secret, "s3cret-2").unwrap();
    server.signal(libc::SIGHUP);
    wait_replaced(&server, 2, 1);
    assert_eq!(server.get("/config/token").text(), "s3cret-2", "HUP re-reads --config-file");

    let (status, stdout, _) = ServerCommand::new(&guest("state")).args(args).arg("--print-config").run_to_exit();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains(&format!("config-file = [\"{file_grant}\"]")), "{stdout}");
    assert!(stdout.contains("config-var = [\"greeting=Hi\"]"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "a file's value is never printed: {stdout}");
}

#[test]
fn keyvalue_and_config_tables_in_the_config_file() {
    let dir = scratch_dir("kv-toml");
    let toml = format!(
        "app = {:?}\nbind = [\"127.0.0.1:0\"]\nworkers = 1\n[keyvalue]\ndefault = \"sqlite:{}\"\n[config]\ngreeting = \"Hey\"\n",
        guest("state").display().to_string(),
        dir.path().join("kv.db").display()
    );
    std::fs::write(dir.path().join("rustcorn.toml"), toml).unwrap();
    let server = ServerCommand::without_app().current_dir(dir.path()).start();
    assert_eq!(server.get("/").text(), "Hey, visit 1\n");
}

#[test]
fn bad_grants_stop_the_start_with_one_line() {
    let dir = scratch_dir("kv-bad");
    let missing = dir.path().join("nowhere/kv.db");
    let cases = [
        (vec!["--keyvalue".to_string(), "default".to_string()], "--keyvalue \"default\": expected NAME=URL"),
        (vec!["--keyvalue".into(), "a=memory:".into()], "the URL must be"),
        (vec!["--keyvalue".into(), format!("a=sqlite:{}", missing.display())], "is not a directory"),
        (vec!["--config-file".into(), format!("k={}", missing.display())], "--config-file"),
        (vec!["--config-var".into(), "a=1".into(), "--config-var".into(), "a=2".into()], "\"a\" is given twice"),
        (vec!["--keyvalue-max-key-size".into(), "0".into()], "--keyvalue-max-key-size must be between 1"),
    ];
    for (args, expected) in cases {
        let (status, _, stderr) = ServerCommand::new(&guest("state")).args(args.clone()).run_to_exit();
        assert_ne!(status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(expected) && stderr.trim().lines().count() == 1, "{args:?}: {stderr}");
    }
}

#[test]
fn the_python_example_counts_across_workers_and_greets_from_config() {
    let dir = scratch_dir("kv-python");
    let grant = sqlite_grant(dir.path());
    let server =
        Server::start(&guest("python-state"), &["-w", "2", "--keyvalue", &grant, "--config-var", "greeting=Hola"]);
    assert_eq!(server.get("/").text(), "Hola from Python, visit 1\n");
    let (ok, failed) = load(&server.addr, "/incr/default/n", 8, 400);
    assert_eq!((ok, failed), (400, 0), "{}", server.log.text());
    assert_eq!(server.get("/incr/default/n").text(), "401\n", "no increment lost or doubled");
    let reply = server.get("/incr/other/n");
    assert_eq!((reply.status, reply.text()), (403, "no-such-store\n".to_string()));
}

#[test]
fn a_refused_operation_is_the_guests_error_and_the_worker_serves_on() {
    let dir = scratch_dir("kv-backend-error");
    let grant = sqlite_grant(dir.path());
    let server = Server::start(&guest("state"), &["-w", "1", "--keyvalue", &grant]);
    let pids = server.worker_pids();
    assert_eq!(put(&server, "/set/default/word", b"abc").status, 200);
    let reply = server.get("/incr/default/word");
    assert_eq!(reply.status, 503, "the increment is refused: {}", reply.text());
    assert!(
        reply.text().starts_with("other: increment: the value of \"word\" is not a decimal counter"),
        "{}",
        reply.text()
    );
    assert_eq!(server.get("/incr/default/n").text(), "1\n", "the same worker serves on");
    assert_eq!(server.worker_pids(), pids, "no worker was replaced");
    // The guest's own mistake is not a backend outage: the log stays quiet (a guest cannot fill it).
    assert_eq!(server.log.count(&["keyvalue bucket"]), 0, "{}", server.log.text());
}

#[test]
fn many_workers_open_a_new_database_file_together() {
    // Workers booting at once on a file nobody has opened race to switch it to WAL; SQLite
    // answers the loser with "database is locked" outside its busy handler. Every worker must
    // still boot (a fresh file each round: the race is on the first open).
    for round in 0..3 {
        let dir = scratch_dir("kv-boot-race");
        let grant = sqlite_grant(dir.path());
        let server = Server::start(&guest("state"), &["-w", "8", "--keyvalue", &grant]);
        server.wait_status("all eight workers serving", |s| s.ready == 8);
        assert_eq!(server.log.count(&["worker failed to boot"]), 0, "round {round}:\n{}", server.log.text());
        let reply = server.get("/incr/default/boots");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.text());
    }
}
