//! End of a request in a kept instance (--instance-reuse): releases, on the host side, what the
//! finished request still holds in the instance's resource table, or says why the instance must
//! not serve another request.
//!
//! Why release in place instead of deleting table entries: a guest may still hold handles to
//! them and drop them later. componentize-py drops resources from Python finalizers, and objects
//! caught in reference cycles (an exception's traceback is enough) are finalized by the cyclic
//! GC during some *later* request. Had the host deleted the entry, that late drop would trap
//! (entry not present), or, once the table reused the slot for the next request's body, delete
//! that live body. So the entry stays, type-correct, and the guest may drop it whenever it likes;
//! only its contents are released: the request's body (the hyper body, which would otherwise
//! stall its keep-alive connection), the body's read stream and its background reader. The
//! parent/child link between a body and its stream is cut too, so a finalizer that drops the body
//! before its stream no longer traps. A stale handle the guest uses again sees an empty, closed
//! body: nothing of another request is reachable through it.
use std::any::Any;
use std::collections::HashMap;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::p2::DynInputStream;
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody, HyperIncomingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest, HostOutgoingResponse,
    HostResponseOutparam,
};

/// More entries than this in one instance's table (leaked handles pile up across requests):
/// the instance is not kept, which bounds the work done here per request.
pub const MAX_TABLE_ENTRIES: usize = 1024;

/// Why an instance left by a finished request cannot serve another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// Something that could outlive the request: an outgoing body (an unfinished response or
    /// request body), an outgoing request, a response to one, or a pending future.
    Outliving(&'static str),
    /// The response outparam or an outgoing response was never sent.
    UnsentResponse,
    /// A pollable still open on the request body's stream.
    PollableOnRequestBody,
    /// The table holds more than `MAX_TABLE_ENTRIES` entries.
    TooManyResources(usize),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::Outliving(what) => write!(f, "it still holds {what}"),
            Leftover::UnsentResponse => write!(f, "it never sent its response"),
            Leftover::PollableOnRequestBody => write!(f, "a pollable is still open on the request body"),
            Leftover::TooManyResources(n) => write!(f, "it holds {n} resources (over {MAX_TABLE_ENTRIES})"),
        }
    }
}

/// What one entry of the table is, as far as the end of a request is concerned.
enum Kind {
    IncomingRequest,
    IncomingBody,
    Refuse(Leftover),
    /// Everything else: WASI CLI resources, fields, streams not under a request body, ...
    Other,
}

fn kind(entry: &dyn Any) -> Kind {
    if entry.is::<HostIncomingRequest>() {
        Kind::IncomingRequest
    } else if entry.is::<HostIncomingBody>() {
        Kind::IncomingBody
    } else if entry.is::<HostOutgoingBody>() {
        Kind::Refuse(Leftover::Outliving("an outgoing body (an unfinished response or request body)"))
    } else if entry.is::<HostOutgoingRequest>() {
        Kind::Refuse(Leftover::Outliving("an outgoing request"))
    } else if entry.is::<HostFutureIncomingResponse>() {
        Kind::Refuse(Leftover::Outliving("a pending response future of an outgoing request"))
    } else if entry.is::<HostIncomingResponse>() {
        Kind::Refuse(Leftover::Outliving("the response of an outgoing request"))
    } else if entry.is::<HostFutureTrailers>() {
        Kind::Refuse(Leftover::Outliving("a pending trailers future"))
    } else if entry.is::<HostResponseOutparam>() || entry.is::<HostOutgoingResponse>() {
        Kind::Refuse(Leftover::UnsentResponse)
    } else {
        Kind::Other
    }
}

/// Releases what the finished request left in `table` (see the module comment) and returns how
/// many entries it released, or why the instance must be dropped instead. Call it only after the
/// guest has returned; on `Err` the table may be partly released and the store must be dropped.
pub fn release_request(table: &mut ResourceTable) -> Result<usize, Leftover> {
    let occupied = table.iter_mut().count();
    if occupied == 0 {
        return Ok(0);
    }
    if occupied > MAX_TABLE_ENTRIES {
        return Err(Leftover::TooManyResources(occupied));
    }
    let entries = occupied_entries(table, occupied);
    let mut requests = Vec::new();
    let mut bodies = Vec::new();
    for &(index, _) in &entries {
        let Ok(entry) = table.get_any_mut(index) else { continue };
        match kind(entry) {
            Kind::IncomingRequest => requests.push(index),
            Kind::IncomingBody => bodies.push(index),
            Kind::Refuse(why) => return Err(why),
            Kind::Other => {}
        }
    }
    // Each body has at most one child, its read stream, which must have none of its own.
    let mut streams = Vec::new();
    for &body in &bodies {
        for child in children(table, body, &entries)? {
            let stream = Resource::<DynInputStream>::new_own(child);
            if table.get(&stream).is_err() {
                return Err(Leftover::Outliving("an unexpected child of a request body"));
            }
            if table.iter_children(&stream).map_or(true, |mut c| c.next().is_some()) {
                return Err(Leftover::PollableOnRequestBody);
            }
            streams.push((body, child));
        }
    }

    let mut released = 0;
    for index in requests {
        if let Ok(request) = table.get_mut(&Resource::<HostIncomingRequest>::new_own(index)) {
            released += usize::from(request.body.take().is_some());
        }
    }
    for (body, stream) in streams {
        let detached = table
            .remove_child(Resource::<DynInputStream>::new_own(stream), Resource::<HostIncomingBody>::new_own(body));
        if detached.is_err() {
            return Err(Leftover::Outliving("a request body stream that cannot be detached"));
        }
        if let Ok(entry) = table.get_mut(&Resource::<DynInputStream>::new_own(stream)) {
            *entry = Box::new(wasmtime_wasi::p2::pipe::ClosedInputStream);
            released += 1;
        }
    }
    for body in bodies {
        if let Ok(entry) = table.get_mut(&Resource::<HostIncomingBody>::new_own(body)) {
            *entry = HostIncomingBody::new(empty_body());
            released += 1;
        }
    }
    Ok(released)
}

/// An empty request body for released `incoming-body` entries.
fn empty_body() -> HyperIncomingBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The indexes of the `count` occupied entries, with the address of each entry's value (to
/// match the children `iter_children` yields, which come without their indexes). Zero-sized
/// values share one address and get none.
fn occupied_entries(table: &mut ResourceTable, count: usize) -> Vec<(u32, Option<usize>)> {
    let mut entries = Vec::with_capacity(count);
    let mut index = 0u32;
    while entries.len() < count && index < u32::MAX {
        if let Ok(entry) = table.get_any_mut(index) {
            let addr = (std::mem::size_of_val(entry) > 0).then(|| entry as *mut dyn Any as *mut () as usize);
            entries.push((index, addr));
        }
        index += 1;
    }
    entries
}

/// The indexes of the children of entry `parent`.
fn children(table: &ResourceTable, parent: u32, entries: &[(u32, Option<usize>)]) -> Result<Vec<u32>, Leftover> {
    let unknown = Leftover::Outliving("a request body child that cannot be identified");
    let parent = Resource::<HostIncomingBody>::new_own(parent);
    let Ok(children) = table.iter_children(&parent) else { return Ok(Vec::new()) };
    let by_addr: HashMap<usize, u32> = entries.iter().filter_map(|&(i, a)| a.map(|a| (a, i))).collect();
    children
        .map(|child| {
            if std::mem::size_of_val(child) == 0 {
                return Err(unknown);
            }
            by_addr.get(&(child as *const (dyn Any + Send) as *const () as usize)).copied().ok_or(unknown)
        })
        .collect()
}

#[cfg(test)]
#[path = "release_tests.rs"]
mod tests;
