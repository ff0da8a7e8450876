//! Guest faults and the per-request clock: every fault gets its status, and the worker keeps serving.

use crate::support::*;
use std::time::{Duration, Instant};

/// The error response is short plain text with no trap details.
fn assert_plain_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(reply.header("content-type").unwrap_or("").starts_with("text/plain"), "{:?}", reply.headers);
    let text = reply.text();
    assert!(text.len() < 200 && !text.contains("wasm") && !text.contains("backtrace"), "{text}");
}

#[test]
fn spinning_guest_gets_504_and_the_worker_keeps_serving() {
    let server = Server::start(&guest("faults"), &["-w", "1", "-t", "1"]);
    let worker = server.worker_pids();
    let reply = server.get("/spin");
    assert_plain_error(&reply, 504);
    server.log.wait_for(&["timed out"], WAIT);
    assert_eq!(server.get("/ok").text(), "ok\n");
    assert_eq!(server.worker_pids(), worker, "the same worker serves on");
}

#[test]
fn guest_blocked_in_a_host_call_gets_504() {
    let server = Server::start(&guest("faults"), &["-w", "1", "-t", "1"]);
    // /sleep blocks in a host call for an hour; epochs do not fire there, the host timer must.
    assert_plain_error(&server.get("/sleep"), 504);
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn a_stream_that_keeps_sending_outlives_the_timeout() {
    // Gaps of a quarter of --timeout: progress always restarts the clock in time, even on a
    // loaded machine (400 ms gaps against 1 s were a race).
    let server = Server::start(&guest("stream"), &["-w", "1", "-t", "2"]);
    let started = Instant::now();
    let reply = server.get("/?chunks=8&interval_ms=500");
    assert!(started.elapsed() > Duration::from_secs(3), "the stream really took longer than --timeout");
    assert_eq!(reply.status, 200);
    assert!(reply.complete, "the body ended cleanly");
    let expected: String = (0..8).map(|n| format!("chunk {n}\n")).collect();
    assert_eq!(reply.text(), expected);
}

#[test]
fn max_request_time_cuts_even_a_progressing_stream() {
    let server = Server::start(&guest("stream"), &["-w", "1", "-t", "5", "--max-request-time", "1"]);
    let reply = server.get("/?chunks=20&interval_ms=200");
    assert_eq!(reply.status, 200);
    assert!(!reply.complete, "a cut stream must look truncated, got a clean end: {:?}", reply.text());
    assert!(reply.text().starts_with("chunk 0\n"));
    assert_eq!(server.get("/?chunks=1").status, 200, "the worker keeps serving");
}

#[test]
fn trap_after_the_head_truncates_the_response() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    let reply = server.get("/trap-mid-body");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "partial body\n");
    assert!(!reply.complete, "the client must see a truncated body, not a clean end");
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn spin_after_the_head_truncates_the_response() {
    let server = Server::start(&guest("faults"), &["-w", "1", "-t", "1"]);
    let reply = server.get("/spin-mid-body");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "partial\n");
    assert!(!reply.complete, "the client must see a truncated body, not a clean end");
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn panic_before_the_head_is_500() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    let worker = server.worker_pids();
    assert_plain_error(&server.get("/panic"), 500);
    server.log.wait_for(&["trapped"], WAIT);
    assert_eq!(server.get("/ok").status, 200);
    assert_eq!(server.worker_pids(), worker);
}

#[test]
fn no_response_is_500() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    assert_plain_error(&server.get("/no-response"), 500);
    server.log.wait_for(&["without setting a response"], WAIT);
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap_and_is_500() {
    let server = Server::start(&guest("faults"), &["-w", "1", "--max-memory", "32M"]);
    assert_plain_error(&server.get("/alloc"), 500);
    server.log.wait_for(&["memory limit"], WAIT);
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn no_free_instance_slot_is_503() {
    let server = Server::start(&guest("faults"), &["-w", "1", "--instance-slots", "1"]);
    let addr = server.addr.clone();
    let holder = std::thread::spawn(move || http(&addr, "GET", "/sleep?ms=3000", &[], b"").unwrap());
    // Once the holder's request is inside the guest, its instance holds the only slot.
    server.log.wait_for(&["sleeping for 3000 ms"], WAIT);
    let busy = server.get("/ok");
    assert_eq!(busy.header("retry-after"), Some("1"), "a client may try again shortly");
    assert_plain_error(&busy, 503);
    assert_eq!(holder.join().unwrap().status, 200);
    assert_eq!(server.get("/ok").status, 200);
}

#[test]
fn a_cpu_bound_guest_does_not_starve_other_requests_on_its_worker() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    let addr = server.addr.clone();
    let spinner = std::thread::spawn(move || http(&addr, "GET", "/spin?ms=3000", &[], b"").unwrap());
    // The spinner holds the single worker's only runtime thread for 3 s unless epochs make it yield.
    server.log.wait_for(&["spinning for 3000 ms"], WAIT);
    let reply = server.get("/ok");
    assert_eq!(reply.status, 200);
    assert!(!spinner.is_finished(), "/ok was answered while the CPU-bound guest was still running");
    assert_eq!(spinner.join().unwrap().text(), "spun\n");
}

#[test]
fn a_fresh_instance_serves_every_request_by_default() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    let counts: Vec<String> = (0..4).map(|_| server.get("/count").text()).collect();
    assert_eq!(counts, ["1\n", "1\n", "1\n", "1\n"]);
}

#[test]
fn instance_reuse_serves_n_requests_per_instance_and_drops_it_after_a_trap() {
    let server = Server::start(&guest("faults"), &["-w", "1", "--instance-reuse", "3"]);
    let counts: Vec<String> = (0..5).map(|_| server.get("/count").text()).collect();
    assert_eq!(counts, ["1\n", "2\n", "3\n", "1\n", "2\n"], "three requests per instance, then a fresh one");
}

#[test]
fn a_reused_instance_is_dropped_after_a_trap_or_timeout() {
    let server = Server::start(&guest("faults"), &["-w", "1", "-t", "1", "--instance-reuse", "100"]);
    assert_eq!(server.get("/count").text(), "1\n");
    assert_eq!(server.get("/count").text(), "2\n");
    assert_eq!(server.get("/panic").status, 500);
    assert_eq!(server.get("/count").text(), "1\n", "the trapped instance is never reused");
    assert_eq!(server.get("/count").text(), "2\n");
    assert_eq!(server.get("/spin").status, 504);
    assert_eq!(server.get("/count").text(), "1\n", "the timed-out instance is never reused");
}
