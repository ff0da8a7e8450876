//! The request path: one fresh Store and instance per request, the guest run on its own task
//! under the request clock, and every guest outcome mapped to a response (200 from the guest,
//! 500 for faults, 503 for no free instance slot, 504 for a guest cut off before its head).
use crate::config::settings::Settings;
use crate::guest::body::{GuestOutcome, ResponseBody};
use crate::guest::clock::{Expiry, RequestClock};
use crate::guest::instances::KeptInstances;
use crate::guest::store::{new_store, GuestState};
use crate::guest::upload::UploadBody;
use crate::log::access::{AccessLog, AccessRecord};
use crate::log::escape::escaped;
use crate::log::request_figures::RequestFigures;
use crate::metrics::labels::Outcome;
use crate::metrics::{OutcomeLatch, Recorder};
use crate::worker::validate::{check_request, Rejection};
use crate::{log_error, log_warning};
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::WasiHttpView;

/// Everything a worker needs to serve requests with one app.
pub struct AppRuntime {
    pub pre: ProxyPre<GuestState>,
    pub settings: Arc<Settings>,
    pub access_log: Option<Arc<AccessLog>>,
    next_request_id: AtomicU64,
    /// Instances waiting for their next request; empty unless --instance-reuse > 1.
    pub kept: KeptInstances,
    /// `--max-requests` for this worker (with its jitter); 0 = never.
    max_requests: u64,
    /// Notified when the request that reaches `max_requests` arrives.
    pub quota_reached: tokio::sync::Notify,
    /// This worker's metrics slot (disabled without --admin-bind).
    pub metrics: Recorder,
}

/// The connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Client address for the access log (`-` for unix sockets).
    pub remote: String,
    /// Authority given to requests that carry no Host header (HTTP/1.0): the listening address.
    pub local_authority: HeaderValue,
    /// TLS connection: the guest sees the `https` scheme.
    pub https: bool,
    /// The verified client certificate's subject (`--cert-reqs` 1 or 2), for the access log.
    pub client_subject: Option<Arc<str>>,
}

impl ConnectionInfo {
    /// A plain connection from `remote` to the listener at `local_authority`.
    pub fn new(remote: String, local_authority: HeaderValue) -> ConnectionInfo {
        ConnectionInfo { remote, local_authority, https: false, client_subject: None }
    }
}

/// How a guest run ended, as seen by the guest task.
enum GuestFailure {
    Timeout(Expiry),
    NoInstanceSlot(wasmtime::Error),
    Instantiate(wasmtime::Error),
    Trap { error: wasmtime::Error, out_of_memory: bool },
}

impl AppRuntime {
    pub fn new(pre: ProxyPre<GuestState>, settings: Arc<Settings>, access_log: Option<Arc<AccessLog>>) -> AppRuntime {
        AppRuntime {
            pre,
            kept: KeptInstances::new(settings.instance_reuse, settings.instance_slots),
            settings,
            access_log,
            next_request_id: AtomicU64::new(1),
            max_requests: 0,
            quota_reached: tokio::sync::Notify::new(),
            metrics: Recorder::disabled(),
        }
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

    /// Refuses a request whose body broke the framing rules before its guest runs: 400, closed.
    pub fn refuse<B>(
        &self,
        request: Request<B>,
        conn: &ConnectionInfo,
        reason: &'static str,
    ) -> Response<ResponseBody> {
        let record = self.access_log.as_ref().map(|log| AccessRecord::new(log.clone(), conn.remote.clone(), &request));
        let rejection = Rejection { status: StatusCode::BAD_REQUEST, reason };
        log_rejection(&conn.remote, &request, &rejection);
        rejection_response(rejection, record)
    }

    /// Serves one request. Never fails: every outcome is a response. Counted in the metrics from
    /// here until its response body is done.
    pub async fn handle(self: Arc<Self>, request: Request<Incoming>, conn: &ConnectionInfo) -> Response<ResponseBody> {
        let mut timer = self.metrics.request_started(request.method());
        let mut response = self.serve(request, conn).await;
        timer.set_status(response.status().as_u16());
        response.body_mut().attach_timer(timer);
        response
    }

    async fn serve(self: Arc<Self>, mut request: Request<Incoming>, conn: &ConnectionInfo) -> Response<ResponseBody> {
        let queue_time = self.settings.queue.queue_time(request.headers(), &conn.remote, std::time::SystemTime::now());
        let figures = Arc::new(RequestFigures::default());
        let mut record = self.access_log.as_ref().map(|log| {
            let mut record = AccessRecord::new(log.clone(), conn.remote.clone(), &request);
            record.client_subject = conn.client_subject.clone();
            record
        });
        if let Some(record) = record.as_mut() {
            record.queue_time = queue_time;
            record.figures = Some(figures.clone());
        }
        if let Err(rejection) = check_request(&request, &self.settings.limits, self.settings.body_limit) {
            log_rejection(&conn.remote, &request, &rejection);
            return rejection_response(rejection, record);
        }
        if let Some(waited) = queue_time {
            self.metrics.queue_time(waited);
            if self.settings.queue.sheds(queue_time) {
                self.metrics.shed_for_queue_time();
                crate::log_debug!("shed a request that waited {waited:?} (over --max-queue-time)");
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n", record);
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
        }
        if request.uri().authority().is_none() && !request.headers().contains_key(header::HOST) {
            request.headers_mut().insert(header::HOST, conn.local_authority.clone());
        }
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        // Ids start at 1, so the id is also the number of requests this worker has taken.
        if id == self.max_requests {
            self.quota_reached.notify_one();
        }
        let request_id: Arc<str> = format!("{}-{id}", crate::log::pid()).into();
        let summary = format!("{} {}", request.method(), request.uri().path());

        let clock = RequestClock::new(self.settings.request_timeout, self.settings.max_request_time);
        let (request, too_large) = {
            let (parts, body) = request.into_parts();
            let (body, too_large) = UploadBody::new(body, Some(clock.clone()), self.settings.body_limit);
            (Request::from_parts(parts, body), too_large)
        };
        let (mut store, kept_proxy, served) = match self.kept.take() {
            Some(idle) => {
                if let Some(took) = idle.instantiation {
                    figures.set_instantiation(took);
                }
                let mut store = idle.store;
                store.data_mut().begin_request(&request_id, clock.clone());
                store.set_epoch_deadline(1);
                (store, Some(idle.proxy), idle.served)
            }
            None => match new_store(self.pre.engine(), &self.settings, &request_id, clock.clone(), self.metrics) {
                Ok(store) => (store, None, 0),
                Err(e) => {
                    log_error!("request {request_id} {summary}: cannot set up the guest: {e:#}");
                    return error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n", record);
                }
            },
        };
        store.data_mut().track_memory(figures.clone());
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = store
            .data_mut()
            .http()
            .new_incoming_request(if conn.https { Scheme::Https } else { Scheme::Http }, request)
            .and_then(|req| {
                let out = store.data_mut().http().new_response_outparam(sender)?;
                Ok((req, out))
            });
        let (guest_request, response_out) = match prepared {
            Ok(pair) => pair,
            Err(e) => {
                log_warning!("request {request_id} {summary}: rejected: {e}");
                return error_response(StatusCode::BAD_REQUEST, "Bad Request\n", record);
            }
        };

        let outcome = GuestOutcome::new();
        let task_outcome = outcome.clone();
        let latch = OutcomeLatch::default();
        let task_latch = latch.clone();
        let app = self.clone();
        let task_clock = clock.clone();
        let task_request_id = request_id.clone();
        let guest = tokio::spawn(async move {
            let result = tokio::select! {
                biased;
                why = task_clock.expired() => Err(GuestFailure::Timeout(why)),
                result = run_guest(&app.pre, &mut store, kept_proxy, guest_request, response_out, &figures) => result,
            };
            let result = match result {
                Err(GuestFailure::Trap { .. }) if task_clock.is_expired() => Err(GuestFailure::Timeout(
                    task_clock.check(std::time::Instant::now()).unwrap_or(Expiry::NoProgress),
                )),
                Err(GuestFailure::Trap { error, .. }) => {
                    Err(GuestFailure::Trap { error, out_of_memory: store.data().memory_denied() })
                }
                other => other,
            };
            // Record the outcome before the store (and with it the response body's sender) is
            // dropped, so the body can tell a finished response from one the guest abandoned.
            task_outcome.finish(result.is_ok());
            match &result {
                Ok(_) => task_latch.guest_returned(&app.metrics),
                Err(failure) => app.metrics.outcome(failure.outcome()),
            }
            if let Some(took) = figures.instantiation() {
                app.metrics.instantiation(took);
            }
            let outcome = match result {
                Ok(proxy) => {
                    app.kept.after_success(store, proxy, served + 1, &task_request_id);
                    Ok(())
                }
                Err(failure) => {
                    app.kept.after_failure(&task_request_id);
                    drop(store);
                    Err(failure)
                }
            };
            crate::guest::spare::start_refill(&app);
            outcome
        });
        let guest = AbortOnDrop(Some(guest));

        let received = receiver.await;
        if too_large.is_set() {
            // The body passed the limit before the guest answered: whatever it says, 413.
            log_warning!("request {request_id} {summary}: body over --limit-request-body; answered 413");
            let rejection = Rejection { status: StatusCode::PAYLOAD_TOO_LARGE, reason: "body too large" };
            return rejection_response(rejection, record);
        }
        match received {
            Ok(Ok(response)) => {
                latch.head_arrived(&self.metrics);
                clock.progress();
                let (parts, body) = response.into_parts();
                let mut record = record;
                if let Some(record) = record.as_mut() {
                    record.status = parts.status.as_u16();
                    record.response_headers = parts.headers.clone();
                }
                let body = ResponseBody::guest(body, outcome, clock, guest.abort_handle(), record, request_id);
                Response::from_parts(parts, body)
            }
            Ok(Err(code)) => {
                log_error!("request {request_id} {summary}: the guest answered with an error: {code:?}");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n", record)
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
                        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n", record);
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
            instantiated.map_err(|e| {
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                    GuestFailure::NoInstanceSlot(e)
                } else {
                    GuestFailure::Instantiate(e)
                }
            })?
        }
    };
    proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, request, response_out)
        .await
        .map_err(|error| GuestFailure::Trap { error, out_of_memory: false })?;
    Ok(proxy)
}

impl GuestFailure {
    /// The metrics outcome (a failed instantiation counts as a trap).
    fn outcome(&self) -> Outcome {
        match self {
            GuestFailure::Timeout(_) => Outcome::Timeout,
            GuestFailure::NoInstanceSlot(_) => Outcome::NoInstanceSlot,
            GuestFailure::Trap { out_of_memory: true, .. } => Outcome::MemoryLimit,
            GuestFailure::Instantiate(_) | GuestFailure::Trap { .. } => Outcome::Trap,
        }
    }
}

fn failure_response(
    failure: Option<GuestFailure>,
    request_id: &str,
    summary: &str,
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
    let mut response = error_response(status, text, record);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Every instance slot is busy: a moment later one is likely free.
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A guest error in one line: the trap kind or the error chain, without the backtrace.
pub fn trap_summary(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("{trap}"),
        None => format!("{error}"),
    }
}

/// A short plain-text error response (no stack traces).
pub fn error_response(status: StatusCode, text: &'static str, record: Option<AccessRecord>) -> Response<ResponseBody> {
    let mut record = record;
    if let Some(record) = record.as_mut() {
        record.status = status.as_u16();
        record.bytes_sent = text.len() as u64;
    }
    let mut response = Response::new(ResponseBody::full(text, record));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// The answer to a request refused before the guest: its status, a short text, and
/// `Connection: close` (after a framing doubt, the rest of the connection cannot be trusted).
pub fn rejection_response(rejection: Rejection, record: Option<AccessRecord>) -> Response<ResponseBody> {
    let text = match rejection.status {
        StatusCode::PAYLOAD_TOO_LARGE => "Payload Too Large\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Request Header Fields Too Large\n",
        StatusCode::EXPECTATION_FAILED => "Expectation Failed\n",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed\n",
        _ => "Bad Request\n",
    };
    let mut response = error_response(rejection.status, text, record);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// One error-log line for a refused request: peer, method, target and reason, escaped.
pub fn log_rejection<B>(peer: &str, request: &Request<B>, rejection: &Rejection) {
    log_warning!(
        "{peer}: refused {} {} with {}: {}",
        escaped(request.method().as_str()),
        escaped(&request.uri().to_string()),
        rejection.status.as_u16(),
        rejection.reason
    );
}

/// Aborts the guest task if the request is abandoned before its response head.
struct AbortOnDrop(Option<tokio::task::JoinHandle<Result<(), GuestFailure>>>);

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
