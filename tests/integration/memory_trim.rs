//! Resident memory after a burst: the pages freed instance slots keep resident (so the next
//! instance in a slot takes no page faults) are given back once the worker has had no use for
//! them for `--instance-trim-after`, so a worker's RSS returns near its idle size after a burst
//! and stays sized to the load while traffic goes on.
use crate::support::*;
use std::time::Duration;

/// Requests in the burst, each dirtying `DIRTY_MIB` of its own instance's memory.
const BURST: u64 = 12;
const DIRTY_MIB: u64 = 24;
/// A request of the burst: dirties its memory, then holds its instance for 1.5 s so every
/// instance of the burst is live at once.
const DIRTY_AND_HOLD: &str = "/dirty?mib=24&ms=1500";

/// Starts one worker with a 1 s trim period; returns it with the worker's pid and idle RSS (KiB).
fn one_worker_trimming() -> (Server, u32, u64) {
    let server = Server::start(&guest("faults"), &["-w", "1", "--instance-trim-after", "1"]);
    let worker = server.worker_pids()[0];
    assert_eq!(server.get("/dirty?mib=1").status, 200);
    (server, worker, rss_kib(worker))
}

/// Runs the burst and waits, while its requests hold their instances, until their memory shows
/// in the worker's RSS; returns that RSS.
fn burst(server: &Server, worker: u32, idle: u64) -> u64 {
    let clients: Vec<_> = (0..BURST)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || http(&addr, "GET", DIRTY_AND_HOLD, &[], b"").map(|reply| reply.status))
        })
        .collect();
    // Three quarters of what the burst wrote: the rest may not be counted yet.
    let risen = idle + BURST * DIRTY_MIB * 1024 * 3 / 4;
    let mut peak = 0;
    wait_until("the burst's memory is resident in the worker", Duration::from_secs(30), || {
        peak = rss_kib(worker);
        peak >= risen
    });
    for client in clients {
        assert_eq!(client.join().unwrap().expect("burst request"), 200);
    }
    peak
}

#[test]
fn resident_memory_returns_near_idle_after_a_burst() {
    let (server, worker, idle) = one_worker_trimming();
    let peak = burst(&server, worker, idle);
    // The burst's slots stay warm one more period, then are given back.
    let near_idle = idle + 32 * 1024;
    wait_until(
        &format!("the worker's RSS falls from {peak} KiB to within 32 MiB of its idle {idle} KiB"),
        Duration::from_secs(20),
        || rss_kib(worker) <= near_idle,
    );
    // Given back is not left dirty: instances in the trimmed slots start from pristine memory
    // (the data-segment pages map the image again, the heap reads as zeros).
    for i in 0..2 * BURST {
        assert_eq!(server.get("/scribble").text(), "clean\n", "request {i} after the trim saw an earlier write");
    }
}

#[test]
fn under_steady_load_only_the_slots_the_load_uses_stay_resident() {
    let (server, worker, idle) = one_worker_trimming();
    let peak = burst(&server, worker, idle);
    // One client after the burst: one instance at a time. Resident stay the instance in use, the
    // slot kept warm for the next request (one per allocator shard: at most two here) and the
    // spare: far less than the burst's twelve.
    let load = BackgroundLoad::start(&server.addr, "/dirty?mib=24", 1);
    let steady = idle + 4 * DIRTY_MIB * 1024;
    wait_until(
        &format!("the worker's RSS falls from {peak} KiB to at most {steady} KiB under one client's load"),
        Duration::from_secs(20),
        || rss_kib(worker) <= steady,
    );
    let (served, failures) = load.finish();
    assert!(failures.is_empty() && served > 0, "served {served}, failures {failures:?}");
}
