//! One HTTP/2 connection (ALPN h2 on TLS, or prior knowledge on a plain bind): every stream is
//! a request served like an HTTP/1.1 one (own instance, deadline, access-log line), under
//! hyper's stream limits; a drain, `--keep-alive` seconds without an open stream, or the
//! `--keep-alive-max-requests`th stream sends GOAWAY and lets the open streams finish. Streams
//! beyond the worker's free instance slots wait for one (up to `--timeout`) instead of getting
//! 503: one client can open many streams at once.
use crate::config::settings::Settings;
use crate::guest::body::ResponseBody;
use crate::guest::handle::{error_response, AppRuntime, ConnectionInfo};
use crate::log::access::AccessRecord;
use crate::worker::request_cap::RequestCap;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Streams one connection may have open at once (each holds a guest instance while it runs).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Streams a client may open and reset before the server has accepted them (rapid reset,
/// CVE-2023-44487): beyond it the connection is closed with ENHANCE_YOUR_CALM.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// How long a ping may go unanswered before the connection counts as dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// After GOAWAY, how long a client gets to acknowledge it before the connection is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Open streams on a connection and when the last one ended (for the idle timeout).
struct Activity {
    state: Mutex<(usize, Instant)>,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> StreamGuard {
        if let Ok(mut state) = self.state.lock() {
            state.0 += 1;
        }
        StreamGuard(self.clone())
    }

    /// When the connection counts as idle if nothing happens before: `None` while streams are open.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let state = self.state.lock().ok()?;
        (state.0 == 0).then(|| state.1 + idle)
    }
}

/// Held by a stream from its request until its response body is finished or dropped.
struct StreamGuard(Arc<Activity>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.0 -= 1;
            state.1 = Instant::now();
        }
    }
}

/// A response body that keeps its stream counted as open (and its instance-slot permit held).
struct TrackedBody {
    inner: ResponseBody,
    _guard: StreamGuard,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Streams a worker runs at once: its instance slots, less those `--instance-reuse` may keep idle.
pub fn stream_permits(settings: &Settings) -> usize {
    let slots = settings.instance_slots as usize;
    let idle = if settings.instance_reuse > 1 { slots / 2 } else { 0 };
    (slots - idle).max(1)
}

/// Waits for an instance-slot permit, up to `--timeout` (forever with `--timeout 0`).
async fn stream_permit(streams: &Arc<Semaphore>, wait: Option<Duration>) -> Option<OwnedSemaphorePermit> {
    let acquire = streams.clone().acquire_owned();
    match wait {
        Some(wait) => tokio::time::timeout(wait, acquire).await.ok()?.ok(),
        None => acquire.await.ok(),
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = crate::guest::body::BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The largest decoded header list a stream may send: the request-head limits' worth.
fn max_header_list_size(app: &AppRuntime) -> u32 {
    let limits = app.settings.limits;
    let field = if limits.field_size == 0 { 64 * 1024 } else { limits.field_size + 32 };
    (field * limits.fields.min(1024)).clamp(16 * 1024, 4 << 20) as u32
}

/// Serves HTTP/2 on `io` until the client closes or the worker drains.
pub async fn serve<I>(
    io: I,
    app: Arc<AppRuntime>,
    info: ConnectionInfo,
    mut draining: watch::Receiver<bool>,
    streams: &Arc<Semaphore>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(max_header_list_size(&app))
        .max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    if !app.settings.keep_alive.is_zero() {
        builder.keep_alive_interval(Some(app.settings.keep_alive));
    }
    let activity = Arc::new(Activity { state: Mutex::new((0, Instant::now())) });
    let service_activity = activity.clone();
    let service_app = app.clone();
    let info = Arc::new(info);
    let streams = streams.clone();
    let cap = RequestCap::new(app.settings.keep_alive_max_requests);
    // Woken by the stream that reaches --keep-alive-max-requests.
    let capped = Arc::new(Notify::new());
    let service_capped = capped.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let app = service_app.clone();
        let info = info.clone();
        let guard = service_activity.begin();
        if cap.count() {
            service_capped.notify_one();
        }
        let streams = streams.clone();
        async move {
            let Some(permit) = stream_permit(&streams, app.settings.request_timeout).await else {
                crate::log_warning!(
                    "HTTP/2 stream {} {} waited --timeout for a free instance slot (--instance-slots); answered 503",
                    request.method(),
                    request.uri().path()
                );
                let record = app.access_log.as_ref().map(|log| {
                    let mut record = AccessRecord::new(log.clone(), info.remote.clone(), &request);
                    record.client_subject = info.client_subject.clone();
                    record
                });
                let response = error_response(http::StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable\n", record);
                return Ok(response.map(|inner| TrackedBody { inner, _guard: guard, _permit: None }));
            };
            let response = app.handle(request, &info).await;
            Ok::<_, std::convert::Infallible>(response.map(|inner| TrackedBody {
                inner,
                _guard: guard,
                _permit: Some(permit),
            }))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Idle connections close after --keep-alive; with --keep-alive 0 (no idle HTTP/1.1
    // connections), a new HTTP/2 connection still gets 2 s to open its first streams.
    let idle = app.settings.keep_alive.max(Duration::from_secs(2));
    // Set once GOAWAY is sent for a drain or idleness: the connection is dropped if it has not
    // closed by then.
    let mut closing_by: Option<Instant> = None;
    // Set once GOAWAY is sent for the request cap: open streams run to their end (their own
    // deadlines bound them), then the idle bound shrinks to SHUTDOWN_GRACE.
    let mut cap_reached = false;
    if *draining.borrow() {
        connection.as_mut().graceful_shutdown();
        closing_by = Some(Instant::now() + app.settings.graceful_timeout);
    }
    loop {
        let idle_now = if cap_reached { SHUTDOWN_GRACE } else { idle };
        let wake_at = match closing_by {
            Some(at) => at,
            None => activity.idle_deadline(idle_now).unwrap_or_else(|| Instant::now() + idle_now),
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    crate::log_debug!("HTTP/2 connection closed with an error: {e}");
                }
                return;
            }
            changed = draining.changed(), if closing_by.is_none() => {
                if changed.is_err() || *draining.borrow() {
                    connection.as_mut().graceful_shutdown();
                    closing_by = Some(Instant::now() + app.settings.graceful_timeout);
                }
            }
            _ = capped.notified(), if !cap_reached && closing_by.is_none() => {
                connection.as_mut().graceful_shutdown();
                cap_reached = true;
            }
            _ = tokio::time::sleep_until(wake_at) => {
                if closing_by.is_some() {
                    crate::log_debug!("HTTP/2 connection did not close after GOAWAY; dropping it");
                    return;
                }
                if activity.idle_deadline(idle_now).is_some_and(|at| at <= Instant::now()) {
                    connection.as_mut().graceful_shutdown();
                    closing_by = Some(Instant::now() + SHUTDOWN_GRACE);
                }
            }
        }
    }
}
