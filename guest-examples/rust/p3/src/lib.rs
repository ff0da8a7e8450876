//! `p3`: a WASI 0.3 guest (`wasi:http/service@0.3.0`, the `wasip3` crate) whose routes mirror
//! the `hello` and `faults` guests, for testing that every host guarantee holds for 0.3 too.
//!
//! | route                         | behaviour                                                   |
//! |-------------------------------|-------------------------------------------------------------|
//! | `/` (anything unlisted)       | 200 `Hello from WASI 0.3!\n`, body written after returning  |
//! | `/count`                      | 200, requests this instance has served (`1` when fresh)     |
//! | `/panic`                      | panics (a trap) before any response                         |
//! | `/trap-mid-body`              | head 200 + `partial body\n`, then panics in the body task   |
//! | `/spin`                       | burns CPU forever before any response                       |
//! | `/sleep?ms=N`                 | prints `sleeping for N ms` to stderr, waits N ms (default   |
//! |                               | 1 h) on the host clock, then `slept\n`                       |
//! | `/alloc`                      | allocates 1 MiB blocks without bound until the host says no |
//! | `/consume`                    | reads the whole request body, then 200 `N bytes\n`          |
//! | `/fetch?authority=A&path=P`   | `client.send` GET http://A/P; 200 `status N\n` + body, or   |
//! |                               | 200 `error CODE\n` with the wasi-http error                 |

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::client;
use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_bindgen, wit_future, wit_stream};

wasip3::http::service::export!(P3);

/// Requests this instance has handled (above 1 only when the host reuses instances).
static HANDLED: AtomicU64 = AtomicU64::new(0);

const NANOS_PER_MS: u64 = 1_000_000;
const ONE_HOUR_MS: u64 = 60 * 60 * 1000;

struct P3;

impl wasip3::exports::http::handler::Guest for P3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let handled = HANDLED.fetch_add(1, Ordering::Relaxed) + 1;
        let path_with_query = request.get_path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = path_with_query.split_once('?').unwrap_or((path_with_query.as_str(), ""));
        let param = |name: &str| query_param(query, name).map(str::to_string);
        match path {
            "/count" => Ok(respond(format!("{handled}\n").into_bytes())),
            "/panic" => panic!("guest panic on purpose"),
            "/trap-mid-body" => Ok(trap_mid_body()),
            "/spin" => spin_forever(),
            "/sleep" => {
                let ms = param("ms").and_then(|v| v.parse::<u64>().ok()).unwrap_or(ONE_HOUR_MS);
                eprintln!("sleeping for {ms} ms");
                wasip3::clocks::monotonic_clock::wait_for(ms.saturating_mul(NANOS_PER_MS)).await;
                Ok(respond(b"slept\n".to_vec()))
            }
            "/alloc" => alloc_forever(),
            "/consume" => {
                let (_, done) = wit_future::new(|| Ok(()));
                let (contents, _trailers) = Request::consume_body(request, done);
                let bytes = contents.collect().await;
                Ok(respond(format!("{} bytes\n", bytes.len()).into_bytes()))
            }
            "/fetch" => {
                let authority = param("authority").unwrap_or_default();
                let target = param("path").unwrap_or_else(|| "/".to_string());
                let text = match fetch(&authority, &target).await {
                    Ok(text) => text,
                    Err(code) => format!("error {code:?}\n"),
                };
                Ok(respond(text.into_bytes()))
            }
            _ => Ok(respond(b"Hello from WASI 0.3!\n".to_vec())),
        }
    }
}

/// A 200 response whose body a spawned task writes after the handler has returned it.
fn respond(body: Vec<u8>) -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    drop(trailers_tx);
    wit_bindgen::spawn(async move {
        let _ = body_tx.write_all(body).await;
    });
    response
}

/// A 200 head and the first body bytes, then a panic in the task still writing the body.
fn trap_mid_body() -> Response {
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    let (response, _sent) = Response::new(Fields::new(), Some(body_rx), trailers_rx);
    wit_bindgen::spawn(async move {
        let _ = body_tx.write_all(b"partial body\n".to_vec()).await;
        // Give the host a turn to send what was written before the trap.
        wasip3::clocks::monotonic_clock::wait_for(20 * NANOS_PER_MS).await;
        let _keep_open = (&body_tx, &trailers_tx);
        panic!("guest panic on purpose, mid-body");
    });
    response
}

/// GET http://AUTHORITY/PATH through `wasi:http/client.send`; the status line and the body.
async fn fetch(authority: &str, path: &str) -> Result<String, ErrorCode> {
    let (_, trailers) = wit_future::new(|| Ok(None));
    let (request, _sent) = Request::new(Fields::new(), None, trailers, None);
    let invalid = |what: &str| ErrorCode::InternalError(Some(format!("invalid {what}")));
    request.set_method(&Method::Get).map_err(|()| invalid("method"))?;
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|()| invalid("authority"))?;
    request.set_path_with_query(Some(path)).map_err(|()| invalid("path"))?;
    let response = client::send(request).await?;
    let status = response.get_status_code();
    let (_, done) = wit_future::new(|| Ok(()));
    let (contents, _trailers) = Response::consume_body(response, done);
    let body = contents.collect().await;
    Ok(format!("status {status}\n{}", String::from_utf8_lossy(&body)))
}

fn spin_forever() -> ! {
    let mut x: u64 = 0;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

fn alloc_forever() -> ! {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = 1;
        blocks.push(black_box(block));
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}
