//! Serving: every guest language, load across workers, binds, HTTP limits, the access log.

use crate::support::*;
use std::collections::HashSet;

#[test]
fn serves_rust_hello() {
    let server = Server::start(&guest("hello"), &["-w", "1"]);
    let reply = server.get("/");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "Hello, world!\n");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
}

#[test]
fn serves_python_app() {
    let server = Server::start(&guest("python-app"), &["-w", "1"]);
    let reply = server.get("/");
    assert_eq!((reply.status, reply.text().as_str()), (200, "Hello from Python!\n"));
    let echoed = server.post("/echo", b"from the test");
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "from the test"));
    assert_eq!(server.get("/missing").status, 404);
}

#[test]
fn serves_js_app() {
    let server = Server::start(&guest("js-app"), &["-w", "1"]);
    let reply = server.get("/");
    assert_eq!((reply.status, reply.text().as_str()), (200, "Hello from JavaScript!\n"));
    let echoed = server.post("/echo", b"from the test");
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "from the test"));
    let json = server.get("/json");
    assert_eq!(json.status, 200);
    assert!(json.text().contains("\"runtime\":\"javascript\""), "{}", json.text());
}

#[test]
fn echo_streams_a_large_body_back() {
    let server = Server::start(&guest("echo"), &["-w", "1"]);
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let reply = server.post("/", &body);
    assert_eq!(reply.status, 200);
    assert!(reply.complete);
    assert!(reply.body == body, "echoed body differs ({} bytes back)", reply.body.len());
}

#[test]
fn concurrent_load_is_served_by_several_workers() {
    let server = Server::start(
        &guest("faults"),
        &["-w", "3", "--access-logfile", "-", "--access-logformat", "%(p)s %(s)s %(U)s"],
    );
    // Each request holds the guest for 50 ms in a host sleep; 24 clients keep all workers busy.
    let (ok, failed) = load(&server.addr, "/sleep?ms=50", 24, 240);
    assert_eq!((ok, failed), (240, 0));
    let served_by: HashSet<String> = server
        .log
        .text()
        .lines()
        .filter(|l| l.ends_with(" 200 /sleep"))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let workers: HashSet<String> = server.worker_pids().iter().map(|p| format!("<{p}>")).collect();
    assert_eq!(workers.len(), 3);
    assert!(served_by.is_subset(&workers), "{served_by:?} vs {workers:?}");
    assert!(served_by.len() >= 2, "the load should reach more than one worker: {served_by:?}");
}

#[test]
fn access_log_default_format_is_apache_combined() {
    let server = Server::start(&guest("hello"), &["-w", "1", "--access-logfile", "-"]);
    let reply =
        http(&server.addr, "GET", "/path?q=1", &[("User-Agent", "test-agent/1"), ("Referer", "http://ref/")], b"")
            .unwrap();
    assert_eq!(reply.status, 200);
    let line = server.log.wait_for(&["GET /path?q=1"], WAIT);
    // 127.0.0.1 - - [22/Nov/2026:23:59:59 +0000] "GET /path?q=1 HTTP/1.1" 200 14 "http://ref/" "test-agent/1"
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("] \"GET /path?q=1 HTTP/1.1\" 200 14 \"http://ref/\" \"test-agent/1\""), "{line}");
}

#[test]
fn access_log_atoms() {
    let format = "h=%(h)s l=%(l)s u=%(u)s r=\"%(r)s\" m=%(m)s U=%(U)s q=%(q)s H=%(H)s s=%(s)s B=%(B)s b=%(b)s \
                  f=%(f)s a=\"%(a)s\" T=%(T)s M=%(M)s D=%(D)s L=%(L)s p=%(p)s in=%({x-in}i)s out=%({content-type}o)s t=%(t)s";
    let server = Server::start(&guest("hello"), &["-w", "1", "--access-logfile", "-", "--access-logformat", format]);
    let reply = http(&server.addr, "GET", "/a/b?x=1", &[("User-Agent", "ua"), ("X-In", "header-in")], b"").unwrap();
    assert_eq!(reply.status, 200);
    let line = server.log.wait_for(&["r=\"GET /a/b?x=1"], WAIT);
    let pid = server.worker_pids()[0];
    for expected in [
        "h=127.0.0.1 ",
        "l=- ",
        "u=- ",
        "r=\"GET /a/b?x=1 HTTP/1.1\" ",
        "m=GET ",
        "U=/a/b ",
        "q=x=1 ",
        "H=HTTP/1.1 ",
        "s=200 ",
        "B=14 ",
        "b=14 ",
        "f=- ",
        "a=\"ua\" ",
        "in=header-in ",
        "out=text/plain ",
        &format!("p=<{pid}> "),
    ] {
        assert!(line.contains(expected), "missing {expected:?} in {line}");
    }
    let field = |name: &str| line.split(&format!(" {name}=")).nth(1).unwrap().split(' ').next().unwrap().to_string();
    let micros: u64 = field("D").parse().unwrap();
    let millis: u64 = field("M").parse().unwrap();
    let seconds: u64 = field("T").parse().unwrap();
    let decimal: f64 = field("L").parse().unwrap();
    assert!(micros / 1000 == millis && seconds == millis / 1000, "D/M/T disagree: {line}");
    assert!((decimal - micros as f64 / 1e6).abs() < 1e-3, "L disagrees with D: {line}");
    assert!(line.contains(" t=[") && line.ends_with(']'), "{line}");
}

#[test]
fn serves_on_a_unix_socket_and_tcp_at_once() {
    let dir = scratch_dir("unix-bind");
    let socket = dir.path().join("app.sock");
    let bind = format!("unix:{}", socket.display());
    let mut server = ServerCommand::new(&guest("hello")).args(["-w", "1", "-b", &bind, "-b", "127.0.0.1:0"]).start();
    assert!(server.addresses.contains(&bind), "{:?}", server.addresses);
    let reply = raw_unix(&socket, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!((reply.status, reply.text().as_str()), (200, "Hello, world!\n"));
    assert_eq!(server.get("/").status, 200);
    server.signal(libc::SIGTERM);
    assert!(server.wait_exit(WAIT).success());
    assert!(!socket.exists(), "the unix socket is removed on clean shutdown");
}

#[test]
fn port_zero_reports_the_real_port() {
    let server = Server::start(&guest("hello"), &["-w", "1"]);
    let port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn request_line_too_long_is_400() {
    let server = Server::start(&guest("hello"), &["-w", "1", "--limit-request-line", "100"]);
    let long_path = format!("/{}", "a".repeat(200));
    let reply = server.get(&long_path);
    assert!(reply.status == 400 || reply.status == 414, "got {}", reply.status);
    assert_eq!(server.get("/short").status, 200, "the worker keeps serving");
}

#[test]
fn too_many_or_too_large_headers_get_431() {
    let server = Server::start(
        &guest("hello"),
        &["-w", "1", "--limit-request-fields", "10", "--limit-request-field_size", "200"],
    );
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("X-H{i}"), "v".to_string())).collect();
    let many_refs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(http(&server.addr, "GET", "/", &many_refs, b"").unwrap().status, 431);
    let big = "v".repeat(500);
    assert_eq!(http(&server.addr, "GET", "/", &[("X-Big", &big)], b"").unwrap().status, 431);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn garbage_request_gets_400_and_the_worker_survives() {
    let server = Server::start(&guest("hello"), &["-w", "1"]);
    let worker = server.worker_pids();
    let reply = raw_tcp(&server.addr, b"\x00\x01 NOT HTTP AT ALL\r\n\r\n");
    if let Ok(reply) = reply {
        assert_eq!(reply.status, 400);
    }
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.worker_pids(), worker, "the same worker still serves");
}

#[test]
fn http10_request_without_host_reaches_the_guest() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    let reply = raw_tcp(&server.addr, b"GET /headers HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().contains("path: /headers"), "{}", reply.text());
}

#[test]
fn guest_env_and_preopened_dir() {
    let dir = scratch_dir("preopen");
    std::fs::write(dir.path().join("data.txt"), "file contents\n").unwrap();
    let preopen = format!("{}::/data", dir.path().display());
    let server = Server::start(&guest("faults"), &["-w", "1", "-e", "GREETING=hi there", "--dir", &preopen]);
    let env = server.get("/env");
    assert!(env.text().lines().any(|l| l == "GREETING=hi there"), "{}", env.text());
    let file = server.get("/read-file?path=/data/data.txt");
    assert_eq!((file.status, file.text().as_str()), (200, "file contents\n"));
    // Nothing outside the preopen is visible.
    assert_eq!(server.get("/read-file?path=/etc/passwd").status, 404);
}

#[test]
fn guest_output_goes_to_the_error_log_with_worker_and_request_ids() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    assert_eq!(server.get("/stdout").status, 200);
    let pid = server.worker_pids()[0];
    let line = server.log.wait_for(&["guest stdout line 1"], WAIT);
    assert!(line.contains(&format!("[{pid}]")) || line.contains(&pid.to_string()), "{line}");
    assert!(line.contains("request"), "{line}");
    let err_line = server.log.wait_for(&["guest stderr line"], WAIT);
    assert!(err_line.contains(&pid.to_string()), "{err_line}");
}

#[test]
fn gunicorn_only_flags_are_accepted_with_a_warning() {
    let server = Server::start(&guest("hello"), &["-w", "1", "-k", "gevent", "--preload"]);
    assert_eq!(server.get("/").status, 200);
    let warning = server.log.wait_for(&["worker-class"], WAIT);
    assert!(warning.contains("WARNING") || warning.contains("ignored") || warning.contains("no meaning"), "{warning}");
}

#[test]
fn web_concurrency_sets_the_default_worker_count() {
    let server = ServerCommand::new(&guest("hello")).env("WEB_CONCURRENCY", "3").start();
    assert_eq!(server.worker_pids().len(), 3);
    let explicit = ServerCommand::new(&guest("hello")).env("WEB_CONCURRENCY", "3").args(["-w", "1"]).start();
    assert_eq!(explicit.worker_pids().len(), 1, "-w wins over WEB_CONCURRENCY");
}
