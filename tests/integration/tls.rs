//! TLS and HTTP/2 with curl as the client: https h1 and h2 (ALPN), cleartext h2 by prior
//! knowledge, multiplexed streams, mutual TLS, bad certificates at startup, certificate reload
//! on HUP, RST_STREAM for a guest that fails mid-body, and the handshake timeout.
use crate::support::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A test CA and certificates made with the openssl command line.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let pki = Pki { dir: scratch_dir(name) };
        pki.openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-keyout", "ca.key", "-out", "ca.pem", "-days", "3", "-subj", "/CN=rustcorn test CA"])
            .ok();
        std::fs::write(pki.path("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        std::fs::write(pki.path("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        pki.issue("server", "/CN=first server", "server.ext", "2");
        pki
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn arg(&self, file: &str) -> String {
        self.path(file).to_string_lossy().into_owned()
    }

    fn openssl(&self, args: &[&str]) -> OpensslRun {
        let mut command = Command::new("openssl");
        command.args(args).current_dir(self.dir.path());
        OpensslRun(command)
    }

    /// Issues `NAME.pem` + `NAME.key` signed by the CA, valid for `days` (negative: expired).
    fn issue(&self, name: &str, subject: &str, ext: &str, days: &str) {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        self.openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-keyout", &key, "-out", &csr, "-subj", subject])
            .ok();
        self.openssl(&["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"])
            .args(["-out", &pem, "-days", days, "-extfile", ext])
            .ok();
    }

    /// `--certfile` and `--keyfile` for the server certificate.
    fn server_args(&self) -> Vec<String> {
        vec!["--certfile".into(), self.arg("server.pem"), "--keyfile".into(), self.arg("server.key")]
    }
}

struct OpensslRun(Command);

impl OpensslRun {
    fn args(mut self, args: impl IntoIterator<Item = impl AsRef<std::ffi::OsStr>>) -> Self {
        self.0.args(args);
        self
    }

    fn ok(mut self) {
        let output = self.0.output().expect("run openssl");
        assert!(output.status.success(), "openssl failed: {}", String::from_utf8_lossy(&output.stderr));
    }
}

/// Runs curl with a 30 s cap; returns its output whatever the exit status.
fn curl(args: &[&str]) -> Output {
    Command::new("curl").args(["-sS", "--max-time", "30"]).args(args).output().expect("run curl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn https_url(server: &Server, path: &str) -> String {
    format!("https://{}{path}", server.addr)
}

fn tls_server(pki: &Pki, app: &Path, extra: &[&str]) -> Server {
    ServerCommand::new(app).args(["-w", "1"]).args(pki.server_args()).args(extra).start()
}

#[test]
fn https_get_and_post_with_bodies_and_the_guest_sees_https() {
    let pki = Pki::new("tls-basic");
    let server = tls_server(&pki, &guest("faults"), &[]);
    let ca = pki.arg("ca.pem");
    let got =
        curl(&["--cacert", &ca, "--http1.1", "-w", "\n%{http_version} %{scheme}", &https_url(&server, "/headers")]);
    let text = stdout(&got);
    assert!(got.status.success(), "{got:?}");
    assert!(text.contains("scheme: https\n"), "{text}");
    assert!(text.ends_with("\n1.1 HTTPS"), "{text}");

    let echo = tls_server(&pki, &guest("echo"), &[]);
    let body: String = (0..20_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    for version in ["--http1.1", "--http2"] {
        let posted = curl(&["--cacert", &ca, version, "--data-binary", &body, &https_url(&echo, "/")]);
        assert!(posted.status.success(), "{version}: {posted:?}");
        assert_eq!(stdout(&posted), body, "{version}: the body comes back whole");
    }
}

#[test]
fn h2_is_offered_by_alpn_on_tls_and_by_prior_knowledge_only_when_enabled() {
    let pki = Pki::new("tls-alpn");
    let server = tls_server(&pki, &guest("faults"), &["--access-logfile", "-"]);
    let ca = pki.arg("ca.pem");
    let h2 = curl(&["--cacert", &ca, "--http2", "-w", "%{http_version}", &https_url(&server, "/ok")]);
    assert_eq!(stdout(&h2), "ok\n2", "{h2:?}");
    server.log.wait_for(&["\"GET /ok HTTP/2.0\" 200"], WAIT);

    // Plain bind, default: HTTP/1.1 only.
    let plain = Server::start(&guest("faults"), &["-w", "1"]);
    let url = format!("http://{}/ok", plain.addr);
    let refused = curl(&["--http2-prior-knowledge", &url]);
    assert!(!refused.status.success(), "prior knowledge h2 is off by default: {refused:?}");
    // --http-protocols h1,h2: both on the same plain bind.
    let both = Server::start(&guest("faults"), &["-w", "1", "--http-protocols", "h1,h2"]);
    let url = format!("http://{}/headers", both.addr);
    let h2 = curl(&["--http2-prior-knowledge", "-w", "%{http_version}", &url]);
    assert!(stdout(&h2).contains("scheme: http\n") && stdout(&h2).ends_with('2'), "{h2:?}");
    let h1 = curl(&["--http1.1", "-w", "%{http_version}", &url]);
    assert!(stdout(&h1).ends_with("1.1"), "{h1:?}");
}

#[test]
fn h2_streams_on_one_connection_run_concurrently() {
    let pki = Pki::new("tls-mux");
    let server = tls_server(&pki, &guest("faults"), &["--access-logfile", "-"]);
    let ca = pki.arg("ca.pem");
    let slow = https_url(&server, "/sleep?ms=3000");
    let fast = https_url(&server, "/ok");
    // curl writes each -w line when its transfer completes: the lines are in completion order.
    let run = curl(&[
        "--cacert",
        &ca,
        "--http2",
        "--parallel",
        "--parallel-max",
        "4",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{url_effective} %{http_code} %{num_connects}\n",
        &slow,
        &fast,
        &fast,
    ]);
    assert!(run.status.success(), "{run:?}");
    let lines: Vec<String> = stdout(&run).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains("/ok 200") && lines[1].contains("/ok 200"), "fast streams first: {lines:?}");
    assert!(lines[2].contains("/sleep?ms=3000 200"), "the slow stream last: {lines:?}");
    let connects: u32 = lines.iter().map(|l| l.rsplit(' ').next().unwrap().parse::<u32>().unwrap()).sum();
    assert_eq!(connects, 1, "all three streams on one connection: {lines:?}");
    // Each stream is its own request with its own access-log line.
    server.log.wait_for(&["\"GET /sleep?ms=3000 HTTP/2.0\" 200"], WAIT);
    assert_eq!(server.log.count(&["\"GET /ok HTTP/2.0\" 200"]), 2);
}

#[test]
fn a_guest_failing_after_its_head_resets_the_h2_stream() {
    let pki = Pki::new("tls-rst");
    let server = tls_server(&pki, &guest("faults"), &[]);
    let ca = pki.arg("ca.pem");
    let failed = curl(&["--cacert", &ca, "--http2", &https_url(&server, "/trap-mid-body")]);
    // 92: HTTP/2 stream error (RST_STREAM), not a clean end of stream.
    assert_eq!(failed.status.code(), Some(92), "{failed:?}");
    assert_eq!(stdout(&failed), "partial body\n");
    // The connection's other streams are unaffected: the worker serves on.
    let ok = curl(&["--cacert", &ca, "--http2", &https_url(&server, "/ok")]);
    assert_eq!(stdout(&ok), "ok\n");
}

#[test]
fn mutual_tls_accepts_a_client_certificate_and_refuses_none() {
    let pki = Pki::new("tls-mtls");
    pki.issue("client", "/O=Example/CN=client one", "client.ext", "2");
    let format = "%(ssl_client_s_dn)s %(s)s";
    let required = tls_server(
        &pki,
        &guest("faults"),
        &["--ca-certs", &pki.arg("ca.pem"), "--cert-reqs", "2", "--access-logfile", "-", "--access-logformat", format],
    );
    let ca = pki.arg("ca.pem");
    let url = https_url(&required, "/ok");
    let refused = curl(&["--cacert", &ca, &url]);
    assert!(!refused.status.success(), "no client certificate, no service: {refused:?}");
    let (cert, key) = (pki.arg("client.pem"), pki.arg("client.key"));
    let accepted = curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url]);
    assert_eq!(stdout(&accepted), "ok\n", "{accepted:?}");
    required.log.wait_for(&["CN=client one,O=Example 200"], WAIT);

    // A certificate from another CA is refused too.
    let other = Pki::new("tls-mtls-other");
    other.issue("client", "/CN=stranger", "client.ext", "2");
    let stranger =
        curl(&["--cacert", &ca, "--cert", &other.arg("client.pem"), "--key", &other.arg("client.key"), &url]);
    assert!(!stranger.status.success(), "{stranger:?}");

    // --cert-reqs 1: a certificate is optional.
    let optional = tls_server(&pki, &guest("faults"), &["--ca-certs", &pki.arg("ca.pem"), "--cert-reqs", "1"]);
    let anonymous = curl(&["--cacert", &ca, &https_url(&optional, "/ok")]);
    assert_eq!(stdout(&anonymous), "ok\n", "{anonymous:?}");
}

#[test]
fn an_expired_or_mismatched_certificate_stops_startup_with_one_line() {
    let pki = Pki::new("tls-bad");
    pki.issue("expired", "/CN=expired", "server.ext", "-1");
    let cases = [
        (vec!["--certfile", "expired.pem", "--keyfile", "expired.key"], "the certificate expired on"),
        (vec!["--certfile", "server.pem", "--keyfile", "expired.key"], "does not match the certificate"),
        (vec!["--certfile", "missing.pem", "--keyfile", "server.key"], "cannot read certificates"),
        (vec!["--certfile", "server.pem", "--cert-reqs", "2"], "--cert-reqs 2: client certificates need --ca-certs"),
    ];
    for (args, expected) in cases {
        let args: Vec<String> = args
            .iter()
            .map(|a| if a.ends_with(".pem") || a.ends_with(".key") { pki.arg(a) } else { a.to_string() })
            .collect();
        let (status, _, stderr) = ServerCommand::new(&guest("hello")).args(&args).run_to_exit();
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr}");
        assert!(lines[0].starts_with("rustcorn: error: ") && lines[0].contains(expected), "{args:?}: {stderr}");
    }
}

/// The subject of the certificate a fresh connection is served.
fn served_subject(server: &Server, ca: &str) -> String {
    let run = curl(&["-v", "--cacert", ca, "-o", "/dev/null", &https_url(server, "/ok")]);
    assert!(run.status.success(), "{run:?}");
    let verbose = String::from_utf8_lossy(&run.stderr);
    let line = verbose.lines().find(|l| l.contains(" subject: ")).unwrap_or_else(|| panic!("{verbose}"));
    line.split(" subject: ").nth(1).unwrap().to_string()
}

#[test]
fn hup_swaps_the_certificate_without_failing_a_request_and_keeps_it_on_a_bad_file() {
    let pki = Pki::new("tls-hup");
    let server = tls_server(&pki, &guest("faults"), &[]);
    let ca = pki.arg("ca.pem");
    assert_eq!(served_subject(&server, &ca), "CN=first server");
    let old_workers = server.worker_pids();

    // A slow request in flight on the old certificate, and a steady stream of new connections.
    let slow_url = https_url(&server, "/sleep?ms=2500");
    let ca_for_slow = ca.clone();
    let slow = std::thread::spawn(move || curl(&["--cacert", &ca_for_slow, &slow_url]));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (url, ca, stop) = (https_url(&server, "/ok"), ca.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0, Vec::new());
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let run = curl(&["--cacert", &ca, &url]);
                    if run.status.success() && run.stdout == b"ok\n" {
                        ok += 1;
                    } else {
                        failed.push(format!("{run:?}"));
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    server.log.wait_for(&["sleeping for 2500 ms"], WAIT);

    // Replace the files the way a certificate renewal does, then HUP.
    pki.issue("renewed", "/CN=second server", "server.ext", "2");
    std::fs::rename(pki.path("renewed.key"), pki.path("server.key")).unwrap();
    std::fs::rename(pki.path("renewed.pem"), pki.path("server.pem")).unwrap();
    server.signal(libc::SIGHUP);
    server.log.wait_for(&["Worker ready", "generation 2"], WAIT);
    for pid in &old_workers {
        server.log.wait_for(&[&format!("[{pid}]"), "worker draining"], WAIT);
    }
    assert_eq!(served_subject(&server, &ca), "CN=second server", "new connections get the new certificate");
    let slow = slow.join().unwrap();
    assert_eq!(stdout(&slow), "slept\n", "the request in flight finished: {slow:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for handle in load {
        let (ok, failed) = handle.join().unwrap();
        assert!(ok > 0);
        assert!(failed.is_empty(), "{} failed during the swap: {failed:?}", failed.len());
    }

    // A broken certificate file: the reload fails and the current certificate keeps serving.
    let workers = server.worker_pids();
    std::fs::write(pki.path("server.pem"), "not a certificate\n").unwrap();
    server.signal(libc::SIGHUP);
    server.log.wait_for(&["reload failed", "--certfile"], WAIT);
    assert_eq!(served_subject(&server, &ca), "CN=second server");
    assert_eq!(server.worker_pids(), workers);
}

#[test]
fn a_stalled_handshake_gives_its_connection_slot_back_after_the_timeout() {
    let pki = Pki::new("tls-stall");
    let server = tls_server(&pki, &guest("faults"), &["--worker-connections", "1", "--handshake-timeout", "1"]);
    // Connect and send nothing: this holds the worker's only connection slot.
    let mut stalled = std::net::TcpStream::connect(&server.addr).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = std::time::Instant::now();
    let served = curl(&["--cacert", &pki.arg("ca.pem"), &https_url(&server, "/ok")]);
    assert_eq!(stdout(&served), "ok\n", "served once the stalled handshake timed out: {served:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "the slot was held until the timeout");
    // The stalled connection was closed by the server, not left open.
    let mut buf = [0u8; 16];
    assert_eq!(stalled.read(&mut buf).unwrap(), 0, "closed by the server");
}

#[test]
fn an_idle_h2_connection_gets_goaway_after_keep_alive() {
    let server = Server::start(&guest("faults"), &["-w", "1", "--http-protocols", "h1,h2", "--keep-alive", "1"]);
    let mut client = std::net::TcpStream::connect(&server.addr).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // Connection preface and an empty SETTINGS frame; then silence (no PING answered either).
    use std::io::Write;
    client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").unwrap();
    let mut received = Vec::new();
    client.read_to_end(&mut received).expect("the server closes the idle connection");
    let mut frame_types = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 9 {
        let length = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        frame_types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    assert!(frame_types.contains(&0x7), "a GOAWAY frame before the close: {frame_types:?}");
}

#[test]
fn h2_streams_beyond_the_instance_slots_wait_for_one_instead_of_503() {
    let pki = Pki::new("tls-slots");
    let server = tls_server(&pki, &guest("faults"), &["--instance-slots", "1"]);
    let ca = pki.arg("ca.pem");
    let slow = https_url(&server, "/sleep?ms=1000");
    let fast = https_url(&server, "/ok");
    let run = curl(&[
        "--cacert",
        &ca,
        "--http2",
        "--parallel",
        "--parallel-max",
        "3",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{url_effective} %{http_code}\n",
        &slow,
        &fast,
        &fast,
    ]);
    let text = stdout(&run);
    assert_eq!(text.lines().count(), 3, "{run:?}");
    assert!(text.lines().all(|line| line.ends_with(" 200")), "every stream served, none 503: {text}");
}

#[test]
fn an_h2_stream_waits_for_the_instance_that_lingers_after_its_response() {
    use http_body_util::BodyExt;
    // One instance slot; the first response is whole while its guest runs on for 800 ms. The
    // next stream must wait for that instance to let go of the slot, not take the stream permit
    // the finished response gave back and find the slot still taken (503).
    let server = Server::start(&guest("faults"), &["-w", "1", "--http-protocols", "h1,h2", "--instance-slots", "1"]);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut sender = h2_client(&server.addr).await;
        let get = |path: &str| h2_get(&server.addr, path);
        let first = sender.send_request(get("/linger?ms=800")).await.unwrap();
        assert_eq!(first.status(), 200);
        assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), &b"ok\n"[..]);
        let second = sender.send_request(get("/ok")).await.unwrap();
        assert_eq!(second.status(), 200, "the stream waited for the lingering instance's slot");
    });
}

#[test]
fn ciphers_are_honoured_where_rustls_has_them_and_the_rest_is_reported() {
    let pki = Pki::new("tls-ciphers");
    let server = tls_server(
        &pki,
        &guest("faults"),
        &["--ciphers", "HIGH:TLS_AES_128_GCM_SHA256:!aNULL", "--do-handshake-on-connect"],
    );
    server.log.wait_for(&["WARNING", "--ciphers: cannot honour HIGH:!aNULL"], WAIT);
    server.log.wait_for(&["WARNING", "--do-handshake-on-connect is a no-op"], WAIT);
    let ca = pki.arg("ca.pem");
    let tls13 = curl(&["--cacert", &ca, "-w", " %{ssl_verify_result}", &https_url(&server, "/ok")]);
    assert!(tls13.status.success(), "TLS 1.3 with the named suite: {tls13:?}");
    // Only a TLS 1.3 suite was named: a TLS 1.2-only client finds nothing in common.
    let tls12 = curl(&["--cacert", &ca, "--tls-max", "1.2", &https_url(&server, "/ok")]);
    assert_eq!(tls12.status.code(), Some(35), "handshake refused: {tls12:?}");
}
