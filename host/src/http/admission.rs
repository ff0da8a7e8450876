//! Admission: the request validity checks the HTTP parser leaves to us (RFC 9110/9112: message
//! framing, the Host field, request-target forms, Expect, the size limits), as pure functions of the
//! request head run before the guest is involved and before any body byte is read, and the one
//! refusal response (its status, text, headers and log line) for every request the front refuses.
use crate::config::settings::RequestLimits;
use crate::guest::body::{host_response, ResponseBody};
use crate::log::access::AccessRecord;
use crate::log::escape::RequestLine;
use crate::net::host::valid_host_port;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};

/// Why a request is refused before its guest runs, and with which status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    /// A request that waited longer than `--max-queue-time` behind a trusted proxy.
    pub const QUEUE_SHED: Refusal =
        Refusal { status: StatusCode::SERVICE_UNAVAILABLE, reason: "waited over --max-queue-time" };
    /// An HTTP/2 stream that found no instance slot within `--timeout`.
    pub const NO_STREAM_SLOT: Refusal = Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        reason: "waited --timeout for a free instance slot (--instance-slots)",
    };
    /// A body that passed `--limit-request-body` as it arrived.
    pub const BODY_TOO_LARGE: Refusal =
        Refusal { status: StatusCode::PAYLOAD_TOO_LARGE, reason: "body over --limit-request-body" };
    /// A body that fell below `--body-min-rate` after `--body-timeout`.
    pub const BODY_TOO_SLOW: Refusal = Refusal {
        status: StatusCode::REQUEST_TIMEOUT,
        reason: "body slower than --body-min-rate after --body-timeout",
    };
    /// A body the connection broke off (or whose framing hyper refused) before the guest ran.
    pub const BODY_BROKEN: Refusal = Refusal::bad_request("the request body ended in an error");

    pub const fn bad_request(reason: &'static str) -> Refusal {
        Refusal { status: StatusCode::BAD_REQUEST, reason }
    }

    /// A 503 says "busy, try again": the connection stays usable. Every other refusal closes it,
    /// since after a framing or validity doubt the next byte on it cannot be trusted.
    fn closes_connection(&self) -> bool {
        self.status != StatusCode::SERVICE_UNAVAILABLE
    }
}

const fn reject(status: StatusCode, reason: &'static str) -> Result<(), Refusal> {
    Err(Refusal { status, reason })
}

/// The response to a refused request, with one error-log line naming the peer, the request line
/// (escaped) and the reason. Busy refusals (503) are logged at debug level: under
/// overload they come in floods and are counted in the metrics.
pub fn refuse(
    refusal: Refusal,
    peer: &str,
    request_line: &RequestLine,
    record: Option<AccessRecord>,
) -> Response<ResponseBody> {
    let line = format!("{peer}: refused {request_line} with {}: {}", refusal.status.as_u16(), refusal.reason);
    if refusal.closes_connection() {
        crate::log_warning!("{line}");
    } else {
        crate::log_debug!("{line}");
    }
    refusal_response(refusal, record)
}

/// A refusal's response without a log line (the caller has logged it).
pub fn refusal_response(refusal: Refusal, record: Option<AccessRecord>) -> Response<ResponseBody> {
    let text = match refusal.status {
        StatusCode::PAYLOAD_TOO_LARGE => "Payload Too Large\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "Request Header Fields Too Large\n",
        StatusCode::EXPECTATION_FAILED => "Expectation Failed\n",
        StatusCode::METHOD_NOT_ALLOWED => "Method Not Allowed\n",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable\n",
        StatusCode::REQUEST_TIMEOUT => "Request Timeout\n",
        _ => "Bad Request\n",
    };
    let mut response = host_response(refusal.status, text, record);
    if refusal.closes_connection() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An HTTP/1.0 request without Host gets the listening address as its authority, so the guest
/// always sees one (wasi-http needs it).
pub fn default_host<B>(request: &mut Request<B>, local_authority: &HeaderValue) {
    if request.uri().authority().is_none() && !request.headers().contains_key(header::HOST) {
        request.headers_mut().insert(header::HOST, local_authority.clone());
    }
}

/// Checks one request head. `body_limit` is `--limit-request-body` (0 = unlimited).
pub fn check_request<B>(request: &Request<B>, limits: &RequestLimits, body_limit: u64) -> Result<(), Refusal> {
    let headers = request.headers();
    if request.method() == Method::CONNECT {
        return reject(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not served (rustcorn is not a proxy)");
    }
    check_target(request)?;
    check_sizes(request, limits)?;
    check_host(request)?;
    let te = headers.get_all(header::TRANSFER_ENCODING).iter().count();
    if te > 0 && headers.contains_key(header::CONTENT_LENGTH) {
        return reject(StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding");
    }
    if te > 0 && request.version() != Version::HTTP_11 {
        return reject(StatusCode::BAD_REQUEST, "Transfer-Encoding in an HTTP/1.0 request");
    }
    let mut expects = headers.get_all(header::EXPECT).iter();
    if let Some(expect) = expects.next() {
        if !expect.as_bytes().eq_ignore_ascii_case(b"100-continue") || expects.next().is_some() {
            return reject(StatusCode::EXPECTATION_FAILED, "an Expect other than 100-continue");
        }
    }
    if body_limit > 0 {
        let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if length.is_some_and(|length| length > body_limit) {
            return reject(StatusCode::PAYLOAD_TOO_LARGE, "Content-Length over --limit-request-body");
        }
    }
    Ok(())
}

/// The request-target forms we serve: origin-form, absolute-form (http/https), and `*` for OPTIONS.
fn check_target<B>(request: &Request<B>) -> Result<(), Refusal> {
    let uri = request.uri();
    match (uri.scheme_str(), uri.authority()) {
        (None, None) if uri.path() == "*" => {
            if request.method() != Method::OPTIONS {
                return reject(StatusCode::BAD_REQUEST, "asterisk-form target with a method other than OPTIONS");
            }
        }
        (None, None) if uri.path().starts_with('/') => {}
        (None, None) => return reject(StatusCode::BAD_REQUEST, "request target is not a path"),
        (None, Some(_)) => return reject(StatusCode::BAD_REQUEST, "authority-form target outside CONNECT"),
        (Some(scheme), _) if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") => {
            return reject(StatusCode::BAD_REQUEST, "absolute-form target with a scheme other than http(s)");
        }
        (Some(_), _) => {
            if uri.authority().is_none_or(|a| a.as_str().contains('@') || !valid_host_port(a.as_str().as_bytes())) {
                return reject(StatusCode::BAD_REQUEST, "absolute-form target without a valid host");
            }
        }
    }
    Ok(())
}

/// Gunicorn's limits: the request line (whatever the target form) and each header field.
/// (The field count is enforced by the parser itself, which answers 431.)
fn check_sizes<B>(request: &Request<B>, limits: &RequestLimits) -> Result<(), Refusal> {
    let uri = request.uri();
    if limits.line > 0 {
        let target_len = match uri.scheme() {
            Some(_) => uri.to_string().len(),
            None => uri.path_and_query().map_or(uri.path().len(), |pq| pq.as_str().len()),
        };
        let line_len = request.method().as_str().len() + 1 + target_len + 1 + "HTTP/1.1".len();
        if line_len > limits.line {
            return reject(StatusCode::BAD_REQUEST, "request line over --limit-request-line");
        }
    }
    if limits.field_size > 0 {
        let too_big =
            request.headers().iter().any(|(name, value)| name.as_str().len() + 2 + value.len() > limits.field_size);
        if too_big {
            return reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "a header field over --limit-request-field_size",
            );
        }
    }
    Ok(())
}

/// HTTP/1.1 needs exactly one Host; HTTP/1.0 may omit it. A Host that is there must be valid.
fn check_host<B>(request: &Request<B>) -> Result<(), Refusal> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if request.version() == Version::HTTP_11 => {
            reject(StatusCode::BAD_REQUEST, "HTTP/1.1 request without Host")
        }
        (None, _) => Ok(()),
        (Some(_), Some(_)) => reject(StatusCode::BAD_REQUEST, "more than one Host"),
        (Some(host), None) if !valid_host_port(host.as_bytes()) => {
            reject(StatusCode::BAD_REQUEST, "Host is not a valid host[:port]")
        }
        (Some(_), None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits { line: 4094, fields: 100, field_size: 8190 };

    fn head(method: &str, target: &str, version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(target).version(version);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn status(request: &Request<()>) -> Option<u16> {
        check_request(request, &LIMITS, 1000).err().map(|r| r.status.as_u16())
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(status(&head("GET", "/a?b", Version::HTTP_11, &[("host", "example.com:8080")])), None);
        assert_eq!(status(&head("GET", "/", Version::HTTP_10, &[])), None);
        assert_eq!(status(&head("OPTIONS", "*", Version::HTTP_11, &[("host", "h")])), None);
        assert_eq!(status(&head("GET", "http://h/x", Version::HTTP_11, &[("host", "h")])), None);
        assert_eq!(
            status(&head("POST", "/", Version::HTTP_11, &[("host", "[::1]:80"), ("expect", "100-Continue")])),
            None
        );
    }

    #[test]
    fn host_must_be_single_and_valid_on_http_1_1() {
        assert_eq!(status(&head("GET", "/", Version::HTTP_11, &[])), Some(400));
        assert_eq!(status(&head("GET", "/", Version::HTTP_11, &[("host", "a"), ("host", "b")])), Some(400));
        for bad in ["a b", "a/b", "a:99999", "a:8x", "u@h", "[::1", "[zz]:80", "h:80:80"] {
            assert_eq!(status(&head("GET", "/", Version::HTTP_11, &[("host", bad)])), Some(400), "{bad}");
        }
        assert_eq!(status(&head("GET", "/", Version::HTTP_10, &[("host", "a b")])), Some(400));
    }

    #[test]
    fn framing_conflicts_and_unserved_forms_are_refused() {
        let cl_te = [("host", "h"), ("content-length", "5"), ("transfer-encoding", "chunked")];
        assert_eq!(status(&head("POST", "/", Version::HTTP_11, &cl_te)), Some(400));
        assert_eq!(status(&head("CONNECT", "h:443", Version::HTTP_11, &[("host", "h:443")])), Some(405));
        assert_eq!(status(&head("GET", "h:80", Version::HTTP_11, &[("host", "h")])), Some(400));
        assert_eq!(status(&head("GET", "*", Version::HTTP_11, &[("host", "h")])), Some(400));
        assert_eq!(status(&head("GET", "ftp://h/", Version::HTTP_11, &[("host", "h")])), Some(400));
        assert_eq!(status(&head("GET", "/", Version::HTTP_11, &[("host", "h"), ("expect", "x")])), Some(417));
        assert_eq!(
            status(&head("POST", "/", Version::HTTP_11, &[("host", "h"), ("content-length", "1001")])),
            Some(413)
        );
    }

    #[test]
    fn request_line_limit_covers_absolute_form() {
        let long = format!("http://h/{}", "a".repeat(4080));
        assert_eq!(status(&head("GET", &long, Version::HTTP_11, &[("host", "h")])), Some(400));
    }
}
