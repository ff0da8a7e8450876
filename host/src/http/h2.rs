//! One HTTP/2 connection (ALPN h2 on TLS, or prior knowledge on a plain bind): every stream is
//! a request served like an HTTP/1.1 one (own instance, deadline, access-log line), under
//! hyper's stream limits; a drain, `--keep-alive` seconds without an open stream, or the
//! `--keep-alive-max-requests`th stream sends GOAWAY and lets the open streams finish. Streams
//! beyond the worker's free instance slots wait for one (up to `--timeout`) instead of getting
//! 503: one client can open many streams at once.
use crate::config::settings::Settings;
use crate::guest::body::ResponseBody;
use crate::guest::instances::slots_for_requests;
use crate::http::admission::{self, Refusal};
use crate::http::request_cap::{RequestCap, Turn};
use crate::http::{limits, ConnectionInfo, Front};
use crate::log::escape::RequestLine;
use bytes::Bytes;
use http::Response;
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

/// A response body that keeps its stream counted as open.
struct TrackedBody {
    inner: ResponseBody,
    _guard: StreamGuard,
}

/// Streams a worker runs at once: the requests that can each be sure of an instance slot.
pub fn stream_permits(settings: &Settings) -> usize {
    slots_for_requests(settings.instance_slots, settings.instance_reuse)
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

/// hyper's HTTP/2 server with our stream, header and keep-alive limits.
fn builder(settings: &Settings) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_header_list_size(limits::h2_header_list(&settings.limits))
        .max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESET_STREAMS))
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    if !settings.keep_alive.is_zero() {
        builder.keep_alive_interval(Some(settings.keep_alive));
    }
    builder
}

/// One stream: waits for an instance-slot permit (503 after `--timeout`), then goes through the
/// front like any request. The permit goes with the request to its guest, which lets go of it
/// only once its instance has freed its slot (or gone idle): the end of a response body comes
/// before that, and a stream let in then would find the slot still taken. The response body
/// holds the stream's activity guard.
async fn serve_stream(
    front: Arc<Front>,
    info: Arc<ConnectionInfo>,
    request: hyper::Request<hyper::body::Incoming>,
    guard: StreamGuard,
) -> Response<TrackedBody> {
    let Some(permit) = stream_permit(&front.h2_streams, front.settings.request_timeout).await else {
        let record = front.access_record(&request, &info);
        let line = RequestLine::of(&request);
        let response = admission::refuse(Refusal::NO_STREAM_SLOT, &info.remote, &line, record);
        return response.map(|inner| TrackedBody { inner, _guard: guard });
    };
    let response = front.respond(request, &info, None, Some(permit)).await;
    response.map(|inner| TrackedBody { inner, _guard: guard })
}

/// Serves HTTP/2 on `io` until the client closes or the worker drains.
pub async fn serve_connection<I>(io: I, front: Arc<Front>, info: ConnectionInfo, draining: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity { state: Mutex::new((0, Instant::now())) });
    let cap = RequestCap::new(front.settings.keep_alive_max_requests);
    // Woken by the stream that reaches --keep-alive-max-requests.
    let capped = Arc::new(Notify::new());
    let settings = front.settings.clone();
    let (service_activity, service_capped, info) = (activity.clone(), capped.clone(), Arc::new(info));
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let guard = service_activity.begin();
        if cap.count_request() == Turn::Last {
            service_capped.notify_one();
        }
        let served = serve_stream(front.clone(), info.clone(), request, guard);
        async move { Ok::<_, std::convert::Infallible>(served.await) }
    });
    let connection = builder(&settings).serve_connection(TokioIo::new(io), service);
    let lifetime = Lifetime::new(&settings, activity);
    lifetime.run(connection, |c| c.graceful_shutdown(), draining, &capped).await
}

/// When an HTTP/2 connection ends: GOAWAY on drain, on idleness and after the request cap, and a
/// drop if the client has not closed within the grace after GOAWAY.
struct Lifetime {
    activity: Arc<Activity>,
    /// `--keep-alive` without an open stream, but at least 2 s for a new connection's first
    /// streams (with `--keep-alive 0`, no idle HTTP/1.1 connections are kept).
    idle: Duration,
    graceful_timeout: Duration,
    /// Set once GOAWAY is sent for a drain or idleness: the connection is dropped if it has not
    /// closed by then.
    closing_by: Option<Instant>,
    /// Set once GOAWAY is sent for the request cap: open streams run to their end (their own
    /// deadlines bound them), then the idle bound shrinks to SHUTDOWN_GRACE.
    cap_reached: bool,
}

impl Lifetime {
    fn new(settings: &Settings, activity: Arc<Activity>) -> Lifetime {
        Lifetime {
            activity,
            idle: settings.keep_alive.max(Duration::from_secs(2)),
            graceful_timeout: settings.graceful_timeout,
            closing_by: None,
            cap_reached: false,
        }
    }

    fn idle_bound(&self) -> Duration {
        if self.cap_reached {
            SHUTDOWN_GRACE
        } else {
            self.idle
        }
    }

    /// When to look again: the GOAWAY grace's end, or when the connection turns idle.
    fn wake_at(&self) -> Instant {
        let idle = self.idle_bound();
        self.closing_by.unwrap_or_else(|| self.activity.idle_deadline(idle).unwrap_or_else(|| Instant::now() + idle))
    }

    /// Drives `connection` to its end; `go_away` sends GOAWAY (hyper's graceful shutdown).
    async fn run<C>(
        mut self,
        connection: C,
        go_away: fn(Pin<&mut C>),
        mut draining: watch::Receiver<bool>,
        capped: &Notify,
    ) where
        C: std::future::Future<Output = Result<(), hyper::Error>>,
    {
        tokio::pin!(connection);
        if *draining.borrow() {
            go_away(connection.as_mut());
            self.closing_by = Some(Instant::now() + self.graceful_timeout);
        }
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        crate::log_debug!("HTTP/2 connection closed with an error: {e}");
                    }
                    return;
                }
                changed = draining.changed(), if self.closing_by.is_none() => {
                    if changed.is_err() || *draining.borrow() {
                        go_away(connection.as_mut());
                        self.closing_by = Some(Instant::now() + self.graceful_timeout);
                    }
                }
                _ = capped.notified(), if !self.cap_reached && self.closing_by.is_none() => {
                    go_away(connection.as_mut());
                    self.cap_reached = true;
                }
                _ = tokio::time::sleep_until(self.wake_at()) => {
                    if self.closing_by.is_some() {
                        crate::log_debug!("HTTP/2 connection did not close after GOAWAY; dropping it");
                        return;
                    }
                    if self.activity.idle_deadline(self.idle_bound()).is_some_and(|at| at <= Instant::now()) {
                        go_away(connection.as_mut());
                        self.closing_by = Some(Instant::now() + SHUTDOWN_GRACE);
                    }
                }
            }
        }
    }
}
