//! `hello`: the benchmark guest. Every request gets 200, `content-type: text/plain`,
//! body `Hello, world!\n`. Kept minimal: one header, one write, no allocation beyond the bindings'.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const BODY: &[u8] = b"Hello, world!\n";

struct Hello;

impl Guest for Hello {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())])
            .expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("response body");
        ResponseOutparam::set(response_out, Ok(response));
        let out = body.write().expect("body stream");
        out.blocking_write_and_flush(BODY).expect("write body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

wasi::http::proxy::export!(Hello);
