//! One HTTP/2 connection (ALPN h2 on TLS, or prior knowledge on a plain bind): every stream is
//! a request served like an HTTP/1.1 one (own instance, deadline, access-log line), under
//! hyper's stream limits; a drain sends GOAWAY and lets the open streams finish.
use crate::guest::handle::{AppRuntime, ConnectionInfo};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Streams one connection may have open at once (each holds a guest instance while it runs).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Streams a client may open and reset before the server has accepted them (rapid reset,
/// CVE-2023-44487): beyond it the connection is closed with ENHANCE_YOUR_CALM.
pub const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// How long a ping may go unanswered before the connection counts as dead.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The largest decoded header list a stream may send: the request-head limits' worth.
fn max_header_list_size(app: &AppRuntime) -> u32 {
    let limits = app.settings.limits;
    let field = if limits.field_size == 0 { 64 * 1024 } else { limits.field_size + 32 };
    (field * limits.fields.min(1024)).clamp(16 * 1024, 4 << 20) as u32
}

/// Serves HTTP/2 on `io` until the client closes or the worker drains.
pub async fn serve<I>(io: I, app: Arc<AppRuntime>, info: ConnectionInfo, mut draining: watch::Receiver<bool>)
where
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
    let service_app = app.clone();
    let info = Arc::new(info);
    let service = hyper::service::service_fn(move |request| {
        let app = service_app.clone();
        let info = info.clone();
        async move { Ok::<_, std::convert::Infallible>(app.handle(request, &info).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut shut_down = false;
    if *draining.borrow() {
        connection.as_mut().graceful_shutdown();
        shut_down = true;
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    crate::log_debug!("HTTP/2 connection closed with an error: {e}");
                }
                return;
            }
            changed = draining.changed(), if !shut_down => {
                if changed.is_err() || *draining.borrow() {
                    connection.as_mut().graceful_shutdown();
                    shut_down = true;
                }
            }
        }
    }
}
