//! The response body sent to the client: either a short host-made text, or the guest's streamed
//! body, which counts as progress on the request clock and turns into an error (so hyper aborts
//! the connection and the client sees a truncated response) when the guest failed mid-body.
use crate::guest::clock::RequestClock;
use crate::log::access::AccessRecord;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// How the guest task ended; written before the guest's store (and its body sender) is dropped.
#[derive(Clone, Default)]
pub struct GuestOutcome(Arc<AtomicU8>);

const RUNNING: u8 = 0;
const SUCCEEDED: u8 = 1;
const FAILED: u8 = 2;

impl GuestOutcome {
    pub fn new() -> GuestOutcome {
        GuestOutcome::default()
    }

    pub fn finish(&self, succeeded: bool) {
        self.0.store(if succeeded { SUCCEEDED } else { FAILED }, Ordering::Release);
    }

    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == FAILED
    }

    pub fn running(&self) -> bool {
        self.0.load(Ordering::Acquire) == RUNNING
    }
}

/// The body of every response rustcorn sends.
pub struct ResponseBody {
    kind: Kind,
    record: Option<AccessRecord>,
    /// Records the request in the metrics when the body is done (dropped).
    timer: Option<crate::metrics::RequestTimer>,
}

enum Kind {
    Full(Option<Bytes>),
    Guest(GuestBody),
}

struct GuestBody {
    inner: HyperOutgoingBody,
    outcome: GuestOutcome,
    clock: Arc<RequestClock>,
    guest_task: Option<tokio::task::AbortHandle>,
    request_id: Arc<str>,
    done: bool,
    /// The failure to report on the next poll. Held back for one poll so hyper flushes the head
    /// and the bytes already sent before it sees the error and closes the connection.
    failing: Option<BodyError>,
}

impl ResponseBody {
    pub fn full(text: &'static str, record: Option<AccessRecord>) -> ResponseBody {
        ResponseBody { kind: Kind::Full(Some(Bytes::from_static(text.as_bytes()))), record, timer: None }
    }

    pub fn guest(
        inner: HyperOutgoingBody,
        outcome: GuestOutcome,
        clock: Arc<RequestClock>,
        guest_task: Option<tokio::task::AbortHandle>,
        record: Option<AccessRecord>,
        request_id: Arc<str>,
    ) -> ResponseBody {
        ResponseBody {
            kind: Kind::Guest(GuestBody { inner, outcome, clock, guest_task, request_id, done: false, failing: None }),
            record,
            timer: None,
        }
    }

    pub fn attach_timer(&mut self, timer: crate::metrics::RequestTimer) {
        self.timer = Some(timer);
    }
}

/// A short plain-text response made by the host (errors and refusals; no stack traces). A 503
/// says "busy" and carries `Retry-After: 1`: a moment later a slot is likely free.
pub fn host_response(
    status: http::StatusCode,
    text: &'static str,
    record: Option<AccessRecord>,
) -> http::Response<ResponseBody> {
    let mut record = record;
    if let Some(record) = record.as_mut() {
        record.status = status.as_u16();
        record.bytes_sent = text.len() as u64;
    }
    let mut response = http::Response::new(ResponseBody::full(text, record));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    if status == http::StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    response
}

#[derive(Debug)]
struct GuestAbandonedBody;

impl std::fmt::Display for GuestAbandonedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the guest failed after sending the response head")
    }
}
impl std::error::Error for GuestAbandonedBody {}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Guest(guest) => {
                if let Some(error) = guest.failing.take() {
                    guest.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                let polled = Pin::new(&mut guest.inner).poll_frame(cx);
                let failure: BodyError = match polled {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(data), Some(record)) = (frame.data_ref(), this.record.as_mut()) {
                            record.bytes_sent += data.len() as u64;
                        }
                        guest.clock.progress();
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    Poll::Ready(Some(Err(e))) => {
                        crate::log_error!("request {}: response body failed: {e}", guest.request_id);
                        Box::new(e)
                    }
                    Poll::Ready(None) if guest.outcome.failed() => {
                        crate::log_error!(
                            "request {}: the guest failed mid-body; aborting the connection so the client sees a truncated response",
                            guest.request_id
                        );
                        Box::new(GuestAbandonedBody)
                    }
                    Poll::Ready(None) => {
                        guest.done = true;
                        return Poll::Ready(None);
                    }
                };
                // Report the failure on the next poll: hyper writes out what it has buffered
                // first, so the client sees the head and the partial body, then the abort.
                guest.failing = Some(failure);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Guest(guest) => guest.done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Guest(guest) => guest.inner.size_hint(),
        }
    }
}

impl Drop for GuestBody {
    fn drop(&mut self) {
        // The client went away (or the body failed) while the guest was still producing it.
        if !self.done && self.outcome.running() {
            if let Some(task) = self.guest_task.take() {
                task.abort();
            }
        }
    }
}
