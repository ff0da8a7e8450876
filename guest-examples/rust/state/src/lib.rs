//! `state`: a visit counter with a greeting from config, and the routes the tests drive.
//! - `GET /` → `<greeting>, visit <n>` (config key `greeting`, else "Hello"; counter `visits` in
//!   bucket `default`);
//! - `GET /incr/BUCKET/KEY` → the counter after `increment(KEY, 1)`;
//! - `GET /get/BUCKET/KEY` → the value (404 when absent); `PUT /set/BUCKET/KEY` stores the body;
//! - `GET /key-of/BUCKET/N` → `get` of a key N bytes long (to probe the key size limit);
//! - `GET /config/KEY` → the config value (404 when absent).
//!
//! A key-value error is 403 `no-such-store` / `access-denied`, or 503 `other: MESSAGE`.

mod bindings {
    wit_bindgen::generate!({
        path: "../../../wit",
        world: "rustcorn:guest/state",
        generate_all,
    });
}

use bindings::wasi::config::store as config;
use bindings::wasi::keyvalue::{atomics, store};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

/// Most request body bytes `PUT /set` reads.
const MAX_BODY: usize = 8 << 20;

struct State;

impl Guest for State {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (status, body) = match (request.method(), parts.as_slice()) {
            (Method::Get, [""]) => visit(),
            (Method::Get, ["incr", bucket, key]) => {
                answer(open(bucket).and_then(|b| atomics::increment(&b, key, 1)).map(|n| format!("{n}\n").into_bytes()))
            }
            (Method::Get, ["get", bucket, key]) => match open(bucket).and_then(|b| b.get(key)) {
                Ok(Some(value)) => (200, value),
                Ok(None) => (404, b"absent\n".to_vec()),
                Err(e) => error(e),
            },
            (Method::Get, ["key-of", bucket, len]) => {
                let key = "k".repeat(len.parse().unwrap_or(0));
                answer(open(bucket).and_then(|b| b.get(&key)).map(|v| format!("{}\n", v.is_some()).into_bytes()))
            }
            (Method::Put, ["set", bucket, key]) => match read_body(request) {
                Some(value) => answer(open(bucket).and_then(|b| b.set(key, &value)).map(|()| b"stored\n".to_vec())),
                None => (400, b"unreadable body\n".to_vec()),
            },
            (Method::Get, ["config", key]) => match config::get(key) {
                Ok(Some(value)) => (200, value.into_bytes()),
                Ok(None) => (404, b"absent\n".to_vec()),
                Err(e) => (500, format!("config error: {e:?}\n").into_bytes()),
            },
            _ => (404, b"no such route\n".to_vec()),
        };
        respond(response_out, status, &body);
    }
}

fn visit() -> (u16, Vec<u8>) {
    let greeting = config::get("greeting").ok().flatten().unwrap_or_else(|| "Hello".to_string());
    match open("default").and_then(|b| atomics::increment(&b, "visits", 1)) {
        Ok(n) => (200, format!("{greeting}, visit {n}\n").into_bytes()),
        Err(e) => error(e),
    }
}

fn open(bucket: &str) -> Result<store::Bucket, store::Error> {
    store::open(bucket)
}

fn answer(result: Result<Vec<u8>, store::Error>) -> (u16, Vec<u8>) {
    result.map(|body| (200, body)).unwrap_or_else(error)
}

fn error(e: store::Error) -> (u16, Vec<u8>) {
    match e {
        store::Error::NoSuchStore => (403, b"no-such-store\n".to_vec()),
        store::Error::AccessDenied => (403, b"access-denied\n".to_vec()),
        store::Error::Other(message) => (503, format!("other: {message}\n").into_bytes()),
    }
}

fn read_body(request: IncomingRequest) -> Option<Vec<u8>> {
    let body = request.consume().ok()?;
    let stream = body.stream().ok()?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(wasi::io::streams::StreamError::Closed) => break,
            Err(_) => return None,
        }
        if bytes.len() > MAX_BODY {
            return None;
        }
    }
    Some(bytes)
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let out_body = response.body().expect("response body");
    ResponseOutparam::set(response_out, Ok(response));
    let out = out_body.write().expect("body stream");
    for chunk in body.chunks(4096) {
        out.blocking_write_and_flush(chunk).expect("write body");
    }
    drop(out);
    OutgoingBody::finish(out_body, None).expect("finish body");
}

wasi::http::proxy::export!(State);
