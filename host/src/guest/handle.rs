//! The request path inside the guest: one fresh Store and instance per admitted request (or a
//! kept one with --instance-reuse), the guest run on its own task under the request clock, and every
//! guest outcome mapped to a response (the guest's own, 500 for faults, 503 for no free instance
//! slot, 504 for a guest cut off before its head).
use crate::app::world::AppPre;
use crate::config::settings::Settings;
use crate::guest::body::{host_response, GuestOutcome, ResponseBody};
use crate::guest::clock::{Expiry, RequestClock};
use crate::guest::instances::KeptInstances;
use crate::guest::outbound::Outbound;
use crate::guest::store::{new_store, GuestState};
use crate::guest::trim::SlotTrim;
use crate::guest::upload::{BodyCut, BodyVerdict, UploadBody};
use crate::log::access::AccessRecord;
use crate::log::escape::RequestLine;
use crate::log::request_figures::RequestFigures;
use crate::metrics::labels::Outcome;
use crate::metrics::{OutcomeLatch, Recorder};
use crate::{log_error, log_warning};
use http::{Request, Response, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;
use wasmtime::component::Resource;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::types::{HostIncomingRequest, HostResponseOutparam};
use wasmtime_wasi_http::WasiHttpView;

/// Everything a worker needs to run its app's guests.
pub struct AppRuntime {
    /// The app, in the world it serves (0.2 requests run here, 0.3 ones in `p3`).
    pub pre: AppPre<GuestState>,
    pub settings: Arc<Settings>,
    next_request_id: AtomicU64,
    /// Instances waiting for their next request; empty unless --instance-reuse > 1.
    pub kept: KeptInstances,
    /// `--max-requests` for this worker (with its jitter); 0 = never.
    max_requests: u64,
    /// Notified when the request that reaches `max_requests` arrives.
    pub quota_reached: tokio::sync::Notify,
    /// This worker's metrics slot (disabled without --admin-bind).
    pub metrics: Recorder,
    /// This worker's outbound HTTP client (no outbound HTTP until `with_outbound`).
    pub outbound: Arc<Outbound>,
    /// This worker's key-value buckets and config values (none until `with_state`).
    pub state: Arc<crate::state::AppState>,
    /// Gives back what unused instance slots keep resident (`--instance-trim-after`).
    pub trim: SlotTrim,
    /// A WASI 0.3 app's shared instances, with `--instance-reuse` above 1.
    pub shared: Option<crate::guest::p3::shared::SharedInstances>,
}

/// A request the HTTP front has admitted: valid, within the limits, with a Host; its body is
/// bounded by the front, which records in `body_verdict` when it cut the body.
pub struct AdmittedRequest<B> {
    pub request: Request<B>,
    pub body_verdict: BodyVerdict,
    /// Arrived over TLS: the guest sees the `https` scheme.
    pub https: bool,
    /// Its access-log line, written when the response is done.
    pub record: Option<AccessRecord>,
    /// What the access log and metrics report about its instance.
    pub figures: Arc<RequestFigures>,
    /// Held by the guest task until the instance has freed its slot or gone idle (an HTTP/2
    /// stream's permit, see `http::h2`).
    pub slot_permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What came of an admitted request.
pub enum Handled {
    /// Any response: the guest's, or the host's for a guest fault.
    Response(Response<ResponseBody>),
    /// The front cut the body before the guest answered: the front answers for the request.
    BodyCut(BodyCut, Option<AccessRecord>),
}

/// How a guest run ended, as seen by the guest task.
pub(super) enum GuestFailure {
    Timeout(Expiry),
    NoInstanceSlot(wasmtime::Error),
    Instantiate(wasmtime::Error),
    /// Its shared WASI 0.3 instance was dropped (another request on it trapped or ran out of
    /// time; see `p3::shared`): the outcome to count and what happened.
    InstanceLost(Outcome, Arc<str>),
    Trap {
        error: wasmtime::Error,
        out_of_memory: bool,
    },
}

/// The instance a request runs on: a kept (or spare) one, or a fresh store to instantiate in.
struct Instance {
    store: Store<GuestState>,
    kept: Option<Proxy>,
    /// Requests the instance served before this one.
    served: u32,
}

/// The guest's side of one request, moved into the guest task.
struct GuestRun {
    pre: ProxyPre<GuestState>,
    instance: Instance,
    request: Resource<HostIncomingRequest>,
    response_out: Resource<HostResponseOutparam>,
    figures: Arc<RequestFigures>,
    clock: Arc<RequestClock>,
    request_id: Arc<str>,
    outcome: GuestOutcome,
    latch: OutcomeLatch,
}

type GuestAnswer = Result<Response<HyperOutgoingBodyOf>, wasmtime_wasi_http::p2::bindings::http::types::ErrorCode>;
type HyperOutgoingBodyOf = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

impl AppRuntime {
    pub fn new(pre: AppPre<GuestState>, settings: Arc<Settings>) -> AppRuntime {
        AppRuntime {
            trim: SlotTrim::new(pre.engine()),
            shared: match &pre {
                AppPre::Service03(_) if settings.instance_reuse > 1 => {
                    Some(crate::guest::p3::shared::SharedInstances::new(
                        settings.instance_reuse,
                        settings.instance_concurrency,
                    ))
                }
                _ => None,
            },
            pre,
            kept: KeptInstances::new(settings.instance_reuse, settings.instance_slots),
            settings,
            next_request_id: AtomicU64::new(1),
            max_requests: 0,
            quota_reached: tokio::sync::Notify::new(),
            metrics: Recorder::disabled(),
            outbound: Outbound::new(crate::config::outbound::OutboundSettings::deny_all()),
            state: Arc::new(crate::state::AppState::none()),
        }
    }

    /// Offers the guests `state` (built by the worker at boot).
    pub fn with_state(mut self, state: crate::state::AppState) -> AppRuntime {
        self.state = Arc::new(state);
        self
    }

    /// Sends the guests' outbound requests through `outbound` (built by the worker at boot).
    pub fn with_outbound(mut self, outbound: Arc<Outbound>) -> AppRuntime {
        self.outbound = outbound;
        self
    }

    /// Records this worker's metrics into `metrics`.
    pub fn with_metrics(mut self, metrics: Recorder) -> AppRuntime {
        self.metrics = metrics;
        self
    }

    /// Sets the request count after which `quota_reached` is notified.
    pub fn with_max_requests(mut self, max_requests: u64) -> AppRuntime {
        self.max_requests = max_requests;
        self
    }

    /// Runs the guest for one admitted request. Never fails: every outcome is a response.
    pub async fn handle<B>(self: Arc<Self>, admitted: AdmittedRequest<B>) -> Handled
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let pre = match &self.pre {
            AppPre::Proxy02(pre) => pre.clone(),
            AppPre::Service03(pre) => {
                let pre = pre.clone();
                return crate::guest::p3::handle(self, pre, admitted).await;
            }
        };
        let AdmittedRequest { request, body_verdict, https, record, figures, slot_permit } = admitted;
        let request_id = self.next_request_id();
        let summary = RequestLine::path_of(&request);
        let clock = RequestClock::new(self.settings.request_timeout, self.settings.max_request_time);
        let request = request.map(|body| UploadBody::new(body, clock.clone()));
        let mut instance = match self.instance_for(&request_id, &clock, &figures) {
            Ok(instance) => instance,
            Err(failure) => {
                self.metrics.outcome(failure.outcome());
                return Handled::Response(failure_response(
                    Some(failure),
                    &request_id,
                    &summary,
                    record,
                    &self.settings,
                ));
            }
        };
        instance.store.data_mut().track_memory(figures.clone());
        let (sender, receiver) = oneshot::channel();
        let (guest_request, response_out) = match bind_request(&mut instance.store, request, https, sender) {
            Ok(pair) => pair,
            Err(e) => {
                log_warning!("request {request_id} {summary}: rejected: {e}");
                return Handled::Response(host_response(StatusCode::BAD_REQUEST, "Bad Request\n", record));
            }
        };
        let outcome = GuestOutcome::new();
        let latch = OutcomeLatch::default();
        let run = GuestRun {
            pre,
            instance,
            request: guest_request,
            response_out,
            figures,
            clock: clock.clone(),
            request_id: request_id.clone(),
            outcome: outcome.clone(),
            latch: latch.clone(),
        };
        let guest = AbortOnDrop(Some(tokio::spawn(holding(slot_permit, self.clone().run_guest_task(run)))));
        let received = receiver.await;
        if let Some(cut) = body_verdict.get() {
            return Handled::BodyCut(cut, record);
        }
        let head = GuestHead { outcome, clock, latch, request_id, summary, record };
        Handled::Response(self.answer(received, guest, head).await)
    }

    /// The next request's id (`PID-N`); notifies `quota_reached` at `--max-requests`.
    pub(super) fn next_request_id(&self) -> Arc<str> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        // Ids start at 1, so the id is also the number of requests this worker has taken.
        if id == self.max_requests {
            self.quota_reached.notify_one();
        }
        format!("{}-{id}", crate::log::pid()).into()
    }

    /// A kept or spare instance if one waits, else a fresh store in a free instance slot.
    fn instance_for(
        &self,
        request_id: &Arc<str>,
        clock: &Arc<RequestClock>,
        figures: &RequestFigures,
    ) -> Result<Instance, GuestFailure> {
        if let Some(idle) = self.kept.take() {
            let mut store = idle.store;
            store.data_mut().begin_request(request_id, clock.clone());
            store.set_epoch_deadline(1);
            if let Some(took) = idle.instantiation {
                figures.set_instantiation(took);
            }
            return Ok(Instance { store, kept: Some(idle.proxy), served: idle.served });
        }
        let store = self.fresh_store(request_id, clock)?;
        Ok(Instance { store, kept: None, served: 0 })
    }

    /// A fresh store in a free instance slot.
    pub(super) fn fresh_store(
        &self,
        request_id: &Arc<str>,
        clock: &Arc<RequestClock>,
    ) -> Result<Store<GuestState>, GuestFailure> {
        let Some(slot) = self.kept.slot_for_request() else {
            return Err(GuestFailure::NoInstanceSlot(wasmtime::Error::msg("every instance slot is in use")));
        };
        new_store(
            self.pre.engine(),
            &self.settings,
            &self.outbound,
            &self.state,
            request_id,
            clock.clone(),
            self.metrics,
            slot,
        )
        .map_err(|e| GuestFailure::Instantiate(wasmtime::Error::msg(format!("{e:#}"))))
    }

    /// The guest task: runs the handler under the request clock, records the outcome, keeps or
    /// drops the instance, and starts the spare-instance refill.
    async fn run_guest_task(self: Arc<Self>, run: GuestRun) -> Result<(), GuestFailure> {
        let GuestRun { pre, instance, request, response_out, figures, clock, request_id, outcome, latch } = run;
        let Instance { mut store, kept, served } = instance;
        let result = tokio::select! {
            biased;
            why = clock.expired() => Err(GuestFailure::Timeout(why)),
            result = run_guest(&pre, &mut store, kept, request, response_out, &figures) => result,
        };
        let result = settle(result, &clock, store.data().memory_denied());
        // Record the outcome before the store (and with it the response body's sender) is
        // dropped, so the body can tell a finished response from one the guest abandoned.
        outcome.finish(result.is_ok());
        self.trim.note_live();
        match &result {
            Ok(_) => latch.guest_returned(&self.metrics),
            Err(failure) => self.metrics.outcome(failure.outcome()),
        }
        if let Some(took) = figures.instantiation() {
            self.metrics.instantiation(took);
        }
        let ended = match result {
            Ok(proxy) => {
                self.kept.after_success(store, proxy, served + 1, &request_id);
                Ok(())
            }
            Err(failure) => {
                self.kept.after_failure(&request_id);
                drop(store);
                Err(failure)
            }
        };
        crate::guest::spare::start_refill(&self);
        ended
    }

    /// The response once the guest has set one, or why it did not.
    pub(super) async fn answer<E: std::fmt::Debug>(
        &self,
        received: Result<Result<Response<HyperOutgoingBodyOf>, E>, oneshot::error::RecvError>,
        guest: AbortOnDrop,
        head: GuestHead,
    ) -> Response<ResponseBody> {
        let GuestHead { outcome, clock, latch, request_id, summary, mut record } = head;
        match received {
            Ok(Ok(response)) => {
                latch.head_arrived(&self.metrics);
                clock.progress();
                let (parts, body) = response.into_parts();
                if let Some(record) = record.as_mut() {
                    record.status = parts.status.as_u16();
                    record.response_headers = parts.headers.clone();
                }
                let body = ResponseBody::guest(body, outcome, clock, guest.abort_handle(), record, request_id);
                Response::from_parts(parts, body)
            }
            Ok(Err(code)) => {
                log_error!("request {request_id} {summary}: the guest answered with an error: {code:?}");
                internal_error(record)
            }
            Err(_) => {
                let failure = match guest.join().await {
                    Some(Ok(())) => {
                        self.metrics.outcome(Outcome::NoResponse);
                        None
                    }
                    Some(Err(failure)) => Some(failure),
                    None => {
                        log_error!("request {request_id} {summary}: the guest task failed");
                        return internal_error(record);
                    }
                };
                failure_response(failure, &request_id, &summary, record, &self.settings)
            }
        }
    }

    /// Requests this worker has taken so far (for --max-requests).
    pub fn requests_served(&self) -> u64 {
        self.next_request_id.load(Ordering::Relaxed) - 1
    }
}

/// What the response side of a request keeps while the guest runs.
pub(super) struct GuestHead {
    pub(super) outcome: GuestOutcome,
    pub(super) clock: Arc<RequestClock>,
    pub(super) latch: OutcomeLatch,
    pub(super) request_id: Arc<str>,
    pub(super) summary: RequestLine,
    pub(super) record: Option<AccessRecord>,
}

/// A guest run's result as the request reports it: a trap after the request ran out of time is
/// its timeout; a trap after a refused memory grow is the memory cap.
pub(super) fn settle<R>(
    result: Result<R, GuestFailure>,
    clock: &RequestClock,
    memory_denied: bool,
) -> Result<R, GuestFailure> {
    match result {
        Err(GuestFailure::Trap { .. }) if clock.is_expired() => {
            Err(GuestFailure::Timeout(clock.check(std::time::Instant::now()).unwrap_or(Expiry::NoProgress)))
        }
        Err(GuestFailure::Trap { error, .. }) => Err(GuestFailure::Trap { error, out_of_memory: memory_denied }),
        other => other,
    }
}

/// Hands the request to the store's wasi-http context, with the channel its response comes on.
fn bind_request<B>(
    store: &mut Store<GuestState>,
    request: Request<B>,
    https: bool,
    sender: oneshot::Sender<GuestAnswer>,
) -> wasmtime::Result<(Resource<HostIncomingRequest>, Resource<HostResponseOutparam>)>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    let request = store.data_mut().http().new_incoming_request(scheme, request)?;
    let response_out = store.data_mut().http().new_response_outparam(sender)?;
    Ok((request, response_out))
}

pub(super) fn internal_error(record: Option<AccessRecord>) -> Response<ResponseBody> {
    host_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n", record)
}

/// Runs the guest's handler (instantiating the app first unless a kept instance is given) and
/// returns the instance for possible reuse.
async fn run_guest(
    pre: &ProxyPre<GuestState>,
    store: &mut Store<GuestState>,
    kept: Option<Proxy>,
    request: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostIncomingRequest>,
    response_out: wasmtime::component::Resource<wasmtime_wasi_http::p2::types::HostResponseOutparam>,
    figures: &RequestFigures,
) -> Result<Proxy, GuestFailure> {
    let proxy = match kept {
        Some(proxy) => proxy,
        None => {
            let started = std::time::Instant::now();
            let instantiated = pre.instantiate_async(&mut *store).await;
            if instantiated.is_ok() {
                figures.set_instantiation(started.elapsed());
            }
            instantiated.map_err(instantiate_failure)?
        }
    };
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, request, response_out)
        .await
        .map_err(|error| GuestFailure::Trap { error, out_of_memory: false })?;
    Ok(proxy)
}

/// Runs a guest task holding `permit` until it ends: by then the instance has freed its slot or
/// gone idle (its response body may have ended earlier).
pub(super) async fn holding<F: std::future::Future>(
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    task: F,
) -> F::Output {
    let ended = task.await;
    drop(permit);
    ended
}

/// Why an instantiation failed: no pool slot free, or anything else.
pub(super) fn instantiate_failure(e: wasmtime::Error) -> GuestFailure {
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
        GuestFailure::NoInstanceSlot(e)
    } else {
        GuestFailure::Instantiate(e)
    }
}

impl GuestFailure {
    /// The metrics outcome (a failed instantiation counts as a trap).
    pub(super) fn outcome(&self) -> Outcome {
        match self {
            GuestFailure::Timeout(_) => Outcome::Timeout,
            GuestFailure::NoInstanceSlot(_) => Outcome::NoInstanceSlot,
            GuestFailure::InstanceLost(outcome, _) => *outcome,
            GuestFailure::Trap { out_of_memory: true, .. } => Outcome::MemoryLimit,
            GuestFailure::Instantiate(_) | GuestFailure::Trap { .. } => Outcome::Trap,
        }
    }
}

pub(super) fn failure_response(
    failure: Option<GuestFailure>,
    request_id: &str,
    summary: &RequestLine,
    record: Option<AccessRecord>,
    settings: &Settings,
) -> Response<ResponseBody> {
    let (status, text) = match failure {
        None => {
            log_error!("request {request_id} {summary}: the guest returned without setting a response");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
        Some(GuestFailure::Timeout(why)) => {
            let what = match why {
                Expiry::NoProgress => {
                    format!("no response within --timeout {}s", settings.request_timeout.map_or(0, |t| t.as_secs()))
                }
                Expiry::MaxRequestTime => {
                    format!("over --max-request-time {}s", settings.max_request_time.map_or(0, |t| t.as_secs()))
                }
            };
            log_error!("request {request_id} {summary}: timed out ({what}); answered 504");
            (StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout\n")
        }
        Some(GuestFailure::NoInstanceSlot(e)) => {
            log_warning!("request {request_id} {summary}: no instance slot free (--instance-slots): {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n")
        }
        Some(GuestFailure::Instantiate(e)) => {
            log_error!("request {request_id} {summary}: cannot instantiate the app: {e:#}");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
        Some(GuestFailure::InstanceLost(_, why)) => {
            log_error!("request {request_id} {summary}: failed with its shared instance: {why}; answered 500");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
        Some(GuestFailure::Trap { error, out_of_memory }) => {
            if out_of_memory {
                log_error!(
                    "request {request_id} {summary}: guest exceeded the memory limit (--max-memory {} bytes) and trapped: {}",
                    settings.max_memory,
                    trap_summary(&error)
                );
            } else {
                log_error!("request {request_id} {summary}: guest trapped: {}", trap_summary(&error));
            }
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
        }
    };
    host_response(status, text, record)
}

/// A guest error in one line: the trap kind or the error chain, without the backtrace.
pub fn trap_summary(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}"),
        None => format!("{error}"),
    }
}

/// Aborts the guest task if the request is abandoned before its response head.
pub(super) struct AbortOnDrop(pub(super) Option<tokio::task::JoinHandle<Result<(), GuestFailure>>>);

impl AbortOnDrop {
    /// Hands the abort duty to the response body: the guest keeps running while it streams.
    fn abort_handle(mut self) -> Option<tokio::task::AbortHandle> {
        self.0.take().map(|handle| handle.abort_handle())
    }

    async fn join(mut self) -> Option<Result<(), GuestFailure>> {
        let handle = self.0.take()?;
        handle.await.ok()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
