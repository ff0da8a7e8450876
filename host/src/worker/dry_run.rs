//! The request path without a guest: the same socket guard, HTTP/1 settings and request checks a
//! worker uses, with a stand-in where the guest would run (it reads the body through the same
//! `--limit-request-body` and answers 200). The fuzz target and its regression tests drive it
//! with arbitrary bytes over an in-memory stream.
use crate::config::settings::Settings;
use crate::guest::upload::UploadBody;
use crate::worker::connection::{guard_io, http1_builder};
use crate::worker::guard::PhaseBody;
use crate::worker::validate::check_request;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Settings as `rustcorn serve app.wasm` resolves them with no other flag.
pub fn default_settings() -> anyhow::Result<Settings> {
    use clap::Parser;
    let cli = crate::config::cli::Cli::try_parse_from(["rustcorn", "serve", "app.wasm"])?;
    let crate::config::cli::Command::Serve(args) = cli.command else { anyhow::bail!("not a serve command") };
    Ok(Settings::from_args(&args)?)
}

/// Serves `io` until it closes; what the guest would have been given is answered 200.
pub async fn serve<I>(io: I, settings: Arc<Settings>) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = http1_builder(&settings);
    let (io, phase) = guard_io(io, &settings);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        phase.head_received();
        let (phase, settings) = (phase.clone(), settings.clone());
        async move {
            let response = stand_in(request, phase.framing_error(), &settings).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| PhaseBody::new(body, phase)))
        }
    });
    builder.serve_connection(TokioIo::new(io), service).await
}

async fn stand_in(
    request: Request<Incoming>,
    framing_error: Option<&str>,
    settings: &Settings,
) -> Response<Full<Bytes>> {
    let refuse = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::from_static(b"refused\n")));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    if framing_error.is_some() {
        return refuse(StatusCode::BAD_REQUEST);
    }
    if let Err(rejection) = check_request(&request, &settings.limits, settings.body_limit) {
        return refuse(rejection.status);
    }
    // Where the guest would run: it may read the body, as far as the limit allows.
    let (body, too_large) = UploadBody::new(request.into_body(), None, settings.body_limit);
    let read = body.collect().await;
    if too_large.is_set() {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let length = read.map(|collected| collected.to_bytes().len()).unwrap_or(0);
    Response::new(Full::new(Bytes::from(format!("guest would run; body {length} bytes\n"))))
}
