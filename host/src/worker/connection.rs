//! One client connection: HTTP/1.1 via hyper with Gunicorn's request-head limits, keep-alive and
//! header-read timeouts, a cap on requests per connection (`--keep-alive-max-requests`), and a
//! graceful close when the worker drains (after the first request of a connection accepted just
//! before the drain). Requests the HTTP layer refuses are logged.
use crate::config::settings::Settings;
use crate::guest::handle::{AppRuntime, ConnectionInfo};
use crate::worker::guard::{GuardedIo, HeadPhase, PhaseBody};
use crate::worker::request_cap::{mark_last, RequestCap};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

/// Bound on reading a request head when keep-alive is off.
const HEAD_READ_TIMEOUT_WITHOUT_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// How long a draining worker waits for the first request of a connection it has accepted but not
/// yet read from. hyper's graceful shutdown closes such a connection at once, which would drop a
/// request the client has already sent; a connection that stays silent this long is closed.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(2);

/// Set once the connection's first request head has been read.
#[derive(Default)]
struct FirstRequest {
    seen: AtomicBool,
    notify: Notify,
}

/// Most bytes a request head may take (request line and all fields). Each connection's read
/// buffer grows to this at most, so 1000 connections dribbling heads hold at most 64 MiB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// hyper's read buffer: enough for the longest allowed head (a request line plus every field at
/// its size limit) up to [`MAX_HEAD_BYTES`], never less than hyper's minimum.
fn max_head_bytes(settings: &Settings) -> usize {
    let limits = settings.limits;
    let field = if limits.field_size == 0 { MAX_HEAD_BYTES } else { limits.field_size + 2 };
    let line = if limits.line == 0 { MAX_HEAD_BYTES } else { limits.line + 2 };
    line.saturating_add(field.saturating_mul(limits.fields)).clamp(8192, MAX_HEAD_BYTES)
}

/// The HTTP/1 server settings every connection uses (also the fuzz target's).
pub fn http1_builder(settings: &Settings) -> http1::Builder {
    let keep_alive = settings.keep_alive;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(!keep_alive.is_zero())
        // hyper's own head timer runs from the end of the previous response: the keep-alive
        // idle bound. `GuardedIo` times the head itself (--header-timeout).
        .header_read_timeout(if keep_alive.is_zero() { HEAD_READ_TIMEOUT_WITHOUT_KEEP_ALIVE } else { keep_alive })
        .max_headers(settings.limits.fields)
        .max_buf_size(max_head_bytes(settings));
    builder
}

/// The socket with `--header-timeout` and the slow-reader deadline (`--timeout` without write
/// progress), and the phase the service reports into.
pub fn guard_io<I>(io: I, settings: &Settings) -> (GuardedIo<I>, Arc<HeadPhase>) {
    let phase = HeadPhase::new();
    (GuardedIo::new(io, phase.clone(), settings.header_timeout, settings.request_timeout), phase)
}

/// One error-log line for a connection that ended in an error: a request the HTTP layer refused
/// (it answers 400/431/... itself) or a guard deadline is a warning with the peer; a client that
/// merely went away is debug.
pub fn log_connection_error(peer: &str, error: &hyper::Error) {
    let io_cause = std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>());
    let reason = crate::log::escape::escaped(&match io_cause {
        Some(io) => io.to_string(),
        None => error.to_string(),
    });
    if error.is_parse() || error.is_parse_too_large() || error.is_parse_status() {
        crate::log_warning!("{peer}: request refused by the HTTP layer: {reason}");
    } else if io_cause
        .is_some_and(|io| matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::InvalidData))
    {
        crate::log_warning!("{peer}: connection closed: {reason}");
    } else {
        crate::log_debug!("{peer}: connection closed with an error: {reason}");
    }
}

/// Serves requests on `io` until the client closes, the connection idles out, or the worker
/// drains (then the in-flight request finishes and the connection closes).
pub async fn serve<I>(io: I, app: Arc<AppRuntime>, info: ConnectionInfo, mut draining: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http1_builder(&app.settings);
    let (io, phase) = guard_io(io, &app.settings);
    let peer = info.remote.clone();
    let service_app = app.clone();
    let info = Arc::new(info);
    let first = Arc::new(FirstRequest::default());
    let service_first = first.clone();
    let cap = Arc::new(RequestCap::new(app.settings.keep_alive_max_requests));
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let app = service_app.clone();
        let info = info.clone();
        if !service_first.seen.swap(true, Ordering::Relaxed) {
            service_first.notify.notify_one();
        }
        phase.head_received();
        let phase = phase.clone();
        // Every response counts, the guest's and the host's own (413, 503, 504...).
        let last = cap.count();
        let version = request.version();
        async move {
            let mut response = match phase.framing_error() {
                Some(reason) => app.refuse(request, &info, reason),
                None => app.handle(request, &info).await,
            };
            if last {
                mark_last(&mut response, version);
            }
            Ok::<_, std::convert::Infallible>(response.map(|body| PhaseBody::new(body, phase)))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // Draining: set when the worker drains; the graceful shutdown waits for the first request.
    let mut drain_seen_at = (*draining.borrow()).then(tokio::time::Instant::now);
    let mut shut_down = false;
    loop {
        if let (Some(_), false) = (drain_seen_at, shut_down) {
            if first.seen.load(Ordering::Relaxed) {
                // Keep-alive off: the in-flight request finishes, then the connection closes.
                connection.as_mut().graceful_shutdown();
                shut_down = true;
            }
        }
        let grace_end = drain_seen_at.map_or_else(tokio::time::Instant::now, |at| at + FIRST_REQUEST_GRACE);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    log_connection_error(&peer, &e);
                }
                return;
            }
            changed = draining.changed(), if drain_seen_at.is_none() => {
                if changed.is_err() || *draining.borrow() {
                    drain_seen_at = Some(tokio::time::Instant::now());
                }
            }
            _ = first.notify.notified(), if drain_seen_at.is_some() && !shut_down => {}
            _ = tokio::time::sleep_until(grace_end), if drain_seen_at.is_some() && !shut_down => {
                connection.as_mut().graceful_shutdown();
                shut_down = true;
            }
        }
    }
}
