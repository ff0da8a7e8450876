//! Log files: USR1 reopens them (logrotate), lines stay whole with several workers appending, the
//! JSON access log, and back-pressure: a log pipe nobody reads or a full disk never stops serving;
//! the lines are dropped, counted (`rustcorn_log_lines_dropped_total{log}`) and reported.

use crate::support::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn usr1_reopens_the_error_and_access_logs() {
    let dir = scratch_dir("usr1");
    let error_log = dir.path().join("error.log");
    let access_log = dir.path().join("access.log");
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "2", "--access-logformat", "%(p)s %(s)s %(U)s"])
        .arg("--error-logfile")
        .arg(&error_log)
        .arg("--access-logfile")
        .arg(&access_log)
        .start();
    assert_eq!(server.get("/before").status, 200);
    wait_until("the access log has the first request", WAIT, || read(&access_log).contains(" 200 /before"));

    // What logrotate does: rename the files, then USR1.
    std::fs::rename(&error_log, dir.path().join("error.log.1")).unwrap();
    std::fs::rename(&access_log, dir.path().join("access.log.1")).unwrap();
    server.signal(libc::SIGUSR1);
    wait_until("both workers reopened their logs", WAIT, || {
        read(&error_log).matches("worker reopened its log files").count() == 2
    });
    assert!(read(&error_log).contains("reopened the error log"), "the arbiter writes to the new file too");

    for _ in 0..4 {
        assert_eq!(server.get("/after").status, 200);
    }
    wait_until("the new access log has the later requests", WAIT, || {
        read(&access_log).matches(" 200 /after").count() == 4
    });
    let rotated = read(&dir.path().join("access.log.1"));
    assert!(rotated.contains(" 200 /before") && !rotated.contains("/after"), "{rotated}");
}

#[test]
fn access_log_lines_from_several_workers_never_interleave() {
    let dir = scratch_dir("whole-lines");
    let access_log = dir.path().join("access.log");
    // A long line (a 2 KB user agent) makes a torn write visible.
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "3", "--access-logformat", "%(p)s %(s)s %(U)s %(a)s end"])
        .arg("--access-logfile")
        .arg(&access_log)
        .start();
    let agent = "x".repeat(2048);
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (addr, agent) = (server.addr.clone(), agent.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let reply = http(&addr, "GET", "/line", &[("User-Agent", &agent)], b"").unwrap();
                    assert_eq!(reply.status, 200);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    wait_until("every request is logged", WAIT, || read(&access_log).lines().count() == 300);
    let text = read(&access_log);
    let expected_tail = format!(" 200 /line {agent} end");
    let mut workers = std::collections::HashSet::new();
    for line in text.lines() {
        assert!(line.starts_with('<') && line.ends_with(&expected_tail), "torn line: {:.120}", line);
        workers.insert(line.split(' ').next().unwrap().to_string());
    }
    assert!(workers.len() >= 2, "several workers wrote to the file: {workers:?}");
}

#[test]
fn json_access_log_has_one_object_per_line_with_every_atom() {
    let server = Server::start(&guest("hello"), &["-w", "1", "--access-logfile", "-", "--access-logformat", "json"]);
    let agent = r#"agent "quoted" \ back"#;
    let reply = http(&server.addr, "GET", "/path?q=1", &[("User-Agent", agent)], b"").unwrap();
    assert_eq!(reply.status, 200);
    let line = server.log.wait_for(&["{\"h\":"], WAIT);
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let object = entry.as_object().unwrap();
    for key in ["h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T", "M", "D", "L", "p"] {
        assert!(object.contains_key(key), "{key} missing in {line}");
    }
    assert_eq!(entry["h"], "127.0.0.1");
    assert_eq!(entry["r"], "GET /path?q=1 HTTP/1.1");
    assert_eq!(entry["m"], "GET");
    assert_eq!(entry["U"], "/path");
    assert_eq!(entry["q"], "q=1");
    assert_eq!(entry["s"], 200);
    assert_eq!(entry["B"], 14);
    assert_eq!(entry["b"], "14");
    assert_eq!(entry["a"], agent);
    assert!(entry["L"].is_f64() && entry["D"].is_u64(), "{line}");
    assert_eq!(entry["p"], format!("<{}>", server.worker_pids()[0]));
}

/// A pipe (read end, write end), both close-on-exec in this process.
fn pipe() -> (std::fs::File, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors this function then owns.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    unsafe { (std::fs::File::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) }
}

/// A description of its own on the pipe's write end, non-blocking (the server's stays blocking).
fn nonblocking_writer(pipe: &std::os::fd::OwnedFd) -> std::fs::File {
    use std::os::fd::AsRawFd;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/proc/self/fd/{}", pipe.as_raw_fd()))
        .expect("open the pipe again through /proc")
}

/// Writes into `writer` until the pipe is full to the last byte; returns the bytes written.
fn fill(writer: &mut std::fs::File) -> usize {
    let mut filled = 0;
    for chunk in [4096, 1] {
        let bytes = vec![b'#'; chunk];
        loop {
            match writer.write(&bytes) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("filling the pipe: {e}"),
            }
        }
    }
    filled
}

fn still_full(writer: &mut std::fs::File) -> bool {
    matches!(writer.write(b"#"), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// `rustcorn_log_lines_dropped_total{log="KIND"}` on the admin endpoint.
fn dropped_metric(admin: &str, kind: &str) -> u64 {
    let reply = http(admin, "GET", "/metrics", &[], b"").expect("scrape /metrics");
    let series = format!("rustcorn_log_lines_dropped_total{{log=\"{kind}\"}} ");
    reply.text().lines().find_map(|l| l.strip_prefix(&series)).map_or(0, |v| v.trim().parse().unwrap())
}

/// The sum of N over the `KIND log: dropped N lines` notes.
fn noted(log: &LogCapture, kind: &str) -> u64 {
    let prefix = format!("{kind} log: dropped ");
    log.text().lines().filter_map(|line| line.split_once(&prefix)).map(|(_, rest)| number_after(rest, "") as u64).sum()
}

fn admin_address(log: &LogCapture) -> String {
    let line = log.wait_for(&["Admin endpoint at: http://"], WAIT);
    line.split("Admin endpoint at: http://").nth(1).unwrap().split_whitespace().next().unwrap().to_string()
}

#[test]
fn a_log_pipe_nobody_reads_never_stops_serving_and_the_drops_are_counted_and_reported() {
    const REQUESTS: usize = 200;
    const FLOODS: usize = 10;
    let (mut reader, pipe) = pipe();
    let mut filler = nonblocking_writer(&pipe);
    let server = ServerCommand::new(&guest("faults"))
        .args(["-w", "2", "--access-logfile", "-", "--admin-bind", "127.0.0.1:0", "--timeout", "5"])
        .start_on_pipe(pipe, &mut reader);
    let admin = admin_address(&server.log);
    let filled = fill(&mut filler);

    // The access log (stdout), the error log and guest output (stderr) all go into the full pipe.
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                for _ in 0..REQUESTS / 4 {
                    let t = Instant::now();
                    let reply = http(&addr, "GET", "/ok", &[], b"").expect("answered while the log pipe is full");
                    assert_eq!(reply.status, 200);
                    slowest = slowest.max(t.elapsed());
                }
                slowest
            })
        })
        .collect();
    for _ in 0..FLOODS {
        assert_eq!(server.get("/print-flood?kb=8").status, 200);
    }
    let slowest = clients.into_iter().map(|c| c.join().unwrap()).max().unwrap();
    // A new worker boots (the arbiter logs it) and serves while the pipe is full.
    server.signal(libc::SIGTTIN);
    server.wait_status("a third worker serving", |s| s.ready == 3);
    let served = REQUESTS + FLOODS;
    eprintln!(
        "log pipe full ({filled} bytes, never read): {served} requests served in {:.2}s, slowest {slowest:?}",
        started.elapsed().as_secs_f64()
    );
    assert!(slowest < Duration::from_secs(2), "a request took {slowest:?} with the log pipe full");
    assert!(still_full(&mut filler), "the pipe stayed full all along");
    wait_until("the workers published their access-log drops", WAIT, || {
        dropped_metric(&admin, "access") == served as u64
    });
    assert!(dropped_metric(&admin, "guest") >= FLOODS as u64 * 80, "each flood's ~82 lines were dropped");

    // The reader comes back: each process says how many lines it dropped (within a heartbeat),
    // and the notes add up to the metric.
    let drained = LogCapture::follow(reader);
    drained.wait_for(&["access log: dropped "], WAIT);
    drained.wait_for(&["guest log: dropped "], WAIT);
    drained.wait_for(&["error log: dropped "], WAIT);
    for kind in ["access", "guest", "error"] {
        wait_until(&format!("the {kind} notes add up to the metric"), WAIT, || {
            noted(&drained, kind) == dropped_metric(&admin, kind)
        });
    }
    assert_eq!(noted(&drained, "access"), served as u64);
    // Lines are written again once the pipe has room.
    assert_eq!(server.get("/ok?after-drain").status, 200);
    drained.wait_for(&["GET /ok?after-drain HTTP/1.1\" 200"], WAIT);
    assert_eq!(dropped_metric(&admin, "access"), served as u64);
    for line in drained.text().lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with('[') || line.contains(" 200 "), "a torn or foreign line: {line:.200}");
    }
}

#[test]
fn a_full_disk_drops_log_lines_without_stopping_serving() {
    // /dev/full answers every write with ENOSPC, as a full disk does. The admin address cannot be
    // read from an error log that takes nothing: the test picks a free port for it.
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let server = ServerCommand::new(&guest("hello"))
        .args(["-w", "1", "--access-logfile", "/dev/full", "--error-logfile", "/dev/full"])
        .args(["--admin-bind", &admin])
        .start();
    for _ in 0..50 {
        assert_eq!(server.get("/").status, 200);
    }
    wait_until("50 access lines counted as dropped", WAIT, || dropped_metric(&admin, "access") == 50);
    assert!(dropped_metric(&admin, "error") > 0, "the startup lines could not be written either");
}
