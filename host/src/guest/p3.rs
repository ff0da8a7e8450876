//! The WASI 0.3 request path (`wasi:http/service@0.3.0`): a fresh instance per request whose
//! handler runs inside the store's event loop (`run_concurrent`), which keeps running after the
//! handler returned, for the guest's own tasks that write the response body, until the client has
//! the whole body. The same store (memory cap, request clock, outbound hooks), the same failure
//! answers and the same response body as the 0.2 path in `handle`.
use crate::guest::body::GuestOutcome;
use crate::guest::clock::RequestClock;
use crate::guest::handle::{
    failure_response, holding, instantiate_failure, settle, AbortOnDrop, AdmittedRequest, AppRuntime, GuestFailure, GuestHead,
    Handled,
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
use wasmtime::Store;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::bindings::ServicePre;
use wasmtime_wasi_http::WasiHttpView;

type Answer = Result<Response<HyperOutgoingBody>, ErrorCode>;
type RequestIo = Pin<Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>>;

/// The guest's side of one 0.3 request, moved into the guest task.
struct Run {
    pre: ServicePre<GuestState>,
    store: Store<GuestState>,
    request: wasmtime_wasi_http::p3::Request,
    request_io: RequestIo,
    sender: oneshot::Sender<Answer>,
    figures: Arc<RequestFigures>,
    clock: Arc<RequestClock>,
    outcome: GuestOutcome,
    latch: OutcomeLatch,
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
    let request = with_scheme_and_authority(request.map(|body| UploadBody::new(body, clock.clone())), https);
    let mut store = match app.fresh_store(&request_id, &clock) {
        Ok(store) => store,
        Err(failure) => {
            app.metrics.outcome(failure.outcome());
            return Handled::Response(failure_response(Some(failure), &request_id, &summary, record, &app.settings));
        }
    };
    store.data_mut().track_memory(figures.clone());
    let (request, request_io) = wasmtime_wasi_http::p3::Request::from_http(store.data_mut().http().hooks, request);
    let (sender, receiver) = oneshot::channel();
    let outcome = GuestOutcome::new();
    let latch = OutcomeLatch::default();
    let run = Run {
        pre,
        store,
        request,
        request_io: Box::pin(request_io),
        sender,
        figures,
        clock: clock.clone(),
        outcome: outcome.clone(),
        latch: latch.clone(),
    };
    let guest = AbortOnDrop(Some(tokio::spawn(holding(slot_permit, run_guest_task(app.clone(), run)))));
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

/// The guest task: instantiates, runs the handler and the body under the request clock, and
/// records the outcome before the store (and with it the body's source) is dropped.
async fn run_guest_task(app: Arc<AppRuntime>, run: Run) -> Result<(), GuestFailure> {
    let Run { pre, mut store, request, request_io, sender, figures, clock, outcome, latch } = run;
    let (settled_tx, settled_rx) = oneshot::channel::<()>();
    let result = tokio::select! {
        biased;
        why = clock.expired() => Err(GuestFailure::Timeout(why)),
        result = serve(&pre, &mut store, request, request_io, sender, settled_rx, &figures) => result,
    };
    let result = settle(result, &clock, store.data().memory_denied());
    outcome.finish(result.is_ok());
    // Only now may the response body end: it can tell a finished body from an abandoned one.
    drop(settled_tx);
    app.trim.note_live();
    match &result {
        Ok(()) => latch.guest_returned(&app.metrics),
        Err(failure) => app.metrics.outcome(failure.outcome()),
    }
    if let Some(took) = figures.instantiation() {
        app.metrics.instantiation(took);
    }
    drop(store);
    result
}

/// Instantiates the app and runs its handler in the store's event loop; after sending the
/// response head, keeps the loop running until the response body has ended.
async fn serve(
    pre: &ServicePre<GuestState>,
    store: &mut Store<GuestState>,
    request: wasmtime_wasi_http::p3::Request,
    request_io: RequestIo,
    sender: oneshot::Sender<Answer>,
    settled: oneshot::Receiver<()>,
    figures: &RequestFigures,
) -> Result<(), GuestFailure> {
    let started = std::time::Instant::now();
    let service = pre.instantiate_async(&mut *store).await.map_err(instantiate_failure)?;
    figures.set_instantiation(started.elapsed());
    let ran = store
        .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
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
        })
        .await;
    ran.and_then(|handled| handled).map_err(|error| GuestFailure::Trap { error, out_of_memory: false })
}

/// A 0.3 response body whose end waits until the guest task has recorded how it ended: a guest
/// that traps closes its body stream exactly as one that finished it, so the end of the stream
/// alone cannot tell a complete body from a truncated one.
struct SettledEnd {
    inner: HyperOutgoingBody,
    /// Told when the guest's stream has ended (the event loop may stop then).
    ended: Option<oneshot::Sender<()>>,
    /// Closed by the guest task once the outcome is recorded.
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
