//! `stream`: sends the response head at once (200, text/plain), then `chunks` chunks
//! `chunk N\n` (N from 0), sleeping `interval_ms` between them in the host
//! (`wasi:clocks/monotonic-clock` subscribe-duration + pollable block). Each chunk is flushed
//! on its own, and the body is finished properly at the end.
//!
//! Query: `?chunks=N&interval_ms=M`, defaults 10 and 100.

use wasi::clocks::monotonic_clock;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Stream;

/// Value of query parameter `name` in `path_with_query`, if present and a number.
fn query_u64(path_with_query: &str, name: &str) -> Option<u64> {
    let (_, query) = path_with_query.split_once('?')?;
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

impl Guest for Stream {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let chunks = query_u64(&path, "chunks").unwrap_or(10);
        let interval_ms = query_u64(&path, "interval_ms").unwrap_or(100);

        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("response body");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("body stream");

        for n in 0..chunks {
            if n > 0 && interval_ms > 0 {
                monotonic_clock::subscribe_duration(interval_ms.saturating_mul(1_000_000)).block();
            }
            if out.blocking_write_and_flush(format!("chunk {n}\n").as_bytes()).is_err() {
                // The client went away (or the host cut the stream). Return without finishing:
                // dropping an unfinished outgoing-body aborts it rather than ending it cleanly.
                return;
            }
        }
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

wasi::http::proxy::export!(Stream);
