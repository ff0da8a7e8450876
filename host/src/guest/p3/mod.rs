//! The WASI 0.3 request path (`wasi:http/service@0.3.0`): a fresh instance per request (`fresh`),
//! or with `--instance-reuse` above 1 instances that serve several requests at once (`shared`).
//! Both run the handler inside the store's event loop (`run_concurrent`), which keeps running
//! after the handler returned, for the guest's own tasks that write the response body, until the
//! client has the whole body. The same store (memory cap, request clock, outbound hooks), the same
//! failure answers and the same response body as the 0.2 path in `handle`.
mod fresh;
pub mod shared;

use crate::guest::body::GuestOutcome;
use crate::guest::clock::RequestClock;
use crate::guest::handle::{
    failure_response, holding, AbortOnDrop, AdmittedRequest, AppRuntime, GuestFailure, GuestHead, Handled,
};
use crate::guest::store::GuestState;
use crate::guest::upload::UploadBody;
use crate::log::escape::RequestLine;
use crate::log::request_figures::RequestFigures;
use crate::metrics::OutcomeLatch;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::sync::oneshot;
use wasmtime::component::Accessor;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::{Service, ServicePre};

type Answer = Result<Response<HyperOutgoingBody>, ErrorCode>;
type RequestIo = Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>>;
/// A request body as a 0.3 guest reads it.
type GuestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;
/// What answers for a request once its guest has run (see `AbortOnDrop`).
type GuestTask = Pin<Box<dyn Future<Output = Result<(), GuestFailure>> + Send>>;

/// One admitted request on its way into a 0.3 instance.
struct Job {
    request: Request<GuestBody>,
    sender: oneshot::Sender<Answer>,
    /// Closed once the request's outcome is recorded (see `SettledEnd`).
    settled: oneshot::Receiver<()>,
    figures: Arc<RequestFigures>,
}

/// What the request side keeps to record the request's outcome.
struct Ticket {
    request_id: Arc<str>,
    clock: Arc<RequestClock>,
    outcome: GuestOutcome,
    latch: OutcomeLatch,
    figures: Arc<RequestFigures>,
    settled: oneshot::Sender<()>,
}

impl Ticket {
    /// Records how the request's guest run ended, then lets its response body end.
    fn settle(self, app: &AppRuntime, result: &Result<(), GuestFailure>) {
        self.outcome.finish(result.is_ok());
        drop(self.settled);
        app.trim.note_live();
        match result {
            Ok(()) => self.latch.guest_returned(&app.metrics),
            Err(failure) => app.metrics.outcome(failure.outcome()),
        }
        if let Some(took) = self.figures.instantiation() {
            app.metrics.instantiation(took);
        }
    }
}

/// Runs a 0.3 guest for one admitted request. Never fails: every outcome is a response.
pub async fn handle<B>(app: Arc<AppRuntime>, pre: ServicePre<GuestState>, admitted: AdmittedRequest<B>) -> Handled
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let AdmittedRequest { request, body_verdict, https, record, figures, slot_permit } = admitted;
    let request_id = app.next_request_id();
    let summary = RequestLine::path_of(&request);
    let clock = RequestClock::new(app.settings.request_timeout, app.settings.max_request_time);
    let request = request.map(|body| UploadBody::new(body, clock.clone()).map_err(Into::into).boxed_unsync());
    let request = with_scheme_and_authority(request, https);
    let (sender, receiver) = oneshot::channel();
    let (settled_tx, settled) = oneshot::channel();
    let (outcome, latch) = (GuestOutcome::new(), OutcomeLatch::default());
    let job = Job { request, sender, settled, figures: figures.clone() };
    let ticket = Ticket {
        request_id: request_id.clone(),
        clock: clock.clone(),
        outcome: outcome.clone(),
        latch: latch.clone(),
        figures,
        settled: settled_tx,
    };
    let started = match &app.shared {
        Some(instances) => instances.start(&app, &pre, job, ticket),
        None => fresh::start(&app, pre, job, ticket),
    };
    let task = match started {
        Ok(task) => task,
        Err(failure) => {
            app.metrics.outcome(failure.outcome());
            return Handled::Response(failure_response(Some(failure), &request_id, &summary, record, &app.settings));
        }
    };
    let guest = AbortOnDrop(Some(tokio::spawn(holding(slot_permit, task))));
    let received = receiver.await;
    if let Some(cut) = body_verdict.get() {
        return Handled::BodyCut(cut, record);
    }
    let head = GuestHead { outcome, clock, latch, request_id, summary, record };
    Handled::Response(app.answer(received, guest, head).await)
}

/// The request as the guest sees it: the scheme it came over and the authority from `Host` (as
/// 0.2's incoming request has them); the front admits no request without a Host.
fn with_scheme_and_authority<B>(request: Request<B>, https: bool) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    let authority = match parts.uri.authority() {
        Some(authority) => Some(authority.as_str().to_string()),
        None => parts.headers.get(http::header::HOST).and_then(|host| host.to_str().ok()).map(str::to_string),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut uri = Uri::builder().scheme(if https { "https" } else { "http" });
    if let Some(authority) = authority {
        uri = uri.authority(authority);
    }
    if let Ok(uri) = uri.path_and_query(path).build() {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

/// Runs the handler for one job inside the store's event loop, sends the response head, and
/// returns once the response body has ended or the client dropped it.
async fn serve_job(accessor: &Accessor<GuestState>, service: &Service, job: Job) -> wasmtime::Result<()> {
    let Job { request, sender, settled, figures } = job;
    let (request, request_io) = accessor.with(|mut access| {
        let state = access.data_mut();
        state.track_memory(figures);
        let (request, io) =
            wasmtime_wasi_http::p3::Request::from_http(wasmtime_wasi_http::WasiHttpView::http(state).hooks, request);
        (request, Box::pin(io) as RequestIo)
    });
    let response = match service.handle(accessor, request).await? {
        Ok(response) => response,
        Err(code) => {
            let _ = sender.send(Err(code));
            return Ok(());
        }
    };
    let response = accessor.with(|mut access| response.into_http(&mut access, request_io))?;
    let (ended_tx, ended_rx) = oneshot::channel();
    let response = response.map(|body| SettledEnd { inner: body, ended: Some(ended_tx), settled }.boxed_unsync());
    if sender.send(Ok(response)).is_ok() {
        // Resolves when the body has ended or was dropped (the client went away).
        let _ = ended_rx.await;
    }
    Ok(())
}

/// A 0.3 response body whose end waits until the request's outcome is recorded: a guest that
/// traps closes its body stream exactly as one that finished it, so the end of the stream alone
/// cannot tell a complete body from a truncated one.
struct SettledEnd {
    inner: HyperOutgoingBody,
    /// Told when the guest's stream has ended (the event loop may stop then).
    ended: Option<oneshot::Sender<()>>,
    /// Closed once the outcome is recorded.
    settled: oneshot::Receiver<()>,
}

impl Body for SettledEnd {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.ended.is_some() {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(frame) => return Poll::Ready(Some(frame)),
                None => {
                    if let Some(ended) = self.ended.take() {
                        let _ = ended.send(());
                    }
                }
            }
        }
        let _ = ready!(Pin::new(&mut self.settled).poll(cx));
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
