//! `wasi:keyvalue` on a real Redis (issue 19), against the real binary and a `redis-server` each
//! test starts for itself (`redis_server`): increments from every worker add up exactly, values
//! outlive a restart, a HUP and a USR2, limits and grants hold, two buckets on one server stay
//! apart, and a Redis that dies mid-load costs errors, never a worker, and comes back.
use crate::metrics::{sample, scrape};
use crate::redis_server::RedisServer;
use crate::support::*;

fn grant(redis: &RedisServer, bucket: &str) -> String {
    format!("{bucket}={}", redis.url())
}

fn put(server: &Server, path: &str, body: &[u8]) -> Reply {
    http(&server.addr, "PUT", path, &[], body).unwrap_or_else(|e| panic!("PUT {path}: {e}"))
}

fn admin_address(server: &Server) -> String {
    let line = server.log.wait_for(&["Admin endpoint at: http://"], WAIT);
    let rest = line.split("Admin endpoint at: http://").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

fn operations(admin: &str, op: &str, outcome: &str) -> f64 {
    sample(
        &scrape(admin),
        &format!(r#"rustcorn_keyvalue_operations_total{{bucket="default",op="{op}",outcome="{outcome}"}}"#),
    )
}

#[test]
fn increments_from_four_workers_add_up_exactly_on_redis() {
    let Some(redis) = RedisServer::start("increments_from_four_workers_add_up_exactly_on_redis") else { return };
    let server = Server::start(&guest("state"), &["-w", "4", "--keyvalue", &grant(&redis, "default")]);
    server.wait_status("four workers serving", |s| s.ready == 4);
    let (ok, failed) = load(&server.addr, "/incr/default/hits", 16, 8000);
    assert_eq!((ok, failed), (8000, 0), "every increment answered 200\n{}", server.log.text());
    let reply = server.get("/get/default/hits");
    assert_eq!((reply.status, reply.text()), (200, "8000".to_string()), "no increment lost or doubled");
    // Stored in Redis under the bucket's prefix, as a plain integer other clients can read.
    assert_eq!(redis.command(&["GET", "rustcorn:7:default:hits"]).unwrap(), "$4\r\n8000");
}

#[test]
fn values_survive_a_restart_a_hup_and_a_usr2_on_redis() {
    let Some(redis) = RedisServer::start("values_survive_a_restart_a_hup_and_a_usr2_on_redis") else { return };
    let grant = grant(&redis, "default");
    let args = ["-w", "2", "--keyvalue", grant.as_str()];
    {
        let server = Server::start(&guest("state"), &args);
        for n in 1..=3 {
            assert_eq!(server.get("/incr/default/n").text(), format!("{n}\n"));
        }
        assert_eq!(put(&server, "/set/default/note", b"kept").status, 200);
    }
    let server = ServerCommand::new(&guest("state")).args(args).own_process_group().start();
    assert_eq!(server.get("/incr/default/n").text(), "4\n", "a restarted server sees the count");
    assert_eq!(server.get("/get/default/note").text(), "kept");

    server.signal(libc::SIGHUP);
    server.wait_status("the new generation serving", |s| s.generation == 2 && s.serving(2).len() == 2);
    wait_until("the old workers gone", WAIT, || server.worker_pids().len() == 2);
    assert_eq!(server.get("/incr/default/n").text(), "5\n", "the new generation sees the old one's count");

    server.signal(libc::SIGUSR2);
    let status = server.wait_status("a new arbiter", |s| s.upgrade.starts_with("child:"));
    let new_pid = number_after(&status.upgrade, "child:");
    let _guard = ProcessGuard(new_pid);
    server.status.wait(new_pid, "the new arbiter's workers", WAIT, |s| s.ready == 2);
    let old_workers = server.worker_pids();
    server.signal(libc::SIGWINCH);
    for pid in &old_workers {
        server.wait_status("an old worker gone", |s| !s.has_worker(pid));
    }
    // Only the upgraded arbiter's workers serve now.
    assert_eq!(server.get("/incr/default/n").text(), "6\n", "the upgraded server sees the count");
    assert_eq!(server.get("/get/default/note").text(), "kept");
}

#[test]
fn an_ungranted_bucket_is_refused_on_redis() {
    let Some(redis) = RedisServer::start("an_ungranted_bucket_is_refused_on_redis") else { return };
    let server = Server::start(&guest("state"), &["--keyvalue", &grant(&redis, "granted")]);
    assert_eq!(server.get("/incr/granted/n").text(), "1\n");
    let reply = server.get("/incr/other/n");
    assert_eq!((reply.status, reply.text()), (403, "no-such-store\n".to_string()));
    assert_eq!(server.get("/").status, 403, "`default` is not granted either");
    assert_eq!(redis.command(&["DBSIZE"]).unwrap(), ":1", "the refused opens wrote nothing");
}

#[test]
fn oversized_keys_and_values_are_refused_on_redis() {
    let Some(redis) = RedisServer::start("oversized_keys_and_values_are_refused_on_redis") else { return };
    let server = Server::start(
        &guest("state"),
        &["--keyvalue", &grant(&redis, "default"), "--keyvalue-max-key-size", "16", "--keyvalue-max-value-size", "100"],
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
    // A value another client stored past the limit is refused rather than handed over.
    redis.command(&["SET", "rustcorn:7:default:big", &"z".repeat(101)]).unwrap();
    let reply = server.get("/get/default/big");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().contains("larger than --keyvalue-max-value-size 100"), "{}", reply.text());
    assert_eq!(server.log.count(&["keyvalue bucket"]), 0, "refusals are no outage:\n{}", server.log.text());
}

#[test]
fn two_buckets_on_one_redis_are_apart_and_list_keys_pages() {
    let Some(redis) = RedisServer::start("two_buckets_on_one_redis_are_apart_and_list_keys_pages") else { return };
    let (a, b) = (grant(&redis, "a"), grant(&redis, "a:b"));
    let server = Server::start(&guest("state"), &["-w", "1", "--keyvalue", &a, "--keyvalue", &b]);
    assert_eq!(server.get("/fill/a/2500").text(), "stored 2500\n");
    // Keys outside every bucket's prefix (another application on the same server) are not listed.
    redis.command(&["SET", "f1", "foreign"]).unwrap();
    redis.command(&["SET", "rustcorn:1:a", "not a key of a"]).unwrap();
    let listed = server.get("/list/a").text();
    let pages: usize = listed.split(" in ").nth(1).and_then(|p| p.split(' ').next()).and_then(|p| p.parse().ok()).unwrap();
    assert!(listed.starts_with("2500 keys in "), "{listed}");
    assert!(pages > 1, "2,500 keys take more than one SCAN page: {listed}");
    // SCAN walks the whole keyspace, so a:b's listing takes pages too; none of them holds a's keys.
    let other = server.get("/list/a:b").text();
    assert!(other.starts_with("0 keys in "), "bucket a:b sees none of a's keys: {other}");
    assert_eq!(server.get("/get/a:b/f1").status, 404);
    assert_eq!(put(&server, "/set/a:b/f1", b"mine").status, 200);
    assert_eq!(server.get("/get/a/f1").text(), "v", "a's f1 is untouched by a:b's");
    assert_eq!(server.get("/get-many/a/f1,f2,nope").text(), "f1=v\nf2=v\nnope absent\n");
    assert_eq!(server.get("/delete-many/a/f1,f2").text(), "deleted\n");
    assert_eq!(server.get("/get-many/a/f1,f2,f3").text(), "f1 absent\nf2 absent\nf3=v\n");
    assert_eq!(server.get("/get/a:b/f1").text(), "mine", "deleting a's keys left a:b's alone");
    assert!(server.get("/list/a").text().starts_with("2498 keys in "));
    assert_eq!(redis.command(&["GET", "f1"]).unwrap(), "$7\r\nforeign", "the foreign key is untouched");
}

#[test]
fn a_non_integer_is_the_guests_error_and_stays_unchanged_on_redis() {
    let test = "a_non_integer_is_the_guests_error_and_stays_unchanged_on_redis";
    let Some(redis) = RedisServer::start(test) else { return };
    let server = Server::start(&guest("state"), &["-w", "1", "--keyvalue", &grant(&redis, "default")]);
    assert_eq!(put(&server, "/set/default/word", b"abc").status, 200);
    let reply = server.get("/incr/default/word");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().starts_with("other: increment: the value of \"word\" is not a decimal counter"), "{}", reply.text());
    assert_eq!(server.get("/get/default/word").text(), "abc", "the value is unchanged");
    assert_eq!(server.log.count(&["keyvalue bucket"]), 0, "a guest's mistake is no outage:\n{}", server.log.text());
}

#[test]
fn a_server_starts_and_is_ready_while_redis_is_down() {
    let Some(mut redis) = RedisServer::stopped("a_server_starts_and_is_ready_while_redis_is_down") else { return };
    let server = ServerCommand::new(&guest("state"))
        .args(["-w", "2", "--admin-bind", "127.0.0.1:0", "--keyvalue", &grant(&redis, "default")])
        .start();
    let admin = admin_address(&server);
    assert_eq!(http(&admin, "GET", "/readyz", &[], b"").unwrap().status, 200, "/readyz needs no backend");
    let reply = server.get("/incr/default/n");
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert!(reply.text().starts_with("other: redis redis://127.0.0.1:"), "{}", reply.text());
    redis.restart();
    wait_until("an increment succeeds once Redis is up", WAIT, || server.get("/incr/default/n").status == 200);
}

#[test]
fn a_malformed_redis_url_stops_the_start_with_one_line() {
    let cases = [
        ("default=redis://127.0.0.1:notaport", "--keyvalue default=...: not a Redis URL"),
        ("default=redis://:hunter2@127.0.0.1:99999", "--keyvalue default=...: not a Redis URL"),
        ("default=redis://127.0.0.1:6379/notadb", "--keyvalue default=...: not a Redis URL"),
        ("default=redis+unix:///tmp/r.sock", "--keyvalue default=...: the URL must be"),
    ];
    for (spec, expected) in cases {
        let (status, _, stderr) = ServerCommand::new(&guest("state")).args(["--keyvalue", spec]).run_to_exit();
        assert_ne!(status.code(), Some(0), "{spec}");
        assert!(stderr.contains(expected) && stderr.trim().lines().count() == 1, "{spec}: {stderr}");
        assert!(!stderr.contains("hunter2"), "a password is never printed: {stderr}");
        assert_eq!(stderr.matches("Booting worker").count(), 0, "nothing forked: {stderr}");
    }
    let (status, stdout, _) = ServerCommand::new(&guest("state"))
        .args(["--keyvalue", "default=redis://:hunter2@127.0.0.1:6379/2", "--print-config"])
        .run_to_exit();
    assert_eq!(status.code(), Some(0));
    assert!(stdout.contains("default=redis://***@127.0.0.1:6379/2") && !stdout.contains("hunter2"), "{stdout}");
}

#[test]
fn redis_killed_mid_load_costs_errors_not_workers_and_recovers() {
    let test = "redis_killed_mid_load_costs_errors_not_workers_and_recovers";
    let Some(mut redis) = RedisServer::start(test) else { return };
    let server = ServerCommand::new(&guest("state"))
        .args(["-w", "2", "--admin-bind", "127.0.0.1:0", "--keyvalue", &grant(&redis, "default")])
        .start();
    let admin = admin_address(&server);
    server.wait_status("both workers serving", |s| s.ready == 2);
    let pids = server.worker_pids();
    let load = BackgroundLoad::start(&server.addr, "/incr/default/n", 4);
    wait_until("increments succeed", WAIT, || operations(&admin, "increment", "ok") >= 200.0);
    redis.kill();
    wait_until("increments fail", WAIT, || operations(&admin, "increment", "error") >= 200.0);
    assert_eq!(http(&admin, "GET", "/readyz", &[], b"").unwrap().status, 200, "/readyz does not depend on Redis");
    redis.restart();
    // Each worker that logged an outage logs its end once it succeeds again.
    let failing: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|pid| server.log.count(&[&format!("[{pid}]"), "operations fail"]) > 0)
        .collect();
    assert!(!failing.is_empty(), "no outage line:\n{}", server.log.text());
    for pid in &failing {
        server.log.wait_for(&[&format!("[{pid}]"), "operations succeed again"], WAIT);
    }
    let (ok, failures) = load.finish();
    assert!(failures.iter().all(|f| f == "status 503 complete=true"), "errors, not broken responses: {failures:?}");
    assert!(ok > 0 && !failures.is_empty());
    assert_eq!(server.worker_pids(), pids, "no worker crashed or was replaced");
    for pid in &pids {
        let down = server.log.count(&[&format!("[{pid}]"), "keyvalue bucket \"default\": operations fail"]);
        let up = server.log.count(&[&format!("[{pid}]"), "keyvalue bucket \"default\": operations succeed again"]);
        assert!(down <= 1 && up == down, "worker {pid}: {down} outage and {up} recovery lines:\n{}", server.log.text());
    }
    // Every answer is in the metrics under its outcome: 200s are ok, 503s error (or timeout).
    let text = scrape(&admin);
    let count = |outcome: &str| {
        sample(&text, &format!(r#"rustcorn_keyvalue_operations_total{{bucket="default",op="increment",outcome="{outcome}"}}"#))
    };
    assert_eq!(count("ok"), ok as f64, "{text}");
    assert_eq!(count("error") + count("timeout"), failures.len() as f64, "{text}");
    assert_eq!(count("refused") + count("busy"), 0.0);
    let histogram = r#"rustcorn_keyvalue_operation_duration_seconds_count{bucket="default",op="increment"}"#;
    assert_eq!(sample(&text, histogram), (ok + failures.len()) as f64);
    assert_eq!(server.get("/incr/default/after").text(), "1\n", "served again (the restarted Redis is empty)");
}

#[test]
fn the_python_example_serves_through_redis() {
    let Some(redis) = RedisServer::start("the_python_example_serves_through_redis") else { return };
    let server = Server::start(
        &guest("python-state"),
        &["-w", "2", "--keyvalue", &grant(&redis, "default"), "--config-var", "greeting=Hola"],
    );
    assert_eq!(server.get("/").text(), "Hola from Python, visit 1\n");
    let (ok, failed) = load(&server.addr, "/incr/default/n", 8, 400);
    assert_eq!((ok, failed), (400, 0), "{}", server.log.text());
    assert_eq!(server.get("/incr/default/n").text(), "401\n", "no increment lost or doubled");
    assert_eq!(redis.command(&["GET", "rustcorn:7:default:visits"]).unwrap(), "$1\r\n1");
}
