//! The HTTP front: everything between an accepted connection and the guest. It negotiates TLS and
//! the HTTP version (`negotiate`), runs HTTP/1.1 (`h1`) and HTTP/2 (`h2`) connections with their
//! socket timers (`socket_timers`) and raw-byte framing check (`framing`), and admits or refuses
//! every request of both versions in one place (`admission`, sizes from `limits`). `guest` is
//! handed only admitted requests and knows nothing of HTTP versions, hyper builders or timers.
pub mod admission;
pub mod dry_run;
pub mod framing;
pub mod h1;
pub mod h2;
pub mod limits;
pub mod negotiate;
pub mod request_body;
pub mod request_cap;
pub mod socket_timers;
pub mod tls;

use crate::config::settings::Settings;
use crate::config::tls::HttpProtocols;
use crate::guest::body::ResponseBody;
use crate::guest::handle::{AdmittedRequest, AppRuntime, Handled};
use crate::guest::upload::BodyCut;
use crate::log::access::{AccessLog, AccessRecord};
use crate::log::escape::RequestLine;
use crate::log::request_figures::RequestFigures;
use crate::metrics::queue_time;
use admission::Refusal;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use request_body::{BodyError, RequestBody};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a worker's connections share: the app, the settings and the per-connection machinery.
pub struct Front {
    pub app: Arc<AppRuntime>,
    pub settings: Arc<Settings>,
    access_log: Option<Arc<AccessLog>>,
    /// TLS for TCP binds (`--certfile`).
    tls: Option<tls::TlsAcceptor>,
    /// Versions on plain connections (TCP without TLS, unix sockets).
    plain: HttpProtocols,
    /// HTTP/2 streams this worker runs at once, across its connections (see `h2::stream_permits`).
    h2_streams: Arc<Semaphore>,
    /// Bytes of request bodies read ahead of their guests (see `request_body`).
    read_ahead_budget: Arc<Semaphore>,
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

impl Front {
    /// The front for `app`; `tls` is the acceptor built at boot (None without `--certfile`).
    pub fn new(app: Arc<AppRuntime>, access_log: Option<Arc<AccessLog>>, tls: Option<tls::TlsAcceptor>) -> Front {
        let settings = app.settings.clone();
        Front {
            plain: settings.protocols(false),
            h2_streams: Arc::new(Semaphore::new(h2::stream_permits(&settings))),
            read_ahead_budget: request_body::read_ahead_budget(),
            app,
            settings,
            access_log,
            tls,
        }
    }

    /// Answers one request of either HTTP version: refused here (framing, validity, limits,
    /// queue time) or admitted and handed to the guest. Never fails: every outcome is a response,
    /// counted in the metrics from here until its body is done. `slot_permit` (an HTTP/2
    /// stream's) is held until the request's instance has let go of its slot.
    pub async fn respond(
        &self,
        request: Request<Incoming>,
        conn: &ConnectionInfo,
        framing_error: Option<&'static str>,
        slot_permit: Option<OwnedSemaphorePermit>,
    ) -> Response<ResponseBody> {
        let mut timer = self.app.metrics.request_started(request.method());
        let mut response = match self.admit(request, conn, framing_error, slot_permit) {
            Ok(admitted) => self.run_guest(admitted, &conn.remote).await,
            Err(refused) => refused,
        };
        timer.set_status(response.status().as_u16());
        response.body_mut().attach_timer(timer);
        response
    }

    /// Reads the body ahead of the guest (a slow upload then costs no instance slot), runs the
    /// guest, and answers for a request whose body was cut on the way.
    async fn run_guest(&self, mut admitted: AdmittedRequest<RequestBody>, peer: &str) -> Response<ResponseBody> {
        let line = RequestLine::of(&admitted.request);
        if let Err(e) = admitted.request.body_mut().read_ahead(&self.read_ahead_budget).await {
            let refusal = match e {
                BodyError::Cut(cut, _) => body_refusal(cut),
                BodyError::Http(_) => Refusal::BODY_BROKEN,
            };
            return admission::refuse(refusal, peer, &line, admitted.record);
        }
        match self.app.clone().handle(admitted).await {
            Handled::Response(response) => response,
            Handled::BodyCut(cut, record) => admission::refuse(body_refusal(cut), peer, &line, record),
        }
    }

    /// The checks every request passes before any guest code runs, in order: the raw framing the
    /// connection saw, the head's validity and limits, then the time it queued behind a proxy.
    fn admit(
        &self,
        request: Request<Incoming>,
        conn: &ConnectionInfo,
        framing_error: Option<&'static str>,
        slot_permit: Option<OwnedSemaphorePermit>,
    ) -> Result<AdmittedRequest<RequestBody>, Response<ResponseBody>> {
        let settings = &self.settings;
        let mut record = self.access_record(&request, conn);
        let now = std::time::SystemTime::now();
        let queued = queue_time::waited(&settings.queue.trusted, request.headers(), &conn.remote, now);
        if let Some(record) = record.as_mut() {
            record.queue_time = queued;
        }
        let refusal = match framing_error {
            Some(reason) => Err(Refusal::bad_request(reason)),
            None => admission::check_request(&request, &settings.limits, settings.body_limit),
        };
        if let Err(refusal) = refusal {
            return Err(admission::refuse(refusal, &conn.remote, &RequestLine::of(&request), record));
        }
        if let Some(waited) = queued {
            self.app.metrics.queue_time(waited);
            if queue_time::sheds(settings.queue.max, queued) {
                self.app.metrics.shed_for_queue_time();
                let line = RequestLine::of(&request);
                return Err(admission::refuse(Refusal::QUEUE_SHED, &conn.remote, &line, record));
            }
        }
        let mut request = request.map(|body| RequestBody::new(body, settings.body_limit, settings.body_pace));
        admission::default_host(&mut request, &conn.local_authority);
        let figures = Arc::new(RequestFigures::default());
        if let Some(record) = record.as_mut() {
            record.figures = Some(figures.clone());
        }
        let body_verdict = request.body().verdict();
        Ok(AdmittedRequest { request, body_verdict, https: conn.https, record, figures, slot_permit })
    }

    /// The access log, if it is on.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
    }

    /// A new access-log record for `request`, if the access log is on.
    fn access_record<B>(&self, request: &Request<B>, conn: &ConnectionInfo) -> Option<AccessRecord> {
        self.access_log.as_ref().map(|log| {
            let mut record = AccessRecord::new(log.clone(), conn.remote.clone(), request);
            record.client_subject = conn.client_subject.clone();
            record
        })
    }
}

/// The refusal for a body the front cut.
fn body_refusal(cut: BodyCut) -> Refusal {
    match cut {
        BodyCut::TooLarge => Refusal::BODY_TOO_LARGE,
        BodyCut::TooSlow => Refusal::BODY_TOO_SLOW,
    }
}
