//! Log files: USR1 reopens them (logrotate), lines stay whole with several workers appending, and
//! the JSON access log.

use crate::support::*;
use std::path::Path;

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
