//! The admin endpoint's routes, as a pure function of the request and the arbiter's view.
use super::ArbiterView;
use crate::metrics::render::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE};

/// One admin response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";

fn text(status: u16, body: &str) -> AdminResponse {
    AdminResponse { status, content_type: TEXT, body: body.to_string() }
}

/// Whether a scraper's `Accept` asks for OpenMetrics (Prometheus sends it first when it can).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|accept| {
        accept.split(',').any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let is_openmetrics = parts.next().is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
            let refused = parts.any(|p| p.replace(' ', "").eq_ignore_ascii_case("q=0"));
            is_openmetrics && !refused
        })
    })
}

/// Routes a request: `GET|HEAD /metrics`, `/livez`, `/readyz`. `scrape(openmetrics)` renders the
/// metrics (called only for /metrics).
pub fn respond(
    method: &str,
    path: &str,
    accept: Option<&str>,
    view: &ArbiterView,
    scrape: impl FnOnce(bool) -> String,
) -> AdminResponse {
    let path = path.split('?').next().unwrap_or(path);
    let known = matches!(path, "/metrics" | "/livez" | "/readyz");
    if !known {
        return text(404, "not found\n");
    }
    if method != "GET" && method != "HEAD" {
        return text(405, "method not allowed\n");
    }
    match path {
        "/livez" => text(200, "ok\n"),
        "/readyz" if view.draining => text(503, "draining\n"),
        "/readyz" if view.ready_workers == 0 => text(503, "no ready worker\n"),
        "/readyz" => text(200, "ready\n"),
        _ => {
            let openmetrics = wants_openmetrics(accept);
            let content_type = if openmetrics { OPENMETRICS_CONTENT_TYPE } else { PROMETHEUS_CONTENT_TYPE };
            AdminResponse { status: 200, content_type, body: scrape(openmetrics) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(draining: bool, ready: usize) -> ArbiterView {
        ArbiterView { draining, generation: 1, ready_workers: ready, ..ArbiterView::default() }
    }

    fn no_scrape(_: bool) -> String {
        panic!("only /metrics scrapes")
    }

    #[test]
    fn livez_answers_while_the_arbiter_runs_even_when_draining() {
        assert_eq!(respond("GET", "/livez", None, &view(true, 0), no_scrape).status, 200);
    }

    #[test]
    fn readyz_needs_a_ready_worker_and_no_drain() {
        assert_eq!(respond("GET", "/readyz", None, &view(false, 2), no_scrape).status, 200);
        assert_eq!(respond("GET", "/readyz", None, &view(false, 0), no_scrape).status, 503);
        assert_eq!(respond("GET", "/readyz", None, &view(true, 2), no_scrape).status, 503);
        assert_eq!(respond("HEAD", "/readyz?verbose", None, &view(false, 1), no_scrape).status, 200);
    }

    #[test]
    fn metrics_picks_the_format_from_accept() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let r = respond("GET", "/metrics", Some(prometheus), &view(false, 1), |om| format!("om={om}"));
        assert_eq!((r.status, r.content_type, r.body.as_str()), (200, OPENMETRICS_CONTENT_TYPE, "om=true"));
        let r = respond("GET", "/metrics", None, &view(false, 1), |om| format!("om={om}"));
        assert_eq!((r.content_type, r.body.as_str()), (PROMETHEUS_CONTENT_TYPE, "om=false"));
        let r = respond("GET", "/metrics", Some("application/openmetrics-text; q=0"), &view(false, 1), |om| {
            format!("om={om}")
        });
        assert_eq!(r.body, "om=false");
    }

    #[test]
    fn other_paths_and_methods_are_refused() {
        assert_eq!(respond("GET", "/", None, &view(false, 1), no_scrape).status, 404);
        assert_eq!(respond("GET", "/metricsx", None, &view(false, 1), no_scrape).status, 404);
        assert_eq!(respond("POST", "/metrics", None, &view(false, 1), no_scrape).status, 405);
    }
}
