//! Arena, recorder and rendering tests (in one process: the arena works the same without fork).
use super::arena::Arena;
use super::labels::{OutboundResult, Outcome};
use super::recorder::{OutcomeLatch, Recorder};
use super::render::{ArbiterFigures, Snapshot};
use std::time::Duration;

fn request(recorder: &Recorder, method: http::Method, status: u16) {
    let mut timer = recorder.request_started(&method);
    timer.set_status(status);
}

#[test]
fn folding_a_dead_workers_slot_keeps_totals_monotonic_and_drops_its_gauges() {
    let mut arena = Arena::create(2).unwrap();
    let first = arena.claim().unwrap();
    let recorder = Recorder::new(arena.worker_slot(first));
    request(&recorder, http::Method::GET, 200);
    request(&recorder, http::Method::GET, 200);
    recorder.outcome(Outcome::Trap);
    let _in_flight = recorder.request_started(&http::Method::POST);
    let before = Snapshot::take(&arena, ArbiterFigures::default());
    assert_eq!(before.active, 1);
    assert_eq!(before.requests[&("GET", 200)].count, 2);

    // The worker dies; its slot is folded and handed to the next worker.
    arena.release(first);
    std::mem::forget(_in_flight); // the dead worker never finished it
    let after = Snapshot::take(&arena, ArbiterFigures::default());
    assert_eq!(after.requests[&("GET", 200)].count, 2);
    assert_eq!(after.outcomes[Outcome::Trap as usize], 1);
    assert_eq!(after.active, 0, "a dead worker's gauge vanishes");

    let second = arena.claim().unwrap();
    assert_eq!(second, first, "the slot is reused");
    let recorder = Recorder::new(arena.worker_slot(second));
    request(&recorder, http::Method::GET, 200);
    recorder.outcome(Outcome::Trap);
    let later = Snapshot::take(&arena, ArbiterFigures::default());
    assert_eq!(later.requests[&("GET", 200)].count, 3);
    assert_eq!(later.outcomes[Outcome::Trap as usize], 2);
    // Releasing twice (a stale reap) must not fold twice.
    arena.release(second);
    arena.release(second);
    assert_eq!(Snapshot::take(&arena, ArbiterFigures::default()).requests[&("GET", 200)].count, 3);
}

#[test]
fn slots_run_out_and_come_back() {
    let mut arena = Arena::create(1).unwrap();
    let only = arena.claim().unwrap();
    assert!(arena.claim().is_none());
    arena.release(only);
    assert!(arena.claim().is_some());
}

#[test]
fn histograms_land_in_the_right_bucket_and_sum() {
    let mut arena = Arena::create(1).unwrap();
    let id = arena.claim().unwrap();
    let recorder = Recorder::new(arena.worker_slot(id));
    recorder.instantiation(Duration::from_micros(300)); // <= 0.0005
    recorder.instantiation(Duration::from_secs(3)); // +Inf
    let snap = Snapshot::take(&arena, ArbiterFigures::default());
    assert_eq!(snap.instantiation.count, 2);
    assert_eq!(snap.instantiation.buckets[2], 1);
    assert_eq!(*snap.instantiation.buckets.last().unwrap(), 1);
    assert_eq!(snap.instantiation.sum_ns, 3_000_300_000);
}

#[test]
fn outcome_latch_counts_ok_once_whatever_the_order_and_never_without_a_head() {
    let mut arena = Arena::create(1).unwrap();
    let id = arena.claim().unwrap();
    let recorder = Recorder::new(arena.worker_slot(id));
    let latch = OutcomeLatch::default();
    latch.guest_returned(&recorder);
    latch.head_arrived(&recorder);
    let latch = OutcomeLatch::default();
    latch.head_arrived(&recorder);
    latch.guest_returned(&recorder);
    OutcomeLatch::default().guest_returned(&recorder);
    OutcomeLatch::default().head_arrived(&recorder);
    let snap = Snapshot::take(&arena, ArbiterFigures::default());
    assert_eq!(snap.outcomes[Outcome::Ok as usize], 2);
}

#[test]
fn rendering_uses_otel_names_labels_and_both_formats() {
    let mut arena = Arena::create(1).unwrap();
    let id = arena.claim().unwrap();
    let recorder = Recorder::new(arena.worker_slot(id));
    request(&recorder, http::Method::from_bytes(b"BREW").unwrap(), 418);
    request(&recorder, http::Method::GET, 200);
    recorder.outbound(OutboundResult::Denied);
    let figures = ArbiterFigures {
        generation: 3,
        workers_by_state: vec![("ready", 2)],
        restarts_by_reason: vec![("crash", 1)],
        ..ArbiterFigures::default()
    };
    let text = Snapshot::take(&arena, figures.clone()).encode(false);
    assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"), "{text}");
    assert!(
        text.contains(r#"http_server_request_duration_seconds_count{http_request_method="_OTHER",http_response_status_code="418"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{le="0.005",http_request_method="GET",http_response_status_code="200"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"rustcorn_outbound_requests_total{result="denied"} 1"#), "{text}");
    assert!(text.contains(r#"rustcorn_worker_restarts_total{reason="crash"} 1"#), "{text}");
    assert!(text.contains("rustcorn_generation 3"), "{text}");
    assert!(!text.contains("# EOF"));
    let open = Snapshot::take(&arena, figures).encode(true);
    assert!(open.ends_with("# EOF\n"), "{open}");
}

#[test]
fn dropped_log_lines_survive_a_worker_death_and_add_the_arbiters_own() {
    let mut arena = Arena::create(1).unwrap();
    let id = arena.claim().unwrap();
    let recorder = Recorder::new(arena.worker_slot(id));
    recorder.log_lines_dropped([1, 5, 2]);
    recorder.log_lines_dropped([1, 7, 2]); // a later copy of the worker's counts replaces the first
    arena.release(id);
    let figures = ArbiterFigures { log_lines_dropped: [3, 0, 0], ..ArbiterFigures::default() };
    let text = Snapshot::take(&arena, figures).encode(false);
    assert!(text.contains(r#"rustcorn_log_lines_dropped_total{log="error"} 4"#), "{text}");
    assert!(text.contains(r#"rustcorn_log_lines_dropped_total{log="access"} 7"#), "{text}");
    assert!(text.contains(r#"rustcorn_log_lines_dropped_total{log="guest"} 2"#), "{text}");
}

#[test]
fn keyvalue_operations_are_labelled_by_bucket_name_and_survive_a_worker_death() {
    use super::labels::keyvalue_key;
    let mut arena = Arena::create(2).unwrap();
    let labels = arena.bucket_labels(["default", "sessions"].into_iter());
    assert_eq!(labels, vec![1, 2]);
    assert_eq!(arena.bucket_labels(["sessions", "new"].into_iter()), vec![2, 3], "a known name keeps its label");
    let id = arena.claim().unwrap();
    let recorder = Recorder::new(arena.worker_slot(id));
    let increment = crate::state::keyvalue::op::OP_NAMES.iter().position(|op| *op == "increment").unwrap();
    recorder.keyvalue(keyvalue_key(labels[0], increment), 0, Duration::from_micros(80));
    recorder.keyvalue(keyvalue_key(labels[0], increment), 4, Duration::from_millis(2));
    recorder.keyvalue(keyvalue_key(labels[1], 0), 0, Duration::from_micros(50));
    arena.release(id);
    let snapshot = Snapshot::take(&arena, ArbiterFigures::default());
    let default = &snapshot.keyvalue[&("default".to_string(), "increment")];
    assert_eq!(default.outcomes, [1, 0, 0, 0, 1], "one ok, one error, kept after the worker died");
    assert_eq!(default.duration.count, 2);
    assert_eq!(snapshot.keyvalue[&("sessions".to_string(), "get")].outcomes[0], 1);
    let text = snapshot.encode(false);
    assert!(
        text.contains(r#"rustcorn_keyvalue_operations_total{bucket="default",op="increment",outcome="error"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"rustcorn_keyvalue_operation_duration_seconds_count{bucket="default",op="increment"} 2"#));
}
