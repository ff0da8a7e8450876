//! Balanced workers (issue 20 item 1): a burst of keep-alive connections to `-w 2` running a
//! CPU-heavy route spreads over both workers, so both serve a fair share of the requests.

use crate::support::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Keep-alive connections opened at once, as a load generator or a proxy's pool does.
const CONNECTIONS: usize = 24;
/// Requests (all workers together) looked at: about a second of load on two cores.
const SAMPLE: usize = 60;
/// The least share of the sample each worker must serve.
const FAIR_SHARE_PERCENT: usize = 25;

/// Reads one response with a `content-length` body off a keep-alive connection; false when
/// the connection ended first.
fn read_response(stream: &mut TcpStream) -> bool {
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                return head.starts_with("http/1.1 200");
            }
        }
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => raw.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
}

/// Loops requests on `path` over one connection whose first request is already sent, until `stop`.
fn keep_alive_client(mut stream: TcpStream, path: &'static str, stop: Arc<AtomicBool>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: balance\r\n\r\n");
    while read_response(&mut stream) && !stop.load(Ordering::Relaxed) {
        if stream.write_all(request.as_bytes()).is_err() {
            return;
        }
    }
}

/// Connections waiting in the accept queue of the listening TCP socket on `addr`'s port
/// (`rx_queue` of its LISTEN line in /proc/net/tcp).
fn accept_queue(addr: &str) -> usize {
    let port = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("a port");
    let local = format!(":{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1].ends_with(&local) && f[3] == "0A")
        .and_then(|f| usize::from_str_radix(f[4].split(':').nth(1)?, 16).ok())
        .expect("the listening socket in /proc/net/tcp")
}

/// The state letter of /proc/PID/stat (`T` when stopped).
fn process_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')').next().and_then(|rest| rest.trim_start().chars().next()).unwrap_or('?')
}

/// Requests per worker pid among the first `SAMPLE` access-log lines for `path`.
fn served_by(log: &str, path: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| l.starts_with("ACCESS ") && l.ends_with(path)).take(SAMPLE) {
        let pid = line.split(' ').nth(1).unwrap_or("?").to_string();
        *counts.entry(pid).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_burst_of_keep_alive_connections_spreads_over_both_workers() {
    let path = "/spin?ms=20";
    let server = Server::start(
        &guest("faults"),
        &["-w", "2", "--access-logfile", "-", "--access-logformat", "ACCESS %(p)s %(s)s %(U)s"],
    );
    server.wait_status("both workers serving", |s| s.ready == 2);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");

    // The burst arrives while neither worker runs, and one of them gets the CPU first: what a
    // loaded 2-core machine does to a load generator's connect burst, made certain. Stopped
    // workers keep their place on the load board.
    for &pid in &workers {
        send_signal(pid, libc::SIGSTOP);
        wait_until("the worker is stopped", WAIT, || process_state(pid) == 'T');
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: balance\r\n\r\n");
    let streams: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.addr).expect("connect");
            stream.set_read_timeout(Some(WAIT * 3)).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            stream
        })
        .collect();
    wait_until("the burst waits in the accept queue", WAIT, || accept_queue(&server.addr) == CONNECTIONS);
    send_signal(workers[0], libc::SIGCONT);
    wait_until("the first worker accepts", WAIT, || accept_queue(&server.addr) < CONNECTIONS);
    send_signal(workers[1], libc::SIGCONT);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = streams
        .into_iter()
        .map(|stream| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_alive_client(stream, path, stop))
        })
        .collect();
    let logged = " 200 /spin";
    wait_until("a sample of requests is logged", WAIT * 3, || server.log.count(&["ACCESS ", logged]) >= SAMPLE);
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let counts = served_by(&server.log.text(), logged);
    let total: usize = counts.values().sum();
    assert_eq!(total, SAMPLE, "{counts:?}");
    for pid in &workers {
        let served = counts.get(&format!("<{pid}>")).copied().unwrap_or(0);
        assert!(
            served * 100 >= total * FAIR_SHARE_PERCENT,
            "worker {pid} served {served} of the first {total} requests ({counts:?}): one worker took the burst"
        );
    }
}

#[test]
fn a_stopped_worker_does_not_keep_connections_waiting_for_it() {
    let server = Server::start(&guest("faults"), &["-w", "2"]);
    server.wait_status("both workers serving", |s| s.ready == 2);
    let workers = server.worker_pids();
    assert_eq!(workers.len(), 2, "two workers: {workers:?}");
    // The stopped worker still sits on the load board as accepting, with nothing open: the other
    // worker, soon ahead of it, takes the connections anyway once they have waited the hold.
    send_signal(workers[1], libc::SIGSTOP);
    wait_until("the worker is stopped", WAIT, || process_state(workers[1]) == 'T');
    let request = b"GET /count HTTP/1.1\r\nHost: balance\r\n\r\n";
    let mut streams: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.addr).expect("connect");
            stream.set_read_timeout(Some(WAIT)).unwrap();
            stream.write_all(request).unwrap();
            stream
        })
        .collect();
    for (i, stream) in streams.iter_mut().enumerate() {
        assert!(read_response(stream), "keep-alive connection {i} was answered while a worker is stopped");
    }
    send_signal(workers[1], libc::SIGCONT);
}
