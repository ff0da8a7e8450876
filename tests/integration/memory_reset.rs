//! A freed instance's linear memory is reset for the next request: no request sees what an
//! earlier one wrote, and (with the patched wasmtime, `patches/README.md`) the pages a request
//! dirtied stay resident, so the next fresh instance takes no page faults on them even when they
//! are scattered over many disjoint regions.

use crate::support::*;

/// Minor page faults a process has taken (`/proc/PID/stat`, field 10).
fn minor_faults(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis are
    // state, ppid, pgrp, session, tty_nr, tpgid, flags, minflt.
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    after_name.split(' ').nth(7).and_then(|n| n.parse().ok()).expect("minflt field")
}

/// PAGEMAP_SCAN (what keeps dirtied pages resident) exists from Linux 6.7; older kernels fall
/// back to decommitting the memory, which is still correct but faults again.
fn kernel_has_pagemap_scan() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) >= (6, 7)
}

/// `/scribble` on one worker: 10 warm-up requests, then `REQUESTS` more that must each find
/// pristine memory. Returns the worker's minor page faults per request over those.
fn scribble_on_one_worker(server: &Server) -> u64 {
    let worker = server.worker_pids()[0];
    // Each /scribble checks that 64 data-segment pages and 64 heap pages hold a fresh
    // instance's contents, then dirties every other one: about 65 disjoint dirty regions,
    // more than the 32 that one PAGEMAP_SCAN call of unpatched wasmtime 48 reports.
    for _ in 0..10 {
        assert_eq!(server.get("/scribble").text(), "clean\n");
    }
    let before = minor_faults(worker);
    const REQUESTS: u64 = 100;
    for i in 0..REQUESTS {
        let reply = server.get("/scribble");
        assert_eq!(
            (reply.status, reply.text().as_str()),
            (200, "clean\n"),
            "request {i} saw an earlier request's writes"
        );
    }
    let faults_per_request = (minor_faults(worker) - before) / REQUESTS;
    assert_eq!(server.worker_pids(), vec![worker], "one worker served them all");
    faults_per_request
}

#[test]
fn every_fresh_instance_sees_pristine_memory() {
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    scribble_on_one_worker(&server);
}

#[test]
fn dirtied_pages_stay_resident_for_the_next_instance() {
    if !kernel_has_pagemap_scan() {
        return skip(
            "dirtied_pages_stay_resident_for_the_next_instance",
            "the kernel has no PAGEMAP_SCAN (Linux 6.7+): memory is decommitted, so pages fault in again by design",
        );
    }
    let server = Server::start(&guest("faults"), &["-w", "1"]);
    let faults_per_request = scribble_on_one_worker(&server);
    // Unpatched wasmtime 48 decommits everything after the 32nd dirty region, so each request
    // faults those pages in again (measured: 69 per request; patched: 0).
    assert!(faults_per_request < 16, "{faults_per_request} minor faults per request: dirtied pages were decommitted");
}
