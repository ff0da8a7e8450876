//! The HTTP/1 front without a guest: the same timed socket, framing check, HTTP/1 settings and
//! request checks a worker uses, with a stand-in where the guest would run (it reads the body through the same
//! `--limit-request-body` and answers 200). The fuzz target and its regression tests drive it
//! with arbitrary bytes over an in-memory stream.
use crate::config::settings::Settings;
use crate::guest::upload::UploadBody;
use crate::http::admission::check_request;
use crate::http::h1::{http1_builder, timed_socket};
use crate::http::socket_timers::ResponseDoneBody;
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
    let (io, state) = timed_socket(io, &settings);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        state.head_received();
        let (state, settings) = (state.clone(), settings.clone());
        async move {
            let response = stand_in(request, state.framing_error(), &settings).await;
            Ok::<_, std::convert::Infallible>(response.map(|body| ResponseDoneBody::new(body, state)))
        }
    });
    builder.serve_connection(TokioIo::new(io), service).await
}

/// Sends `input` as a client would and returns all the server wrote back until it closed; None
/// if it never closed. The client keeps its side open (hyper drops a response to a client that
/// half-closed): run this on a runtime with paused time, so that the header timeout and
/// keep-alive bound close the connection as soon as everything is idle.
pub async fn exchange(input: &[u8], settings: Arc<Settings>) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (client, server) = tokio::io::duplex(16 * 1024);
    let served = tokio::spawn(serve(server, settings));
    let (mut read_half, mut write_half) = tokio::io::split(client);
    let input = input.to_vec();
    let write = async move {
        let _ = write_half.write_all(&input).await;
        write_half
    };
    let read = async move {
        let mut out = Vec::new();
        let _ = read_half.read_to_end(&mut out).await;
        out
    };
    let ended = tokio::time::timeout(std::time::Duration::from_secs(3600), async { tokio::join!(write, read) }).await;
    let _ = served.await;
    ended.ok().map(|(_, out)| out)
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
    if let Err(refusal) = check_request(&request, &settings.limits, settings.body_limit) {
        return refuse(refusal.status);
    }
    // Where the guest would run: it may read the body, as far as the limit allows, within the
    // request timeout (a plain deadline here: the request clock follows the wall clock, which
    // does not move in the fuzz target's paused time).
    let (body, too_large) = UploadBody::new(request.into_body(), None, settings.body_limit);
    let timeout = settings.request_timeout.unwrap_or(std::time::Duration::from_secs(30));
    let Ok(read) = tokio::time::timeout(timeout, body.collect()).await else {
        return refuse(StatusCode::GATEWAY_TIMEOUT);
    };
    if too_large.is_set() {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let length = read.map(|collected| collected.to_bytes().len()).unwrap_or(0);
    Response::new(Full::new(Bytes::from(format!("guest would run; body {length} bytes\n"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Option<Vec<u8>> {
        static SETTINGS: std::sync::OnceLock<Arc<Settings>> = std::sync::OnceLock::new();
        let settings = SETTINGS.get_or_init(|| Arc::new(default_settings().unwrap())).clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        runtime.block_on(exchange(input, settings))
    }

    #[test]
    fn valid_requests_reach_the_stand_in_and_invalid_ones_do_not() {
        let ok = run(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        assert!(String::from_utf8_lossy(&ok).contains("guest would run; body 3 bytes"));
        let bad =
            run(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n").unwrap();
        assert!(bad.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&bad));
    }

    /// Inputs the fuzz target (`fuzz/`) once crashed or hung on, replayed on stable.
    #[test]
    fn fuzz_regressions_neither_crash_nor_hang() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let out = run(&input);
            assert!(out.is_some(), "{} neither answered nor closed", path.display());
            let text = String::from_utf8_lossy(out.as_deref().unwrap_or_default()).into_owned();
            assert!(!text.contains("guest would run") || !path.to_string_lossy().contains("invalid"), "{text}");
            replayed += 1;
        }
        assert!(replayed > 0, "no regression inputs in {}", dir.display());
    }
}
