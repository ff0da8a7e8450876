//! Our own corpus of malformed and smuggling-shaped requests, sent raw to the real binary: each
//! gets a 4xx or a closed connection, the guest never runs for any of them (the access log shows a
//! guest-made 200 only for the valid probes), and the worker keeps serving between batches.
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A valid request head with `Host` and the given extra lines, then `body`.
fn post(extra: &str, body: &str) -> Vec<u8> {
    format!("POST /c HTTP/1.1\r\nHost: h\r\n{extra}\r\n{body}").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    post("Transfer-Encoding: chunked\r\n", body)
}

fn get_with(lines: &str) -> Vec<u8> {
    format!("GET /c HTTP/1.1\r\nHost: h\r\n{lines}\r\n").into_bytes()
}

/// Every case: (what it is, the bytes).
pub fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let b = |s: &str| s.as_bytes().to_vec();
    let long = |n: usize| "a".repeat(n);
    vec![
        // Request lines.
        ("method only", b("GET\r\n\r\n")),
        ("HTTP/0.9 style", b("GET /\r\n\r\n")),
        ("extra token after version", b("GET /c HTTP/1.1 x\r\nHost: h\r\n\r\n")),
        ("double space", b("GET  /c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("HTTP/1.2", b("GET /c HTTP/1.2\r\nHost: h\r\n\r\n")),
        ("HTTP/2.0 in an h1 line", b("GET /c HTTP/2.0\r\nHost: h\r\n\r\n")),
        ("lowercase version", b("GET /c http/1.1\r\nHost: h\r\n\r\n")),
        ("version without minor", b("GET /c HTTP/1\r\nHost: h\r\n\r\n")),
        ("version with leading zero", b("GET /c HTTP/01.1\r\nHost: h\r\n\r\n")),
        ("version suffix", b("GET /c HTTP/1.1x\r\nHost: h\r\n\r\n")),
        ("NUL in method", b("G\0T /c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("NUL in target", b("GET /c\0 HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("space in target", b("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("DEL in target", b("GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("CR in target", b("GET /\r HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("NUL before method", b("\0GET /c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("separator in method", b("GE(T /c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("colon in method", b("GET: /c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("bare CR ends request line", b("GET /c HTTP/1.1\rHost: h\r\n\r\n")),
        ("missing target", b("GET HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("leading space", b(" GET /c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("trailing space", b("GET /c HTTP/1.1 \r\nHost: h\r\n\r\n")),
        ("tabs as separators", b("GET\t/c\tHTTP/1.1\r\nHost: h\r\n\r\n")),
        ("method over the line limit", format!("{} /c HTTP/1.1\r\nHost: h\r\n\r\n", "A".repeat(5000)).into_bytes()),
        ("path over the line limit", format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", long(5000)).into_bytes()),
        (
            "absolute-form target over the line limit",
            format!("GET http://h/{} HTTP/1.1\r\nHost: h\r\n\r\n", long(4080)).into_bytes(),
        ),
        ("request line of 70 KB", format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", long(70_000)).into_bytes()),
        (
            "binary garbage",
            vec![0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, b'\r', b'\n', b'\r', b'\n'],
        ),
        ("h2 preface on an h1 server", b("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")),
        // Request-target forms.
        ("CONNECT", b("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n")),
        ("authority-form GET", b("GET h:80 HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("asterisk-form GET", b("GET * HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("asterisk-form POST", b("POST * HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n")),
        ("ftp absolute-form", b("GET ftp://h/c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("userinfo in absolute-form", b("GET http://u:p@h/c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("empty host in absolute-form", b("GET http:///c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("relative target", b("GET c/d HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("dot-dot relative target", b("GET ../c HTTP/1.1\r\nHost: h\r\n\r\n")),
        ("query-only target", b("GET ?q HTTP/1.1\r\nHost: h\r\n\r\n")),
        // Host.
        ("HTTP/1.1 without Host", b("GET /c HTTP/1.1\r\n\r\n")),
        ("two Hosts", b("GET /c HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
        ("Host with a space", b("GET /c HTTP/1.1\r\nHost: a b\r\n\r\n")),
        ("Host with a slash", b("GET /c HTTP/1.1\r\nHost: a/b\r\n\r\n")),
        ("Host port too big", b("GET /c HTTP/1.1\r\nHost: a:99999\r\n\r\n")),
        ("Host port not numeric", b("GET /c HTTP/1.1\r\nHost: a:x\r\n\r\n")),
        ("Host with userinfo", b("GET /c HTTP/1.1\r\nHost: u@a\r\n\r\n")),
        ("Host unclosed IPv6 literal", b("GET /c HTTP/1.1\r\nHost: [::1\r\n\r\n")),
        ("Host with two ports", b("GET /c HTTP/1.1\r\nHost: a:80:80\r\n\r\n")),
        ("Host with quotes", b("GET /c HTTP/1.1\r\nHost: \"a\"\r\n\r\n")),
        ("Host with NUL", b("GET /c HTTP/1.1\r\nHost: a\0b\r\n\r\n")),
        ("invalid Host on HTTP/1.0", b("GET /c HTTP/1.0\r\nHost: a b\r\n\r\n")),
        ("space before colon in Host", b("GET /c HTTP/1.1\r\nHost : h\r\n\r\n")),
        ("Host and a comma list", b("GET /c HTTP/1.1\r\nHost: a, b\r\n\r\n")),
        // Header names and values.
        ("obs-fold on the first field", b("GET /c HTTP/1.1\r\n Host: h\r\n\r\n")),
        ("obs-fold with a space", get_with("X-A: b\r\n c\r\n")),
        ("obs-fold with a tab", get_with("X-A: b\r\n\tc\r\n")),
        ("space in a field name", get_with("Bad Name: x\r\n")),
        ("empty field name", get_with(": x\r\n")),
        ("separator in a field name", get_with("X(: y\r\n")),
        ("NUL in a field name", b("GET /c HTTP/1.1\r\nHost: h\r\nX\0A: y\r\n\r\n")),
        ("NUL in a field value", b("GET /c HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n")),
        ("bare CR in a field value", get_with("X-A: a\rb\r\n")),
        ("field line without colon", get_with("NoColon\r\n")),
        ("DEL in a field value", get_with("X-A: a\x7fb\r\n")),
        ("ESC in a field value", get_with("X-A: \x1b[31mred\r\n")),
        ("vertical tab in a field value", get_with("X-A: a\x0bb\r\n")),
        ("101 fields", get_with(&(0..101).map(|i| format!("X-{i}: v\r\n")).collect::<String>())),
        ("one field over the field size limit", get_with(&format!("X-Big: {}\r\n", long(9000)))),
        ("field name over the field size limit", get_with(&format!("X-{}: v\r\n", long(9000)))),
        ("head over 64 KiB", get_with(&(0..10).map(|i| format!("X-{i}: {}\r\n", long(7000))).collect::<String>())),
        ("Expect other than 100-continue", get_with("Expect: 200-ok\r\n")),
        ("two Expect fields", get_with("Expect: 100-continue\r\nExpect: 100-continue\r\n")),
        ("Expect with an extension", get_with("Expect: 100-continue; x=1\r\n")),
        // Content-Length.
        ("negative Content-Length", post("Content-Length: -1\r\n", "")),
        ("non-numeric Content-Length", post("Content-Length: abc\r\n", "")),
        ("Content-Length with inner space", post("Content-Length: 1 2\r\n", "ab")),
        ("Content-Length with a plus", post("Content-Length: +3\r\n", "abc")),
        ("two different Content-Lengths", post("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd")),
        ("Content-Length list of different values", post("Content-Length: 3, 4\r\n", "abcd")),
        ("Content-Length overflow", post("Content-Length: 99999999999999999999999\r\n", "")),
        ("hex Content-Length", post("Content-Length: 0x10\r\n", "")),
        ("Content-Length over --limit-request-body", post("Content-Length: 209715200\r\n", "abc")),
        ("Content-Length with a trailing letter", post("Content-Length: 3x\r\n", "abc")),
        // Content-Length with Transfer-Encoding (request smuggling shapes).
        ("CL then TE", post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        ("TE then CL", post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n")),
        ("CL 0 and TE", post("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n")),
        (
            "CL.TE smuggled GET",
            post(
                "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
            ),
        ),
        (
            "TE.CL smuggled GET",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                "2c\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\nX: 1\r\n\r\n0\r\n\r\n",
            ),
        ),
        // Transfer-Encoding variants.
        ("TE chunked then identity", post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n")),
        ("TE identity", post("Transfer-Encoding: identity\r\n", "")),
        ("TE gzip alone", post("Transfer-Encoding: gzip\r\n", "")),
        ("TE chunked twice", post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n")),
        ("TE xchunked", post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n")),
        ("TE chunk", post("Transfer-Encoding: chunk\r\n", "0\r\n\r\n")),
        ("TE on HTTP/1.0", b("POST /c HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("TE with a vertical tab", post("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n")),
        ("space before colon in TE", post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n")),
        ("TE in two fields, gzip last", post("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", "0\r\n\r\n")),
        ("TE with a quoted value", post("Transfer-Encoding: \"chunked\"\r\n", "0\r\n\r\n")),
        // Chunked bodies.
        ("chunk size not hex", chunked("zz\r\nhello\r\n0\r\n\r\n")),
        ("empty chunk size", chunked("\r\nhello\r\n0\r\n\r\n")),
        ("negative chunk size", chunked("-5\r\nhello\r\n0\r\n\r\n")),
        ("chunk size with 0x", chunked("0x5\r\nhello\r\n0\r\n\r\n")),
        ("chunk size overflow", chunked("fffffffffffffffff\r\nx\r\n0\r\n\r\n")),
        ("chunk size with a space inside", chunked("5 5\r\nhello\r\n0\r\n\r\n")),
        ("chunk size line ended by LF only", chunked("5\nhello\r\n0\r\n\r\n")),
        ("chunk data longer than its size", chunked("3\r\nhello\r\n0\r\n\r\n")),
        ("chunk data shorter than its size then EOF", chunked("9\r\nhello\r\n0\r\n\r\n")),
        ("chunk data without CRLF", chunked("5\r\nhello0\r\n\r\n")),
        ("NUL in a chunk extension", chunked("5;a=\0\r\nhello\r\n0\r\n\r\n")),
        ("bare CR in a chunk extension", chunked("5;a\rb\r\nhello\r\n0\r\n\r\n")),
        ("ESC in a chunk extension", chunked("5;a=\x1b[2J\r\nhello\r\n0\r\n\r\n")),
        ("DEL in a chunk extension", chunked("5;\x7f\r\nhello\r\n0\r\n\r\n")),
        ("control char in the last chunk's extension", chunked("0;x=\x01\r\n\r\n")),
        ("huge chunk extension", chunked(&format!("5;{}\r\nhello\r\n0\r\n\r\n", long(10_000)))),
        ("garbage where the next chunk size belongs", chunked("5\r\nhello\r\nxyz\r\n")),
        ("trailer with a control character", chunked("5\r\nhello\r\n0\r\nX-T: a\x01b\r\n\r\n")),
        ("obs-fold in the trailer section", chunked("0\r\nX-T: a\r\n b\r\n\r\n")),
        ("trailer line without a colon", chunked("0\r\nX-T a\r\n\r\n")),
        // Pipelining tricks: an invalid first request must not let a following one through.
        ("invalid then valid, pipelined", b("GET /c HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\nHost: h\r\n\r\n")),
        (
            "CL+TE then a pipelined GET",
            [post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), get_with("")].concat(),
        ),
        ("bad chunk then a pipelined GET", [chunked("5;\0\r\nhello\r\n0\r\n\r\n"), get_with("")].concat()),
        (
            // Issue 17 item 4: a framing check that ended the body at the bare LF let the second
            // request, with a control character in its chunk extension, reach the guest.
            "bare LF after the last chunk, then a bad chunk extension",
            [chunked("5\r\nhello\r\n0\r\n\n"), chunked("5;a=\x01\r\nhello\r\n0\r\n\r\n")].concat(),
        ),
        ("CONNECT then a pipelined GET", [b("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n"), get_with("")].concat()),
        (
            "body hidden behind Expect 417",
            post("Expect: nope\r\nContent-Length: 38\r\n", "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"),
        ),
        ("header smuggled via bare LF+CR", get_with("X-A: a\n\rTransfer-Encoding: chunked\r\n")),
    ]
}

/// Sends `bytes` on a fresh connection and returns everything the server sent before closing;
/// None if it did not close in time. The client does not half-close (the server would drop its
/// answer); an incomplete request is closed by --header-timeout.
fn exchange(addr: &str, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
            Err(_) => return None,
        }
    }
}

/// The status codes of every response in `raw` (status lines at the start or after a blank line).
fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.")
        .filter(|(at, _)| *at == 0 || text[..*at].ends_with("\r\n"))
        .filter_map(|(at, _)| text.get(at + 9..at + 12)?.parse().ok())
        .collect()
}

#[test]
fn every_malformed_request_is_refused_without_running_the_guest() {
    let cases = cases();
    assert!(cases.len() >= 100, "the corpus has {} cases", cases.len());
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "--header-timeout", "2", "--keep-alive", "2"])
        .args(["--access-logfile", "-", "--access-logformat", "ACCESS %(s)s %(U)s"])
        .start();
    let mut failures = Vec::new();
    let (mut answered, mut closed) = (0, 0);
    let mut probes = 0;
    for batch in cases.chunks(10) {
        for (name, bytes) in batch {
            match exchange(&server.addr, bytes) {
                None => failures.push(format!("{name}: neither answered nor closed")),
                Some(raw) => {
                    let codes = statuses(&raw);
                    if codes.is_empty() {
                        closed += 1;
                    } else {
                        answered += 1;
                    }
                    if codes.iter().any(|code| !(400..500).contains(code)) {
                        failures.push(format!("{name}: answered {codes:?}: {:?}", String::from_utf8_lossy(&raw)));
                    }
                }
            }
        }
        let probe = server.get("/probe");
        assert_eq!(probe.status, 200, "the worker stopped serving after a batch");
        probes += 1;
    }
    eprintln!("corpus: {} cases, {answered} answered 4xx, {closed} closed without an answer", cases.len());
    // The hello guest answers 200 to anything it is given: a 200 in the access log that is not
    // a probe would be a malformed request that reached it.
    server.log.wait_for_nth(&["ACCESS 200 /probe"], probes, WAIT);
    let guest_answers = server.log.count(&["ACCESS 200"]);
    assert!(failures.is_empty(), "{} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(guest_answers, probes, "the guest ran for a malformed request:\n{}", server.log.text());
    assert_eq!(server.log.count(&["/smuggled"]), 0, "{}", server.log.text());
}
