//! `echo`: 200, streams the request body back as it is read, chunk by chunk (never buffered
//! whole). The request's `content-type` is copied to the response when present.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    ErrorCode, Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Upper bound on one read from the request body.
const READ_CHUNK: u64 = 64 * 1024;

struct Echo;

impl Guest for Echo {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let content_type: Vec<(String, Vec<u8>)> = request
            .headers()
            .get("content-type")
            .into_iter()
            .take(1)
            .map(|v| ("content-type".to_string(), v))
            .collect();
        let incoming = match request.consume() {
            Ok(body) => body,
            Err(()) => {
                ResponseOutparam::set(
                    response_out,
                    Err(ErrorCode::InternalError(Some("request body already consumed".into()))),
                );
                return;
            }
        };
        let input = incoming.stream().expect("request body stream");

        let headers = Fields::from_list(&content_type).expect("valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("response body");
        ResponseOutparam::set(response_out, Ok(response));
        let output = body.write().expect("response body stream");

        if let Err(e) = pump(&input, &output) {
            // Return without finishing: dropping an unfinished outgoing-body aborts the
            // response instead of ending it as if it were complete.
            eprintln!("echo: {e}");
            return;
        }
        drop(input);
        drop(incoming);
        drop(output);
        OutgoingBody::finish(body, None).expect("finish body");
    }
}

/// Copies `input` to `output` until the input closes, writing each chunk as soon as it is read.
fn pump(input: &InputStream, output: &OutputStream) -> Result<(), String> {
    loop {
        let chunk = match input.blocking_read(READ_CHUNK) {
            Ok(chunk) => chunk,
            Err(StreamError::Closed) => {
                // Wait for everything written to reach the host before the body is finished.
                return output.blocking_flush().map_err(write_err);
            }
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("reading request body: {}", e.to_debug_string()))
            }
        };
        write_all(output, &chunk)?;
    }
}

/// Writes all of `data`, waiting for the stream's permit as needed, then flushes.
fn write_all(output: &OutputStream, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let permit = output.check_write().map_err(write_err)?;
        if permit == 0 {
            output.subscribe().block();
            continue;
        }
        let n = data.len().min(usize::try_from(permit).unwrap_or(usize::MAX));
        output.write(&data[..n]).map_err(write_err)?;
        data = &data[n..];
    }
    output.flush().map_err(write_err)?;
    Ok(())
}

fn write_err(e: StreamError) -> String {
    match e {
        StreamError::Closed => "response body closed".to_string(),
        StreamError::LastOperationFailed(e) => {
            format!("writing response body: {}", e.to_debug_string())
        }
    }
}

wasi::http::proxy::export!(Echo);
