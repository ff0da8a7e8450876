//! `--instance-reuse` on ordinary apps: the end of a request releases what the request left in
//! its instance (a Python app that closes nothing still gets its instance reused), an instance
//! holding something that could outlive its request is dropped, and why is logged at debug level.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The count the Python app's `/plain` route reports: requests its instance has served.
fn instance_count(reply: &Reply) -> u32 {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let count = text.strip_prefix("request ").and_then(|rest| rest.split(' ').next());
    count.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("unexpected reply: {text}"))
}

#[test]
fn a_python_app_that_closes_nothing_gets_its_instance_reused() {
    // 60 requests per instance is past the point (about 45 requests) where the Python cyclic GC
    // finalizes earlier requests' objects and drops their handles in arbitrary order (a body
    // before its stream), which trapped before the host detached them.
    // The client sees a response end before the worker has put the instance back (the release
    // runs after the guest returns), so a request can land on a fresh instance meanwhile: count
    // what each instance served rather than expect one exact order.
    let server = Server::start(&guest("python-app"), &["-w", "1", "--instance-reuse", "60"]);
    let counts: Vec<u32> = (0..62).map(|_| instance_count(&server.post("/plain", b"hello"))).collect();
    let log = server.log.text();
    // The instance that started first serves its requests 1, 2, ... up to the cap, in order.
    let mut next = 1;
    let mut cap_reached_at = None;
    for (i, &count) in counts.iter().enumerate() {
        if count == next {
            next += 1;
            if count == 60 {
                cap_reached_at = Some(i);
            }
        }
    }
    let at = cap_reached_at.unwrap_or_else(|| panic!("no instance served 60 requests: {counts:?}; log:\n{log}"));
    // Past the cap, the requests go to other instances.
    assert!(counts.iter().all(|&c| c <= 60), "an instance served past the cap: {counts:?}");
    assert!(at < counts.len() - 1, "requests after the cap were served: {counts:?}");
    assert_eq!(server.log.count(&["trapped"]), 0, "{log}");
}

#[test]
fn a_request_body_the_guest_never_read_does_not_stall_its_connection() {
    let server = Server::start(&guest("python-app"), &["-w", "1", "--instance-reuse", "10"]);
    // Two requests pipelined on one connection: the first leaves its body unread and its
    // request object referenced from a Python global; the second must still be read and served.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream
        .write_all(
            b"POST /plain?unread HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
              GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("both responses before the read timeout");
    assert_eq!(raw.matches("HTTP/1.1 200").count(), 2, "{raw}");
    assert!(raw.contains("request 1 of this instance, 0 body bytes"), "{raw}");
    assert!(raw.contains("request 2 of this instance, 0 body bytes"), "the instance was kept: {raw}");
}

#[test]
fn why_an_instance_was_not_kept_is_logged_at_debug_level() {
    let server = Server::start(&guest("faults"), &["-w", "1", "--instance-reuse", "2", "--log-level", "debug"]);
    assert_eq!(server.get("/count").text(), "1\n");
    assert_eq!(server.get("/count").text(), "2\n");
    server.log.wait_for(&["instance not kept: it served --instance-reuse requests", "used up"], WAIT);

    // A guest that returns with its response body neither finished nor dropped: the instance
    // must not serve another request (the body would stay open), and the log says why.
    let _ = http(&server.addr, "GET", "/unfinished-body", &[], b"");
    server.log.wait_for(&["instance not kept: it still holds an outgoing body", "1 left resources"], WAIT);
    assert_eq!(server.get("/count").text(), "1\n", "a fresh instance after the dropped one");
}
