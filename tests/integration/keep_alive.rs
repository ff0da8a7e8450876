//! `--keep-alive-max-requests`: a keep-alive connection (HTTP/1.1, HTTP/1.0 keep-alive, HTTP/2)
//! ends after its Nth request, so clients reconnect and spread over the workers; 0 = no cap.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// One response read off a keep-alive connection: its head (lower-cased) and body.
struct Exchange {
    head: String,
    body: Vec<u8>,
}

impl Exchange {
    fn says_close(&self) -> bool {
        self.head.lines().any(|line| line.starts_with("connection:") && line.contains("close"))
    }
}

/// Sends `request` and reads exactly one response (content-length or chunked framing), leaving
/// the connection open for the next one.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Exchange {
    stream.write_all(request).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(exchange) = complete_response(&raw) {
            return exchange;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before a whole response: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

fn complete_response(raw: &[u8]) -> Option<Exchange> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let rest = &raw[head_end + 4..];
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).map(|v| v.trim().parse().unwrap());
    let body = match length {
        Some(length) => rest.get(..length)?.to_vec(),
        // Chunked: complete once the last-chunk line and the final CRLF arrived.
        None => {
            let framed = &raw[head_end + 2..];
            let end = framed.windows(7).position(|w| w == b"\r\n0\r\n\r\n")?;
            framed[..end + 7].to_vec()
        }
    };
    Some(Exchange { head, body })
}

fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    assert_eq!(stream.read(&mut buf).unwrap(), 0, "the server closes the connection after the last response");
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

#[test]
fn an_http11_connection_closes_after_the_cap() {
    let server = Server::start(&guest("hello"), &["-w", "1", "--keep-alive-max-requests", "3"]);
    let mut stream = connect(&server);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let replies: Vec<Exchange> = (0..3).map(|_| exchange(&mut stream, request)).collect();
    for (i, reply) in replies.iter().enumerate() {
        assert!(reply.head.starts_with("http/1.1 200"), "request {}: {}", i + 1, reply.head);
        assert!(String::from_utf8_lossy(&reply.body).contains("Hello, world!"), "request {}", i + 1);
    }
    assert!(!replies[0].says_close() && !replies[1].says_close(), "the first two keep the connection");
    assert!(replies[2].says_close(), "the third says close: {}", replies[2].head);
    assert_closed_by_server(&mut stream);
}

#[test]
fn an_http10_keep_alive_connection_counts_the_same() {
    let server = Server::start(&guest("faults"), &["-w", "1", "--keep-alive-max-requests", "2"]);
    let mut stream = connect(&server);
    let request = b"GET /sized HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    let first = exchange(&mut stream, request);
    assert!(first.head.contains("connection: keep-alive") && !first.says_close(), "{}", first.head);
    let second = exchange(&mut stream, request);
    assert!(second.head.starts_with("http/1.0 200"), "{}", second.head);
    assert_eq!(second.body, b"ok\n");
    assert!(second.says_close() && !second.head.contains("keep-alive"), "only close: {}", second.head);
    assert_closed_by_server(&mut stream);
}

#[test]
fn no_cap_with_zero() {
    let server = Server::start(&guest("hello"), &["-w", "1", "--keep-alive-max-requests", "0"]);
    let mut stream = connect(&server);
    for i in 1..=50 {
        let reply = exchange(&mut stream, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(reply.head.starts_with("http/1.1 200") && !reply.says_close(), "request {i}: {}", reply.head);
    }
}

#[test]
fn an_h2_connection_gets_goaway_after_the_cap() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let server =
        Server::start(&guest("hello"), &["-w", "1", "--http-protocols", "h1,h2", "--keep-alive-max-requests", "3"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        let driver = tokio::spawn(connection);
        for i in 1..=3 {
            let request =
                hyper::Request::get(format!("http://{}/", server.addr)).body(Empty::<bytes::Bytes>::new()).unwrap();
            let response = sender.send_request(request).await.unwrap_or_else(|e| panic!("stream {i}: {e}"));
            assert_eq!(response.status(), 200, "stream {i}");
        }
        // GOAWAY after the third stream, then the server closes: the client's connection ends.
        // On the old code it stays open for --keep-alive (75 s) and this times out.
        let ended = tokio::time::timeout(WAIT, driver).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "the connection ended cleanly after GOAWAY: {ended:?}");
        assert!(sender.is_closed());
    });
}

#[test]
fn a_bad_cap_stops_the_start_with_one_line_naming_it() {
    for value in ["-1", "99999999999999999999", "1099511627777"] {
        let (status, stdout, stderr) = ServerCommand::new(&guest("hello"))
            .args(["-w", "1", &format!("--keep-alive-max-requests={value}")])
            .run_to_exit();
        assert!(!status.success() && stdout.is_empty(), "{value}: {stderr}");
        assert!(!stderr.contains("Booting worker"), "no worker may start:\n{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error:")).collect();
        assert_eq!(errors.len(), 1, "{value}: one error line:\n{stderr}");
        assert!(errors[0].contains("--keep-alive-max-requests"), "{value}: names the setting: {}", errors[0]);
    }
}
