//! Unit tests for `release_request` on tables shaped like the ones guests leave behind.
use super::*;
use bytes::Bytes;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView};

fn incoming_request(table: &mut ResourceTable, body: &'static str) -> Resource<HostIncomingRequest> {
    let request = http::Request::builder()
        .uri("http://example.test/")
        .body(http_body_util::Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let mut ctx = WasiHttpCtx::new();
    WasiHttpCtxView { ctx: &mut ctx, table, hooks: Default::default() }
        .new_incoming_request(Scheme::Http, request)
        .unwrap()
}

/// What a guest that read its body without closing anything leaves: the request (body taken),
/// the body, and the body's stream as a child of the body.
fn consumed_with_stream(table: &mut ResourceTable) -> (u32, u32, u32) {
    let request = incoming_request(table, "hello");
    let mut body = table.get_mut(&request).unwrap().body.take().unwrap();
    let stream: DynInputStream = Box::new(body.take_stream().unwrap());
    let body = table.push(body).unwrap();
    let stream = table.push_child(stream, &body).unwrap();
    (request.rep(), body.rep(), stream.rep())
}

#[test]
fn an_empty_table_needs_nothing() {
    assert_eq!(release_request(&mut ResourceTable::new()), Ok(0));
}

#[test]
fn a_read_body_and_its_stream_are_released_and_may_be_dropped_in_any_order() {
    let mut table = ResourceTable::new();
    let (request, body, stream) = consumed_with_stream(&mut table);
    assert_eq!(release_request(&mut table), Ok(2));
    // The entries stay for the guest's own late drops; the body no longer has the stream as a
    // child, so dropping the body first (as a GC finalizer may) works.
    table.delete(Resource::<HostIncomingBody>::new_own(body)).expect("body deletable before its stream");
    table.delete(Resource::<DynInputStream>::new_own(stream)).expect("stream still present");
    table.delete(Resource::<HostIncomingRequest>::new_own(request)).expect("request still present");
    assert!(table.is_empty());
}

#[test]
fn without_release_the_body_cannot_be_dropped_before_its_stream() {
    // The guest-side trap the release removes (the table refuses, the guest traps).
    let mut table = ResourceTable::new();
    let (_, body, _) = consumed_with_stream(&mut table);
    assert!(table.delete(Resource::<HostIncomingBody>::new_own(body)).is_err());
}

#[test]
fn an_unread_body_is_taken_out_of_its_request() {
    let mut table = ResourceTable::new();
    let request = incoming_request(&mut table, "never read");
    assert_eq!(release_request(&mut table), Ok(1));
    assert!(table.get(&request).unwrap().body.is_none(), "the hyper body is dropped");
    assert_eq!(release_request(&mut table), Ok(0), "a second pass finds nothing more");
}

#[test]
fn entries_that_belong_to_the_instance_are_left_alone() {
    let mut table = ResourceTable::new();
    let other = table.push(String::from("instance state")).unwrap();
    let stdin: DynInputStream = Box::new(wasmtime_wasi::p2::pipe::ClosedInputStream);
    let stdin = table.push(stdin).unwrap();
    let (_, _, _) = consumed_with_stream(&mut table);
    assert_eq!(release_request(&mut table), Ok(2));
    assert_eq!(table.get(&other).unwrap(), "instance state");
    assert!(table.get(&stdin).is_ok());
}

#[test]
fn a_pending_future_or_an_unsent_response_keeps_the_instance_from_being_reused() {
    let mut table = ResourceTable::new();
    let body = HostIncomingBody::new(empty_body());
    table.push(body.into_future_trailers()).unwrap();
    assert!(matches!(release_request(&mut table), Err(Leftover::Outliving(_))));

    let mut table = ResourceTable::new();
    let (sender, _receiver) = tokio::sync::oneshot::channel();
    let mut ctx = WasiHttpCtx::new();
    WasiHttpCtxView { ctx: &mut ctx, table: &mut table, hooks: Default::default() }
        .new_response_outparam(sender)
        .unwrap();
    assert_eq!(release_request(&mut table), Err(Leftover::UnsentResponse));
}

#[test]
fn a_pollable_on_the_request_body_stream_keeps_the_instance_from_being_reused() {
    let mut table = ResourceTable::new();
    let (_, _, stream) = consumed_with_stream(&mut table);
    wasmtime_wasi::p2::subscribe(&mut table, Resource::<DynInputStream>::new_borrow(stream)).unwrap();
    assert_eq!(release_request(&mut table), Err(Leftover::PollableOnRequestBody));
}

#[test]
fn a_table_full_of_leaked_handles_is_not_scanned_forever() {
    let mut table = ResourceTable::new();
    for i in 0..=MAX_TABLE_ENTRIES {
        table.push(i).unwrap();
    }
    assert_eq!(release_request(&mut table), Err(Leftover::TooManyResources(MAX_TABLE_ENTRIES + 1)));
}
