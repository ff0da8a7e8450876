//! Slow request bodies against the real binary: a body is read ahead before the guest is
//! instantiated (`--body-buffer-size`), so uploaders that trickle hold connections, never instance
//! slots, and a body below the minimum pace (`--body-timeout`, `--body-min-rate`) is cut with 408.
use crate::metrics::{sample, scrape, start};
use crate::support::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const SLOW: usize = 40;

pub(crate) fn slow_uploader(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect an uploader");
    stream.write_all(b"POST /consume HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\nx").unwrap();
    stream
}

#[test]
fn trickling_uploads_hold_no_instance_slot_and_are_cut_with_408() {
    // 8 instance slots and 40 uploaders: if an upload held a slot while it trickled, every slot
    // would be taken and a normal request would get 503.
    let args = ["-w", "1", "--instance-slots", "8", "--body-timeout", "3", "--body-min-rate", "100"];
    let (server, admin) = start("faults", &args);
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW).map(|_| slow_uploader(&server.addr)).collect();
    wait_until("every upload is in progress", Duration::from_secs(10), || {
        sample(&scrape(&admin), "http_server_active_requests") >= SLOW as f64
    });
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let asked = Instant::now();
        let reply = server.post("/consume", b"a normal body");
        slowest = slowest.max(asked.elapsed());
        assert_eq!(reply.status, 200, "a normal request beside {SLOW} uploaders: {}", reply.text());
    }
    eprintln!("normal requests beside {SLOW} trickling uploads: slowest {slowest:?}");
    for stream in &mut slow {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let reply = String::from_utf8_lossy(&read_until_closed(&mut *stream).unwrap()).into_owned();
        assert!(reply.starts_with("HTTP/1.1 408"), "a trickling upload: {reply:?}");
    }
    assert!(started.elapsed() >= Duration::from_secs(3), "not cut before --body-timeout");
    server.log.wait_for(&["refused POST /consume with 408"], Duration::from_secs(5));
}

#[test]
fn an_upload_that_keeps_the_pace_is_served_past_the_body_timeout() {
    let server = ServerCommand::new(&guest("faults"))
        .args(["-w", "1", "--body-timeout", "1", "--body-min-rate", "10", "--body-buffer-size", "0"])
        .start();
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.write_all(b"POST /consume HTTP/1.1\r\nHost: h\r\nContent-Length: 60\r\n\r\n").unwrap();
    // 60 bytes over ~2.4 s: past the 1 s grace, but above 10 bytes/s on average.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        stream.write_all(b"0123456789").unwrap();
    }
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let reply = String::from_utf8_lossy(&read_until_closed(&mut stream).unwrap()).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("60 bytes"), "{reply}");
}

#[test]
fn body_pace_settings_are_bounded() {
    for (flag, value) in [("--body-buffer-size", "65M"), ("--body-timeout", "3601"), ("--body-min-rate", "0")] {
        let (status, _, stderr) = ServerCommand::new(&guest("hello")).args([flag, value]).run_to_exit();
        assert!(!status.success(), "{flag} {value} was accepted");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}
