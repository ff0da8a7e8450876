//! One HTTP/1.1 connection via hyper: Gunicorn's request-head limits, keep-alive and header-read
//! timeouts, a cap on requests per connection (`--keep-alive-max-requests`), and a graceful close
//! when the worker drains (after the first request of a connection accepted just before the
//! drain). Every request goes through [`Front::respond`]; connection errors are logged.
use crate::config::settings::Settings;
use crate::http::request_cap::{mark_last, RequestCap, Turn};
use crate::http::socket_timers::{ConnectionState, ResponseDoneBody, TimedSocket};
use crate::http::{limits, ConnectionInfo, Front};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::pin::Pin;
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
        .max_buf_size(limits::h1_read_buffer(&settings.limits));
    builder
}

/// The socket with `--header-timeout` and the slow-reader deadline (`--timeout` without write
/// progress), and the state the service reports into.
pub fn timed_socket<I>(io: I, settings: &Settings) -> (TimedSocket<I>, Arc<ConnectionState>) {
    let state = ConnectionState::new();
    (TimedSocket::new(io, state.clone(), settings.header_timeout, settings.request_timeout), state)
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
pub async fn serve_connection<I>(io: I, front: Arc<Front>, info: ConnectionInfo, draining: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http1_builder(&front.settings);
    let (io, state) = timed_socket(io, &front.settings);
    let peer = info.remote.clone();
    let first = Arc::new(FirstRequest::default());
    let cap = Arc::new(RequestCap::new(front.settings.keep_alive_max_requests));
    let info = Arc::new(info);
    let service_first = first.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let (front, info, state) = (front.clone(), info.clone(), state.clone());
        if !service_first.seen.swap(true, Ordering::Relaxed) {
            service_first.notify.notify_one();
        }
        state.head_received();
        // Every response counts, the guest's and the host's own (413, 503, 504...).
        let turn = cap.count_request();
        let version = request.version();
        async move {
            let mut response = front.respond(request, &info, state.framing_error(), None).await;
            if turn == Turn::Last {
                mark_last(&mut response, version);
            }
            Ok::<_, std::convert::Infallible>(response.map(|body| ResponseDoneBody::new(body, state)))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    run_until_drained(connection, |c| c.graceful_shutdown(), &first, draining, &peer).await
}

/// Drives `connection` to its end. Once the worker drains, the connection shuts down gracefully
/// as soon as its first request has arrived, or after [`FIRST_REQUEST_GRACE`] without one.
async fn run_until_drained<C>(
    connection: C,
    shut_down_gracefully: fn(Pin<&mut C>),
    first: &FirstRequest,
    mut draining: watch::Receiver<bool>,
    peer: &str,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let mut drain_seen_at = (*draining.borrow()).then(tokio::time::Instant::now);
    let mut shut_down = false;
    loop {
        if let (Some(_), false) = (drain_seen_at, shut_down) {
            if first.seen.load(Ordering::Relaxed) {
                // Keep-alive off: the in-flight request finishes, then the connection closes.
                shut_down_gracefully(connection.as_mut());
                shut_down = true;
            }
        }
        let grace_end = drain_seen_at.map_or_else(tokio::time::Instant::now, |at| at + FIRST_REQUEST_GRACE);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    log_connection_error(peer, &e);
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
                shut_down_gracefully(connection.as_mut());
                shut_down = true;
            }
        }
    }
}
