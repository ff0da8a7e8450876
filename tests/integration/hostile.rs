//! Hostile clients against the real binary: slow heads, slow readers, large and slow bodies,
//! invalid framing and log injection cannot pin, starve or crash a worker.
use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads one response (until the server closes or `timeout`), without sending anything more.
fn read_reply(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    Ok(String::from_utf8_lossy(&read_until_closed(stream)?).into_owned())
}

/// Reads `stream` until the server ends it (end of stream, or a reset); an error says what
/// happened instead (the read timed out with the connection still open, or another error).
fn wait_closed_by_server(mut stream: TcpStream, within: Duration) -> Result<(), String> {
    stream.set_read_timeout(Some(within)).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            // A response before the close (a 408) is allowed.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err(format!("still open after {within:?}"))
            }
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

fn status_of(reply: &str) -> u16 {
    reply.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn slowloris_connections_are_closed_by_the_header_timeout_and_do_not_starve_others() {
    const SLOW: usize = 500;
    let server = ServerCommand::new(&guest("hello")).args(["-w", "1", "--header-timeout", "5"]).start();
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).expect("connect a slow client");
            s.write_all(b"GET /slow HTTP/1.1\r\nHost: h\r\n").unwrap();
            s
        })
        .collect();
    // Dribble one header line per connection every 500 ms while a normal client is served.
    let dribbler = std::thread::spawn(move || {
        for round in 0..5 {
            for s in &mut slow {
                let _ = s.write_all(format!("X-{round}: y\r\n").as_bytes());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        slow
    });
    let mut latencies = Vec::new();
    while !dribbler.is_finished() {
        let t = Instant::now();
        let reply = server.get("/normal");
        latencies.push(t.elapsed());
        assert_eq!(reply.status, 200);
    }
    let slow = dribbler.join().unwrap();
    let held = slow
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let open = matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            open
        })
        .count();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    let max = *latencies.last().unwrap();
    eprintln!(
        "slowloris: {held}/{SLOW} dribbling connections held after {:.1}s; normal client: {} requests, median {:?}, max {:?}",
        started.elapsed().as_secs_f64(),
        latencies.len(),
        median,
        max
    );
    assert_eq!(held, SLOW, "the dribbling connections were all open while the normal client was served");
    assert!(max < Duration::from_secs(2), "a normal request took {max:?} next to {SLOW} slow heads");
    // Every dribbling connection is closed by the server once --header-timeout (5 s) has passed
    // since its start: an end of stream or a reset, never a read that merely timed out.
    for (i, s) in slow.into_iter().enumerate() {
        if let Err(still_open) = wait_closed_by_server(s, Duration::from_secs(10)) {
            panic!("slow connection {i} outlived --header-timeout: {still_open}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(15), "slow heads were cut by --header-timeout, not --keep-alive");
    server.log.wait_for(&["connection closed: no complete request head within --header-timeout 5s"], WAIT);
}

#[test]
fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let server = ServerCommand::new(&guest("hello")).args(["-w", "1", "--header-timeout", "1"]).start();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    for _ in 0..2 {
        stream.write_all(request.as_bytes()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        // Idle between requests for longer than --header-timeout: keep-alive (75 s) governs.
        std::thread::sleep(Duration::from_millis(1500));
    }
}

#[test]
fn a_client_that_stops_reading_frees_its_connection_slot() {
    let server =
        ServerCommand::new(&guest("faults")).args(["-w", "1", "--worker-connections", "1", "--timeout", "2"]).start();
    let mut reader = TcpStream::connect(&server.addr).unwrap();
    reader.write_all(format!("GET /big?kb=65536 HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).as_bytes()).unwrap();
    // `reader` never reads. With the only slot taken, this request waits for the stall deadline.
    let t = Instant::now();
    let reply = http(&server.addr, "GET", "/ok", &[], b"").expect("the second client is served");
    assert_eq!(reply.status, 200);
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
    server.log.wait_for(&["the client read nothing of the response for --timeout 2s"], WAIT);
    drop(reader);
}

#[test]
fn a_declared_body_over_the_limit_gets_413_before_it_is_sent() {
    let server = ServerCommand::new(&guest("faults")).args(["-w", "1", "--limit-request-body", "1K"]).start();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(b"POST /consume HTTP/1.1\r\nHost: h\r\nContent-Length: 2000\r\n\r\n").unwrap();
    // No body byte is sent: the answer cannot depend on reading it.
    let reply = read_reply(&mut stream, Duration::from_secs(10)).unwrap();
    assert_eq!(status_of(&reply), 413, "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");

    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    let body = format!("{chunk}{chunk}{chunk}0\r\n\r\n");
    let reply = raw_tcp(
        &server.addr,
        format!("POST /consume HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}").as_bytes(),
    )
    .unwrap();
    assert_eq!(reply.status, 413, "a chunked body over the limit: {}", reply.text());
    let within = server.post("/consume", &[b'x'; 1000]);
    assert_eq!((within.status, within.text()), (200, "1000 bytes\n".to_string()));
}

#[test]
fn an_upload_that_keeps_sending_is_not_timed_out() {
    let server = ServerCommand::new(&guest("faults")).args(["-w", "1", "--timeout", "3"]).start();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(b"POST /consume HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    // 8 chunks 500 ms apart: over 4 s in all, past --timeout 3, but never more than a sixth of it
    // without progress (a wide margin on a loaded machine, where a 400 ms gap against a 1 s
    // timeout was not).
    let started = Instant::now();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        stream.write_all(b"a\r\n0123456789\r\n").unwrap();
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let reply = read_reply(&mut stream, Duration::from_secs(10)).unwrap();
    assert!(started.elapsed() > Duration::from_secs(3), "the upload really outlasted --timeout");
    assert_eq!(status_of(&reply), 200, "{reply}");
    assert!(reply.contains("80 bytes"), "{reply}");
}

#[test]
fn invalid_requests_get_their_status_before_any_body_and_are_logged() {
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "--access-logfile", "-", "--access-logformat", "ACCESS %(s)s %(m)s"])
        .start();
    // HTTP/1.1 without Host: 400 at once, although the declared body never comes.
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(b"POST /c HTTP/1.1\r\nContent-Length: 10\r\n\r\n").unwrap();
    let reply = read_reply(&mut stream, Duration::from_secs(10)).unwrap();
    assert_eq!(status_of(&reply), 400, "{reply}");
    // HTTP/1.0 without Host keeps working.
    let old = raw_tcp(&server.addr, b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(old.status, 200);

    let cases: [(&[u8], u16); 6] = [
        (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: something\r\n\r\n", 417),
        (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\x01\r\nhello\r\n0\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n", 400),
        // Connection: close, or reading to the end waits out the client's 60 s read timeout.
        (b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 200),
    ];
    for (request, status) in cases {
        let reply = raw_tcp(&server.addr, request).unwrap();
        assert_eq!(reply.status, status, "{}", String::from_utf8_lossy(request));
        if status != 200 {
            assert_eq!(reply.header("connection"), Some("close"));
        }
    }
    let long = format!("GET http://h/{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(4090));
    assert_eq!(raw_tcp(&server.addr, long.as_bytes()).unwrap().status, 400, "absolute-form over the line limit");

    // Refused by hyper itself (too many fields: 431): still one warning line with the peer.
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let reply = raw_tcp(&server.addr, format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n").as_bytes()).unwrap();
    assert_eq!(reply.status, 431);
    server.log.wait_for(&["127.0.0.1: request refused by the HTTP layer"], WAIT);
    // Refused by our checks: an access-log line and an error-log line with the reason.
    server.log.wait_for(&["ACCESS 417 GET"], WAIT);
    server.log.wait_for(&["127.0.0.1: refused CONNECT", "405", "not a proxy"], WAIT);
    server.log.wait_for(&["refused POST", "both Content-Length and Transfer-Encoding"], WAIT);
}

#[test]
fn client_text_in_the_access_log_is_escaped_one_request_one_line() {
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "--access-logfile", "-", "--access-logformat", r#"ACCESS %(u)s "%(a)s" %(s)s END"#])
        .start();
    // Basic auth user `x"<newline>FAKE 200` (base64), a User-Agent with a quote and a backslash.
    let reply = http(
        &server.addr,
        "GET",
        "/",
        &[("Authorization", "Basic eCIKRkFLRSAyMDA6cHc="), ("User-Agent", r#"ua" \ 200 END"#)],
        b"",
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    let line = server.log.wait_for(&["ACCESS "], WAIT);
    assert_eq!(line, r#"ACCESS x\"\nFAKE 200 "ua\" \\ 200 END" 200 END"#);
    assert_eq!(server.log.count(&["FAKE"]), 1, "{}", server.log.text());
}

#[test]
fn guest_output_is_escaped_and_capped() {
    // A regular file as the error log: always writable, so no line is dropped for back-pressure.
    let dir = scratch_dir("guest-output");
    let log_file = dir.path().join("error.log");
    let server = ServerCommand::new(&guest("faults")).args(["-w", "1", "--error-logfile"]).arg(&log_file).start();
    let log = || std::fs::read_to_string(&log_file).unwrap_or_default();
    assert_eq!(server.get("/print-escape").status, 200);
    assert_eq!(server.get("/print-long-line").status, 200);
    assert_eq!(server.get("/print-flood?kb=4096").status, 200);
    wait_until("the output cap marker", WAIT, || {
        log().contains("[more than 1 MiB of output in this request; the rest is dropped]")
    });
    let text = log();
    assert!(text.contains(r#"guest stdout: evil \x1b[2J\"quoted\" back\\slash\rcarriage"#), "{text}");
    let cut = text.lines().find(|l| l.contains("guest stdout: LLLL")).expect("the long line, cut");
    assert!(cut.ends_with("[line cut at 1024 bytes]") && cut.len() < 1300, "a cut line is {} bytes", cut.len());
    let flood_lines = text.lines().filter(|l| l.contains("guest stdout: fffff")).count();
    assert!(flood_lines <= (1 << 20) / 100 + 1, "{flood_lines} flood lines logged");
    assert!(flood_lines >= (1 << 20) / 100 - 1, "{flood_lines} flood lines logged");
}

#[test]
fn a_full_error_log_pipe_does_not_block_the_worker() {
    let dir = scratch_dir("fifo-log");
    let fifo = dir.path().join("errors.fifo");
    let status = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    // Held open but never read: the pipe fills up (64 KiB) and stays full.
    let _reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let server = ServerCommand::new(&guest("faults")).args(["-w", "1", "--error-logfile"]).arg(&fifo).start();
    for _ in 0..3 {
        let reply = http(&server.addr, "GET", "/print-flood?kb=512", &[], b"").expect("served");
        assert_eq!(reply.status, 200);
    }
    assert_eq!(server.get("/ok").status, 200);
}

use std::os::unix::fs::OpenOptionsExt;
