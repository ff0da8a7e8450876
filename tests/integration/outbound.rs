//! Outbound network from guests: wasi:http outbound requests are denied unless `--allow-outbound`
//! allows them, non-public addresses stay refused unless named literally, every outbound request
//! is bounded in time and number, and wasi:sockets stays denied. Targets are small servers this
//! test starts on loopback; nothing leaves the machine.

use crate::support::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a target server does with a connection.
#[derive(Clone, Copy)]
pub(crate) enum Behaviour {
    /// Reads the request head and answers 200 `target`.
    Answer,
    /// Accepts and holds the connection without ever answering.
    Silent,
    /// Writes a plain HTTP answer at once, without reading anything (a TLS client gets it
    /// in place of its ServerHello).
    PlainAtOnce,
}

/// A loopback HTTP server that counts the connections it accepts.
pub(crate) struct TargetServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TargetServer {
    pub(crate) fn start(behaviour: Behaviour) -> TargetServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (count, stopping) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    Behaviour::Answer => {
                        std::thread::spawn(move || answer(stream));
                    }
                    Behaviour::Silent => held.lock().unwrap().push(stream),
                    Behaviour::PlainAtOnce => {
                        let mut stream = stream;
                        let _ = stream.write_all(RESPONSE);
                    }
                }
            }
        });
        TargetServer { port, accepted, stop }
    }

    pub(crate) fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for TargetServer {
    fn drop(&mut self) {
        // Wake the accept loop so it sees the stop flag and drops the listener.
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    let mut stream = stream;
    let _ = stream.write_all(RESPONSE);
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ntarget";

/// The guest's report for `GET /fetch` of `http://AUTHORITY/`.
fn fetch(server: &Server, authority: &str) -> String {
    let reply = server.get(&format!("/fetch?authority={authority}&path=/"));
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text()
}

/// `GET path` for a reply that takes a while (the guest waits on an outbound request): HTTP/1.0,
/// so the body ends with the connection, and a read interrupted by a signal is retried.
pub(crate) fn slow_get(server: &Server, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", server.addr).as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("GET {path}: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("GET {path}: no head in {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    (status, body.to_string())
}

#[test]
fn outbound_http_is_denied_by_default() {
    let target = TargetServer::start(Behaviour::Answer);
    let server = Server::start(&guest("outbound"), &["-w", "1"]);
    let worker = server.worker_pids()[0];
    assert_eq!(fetch(&server, &target.authority()), "error ErrorCode::HttpRequestDenied\n");
    let line = server.log.wait_for(&["WARNING", "outbound request to", "denied"], WAIT);
    assert!(line.contains(&format!("request {worker}-1:")), "the warning names the request id: {line}");
    assert!(line.contains(&format!("http://{}", target.authority())), "the warning names the target: {line}");
    assert_eq!(server.log.count(&["outbound request to"]), 1, "one warning line per denied request");
    assert_eq!(target.accepted(), 0, "the target never saw a connection");
}

#[test]
fn a_reused_instance_logs_each_request_under_its_own_id() {
    let server = Server::start(&guest("outbound"), &["-w", "1", "--instance-reuse", "3"]);
    let worker = server.worker_pids()[0];
    for n in 1..=2 {
        assert_eq!(fetch(&server, "127.0.0.1:1"), "error ErrorCode::HttpRequestDenied\n");
        let line = server.log.wait_for(&[&format!("request {worker}-{n}: outbound request to")], WAIT);
        assert!(line.contains("denied"), "{line}");
    }
}

#[test]
fn allowing_every_host_still_refuses_loopback() {
    let target = TargetServer::start(Behaviour::Answer);
    let server = Server::start(&guest("outbound"), &["-w", "1", "--allow-outbound", "http://*:*"]);
    let worker = server.worker_pids()[0];
    let port = target.port;
    for (n, authority) in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("0.0.0.0:{port}"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(fetch(&server, authority), "error ErrorCode::DestinationIpProhibited\n", "{authority}");
        let line = server.log.wait_for(&[&format!("request {worker}-{}:", n + 1)], WAIT);
        assert!(line.contains("WARNING") && line.contains("not public"), "{line}");
    }
    assert_eq!(target.accepted(), 0, "no connection reached the loopback target");
}

#[test]
fn a_literal_pattern_allows_exactly_that_address_and_port() {
    let allowed = TargetServer::start(Behaviour::Answer);
    let other = TargetServer::start(Behaviour::Answer);
    let pattern = format!("http://{}", allowed.authority());
    let server = Server::start(&guest("outbound"), &["-w", "1", "--allow-outbound", &pattern]);
    assert_eq!(fetch(&server, &allowed.authority()), "status 200\ntarget");
    assert_eq!(allowed.accepted(), 1);
    assert_eq!(fetch(&server, &other.authority()), "error ErrorCode::HttpRequestDenied\n");
    // A name that resolves to the same address is not the pattern's host.
    assert_eq!(fetch(&server, &format!("localhost:{}", allowed.port)), "error ErrorCode::HttpRequestDenied\n");
    assert_eq!(other.accepted(), 0);
    assert_eq!(allowed.accepted(), 1);
}

#[test]
fn a_silent_target_is_cut_by_the_request_clock_and_the_worker_serves_on() {
    let silent = TargetServer::start(Behaviour::Silent);
    let pattern = format!("http://{}", silent.authority());
    let server = Server::start(&guest("outbound"), &["-w", "1", "-t", "2", "--allow-outbound", &pattern]);
    let worker = server.worker_pids();
    let started = Instant::now();
    let (status, text) = slow_get(&server, &format!("/fetch?authority={}&path=/", silent.authority()));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "the outbound wait ends with the request's clock (took {took:?})");
    // The guest learns of the timeout before its own request runs out, and can still answer.
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "error ErrorCode::ConnectionReadTimeout\n");
    assert_eq!(silent.accepted(), 1);
    assert_eq!(fetch(&server, "127.0.0.1:1"), "error ErrorCode::HttpRequestDenied\n", "the worker serves on");
    assert_eq!(server.worker_pids(), worker);
}

#[test]
fn outbound_requests_per_instance_are_bounded() {
    let silent = TargetServer::start(Behaviour::Silent);
    let pattern = format!("http://{}", silent.authority());
    let server = Server::start(
        &guest("outbound"),
        &["-w", "1", "--outbound-max-concurrency", "3", "--allow-outbound", &pattern],
    );
    let (_, text) = slow_get(&server, &format!("/fetch-many?n=5&first_byte_ms=300&authority={}", silent.authority()));
    assert_eq!(text.matches("error ErrorCode::ConnectionReadTimeout").count(), 3, "{text}");
    assert_eq!(text.matches("error ErrorCode::ConnectionLimitReached").count(), 2, "{text}");
    server.log.wait_for(&["--outbound-max-concurrency"], WAIT);
    assert_eq!(silent.accepted(), 3, "refused requests never connect");
}

#[test]
fn open_outbound_connections_per_worker_are_bounded() {
    let silent = TargetServer::start(Behaviour::Silent);
    let pattern = format!("http://{}", silent.authority());
    let server = Server::start(
        &guest("outbound"),
        &["-w", "1", "--outbound-max-connections", "2", "--allow-outbound", &pattern],
    );
    let (_, text) = slow_get(&server, &format!("/fetch-many?n=4&first_byte_ms=300&authority={}", silent.authority()));
    assert_eq!(text.matches("error ErrorCode::ConnectionLimitReached").count(), 2, "{text}");
    server.log.wait_for(&["--outbound-max-connections"], WAIT);
    assert_eq!(silent.accepted(), 2);
    // The connections are given back: the next request gets its two again.
    let (_, text) = slow_get(&server, &format!("/fetch-many?n=2&first_byte_ms=100&authority={}", silent.authority()));
    assert_eq!(text.matches("ConnectionReadTimeout").count(), 2, "{text}");
}

#[test]
fn bad_outbound_settings_stop_startup_with_one_line() {
    for (args, flag) in [
        (&["--allow-outbound", "http://example.com/path"][..], "--allow-outbound"),
        (&["--allow-outbound", "http://10.0.0.0/33"], "--allow-outbound"),
        (&["--allow-outbound", "http://10.0.0.1/8"], "--allow-outbound"),
        (&["--allow-outbound", "example.com"], "--allow-outbound"),
        (&["--allow-outbound", "https://*.example.com", "--allow-outbound", "gopher://x"], "--allow-outbound"),
        (&["--outbound-max-concurrency", "0"], "--outbound-max-concurrency"),
        (&["--outbound-max-connections", "0"], "--outbound-max-connections"),
        (&["--outbound-connect-timeout", "0"], "--outbound-connect-timeout"),
    ] {
        let (status, stdout, stderr) = ServerCommand::new(&guest("outbound")).args(args.iter().copied()).run_to_exit();
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stdout.is_empty() && !stderr.contains("Booting worker"), "{args:?}: no worker may start: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line: {stderr}");
        assert!(errors[0].contains(flag), "{args:?}: the error names {flag}: {stderr}");
    }
}

#[test]
fn print_config_shows_the_allow_list_from_flags_and_the_config_file() {
    let (status, stdout, _) = ServerCommand::new(&guest("outbound"))
        .args([
            "--allow-outbound",
            "https://api.example.com",
            "--allow-outbound",
            "http://127.0.0.1:9000",
            "--print-config",
        ])
        .run_to_exit();
    assert!(status.success());
    assert!(stdout.contains(r#"allow-outbound = ["https://api.example.com", "http://127.0.0.1:9000"]"#), "{stdout}");
    assert!(stdout.contains(r#"outbound-max-concurrency = "16""#), "{stdout}");

    let dir = scratch_dir("outbound-config");
    std::fs::write(dir.path().join("rustcorn.toml"), "allow-outbound = [\"http://*.internal:8080\"]\n").unwrap();
    let (status, stdout, stderr) =
        ServerCommand::new(&guest("outbound")).current_dir(dir.path()).arg("--print-config").run_to_exit();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains(r#"allow-outbound = ["http://*.internal:8080"]"#), "{stdout}");
}

#[test]
fn wasi_sockets_stay_denied() {
    let target = TargetServer::start(Behaviour::Answer);
    // Even an --allow-outbound grant is for wasi:http only, never raw sockets.
    let pattern = format!("http://{}", target.authority());
    let server = Server::start(&guest("outbound"), &["-w", "1", "--allow-outbound", &pattern]);
    let tcp = server.get(&format!("/tcp?addr={}", target.authority())).text();
    assert!(tcp.starts_with("error ") && tcp.contains("access-denied"), "{tcp}");
    let lookup = server.get("/resolve?name=localhost").text();
    assert!(lookup.starts_with("error ") && lookup.contains("permanent-resolver-failure"), "{lookup}");
    assert_eq!(target.accepted(), 0, "no socket reached the target");
}

#[test]
fn https_to_a_target_that_speaks_no_tls_fails_cleanly() {
    let target = TargetServer::start(Behaviour::PlainAtOnce);
    let pattern = format!("https://{}", target.authority());
    let server = Server::start(&guest("outbound"), &["-w", "1", "--allow-outbound", &pattern]);
    let worker = server.worker_pids();
    let text = server.get(&format!("/fetch?scheme=https&authority={}&path=/", target.authority())).text();
    assert_eq!(text, "error ErrorCode::TlsProtocolError\n", "the TLS client runs and rejects a non-TLS answer");
    assert_eq!(target.accepted(), 1);
    // The pattern is for https only.
    assert_eq!(fetch(&server, &target.authority()), "error ErrorCode::HttpRequestDenied\n");
    assert_eq!(server.worker_pids(), worker, "the worker serves on");
}

#[test]
fn outbound_results_are_counted_in_the_metrics() {
    let allowed = TargetServer::start(Behaviour::Answer);
    let pattern = format!("http://{}", allowed.authority());
    let server =
        Server::start(&guest("outbound"), &["-w", "1", "--allow-outbound", &pattern, "--admin-bind", "127.0.0.1:0"]);
    let line = server.log.wait_for(&["Admin endpoint at: http://"], WAIT);
    let admin = line.split("Admin endpoint at: http://").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(fetch(&server, &allowed.authority()), "status 200\ntarget");
    for _ in 0..2 {
        assert_eq!(fetch(&server, "example.invalid:80"), "error ErrorCode::HttpRequestDenied\n");
    }
    let metrics = http(&admin, "GET", "/metrics", &[], b"").unwrap().text();
    let value = |result: &str| {
        let series = format!("rustcorn_outbound_requests_total{{result=\"{result}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&series).map(|v| v.trim().to_string()))
    };
    assert_eq!(value("ok").as_deref(), Some("1"), "{metrics}");
    assert_eq!(value("denied").as_deref(), Some("2"), "{metrics}");
    assert_eq!(value("error").as_deref(), Some("0"), "{metrics}");
}

#[test]
fn a_grant_of_every_address_is_warned_about_at_startup() {
    let server = Server::start(
        &guest("outbound"),
        &["-w", "1", "--allow-outbound", "http://0.0.0.0/0:*", "--allow-outbound", "https://*:*"],
    );
    let line =
        server.log.wait_for(&["WARNING", "--allow-outbound \"http://0.0.0.0/0:*\" grants every IPv4 address"], WAIT);
    assert!(line.contains("loopback") && line.contains("169.254.169.254"), "{line}");
    assert_eq!(server.log.count(&["--allow-outbound", "grants every"]), 1, "`*` names no address: no warning for it");

    let (status, _, stderr) = ServerCommand::new(&guest("outbound"))
        .args(["--allow-outbound", "http://[::]/0", "--check-config"])
        .run_to_exit();
    assert_eq!(status.code(), Some(0), "a warning does not fail --check-config: {stderr}");
    assert!(
        stderr.contains("rustcorn: warning: --allow-outbound \"http://[::]/0\" grants every IPv6 address"),
        "{stderr}"
    );
}

#[test]
fn credentials_in_an_outbound_authority_are_refused_and_never_sent() {
    let target = TargetServer::start(Behaviour::Answer);
    let pattern = format!("http://{}", target.authority());
    let server = Server::start(&guest("outbound"), &["-w", "1", "--allow-outbound", &pattern]);
    let with_credentials = format!("user:s3cret@{}", target.authority());
    assert_eq!(fetch(&server, &with_credentials), "error ErrorCode::HttpRequestDenied\n");
    let line = server.log.wait_for(&["WARNING", "outbound request to", "credentials"], WAIT);
    assert!(line.contains(&target.authority()), "the warning names the host: {line}");
    assert!(!server.log.text().contains("s3cret"), "the password is never logged");
    assert_eq!(target.accepted(), 0, "the target never saw a connection");
    assert_eq!(fetch(&server, &target.authority()), "status 200\ntarget", "the same target without credentials");
}
