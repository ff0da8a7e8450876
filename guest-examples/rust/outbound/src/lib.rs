//! `outbound`: a guest that reaches out of its sandbox on request, and reports what it got,
//! for testing the host's outbound HTTP policy and its `wasi:sockets` denial.
//!
//! | route                                         | behaviour                                   |
//! |-----------------------------------------------|---------------------------------------------|
//! | `/fetch?scheme=S&authority=A&path=P`          | GET S://A/P; 200 `status N\n` + body, or    |
//! |                                               | 200 `error CODE\n` with the wasi-http error |
//! | `/fetch-many?n=N&authority=A&first_byte_ms=M` | N GETs to http://A/ at once, one result line |
//! |                                               | each (`status N` or `error CODE`)           |
//! | `/tcp?addr=IP:PORT`                           | wasi:sockets TCP connect; `connected\n` or  |
//! |                                               | `error CODE\n`                              |
//! | `/resolve?name=NAME`                          | wasi:sockets name lookup; the addresses or  |
//! |                                               | `error CODE\n`                              |
//!
//! Optional `first_byte_ms=M` on `/fetch` sets the request's first-byte timeout.

use std::time::Duration;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, FutureIncomingResponse, Fields, IncomingRequest, OutgoingBody, OutgoingRequest,
    OutgoingResponse, RequestOptions, ResponseOutparam, Scheme,
};
use wasi::io::streams::StreamError;
use wasi::sockets::network::{IpAddress, IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
use wasi::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

struct Outbound;

impl Guest for Outbound {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
        let (path, query) = path_with_query.split_once('?').unwrap_or((path_with_query.as_str(), ""));
        let param = |name: &str| query_param(query, name);
        let first_byte = param("first_byte_ms").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis);
        let body = match path {
            "/fetch" => {
                let scheme = match param("scheme") {
                    Some("https") => Scheme::Https,
                    _ => Scheme::Http,
                };
                let authority = param("authority").unwrap_or("");
                let target = param("path").unwrap_or("/");
                match start_get(scheme, authority, target, first_byte) {
                    Ok(future) => match wait(future) {
                        Ok((status, body)) => format!("status {status}\n{body}"),
                        Err(code) => format!("error {code:?}\n"),
                    },
                    Err(code) => format!("error {code:?}\n"),
                }
            }
            "/fetch-many" => {
                let n = param("n").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1);
                let authority = param("authority").unwrap_or("");
                let started: Vec<_> = (0..n).map(|_| start_get(Scheme::Http, authority, "/", first_byte)).collect();
                let mut lines = String::new();
                for result in started {
                    match result.and_then(wait) {
                        Ok((status, _)) => lines.push_str(&format!("status {status}\n")),
                        Err(code) => lines.push_str(&format!("error {code:?}\n")),
                    }
                }
                lines
            }
            "/tcp" => match tcp_connect(param("addr").unwrap_or("")) {
                Ok(()) => "connected\n".to_string(),
                Err(e) => format!("error {e}\n"),
            },
            "/resolve" => match resolve(param("name").unwrap_or("")) {
                Ok(addresses) => format!("resolved {addresses}\n"),
                Err(e) => format!("error {e}\n"),
            },
            _ => "not found\n".to_string(),
        };
        respond(response_out, body.as_bytes());
    }
}

fn start_get(
    scheme: Scheme,
    authority: &str,
    path: &str,
    first_byte: Option<Duration>,
) -> Result<FutureIncomingResponse, ErrorCode> {
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_authority(Some(authority)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    request.set_path_with_query(Some(path)).map_err(|()| ErrorCode::HttpRequestUriInvalid)?;
    let options = first_byte.map(|timeout| {
        let options = RequestOptions::new();
        let _ = options.set_first_byte_timeout(Some(timeout.as_nanos() as u64));
        options
    });
    outgoing_handler::handle(request, options)
}

/// Waits for the response and reads its whole body.
fn wait(future: FutureIncomingResponse) -> Result<(u16, String), ErrorCode> {
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(result)) => result?,
        _ => return Err(ErrorCode::InternalError(Some("response future not ready".into()))),
    };
    let status = response.status();
    let body = response.consume().map_err(|()| ErrorCode::InternalError(Some("no body".into())))?;
    let stream = body.stream().map_err(|()| ErrorCode::InternalError(Some("no body stream".into())))?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => bytes.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ErrorCode::InternalError(Some(e.to_debug_string())));
            }
        }
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

fn tcp_connect(addr: &str) -> Result<(), String> {
    let (ip, port) = addr.rsplit_once(':').ok_or("addr is IP:PORT")?;
    let octets: Vec<u8> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
    let [a, b, c, d] = octets[..] else { return Err("addr is an IPv4 address and port".into()) };
    let port: u16 = port.parse().map_err(|_| "bad port")?;
    let network = instance_network::instance_network();
    let socket = tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4).map_err(|e| format!("{e:?}"))?;
    let remote = IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address: (a, b, c, d) });
    socket.start_connect(&network, remote).map_err(|e| format!("{e:?}"))?;
    socket.subscribe().block();
    socket.finish_connect().map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn resolve(name: &str) -> Result<String, String> {
    let network = instance_network::instance_network();
    let stream = ip_name_lookup::resolve_addresses(&network, name).map_err(|e| format!("{e:?}"))?;
    let mut found = Vec::new();
    loop {
        match stream.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => found.push(format!("{a}.{b}.{c}.{d}")),
            Ok(Some(IpAddress::Ipv6(v6))) => found.push(format!("{v6:?}")),
            Ok(None) => break,
            Err(wasi::sockets::network::ErrorCode::WouldBlock) => stream.subscribe().block(),
            Err(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(found.join(","))
}

fn respond(response_out: ResponseOutparam, body_bytes: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(200).expect("valid status");
    let body = response.body().expect("response body");
    ResponseOutparam::set(response_out, Ok(response));
    let out = body.write().expect("body stream");
    for chunk in body_bytes.chunks(4096) {
        out.blocking_write_and_flush(chunk).expect("write body");
    }
    drop(out);
    OutgoingBody::finish(body, None).expect("finish body");
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((key, value)) if key == name => Some(value),
        _ => None,
    })
}

wasi::http::proxy::export!(Outbound);
