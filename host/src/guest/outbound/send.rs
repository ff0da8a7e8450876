//! One outbound request: allow-list check, limits, our own DNS resolution and address check,
//! a connection to exactly the checked address (TLS with SNI = the host name), HTTP/1.1, and
//! timeouts capped by the inbound request's clock.
use super::policy::{names_address, permits};
use super::target::{BadTarget, Scheme, Target};
use super::{IoFuture, Outbound, TryPermit};
use crate::guest::clock::RequestClock;
use crate::log::escape::escaped;
use crate::log_warning;
use crate::net::address::is_global;
use crate::net::host::Host;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// First-byte and between-bytes timeout when neither the guest nor the request clock sets one
/// (only with `--timeout 0` and no `--max-request-time`).
const UNBOUNDED_REQUEST_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);

/// Share of the inbound request's remaining time kept back from an outbound timeout, so the
/// guest still has a moment to answer its client after an outbound timeout (at most 500 ms).
const MARGIN_DIVISOR: u32 = 10;
const MAX_MARGIN: Duration = Duration::from_millis(500);

/// `wanted`, cut to the inbound request's remaining time less a small margin.
fn capped(wanted: Duration, clock: &RequestClock) -> Duration {
    match clock.deadline() {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            wanted.min(left - (left / MARGIN_DIVISOR).min(MAX_MARGIN))
        }
        None => wanted,
    }
}

/// What one `send_request` call needs from its instance.
pub struct Attempt {
    pub outbound: Arc<Outbound>,
    pub request_id: Arc<str>,
    pub clock: Arc<RequestClock>,
    pub in_flight: Arc<super::TrySemaphore>,
}

impl Attempt {
    /// `wanted`, cut to what is left of the inbound request's time.
    fn cap(&self, wanted: Duration) -> Duration {
        capped(wanted, &self.clock)
    }

    /// One permit from the instance's and one from the worker's outbound budget.
    fn acquire(&self, target: &Target) -> Result<[TryPermit; 2], Error> {
        let settings = &self.outbound.settings;
        let Some(request) = self.in_flight.try_acquire() else {
            log_warning!(
                "request {}: outbound request to {} refused: {} already in flight (--outbound-max-concurrency)",
                self.request_id,
                escaped(&target.to_string()),
                settings.max_concurrency
            );
            return Err(Error::ConnectionLimitReached);
        };
        let Some(connection) = self.outbound.connections.try_acquire() else {
            log_warning!(
                "request {}: outbound request to {} refused: the worker has {} outbound connections open (--outbound-max-connections)",
                self.request_id,
                escaped(&target.to_string()),
                settings.max_connections
            );
            return Err(Error::ConnectionLimitReached);
        };
        Ok([request, connection])
    }
}

/// The checks made as soon as the guest hands a request over, before any task runs: a target
/// no pattern allows, or one over the limits, is refused here.
pub fn admit(attempt: &Attempt, request: &Request<WasiBody>) -> Result<(Target, [TryPermit; 2]), Error> {
    let target = match Target::from_uri(request.uri()) {
        Ok(target) => target,
        Err(BadTarget::Unusable) => return Err(Error::HttpRequestUriInvalid),
        Err(BadTarget::Userinfo) => {
            // The credentials themselves are never logged.
            let authority = request.uri().authority().map_or("", |a| a.as_str());
            let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
            log_warning!(
                "request {}: outbound request to {} denied: the URI carries credentials (userinfo@), which are never forwarded; send an Authorization header instead",
                attempt.request_id,
                escaped(host)
            );
            return Err(Error::HttpRequestDenied);
        }
    };
    if !permits(&attempt.outbound.settings.allow, &target) {
        log_warning!(
            "request {}: outbound request to {} denied: no --allow-outbound pattern allows it",
            attempt.request_id,
            escaped(&target.to_string())
        );
        return Err(Error::HttpRequestDenied);
    }
    let permits = attempt.acquire(&target)?;
    Ok((target, permits))
}

/// Sends one admitted request; every failure is an `Error` the guest sees as a wasi-http error
/// code. The permits are held until the response body is done.
pub async fn send(
    attempt: Attempt,
    target: Target,
    permits: [TryPermit; 2],
    mut request: Request<WasiBody>,
    options: RequestOptions,
) -> Result<(Response<WasiBody>, IoFuture), Error> {
    let settings = &attempt.outbound.settings;
    let connect_timeout = options.connect_timeout.map_or(settings.connect_timeout, |t| t.min(settings.connect_timeout));
    let connect_deadline = tokio::time::Instant::now() + attempt.cap(connect_timeout);

    let addresses = resolve(&target, connect_deadline).await?;
    let allowed = checked_addresses(&attempt, &target, &addresses)?;
    let stream = connect(&allowed, connect_deadline).await?;
    let _ = stream.set_nodelay(true);
    let stream: Box<dyn Stream> = match target.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => {
            let config = attempt.outbound.tls_config().map_err(|e| Error::InternalError(Some(e)))?;
            let name = match &target.host {
                Host::Name(name) => {
                    rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| Error::HttpRequestUriInvalid)?
                }
                Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
            };
            let handshake = tokio_rustls::TlsConnector::from(config).connect(name, stream);
            let tls = tokio::time::timeout_at(connect_deadline, handshake)
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Tls)?;
            Box::new(tls)
        }
    };
    let (mut sender, connection) =
        tokio::time::timeout_at(connect_deadline, hyper::client::conn::http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;

    // The request goes to the origin in origin form: only the path and query.
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

    let first_byte = attempt.cap(options.first_byte_timeout.unwrap_or(UNBOUNDED_REQUEST_RESPONSE_TIMEOUT));
    let mut connection = Box::pin(connection);
    let mut connection_result = None;
    let response = sender.send_request(request);
    let first_byte_deadline = tokio::time::sleep(first_byte);
    tokio::pin!(response, first_byte_deadline);
    // Drive the connection while waiting for the response head; it may finish first (a server
    // that answers and closes), then the response is already there or has failed.
    let response = loop {
        tokio::select! {
            biased;
            response = &mut response => break response?,
            result = &mut connection, if connection_result.is_none() => connection_result = Some(result),
            _ = &mut first_byte_deadline => return Err(Error::ConnectionReadTimeout),
        }
    };
    drop(sender);

    let between_bytes = options.between_bytes_timeout.unwrap_or(UNBOUNDED_REQUEST_RESPONSE_TIMEOUT);
    let clock = attempt.clock.clone();
    let response = response.map(|body| TimedBody::new(body, between_bytes, clock).boxed_unsync());
    // The connection (and its permits) lives until the response body is done or dropped.
    let io = async move {
        let _permits = permits;
        match connection_result {
            Some(result) => result,
            None => connection.await,
        }
        .map_err(Error::from)
    };
    Ok((response, Box::new(io)))
}

/// The target's addresses: the IP literal itself, or what the name resolves to (once).
async fn resolve(target: &Target, deadline: tokio::time::Instant) -> Result<Vec<SocketAddr>, Error> {
    match &target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(name) => {
            let lookup = tokio::net::lookup_host((name.as_str(), target.port));
            match tokio::time::timeout_at(deadline, lookup).await {
                Err(_) => Err(Error::DnsTimeout),
                Ok(Err(e)) => Err(Error::DnsError { rcode: Some(e.to_string()), info_code: None }),
                Ok(Ok(addresses)) => Ok(addresses.collect()),
            }
        }
    }
}

/// The addresses a guest may reach: global ones, and others only if the allow-list names them.
fn checked_addresses(attempt: &Attempt, target: &Target, addresses: &[SocketAddr]) -> Result<Vec<SocketAddr>, Error> {
    let allow = &attempt.outbound.settings.allow;
    let allowed: Vec<SocketAddr> =
        addresses.iter().copied().filter(|a| is_global(a.ip()) || names_address(allow, target, a.ip())).collect();
    if addresses.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    if allowed.is_empty() {
        let refused: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
        log_warning!(
            "request {}: outbound request to {} refused: destination address {} is not public; name it literally in --allow-outbound to allow it",
            attempt.request_id,
            escaped(&target.to_string()),
            refused.join(",")
        );
        return Err(Error::DestinationIpProhibited);
    }
    Ok(allowed)
}

/// Connects to the first checked address that answers, within the connect deadline.
async fn connect(addresses: &[SocketAddr], deadline: tokio::time::Instant) -> Result<TcpStream, Error> {
    let mut last_error = None;
    for address in addresses {
        match tokio::time::timeout_at(deadline, TcpStream::connect(*address)).await {
            Err(_) => return Err(Error::ConnectionTimeout),
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last_error = Some(e),
        }
    }
    Err(match last_error.map(|e| e.kind()) {
        Some(std::io::ErrorKind::ConnectionRefused) => Error::ConnectionRefused,
        Some(std::io::ErrorKind::HostUnreachable | std::io::ErrorKind::NetworkUnreachable) => {
            Error::DestinationUnavailable
        }
        Some(std::io::ErrorKind::TimedOut) => Error::ConnectionTimeout,
        _ => Error::ConnectionTerminated,
    })
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A response body that fails with `ConnectionReadTimeout` when no frame arrives within the
/// between-bytes timeout, itself cut to what is left of the inbound request's time.
struct TimedBody {
    inner: hyper::body::Incoming,
    between_bytes: Duration,
    clock: Arc<RequestClock>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: hyper::body::Incoming, between_bytes: Duration, clock: Arc<RequestClock>) -> TimedBody {
        let timer = Box::pin(tokio::time::sleep(Self::allowance(between_bytes, &clock)));
        TimedBody { inner, between_bytes, clock, timer }
    }

    fn allowance(between_bytes: Duration, clock: &RequestClock) -> Duration {
        capped(between_bytes, clock)
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + Self::allowance(self.between_bytes, &self.clock);
                self.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
