//! WASI 0.3 apps (`wasi:http/service@0.3.0`) against the real binary, one test per host
//! guarantee, on the `p3` guest (the `wasip3` crate), the Python 0.3 app and the `wasip3` crate's
//! own example: the world is detected; each request gets a fresh instance, or with
//! `--instance-reuse` a seat on a shared one (up to `--instance-concurrency` at once, a trap or
//! timeout failing only that instance's requests); the request clock, traps, the memory cap, the
//! body limit and the slow-body bound, the outbound policy and limits, the watchdog,
//! `--max-requests`, the access log and the metrics hold as for 0.2; HUP and USR2 swap between a
//! 0.2 and a 0.3 app.

use crate::outbound::{Behaviour, TargetServer};
use crate::support::*;
use std::time::{Duration, Instant};

fn p3() -> std::path::PathBuf {
    guest("p3")
}

fn assert_plain_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(reply.header("content-type").unwrap_or("").starts_with("text/plain"), "{:?}", reply.headers);
    assert!(!reply.text().contains("wasm"), "no trap details: {}", reply.text());
}

fn check(app: &std::path::Path) -> std::process::Output {
    std::process::Command::new(rustcorn_bin()).arg("check").arg(app).output().unwrap()
}

#[test]
fn check_names_the_world_and_why_a_component_is_not_servable() {
    let out = check(&p3());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("world: wasi:http/service@0.3.0"), "{stdout}");
    assert!(stdout.contains("wasi:http/handler@0.3.0"), "the export is listed: {stdout}");

    let out = check(&guest("hello"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("world: wasi:http/proxy@0.2"));

    let dir = scratch_dir("p3-check");
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, wat::parse_str("(component)").unwrap()).unwrap();
    let out = check(&empty);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a component without a handler is refused");
    assert!(
        stderr.contains("wasi:http/incoming-handler@0.2.x") && stderr.contains("wasi:http/handler@0.3.0"),
        "the error names both handlers it looked for: {stderr}"
    );
}

#[test]
fn serves_hello_on_a_fresh_instance_per_request() {
    let server = Server::start(&p3(), &["-w", "1"]);
    let reply = server.get("/");
    assert_eq!((reply.status, reply.text()), (200, "Hello from WASI 0.3!\n".to_string()));
    assert!(reply.complete, "the body written by the guest's task after returning ends cleanly");
    for _ in 0..3 {
        assert_eq!(server.get("/count").text(), "1\n", "every request starts on a fresh instance");
    }
}

#[test]
fn serves_the_python_0_3_app() {
    let server = Server::start(&guest("python-p3"), &["-w", "1"]);
    let reply = server.get("/");
    assert_eq!((reply.status, reply.text()), (200, "Hello from Python on WASI 0.3!\n".to_string()));
    assert!(reply.complete);
    let echoed = server.post("/echo", b"sent by the client");
    assert_eq!((echoed.status, echoed.text()), (200, "sent by the client".to_string()));
}

#[test]
fn a_spinning_guest_gets_504_from_the_epoch_deadline_and_the_worker_serves_on() {
    let server = Server::start(&p3(), &["-w", "1", "-t", "1"]);
    let worker = server.worker_pids();
    assert_plain_error(&server.get("/spin"), 504);
    server.log.wait_for(&["timed out (no response within --timeout 1s)"], WAIT);
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.worker_pids(), worker, "the same worker serves on");
}

#[test]
fn a_guest_waiting_on_the_host_is_cut_by_max_request_time() {
    let server = Server::start(&p3(), &["-w", "1", "-t", "30", "--max-request-time", "1"]);
    let started = Instant::now();
    assert_plain_error(&server.get("/sleep?ms=20000"), 504);
    assert!(started.elapsed() < Duration::from_secs(10), "cut at --max-request-time, took {:?}", started.elapsed());
    server.log.wait_for(&["timed out (over --max-request-time 1s)"], WAIT);
    assert_eq!(server.get("/sleep?ms=10").text(), "slept\n", "a short wait is served");
}

#[test]
fn a_trap_before_the_head_is_500() {
    let server = Server::start(&p3(), &["-w", "1"]);
    assert_plain_error(&server.get("/panic"), 500);
    server.log.wait_for(&["GET /panic: guest trapped"], WAIT);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_trap_after_the_head_truncates_the_h1_response() {
    let server = Server::start(&p3(), &["-w", "1"]);
    let reply = server.get("/trap-mid-body");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "partial body\n");
    assert!(!reply.complete, "the client must see a truncated body, not a clean end");
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_trap_after_the_head_resets_the_h2_stream() {
    use http_body_util::BodyExt;
    let server = Server::start(&p3(), &["-w", "1", "--http-protocols", "h1,h2"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut sender = h2_client(&server.addr).await;
        let get = |path: &str| h2_get(&server.addr, path);
        let response = sender.send_request(get("/trap-mid-body")).await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Vec::new();
        let ended = loop {
            match body.frame().await {
                Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            }
        };
        assert_eq!(received, b"partial body\n");
        assert!(ended.is_err(), "the h2 stream must end in an error, not a clean END_STREAM");
        let response = sender.send_request(get("/")).await.unwrap();
        assert_eq!(response.status(), 200, "the connection serves on");
    });
}

#[test]
fn allocating_past_max_memory_is_500_and_logged_as_the_memory_cap() {
    let server = Server::start(&p3(), &["-w", "1", "--max-memory", "32M"]);
    assert_plain_error(&server.get("/alloc"), 500);
    server.log.wait_for(&["exceeded the memory limit (--max-memory 33554432 bytes)"], WAIT);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn the_body_limit_holds() {
    let server = Server::start(&p3(), &["-w", "1", "--limit-request-body", "1K"]);
    assert_eq!(server.post("/consume", &[b'x'; 2000]).status, 413);
    // A chunked body has no declared length: it is cut while the 0.3 guest reads it.
    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    let request = format!(
        "POST /consume HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}{chunk}0\r\n\r\n"
    );
    assert_eq!(raw_tcp(&server.addr, request.as_bytes()).unwrap().status, 413, "a chunked body over the limit");
    let within = server.post("/consume", &[b'x'; 1000]);
    assert_eq!((within.status, within.text()), (200, "1000 bytes\n".to_string()));
}

#[test]
fn client_send_goes_through_the_outbound_policy() {
    let allowed = TargetServer::start(Behaviour::Answer);
    let other = TargetServer::start(Behaviour::Answer);
    let fetch = |server: &Server, authority: &str| server.get(&format!("/fetch?authority={authority}&path=/")).text();

    let server = Server::start(&p3(), &["-w", "1"]);
    assert_eq!(fetch(&server, &allowed.authority()), "error ErrorCode::HttpRequestDenied\n", "denied by default");
    server.log.wait_for(&["outbound request to", "denied"], WAIT);
    drop(server);

    let pattern = format!("http://{}", allowed.authority());
    let server = Server::start(&p3(), &["-w", "1", "--allow-outbound", &pattern]);
    assert_eq!(fetch(&server, &allowed.authority()), "status 200\ntarget");
    assert_eq!(fetch(&server, &other.authority()), "error ErrorCode::HttpRequestDenied\n");
    drop(server);

    let server = Server::start(&p3(), &["-w", "1", "--allow-outbound", "http://*:*"]);
    let port = allowed.authority().rsplit(':').next().unwrap().to_string();
    assert_eq!(
        fetch(&server, &format!("localhost:{port}")),
        "error ErrorCode::DestinationIpProhibited\n",
        "the address check refuses loopback behind a name"
    );
    assert_eq!((allowed.accepted(), other.accepted()), (1, 0), "only the allowed request connected");
}

#[test]
fn access_log_atoms_and_metrics_cover_0_3_requests() {
    let format = "s=%(s)s B=%(B)s r=\"%(r)s\" instantiate=%(instantiate_us)s peak=%(peak_memory)s";
    let server = ServerCommand::new(&p3())
        .args(["-w", "1", "--access-logfile", "-", "--access-logformat", format, "--admin-bind", "127.0.0.1:0"])
        .start();
    let line = server.log.wait_for(&["Admin endpoint at: http://"], WAIT);
    let admin = line.split("Admin endpoint at: http://").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get("/panic").status, 500);
    let line = server.log.wait_for(&["r=\"GET / HTTP/1.1\""], WAIT);
    assert!(line.contains("s=200 B=21 "), "{line}");
    let field = |name: &str| line.split(&format!("{name}=")).nth(1).unwrap().split(' ').next().unwrap().to_string();
    assert!(field("instantiate").parse::<u64>().is_ok_and(|us| us > 0), "{line}");
    assert!(field("peak").parse::<u64>().is_ok_and(|bytes| bytes > 0), "{line}");
    server.log.wait_for(&["r=\"GET /panic HTTP/1.1\"", "s=500"], WAIT);
    let text = crate::metrics::scrape(&admin);
    let sample = |series: &str| crate::metrics::sample(&text, series);
    assert_eq!(sample(r#"rustcorn_guest_outcomes_total{outcome="ok"}"#), 1.0, "{text}");
    assert_eq!(sample(r#"rustcorn_guest_outcomes_total{outcome="trap"}"#), 1.0, "{text}");
    assert_eq!(sample("rustcorn_guest_instantiation_seconds_count"), 2.0, "{text}");
}

#[test]
fn hup_swaps_between_a_0_2_and_a_0_3_app() {
    let dir = scratch_dir("p3-swap");
    let app = dir.path().join("app.wasm");
    let install = |from: &std::path::Path| install_app(&app, from);
    install(&guest("hello"));
    let server = ServerCommand::new(&app).args(["-w", "1"]).start();
    assert_eq!(server.get("/").text(), "Hello, world!\n");
    for (generation, from, text) in [(2, p3(), "Hello from WASI 0.3!\n"), (3, guest("hello"), "Hello, world!\n")] {
        install(&from);
        server.signal(libc::SIGHUP);
        server.wait_status("the new generation serving", |s| s.generation == generation && s.state == "running");
        wait_until("the new app answers", WAIT, || server.get("/").text() == text);
    }
}

/// Starts `count` `/sleep?ms=MS` requests, each once the one before it is inside the guest (the guest prints `sleeping for MS ms` as it starts waiting).
fn start_sleepers(server: &Server, count: usize, ms: u64) -> Vec<std::thread::JoinHandle<Reply>> {
    let already = server.log.count(&["sleeping for"]);
    (0..count)
        .map(|i| {
            let addr = server.addr.clone();
            let sleeper = std::thread::spawn(move || http(&addr, "GET", &format!("/sleep?ms={ms}"), &[], b"").unwrap());
            server.log.wait_for_nth(&["sleeping for"], already + i + 1, WAIT);
            sleeper
        })
        .collect()
}

#[test]
fn with_instance_reuse_one_0_3_instance_serves_up_to_instance_concurrency_requests_at_once() {
    for (concurrency, count_after) in [("5", "5\n"), ("4", "1\n")] {
        let args = ["-w", "1", "--instance-reuse", "100", "--instance-concurrency", concurrency];
        let server = Server::start(&p3(), &args);
        let sleepers = start_sleepers(&server, 4, 1500);
        // The fifth request joins the sleepers' instance only if it has a seat left.
        assert_eq!(server.get("/count").text(), count_after, "--instance-concurrency {concurrency}");
        for sleeper in sleepers {
            assert_eq!(sleeper.join().unwrap().text(), "slept\n");
        }
    }
    let server = Server::start(&p3(), &["-w", "1", "--instance-reuse", "3"]);
    let counts: Vec<String> = (0..4).map(|_| server.get("/count").text()).collect();
    assert_eq!(counts, ["1\n", "2\n", "3\n", "1\n"], "one instance serves --instance-reuse requests, then a fresh one");
}

#[test]
fn a_trap_on_a_shared_instance_fails_only_the_requests_on_that_instance() {
    let server = Server::start(&p3(), &["-w", "1", "--instance-reuse", "100", "--instance-concurrency", "2"]);
    // Two sleepers fill instance A; the third sleeper and the trap share instance B.
    let on_a = start_sleepers(&server, 2, 2000);
    let on_b = start_sleepers(&server, 1, 2000);
    assert_plain_error(&server.get("/panic"), 500);
    let lost = on_b.into_iter().next().unwrap().join().unwrap();
    assert_plain_error(&lost, 500);
    server.log.wait_for(&["request", "GET /sleep", "failed with its shared instance: the guest trapped"], WAIT);
    for sleeper in on_a {
        assert_eq!(sleeper.join().unwrap().text(), "slept\n", "a request on the other instance is served");
    }
    assert_eq!(server.get("/").status, 200, "the worker serves on");
}

#[test]
fn a_timeout_on_a_shared_instance_is_504_and_drops_the_instance_with_its_other_requests() {
    let server =
        Server::start(&p3(), &["-w", "1", "-t", "1", "--instance-reuse", "100", "--instance-concurrency", "4"]);
    let worker = server.worker_pids();
    let started = Instant::now();
    let mut sleepers = start_sleepers(&server, 3, 5000).into_iter();
    // The first sleeper runs out of time first; the instance goes, and the others with it.
    assert_plain_error(&sleepers.next().unwrap().join().unwrap(), 504);
    for sleeper in sleepers {
        assert_plain_error(&sleeper.join().unwrap(), 500);
    }
    assert!(started.elapsed() < Duration::from_secs(4), "the others fail with the instance, not after their sleep");
    server.log.wait_for_nth(&["failed with its shared instance: another request on it ran out of time"], 2, WAIT);
    assert_eq!(server.get("/count").text(), "1\n", "the next request starts on a fresh instance");
    // A guest spinning on a shared instance is cut by the epoch deadline too.
    assert_plain_error(&server.get("/spin"), 504);
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.worker_pids(), worker, "the same worker serves on");
}

#[test]
fn a_bad_instance_concurrency_stops_the_start_with_one_line_naming_it() {
    for value in ["0", "10001", "many"] {
        let (status, _, stderr) = ServerCommand::new(&p3()).args(["--instance-concurrency", value]).run_to_exit();
        assert!(!status.success(), "{value}");
        assert!(!stderr.contains("Booting worker"), "no worker may start:\n{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{value}: one error line:\n{stderr}");
        assert!(errors[0].contains("--instance-concurrency"), "{stderr}");
    }
}

#[test]
fn the_wasip3_crates_own_http_example_serves_fresh_and_shared() {
    for args in [&["-w", "1"][..], &["-w", "1", "--instance-reuse", "10"]] {
        let server = Server::start(&guest("wasip3-http-proxy"), args);
        for _ in 0..3 {
            let reply = server.get("/");
            assert_eq!((reply.status, reply.text()), (200, "Hello, WASI!".to_string()), "{args:?}");
            assert!(reply.complete);
        }
    }
}

#[test]
fn the_python_0_3_app_serves_on_a_shared_instance() {
    let server = Server::start(&guest("python-p3"), &["-w", "1", "--instance-reuse", "20", "--instance-concurrency", "4"]);
    let addr = server.addr.clone();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let body = format!("client {i} says hello");
                (http(&addr, "POST", "/echo", &[], body.as_bytes()).unwrap().text(), body)
            })
        })
        .collect();
    for client in clients {
        let (echoed, sent) = client.join().unwrap();
        assert_eq!(echoed, sent);
    }
    assert_eq!(server.get("/").text(), "Hello from Python on WASI 0.3!\n");
}

#[test]
fn a_trap_after_the_head_on_a_shared_instance_truncates_the_response() {
    let server = Server::start(&p3(), &["-w", "1", "--instance-reuse", "10"]);
    let reply = server.get("/trap-mid-body");
    assert_eq!((reply.status, reply.text()), (200, "partial body\n".to_string()));
    assert!(!reply.complete, "the client must see a truncated body, not a clean end");
    assert_eq!(server.get("/count").text(), "1\n", "the trapped instance is gone");
}

#[test]
fn the_watchdog_replaces_a_wedged_0_3_worker() {
    let server = Server::start(&p3(), &["-w", "1", "-t", "2", "--instance-reuse", "10"]);
    assert_eq!(server.get("/").status, 200);
    let wedged = server.worker_pids()[0];
    send_signal(wedged, libc::SIGSTOP);
    server.log.wait_for(&["WORKER TIMEOUT", &format!("pid:{wedged}")], WAIT);
    server.wait_status("the wedged worker replaced", |s| !s.has_worker(wedged) && s.serving(1).len() == 1);
    assert_eq!(server.get("/").text(), "Hello from WASI 0.3!\n");
}

#[test]
fn trickling_uploads_to_a_0_3_app_hold_no_instance_slot_and_are_cut_with_408() {
    let args = ["-w", "1", "--instance-slots", "4", "--body-timeout", "2", "--body-min-rate", "100"];
    let server = Server::start(&p3(), &args);
    let mut slow: Vec<_> = (0..12).map(|_| crate::slow_bodies::slow_uploader(&server.addr)).collect();
    for _ in 0..10 {
        let reply = server.post("/consume", b"a normal body");
        assert_eq!((reply.status, reply.text()), (200, "13 bytes\n".to_string()), "beside 12 trickling uploads");
    }
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let reply = String::from_utf8_lossy(&read_until_closed(&mut *stream).unwrap()).into_owned();
        assert!(reply.starts_with("HTTP/1.1 408"), "a trickling upload: {reply:?}");
    }
}

#[test]
fn max_requests_recycles_0_3_workers_with_no_failed_request() {
    for args in [&["-w", "1", "--max-requests", "40"][..], &["-w", "1", "--max-requests", "40", "--instance-reuse", "25"]] {
        let server = Server::start(&p3(), args);
        let load = BackgroundLoad::start(&server.addr, "/", 4);
        wait_until("two replacements", WAIT, || server.status.workers_seen(server.pid).len() >= 3);
        let (ok, failures) = load.finish();
        assert!(ok >= 80, "{args:?}: only {ok} requests");
        assert!(failures.is_empty(), "{args:?}: {} failed requests while recycling: {failures:?}", failures.len());
    }
}

#[test]
fn usr2_upgrades_between_a_0_2_and_a_0_3_app_with_no_failed_request() {
    let dir = scratch_dir("p3-usr2");
    let app = dir.path().join("app.wasm");
    let install = |from: &std::path::Path| install_app(&app, from);
    install(&guest("hello"));
    let mut old = ServerCommand::new(&app).args(["-w", "1"]).own_process_group().start();
    let load = BackgroundLoad::start(&old.addr, "/", 2);
    install(&p3());
    old.signal(libc::SIGUSR2);
    let status = old.wait_status("a new arbiter", |s| s.upgrade.starts_with("child:"));
    let new_pid = number_after(&status.upgrade, "child:");
    old.status.wait(new_pid, "the new arbiter's worker", WAIT, |s| s.ready == 1);
    old.signal(libc::SIGWINCH);
    old.wait_status("target 0", |s| s.target == 0);
    wait_until("the 0.3 app answers", WAIT, || old.get("/").text() == "Hello from WASI 0.3!\n");
    let (ok, failures) = load.finish();
    assert!(ok > 0);
    assert!(failures.is_empty(), "{} failed requests during the upgrade: {failures:?}", failures.len());
    old.signal(libc::SIGTERM);
    assert!(old.wait_exit(WAIT).success());
    send_signal(new_pid, libc::SIGTERM);
    wait_until("the new arbiter exits", WAIT, || !process_alive(new_pid));
}

#[test]
fn outbound_limits_hold_for_client_send() {
    let silent = TargetServer::start(Behaviour::Silent);
    let pattern = format!("http://{}", silent.authority());
    let args = ["-w", "1", "-t", "3", "--outbound-max-connections", "1", "--allow-outbound", &pattern];
    let server = Server::start(&p3(), &args);
    let path = format!("/fetch?authority={}&path=/", silent.authority());
    let first = {
        let (server_addr, path) = (server.addr.clone(), path.clone());
        std::thread::spawn(move || http(&server_addr, "GET", &path, &[], b"").unwrap().text())
    };
    wait_until("the first fetch holds the one connection", WAIT, || silent.accepted() == 1);
    let started = Instant::now();
    let (_, second) = crate::outbound::slow_get(&server, &path);
    assert_eq!(second, "error ErrorCode::ConnectionLimitReached\n", "over --outbound-max-connections");
    assert!(started.elapsed() < Duration::from_secs(2), "refused at once");
    server.log.wait_for(&["--outbound-max-connections"], WAIT);
    assert_eq!(first.join().unwrap(), "error ErrorCode::ConnectionReadTimeout\n", "cut by the request clock");
    assert_eq!(silent.accepted(), 1, "the refused request never connected");
}
