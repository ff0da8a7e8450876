//! Outbound HTTP from guests (`wasi:http/outgoing-handler`): denied unless `--allow-outbound`
//! allows the target, every resolved address checked (no loopback, private, link-local or
//! metadata addresses unless named literally), the checked address dialled, and every request
//! bounded in time and in number.
pub mod policy;
mod send;
pub mod target;

use crate::config::outbound::OutboundSettings;
use crate::guest::clock::RequestClock;
use crate::metrics::labels::OutboundResult;
use crate::metrics::Recorder;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// A worker's outbound client: what every request of the worker shares, the settings, the
/// worker's count of open outbound connections and its TLS client configuration (built on
/// first use). Each worker builds its own at boot (the arbiter never sends outbound requests).
#[derive(Debug)]
pub struct Outbound {
    pub settings: OutboundSettings,
    connections: Arc<TrySemaphore>,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Outbound {
    /// The outbound client for `settings`, with no connection open yet.
    pub fn new(settings: OutboundSettings) -> Arc<Outbound> {
        let connections = TrySemaphore::new(settings.max_connections);
        Arc::new(Outbound { settings, connections, tls: OnceLock::new() })
    }

    /// The TLS client configuration: rustls with ring (the provider wasmtime-wasi-http already
    /// brings) and the webpki root certificates.
    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls
            .get_or_init(|| {
                let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(Arc::new(config))
            })
            .clone()
    }
}

/// Our `WasiHttpHooks`: the one place every outgoing request of a guest passes.
pub struct OutboundHooks {
    outbound: Arc<Outbound>,
    request_id: Arc<str>,
    clock: Arc<RequestClock>,
    /// Outbound requests this instance has in flight.
    in_flight: Arc<TrySemaphore>,
    /// `rustcorn_outbound_requests_total`.
    metrics: Recorder,
}

impl OutboundHooks {
    pub fn new(
        outbound: Arc<Outbound>,
        request_id: Arc<str>,
        clock: Arc<RequestClock>,
        metrics: Recorder,
    ) -> OutboundHooks {
        let in_flight = TrySemaphore::new(outbound.settings.max_concurrency);
        OutboundHooks { outbound, request_id, clock, in_flight, metrics }
    }

    /// A kept instance starts its next request (--instance-reuse).
    pub fn begin_request(&mut self, request_id: Arc<str>, clock: Arc<RequestClock>) {
        self.request_id = request_id;
        self.clock = clock;
    }
}

type IoFuture = Box<dyn std::future::Future<Output = Result<(), Error>> + Send>;
type SendFuture = Box<dyn std::future::Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_errors: IoFuture,
    ) -> SendFuture {
        let attempt = send::Attempt {
            outbound: self.outbound.clone(),
            request_id: self.request_id.clone(),
            clock: self.clock.clone(),
            in_flight: self.in_flight.clone(),
        };
        let metrics = self.metrics;
        match send::admit(&attempt, &request) {
            Ok((target, permits)) => Box::new(async move {
                let result = send::send(attempt, target, permits, request, options.unwrap_or_default()).await;
                metrics.outbound(result_label(result.as_ref().err()));
                result
            }),
            Err(error) => {
                metrics.outbound(result_label(Some(&error)));
                Box::new(std::future::ready(Err(error)))
            }
        }
    }
}

/// The `result` label of an outgoing request: refused by the allow-list or the address check,
/// failed otherwise, or answered.
fn result_label(error: Option<&Error>) -> OutboundResult {
    match error {
        None => OutboundResult::Ok,
        Some(Error::HttpRequestDenied | Error::DestinationIpProhibited) => OutboundResult::Denied,
        Some(_) => OutboundResult::Error,
    }
}

/// A semaphore that is only ever tried: a bounded count of things in use whose `try_acquire`
/// fails at once instead of waiting (an outbound request over a limit is refused, not queued).
#[derive(Debug)]
pub struct TrySemaphore {
    used: AtomicUsize,
    max: usize,
}

impl TrySemaphore {
    pub fn new(max: usize) -> Arc<TrySemaphore> {
        Arc::new(TrySemaphore { used: AtomicUsize::new(0), max })
    }

    pub fn try_acquire(self: &Arc<Self>) -> Option<TryPermit> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used < self.max).then_some(used + 1))
            .ok()
            .map(|_| TryPermit(self.clone()))
    }

    #[cfg(test)]
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// One unit of a `TrySemaphore`, given back when dropped.
#[derive(Debug)]
pub struct TryPermit(Arc<TrySemaphore>);

impl Drop for TryPermit {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_semaphore_refuses_beyond_its_max_and_frees_on_drop() {
        let semaphore = TrySemaphore::new(2);
        let a = semaphore.try_acquire().unwrap();
        let _b = semaphore.try_acquire().unwrap();
        assert!(semaphore.try_acquire().is_none());
        drop(a);
        assert_eq!(semaphore.in_use(), 1);
        assert!(semaphore.try_acquire().is_some());
    }
}
