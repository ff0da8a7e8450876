//! Metrics and the admin endpoint (`--admin-bind`) against the real binary: totals that survive
//! worker deaths and reloads, histogram counts, /readyz on TERM, queue-time shedding, and the
//! kernel's listen-queue depth.
use crate::support::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn start(guest_name: &str, args: &[&str]) -> (Server, String) {
    let server = ServerCommand::new(&guest(guest_name)).args(["--admin-bind", "127.0.0.1:0"]).args(args).start();
    let admin = admin_address(&server);
    (server, admin)
}

fn admin_address(server: &Server) -> String {
    let line = server.log.wait_for(&["Admin endpoint at: http://"], WAIT);
    let rest = line.split("Admin endpoint at: http://").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

pub(crate) fn scrape(admin: &str) -> String {
    let reply = http(admin, "GET", "/metrics", &[], b"").expect("scrape /metrics");
    assert_eq!(reply.status, 200);
    reply.text()
}

/// The value of the sample whose name and labels are exactly `series`; 0 when absent.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.trim().parse().unwrap_or_else(|_| panic!("{series}: {value:?}")))
}

fn requests(admin: &str, method: &str, status: u16) -> f64 {
    let series = format!(
        r#"http_server_request_duration_seconds_count{{http_request_method="{method}",http_response_status_code="{status}"}}"#
    );
    sample(&scrape(admin), &series)
}

fn wait_for_value(admin: &str, what: &str, series: &str, expected: f64) {
    wait_until(what, WAIT, || sample(&scrape(admin), series) == expected);
}

fn status(admin: &str, path: &str) -> u16 {
    http(admin, "GET", path, &[], b"").expect("admin request").status
}

#[test]
fn histogram_counts_match_the_requests_sent() {
    let (server, admin) = start("faults", &["-w", "2"]);
    for _ in 0..12 {
        assert_eq!(server.get("/ok").status, 200);
    }
    for _ in 0..5 {
        assert_eq!(server.post("/ok", b"x").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(server.get("/nope").status, 404);
    }
    assert_eq!(http(&server.addr, "PROPFIND", "/ok", &[], b"").unwrap().status, 200);
    wait_until("21 requests are counted", WAIT, || {
        let text = scrape(&admin);
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        total == 21.0
    });
    assert_eq!(requests(&admin, "GET", 200), 12.0);
    assert_eq!(requests(&admin, "POST", 200), 5.0);
    assert_eq!(requests(&admin, "GET", 404), 3.0);
    assert_eq!(requests(&admin, "_OTHER", 200), 1.0, "unknown methods are _OTHER");
    let text = scrape(&admin);
    let inf = r#"http_server_request_duration_seconds_bucket{le="+Inf",http_request_method="GET",http_response_status_code="200"}"#;
    assert_eq!(sample(&text, inf), 12.0, "{text}");
    assert!(!text.contains("/ok") && !text.contains("/nope"), "never the path: {text}");
    assert_eq!(sample(&text, r#"rustcorn_guest_outcomes_total{outcome="ok"}"#), 21.0);
    assert_eq!(sample(&text, "rustcorn_guest_instantiation_seconds_count"), 21.0);
    assert_eq!(sample(&text, "http_server_active_requests"), 0.0);
    assert_eq!(sample(&text, r#"rustcorn_workers{state="ready"}"#), 2.0);
    assert!(sample(&text, "rustcorn_workers_resident_memory_bytes") > 0.0, "{text}");
    // The admin listener never reaches the guest: its paths are its own.
    assert_eq!(status(&admin, "/ok"), 404);
}

#[test]
fn counters_keep_their_totals_after_kill_9_of_a_worker_and_after_a_hup() {
    let (server, admin) = start("faults", &["-w", "2"]);
    for _ in 0..6 {
        assert_eq!(server.get("/ok").status, 200);
    }
    assert_eq!(server.get("/panic").status, 500);
    let ok_series = r#"rustcorn_guest_outcomes_total{outcome="ok"}"#;
    wait_for_value(&admin, "6 requests are counted", ok_series, 6.0);
    let before = scrape(&admin);
    assert_eq!(sample(&before, r#"rustcorn_guest_outcomes_total{outcome="trap"}"#), 1.0);
    assert_eq!(requests(&admin, "GET", 200), 6.0);

    // Kill every worker with SIGKILL: each one's slot is folded into the totals at reap.
    for pid in server.worker_pids() {
        send_signal(pid, libc::SIGKILL);
    }
    wait_for_value(&admin, "both crashes are counted", r#"rustcorn_worker_restarts_total{reason="crash"}"#, 2.0);
    let after_kill = scrape(&admin);
    assert_eq!(sample(&after_kill, ok_series), 6.0, "{after_kill}");
    assert_eq!(sample(&after_kill, r#"rustcorn_guest_outcomes_total{outcome="trap"}"#), 1.0);
    assert_eq!(requests(&admin, "GET", 200), 6.0);
    assert_eq!(requests(&admin, "GET", 500), 1.0);

    // A reload replaces the whole generation; the totals carry on from where they were.
    wait_until("the replacements serve", WAIT, || status(&admin, "/readyz") == 200);
    assert_eq!(server.get("/ok").status, 200);
    server.signal(libc::SIGHUP);
    wait_for_value(&admin, "generation 2", "rustcorn_generation", 2.0);
    wait_for_value(&admin, "the old generation is retired", r#"rustcorn_worker_restarts_total{reason="reload"}"#, 2.0);
    assert_eq!(server.get("/ok").status, 200);
    wait_for_value(&admin, "8 ok outcomes in all", ok_series, 8.0);
    assert_eq!(requests(&admin, "GET", 200), 8.0);
    assert_eq!(sample(&scrape(&admin), r#"rustcorn_guest_outcomes_total{outcome="trap"}"#), 1.0);
}

#[test]
fn readyz_goes_503_at_once_on_term_while_an_in_flight_request_completes() {
    let (mut server, admin) = start("faults", &["-w", "1", "--graceful-timeout", "20"]);
    assert_eq!(status(&admin, "/readyz"), 200);
    assert_eq!(status(&admin, "/livez"), 200);
    let addr = server.addr.clone();
    let in_flight = std::thread::spawn(move || http(&addr, "GET", "/sleep?ms=1500", &[], b""));
    server.log.wait_for(&["sleeping for 1500 ms"], WAIT);
    server.signal(libc::SIGTERM);
    // No wait: the arbiter handles the signal before it reads the next admin request.
    assert_eq!(status(&admin, "/readyz"), 503);
    assert_eq!(status(&admin, "/livez"), 200, "the arbiter still runs and supervises");
    let reply = in_flight.join().unwrap().expect("the in-flight request completes");
    assert_eq!((reply.status, reply.text().as_str()), (200, "slept\n"));
    assert!(server.wait_exit(WAIT).success());
}

fn stamp(ago: Duration) -> String {
    let at = SystemTime::now() - ago;
    format!("t={}", at.duration_since(UNIX_EPOCH).unwrap().as_micros())
}

#[test]
fn a_request_stamped_older_than_max_queue_time_gets_503_and_the_guest_never_runs() {
    let (server, admin) = start("faults", &["-w", "1", "--max-queue-time", "1"]);
    let old = stamp(Duration::from_secs(5));
    let reply = http(&server.addr, "GET", "/stdout", &[("X-Request-Start", &old)], b"").unwrap();
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").is_some());
    // The same request, fresh: the guest runs and prints (its side effect).
    let fresh = stamp(Duration::ZERO);
    let reply = http(&server.addr, "GET", "/stdout", &[("X-Request-Start", &fresh)], b"").unwrap();
    assert_eq!(reply.status, 200);
    server.log.wait_for(&["guest stdout line 1"], WAIT);
    assert_eq!(server.log.count(&["guest stdout line 1"]), 1, "the shed request never reached the guest");
    let text = scrape(&admin);
    assert_eq!(sample(&text, r#"rustcorn_requests_shed_total{reason="queue_time"}"#), 1.0, "{text}");
    assert_eq!(sample(&text, "rustcorn_guest_instantiation_seconds_count"), 1.0);
    assert_eq!(sample(&text, "rustcorn_request_queue_seconds_count"), 2.0);
    assert_eq!(sample(&text, r#"rustcorn_request_queue_seconds_bucket{le="+Inf"}"#), 2.0);
    assert_eq!(sample(&text, r#"rustcorn_request_queue_seconds_bucket{le="2.5"}"#), 1.0, "{text}");
}

#[test]
fn a_stamp_from_a_peer_outside_forwarded_allow_ips_is_ignored() {
    let (server, admin) = start("faults", &["-w", "1", "--max-queue-time", "1", "--forwarded-allow-ips", "10.0.0.0/8"]);
    let old = stamp(Duration::from_secs(5));
    let reply = http(&server.addr, "GET", "/ok", &[("X-Request-Start", &old)], b"").unwrap();
    assert_eq!(reply.status, 200);
    let text = scrape(&admin);
    assert_eq!(sample(&text, "rustcorn_request_queue_seconds_count"), 0.0);
    assert_eq!(sample(&text, r#"rustcorn_requests_shed_total{reason="queue_time"}"#), 0.0);
}

#[test]
fn listen_queue_depth_rises_while_workers_are_stopped() {
    let server = ServerCommand::new(&guest("hello"))
        .args(["--admin-bind", "127.0.0.1:0", "-w", "1", "--backlog", "16"])
        .own_process_group()
        .start();
    let admin = admin_address(&server);
    let length = format!(r#"rustcorn_listen_queue_length{{listener="http://{}"}}"#, server.addr);
    let limit = format!(r#"rustcorn_listen_queue_limit{{listener="http://{}"}}"#, server.addr);
    assert_eq!(sample(&scrape(&admin), &limit), 16.0);
    server.signal(libc::SIGWINCH);
    wait_until("no worker is left", WAIT, || server.worker_pids().is_empty());
    assert_eq!(status(&admin, "/readyz"), 503, "no worker is ready");
    let queued: Vec<std::net::TcpStream> = (0..3)
        .map(|_| std::net::TcpStream::connect(&server.addr).expect("the kernel completes the handshake"))
        .collect();
    assert_eq!(sample(&scrape(&admin), &length), 3.0);
    // A worker again: it takes the queued connections.
    server.signal(libc::SIGTTIN);
    wait_for_value(&admin, "the queue drains", &length, 0.0);
    drop(queued);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn access_log_shows_queue_time_instantiation_time_and_peak_guest_memory() {
    let server = ServerCommand::new(&guest("faults"))
        .args(["-w", "1", "--access-logfile", "-"])
        .args(["--access-logformat", "ACCESS %(U)s q=%(queue_us)s i=%(instantiate_us)s m=%(peak_memory)s"])
        .start();
    let stamp = stamp(Duration::from_millis(250));
    assert_eq!(http(&server.addr, "GET", "/ok", &[("X-Request-Start", &stamp)], b"").unwrap().status, 200);
    let line = server.log.wait_for(&["ACCESS /ok"], WAIT);
    let field = |name: &str| -> u64 {
        let value = line.split(&format!("{name}=")).nth(1).unwrap().split(' ').next().unwrap();
        value.parse().unwrap_or_else(|_| panic!("{name} in {line:?}"))
    };
    assert!((250_000..60_000_000).contains(&field("q")), "{line}");
    assert!(field("i") > 0, "{line}");
    // A component's linear memory comes in 64 KiB pages.
    assert!(field("m") >= 65_536 && field("m") % 65_536 == 0, "{line}");
    // Unstamped: no queue time.
    assert_eq!(server.get("/ok").status, 200);
    let line = server.log.wait_for_nth(&["ACCESS /ok"], 2, WAIT);
    assert!(line.contains("q=- "), "{line}");
}

#[test]
fn readyz_stays_200_through_a_hup() {
    let (server, admin) = start("hello", &["-w", "1"]);
    assert_eq!(status(&admin, "/readyz"), 200);
    server.signal(libc::SIGHUP);
    let mut answers = Vec::new();
    // The new generation boots while the old one serves: ready all along.
    wait_until("the old generation is retired", WAIT, || {
        answers.push(status(&admin, "/readyz"));
        sample(&scrape(&admin), r#"rustcorn_worker_restarts_total{reason="reload"}"#) == 1.0
    });
    assert!(answers.iter().all(|s| *s == 200), "{answers:?}");
    assert_eq!(sample(&scrape(&admin), "rustcorn_generation"), 2.0);
}
