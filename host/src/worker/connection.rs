//! One client connection: HTTP/1.1 via hyper with Gunicorn's request-head limits, keep-alive and
//! header-read timeouts, and a graceful close when the worker drains (after the first request of
//! a connection accepted just before the drain).
use crate::guest::handle::{AppRuntime, ConnectionInfo};
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

/// hyper's read buffer: enough for the longest allowed head (a request line plus every field at
/// its size limit), never less than hyper's minimum.
fn max_head_bytes(app: &AppRuntime) -> usize {
    let limits = app.settings.limits;
    let field = if limits.field_size == 0 { 64 * 1024 } else { limits.field_size + 2 };
    let line = if limits.line == 0 { 64 * 1024 } else { limits.line + 2 };
    (line + field * limits.fields.min(1024)).clamp(8192, 4 << 20)
}

/// Serves requests on `io` until the client closes, the connection idles out, or the worker
/// drains (then the in-flight request finishes and the connection closes).
pub async fn serve<I>(io: I, app: Arc<AppRuntime>, info: ConnectionInfo, mut draining: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = &app.settings;
    let keep_alive = settings.keep_alive;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(!keep_alive.is_zero())
        .header_read_timeout(if keep_alive.is_zero() { HEAD_READ_TIMEOUT_WITHOUT_KEEP_ALIVE } else { keep_alive })
        .max_headers(settings.limits.fields)
        .max_buf_size(max_head_bytes(&app));

    let service_app = app.clone();
    let info = Arc::new(info);
    let first = Arc::new(FirstRequest::default());
    let service_first = first.clone();
    let service = hyper::service::service_fn(move |request| {
        let app = service_app.clone();
        let info = info.clone();
        if !service_first.seen.swap(true, Ordering::Relaxed) {
            service_first.notify.notify_one();
        }
        async move { Ok::<_, std::convert::Infallible>(app.handle(request, &info).await) }
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
                    crate::log_debug!("connection closed with an error: {e}");
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
