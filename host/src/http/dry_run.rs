//! The HTTP/1 front without a guest, for the fuzz targets in `fuzz/` and their regression tests:
//! `exchange` runs the same timed socket, framing check, HTTP/1 settings and request checks a
//! worker uses, with a stand-in where the guest would run (it reads the body through the same
//! `--limit-request-body` and answers 200). The fuzz target and its regression tests drive it
//! with arbitrary bytes over an in-memory stream.
use crate::config::settings::Settings;
use crate::guest::upload::BodyCut;
use crate::http::admission::check_request;
use crate::http::h1::{http1_builder, timed_socket};
use crate::http::request_body::{BodyError, RequestBody};
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

/// Runs `drive` with the default settings (resolved once per process) on a runtime whose time is
/// paused, so the header timeout and keep-alive bound fire as soon as everything is idle: how the
/// fuzz targets and their replays drive `exchange` and `split_by_both`.
#[cfg(any(test, feature = "fuzzing"))]
pub fn with_default_settings<F, T>(drive: impl FnOnce(Arc<Settings>) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    static SETTINGS: std::sync::OnceLock<Arc<Settings>> = std::sync::OnceLock::new();
    let settings = SETTINGS.get_or_init(|| Arc::new(default_settings().expect("the default settings resolve"))).clone();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
    runtime.expect("a current-thread runtime").block_on(drive(settings))
}

/// Serves `io` until it closes; what the guest would have been given is answered 200.
pub async fn serve_without_guest<I>(io: I, settings: Arc<Settings>) -> Result<(), hyper::Error>
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
    let served = tokio::spawn(serve_without_guest(server, settings));
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

/// Where the framing check and hyper each say the messages in `input` begin, as the number of
/// request heads each found. The framing check must never see fewer or more messages than hyper
/// parses from the same bytes, or a request could reach the guest past the checks that run on the
/// framing check's view. `None` when the framing check refused the stream (the front answers 400 and
/// closes, so hyper never reads on) or stopped judging it (a head hyper refuses anyway); hyper's
/// count is only compared when it read the whole input without refusing anything.
pub async fn split_by_both(input: &[u8], settings: Arc<Settings>) -> Option<(usize, usize)> {
    let mut check = crate::http::framing::FramingCheck::default();
    check.feed(input).ok()?;
    let framing = check.heads()?;
    let (hyper, refused) = hyper_heads(input, settings).await;
    (!refused).then_some((framing, hyper))
}

/// The request heads plain hyper (our HTTP/1 settings, no framing check) parses from `input`, and
/// whether it refused the stream. Each body is read to its end, as a guest would.
async fn hyper_heads(input: &[u8], settings: Arc<Settings>) -> (usize, bool) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move {
            let read = tokio::time::timeout(std::time::Duration::from_secs(60), request.into_body().collect()).await;
            let status = if matches!(read, Ok(Ok(_))) { StatusCode::OK } else { StatusCode::BAD_REQUEST };
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let (mut client, server) = tokio::io::duplex(16 * 1024);
    let served = http1_builder(&settings).serve_connection(TokioIo::new(server), service);
    let input = input.to_vec();
    let write = async move {
        let _ = client.write_all(&input).await;
        // Kept open (and drained) until the server is done: hyper stops reading pipelined
        // requests from a client that half-closed.
        let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
    };
    let (result, _) =
        tokio::join!(served, async { tokio::time::timeout(std::time::Duration::from_secs(3600), write).await });
    // The keep-alive and header timers end every run that hyper did not end itself.
    let refused = result.as_ref().is_err_and(|e| !e.is_timeout());
    (heads.load(Ordering::Relaxed), refused)
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
    // Where the guest would run: it reads the body through the front's size and pace bounds,
    // within the request timeout (a plain deadline here: the request clock follows the wall
    // clock, which does not move in the fuzz target's paused time).
    let body = RequestBody::new(request.into_body(), settings.body_limit, settings.body_pace);
    let timeout = settings.request_timeout.unwrap_or(std::time::Duration::from_secs(30));
    let Ok(read) = tokio::time::timeout(timeout, body.collect()).await else {
        return refuse(StatusCode::GATEWAY_TIMEOUT);
    };
    match &read {
        Err(BodyError::Cut(BodyCut::TooLarge, _)) => return refuse(StatusCode::PAYLOAD_TOO_LARGE),
        Err(BodyError::Cut(BodyCut::TooSlow, _)) => return refuse(StatusCode::REQUEST_TIMEOUT),
        _ => {}
    }
    let length = read.map(|collected| collected.to_bytes().len()).unwrap_or(0);
    Response::new(Full::new(Bytes::from(format!("guest would run; body {length} bytes\n"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Option<Vec<u8>> {
        with_default_settings(|settings| exchange(input, settings))
    }

    #[test]
    fn valid_requests_reach_the_stand_in_and_invalid_ones_do_not() {
        let ok = run(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        assert!(String::from_utf8_lossy(&ok).contains("guest would run; body 3 bytes"));
        let bad =
            run(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;\x00\r\nabc\r\n0\r\n\r\n").unwrap();
        assert!(bad.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&bad));
    }

    fn split(input: &[u8]) -> Option<(usize, usize)> {
        with_default_settings(|settings| split_by_both(input, settings))
    }

    #[test]
    fn the_framing_check_and_hyper_split_pipelined_requests_alike() {
        let two = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(split(two), Some((2, 2)));
        let fixed = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nGET /GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(split(fixed), Some((2, 2)));
        // The bare-LF smuggle: the framing check refuses it (no split to compare).
        let smuggle = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(split(smuggle), None);
    }

    /// Calls `check` with every file under `dir` (relative to the host crate) and its bytes;
    /// fails when there is none.
    fn replay(dir: &str, check: impl Fn(&std::path::Path, &[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            check(&path, &std::fs::read(&path).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "no inputs in {}", dir.display());
    }

    /// Every seed of the differential fuzz target (`tests/fuzz-seeds/framing_agrees_with_hyper`)
    /// is split alike by both, replayed on stable.
    #[test]
    fn the_differential_corpus_agrees() {
        replay("tests/fuzz-seeds/framing_agrees_with_hyper", |path, input| {
            if let Some((framing, hyper)) = split(input) {
                assert_eq!(framing, hyper, "{}: the framing check and hyper disagree", path.display());
            }
        });
    }

    /// Inputs the fuzz target (`fuzz/`) once crashed or hung on, replayed on stable.
    #[test]
    fn fuzz_regressions_neither_crash_nor_hang() {
        replay("tests/fuzz-regressions", |path, input| {
            let out = run(input);
            assert!(out.is_some(), "{} neither answered nor closed", path.display());
            let text = String::from_utf8_lossy(out.as_deref().unwrap_or_default()).into_owned();
            assert!(!text.contains("guest would run") || !path.to_string_lossy().contains("invalid"), "{text}");
        });
    }
}
