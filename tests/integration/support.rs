//! Test harness: builds the example guests once, starts the real `rustcorn` binary, reads its
//! readiness line, captures its error log, and speaks raw HTTP/1.1 over real sockets.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use crate::status::{Status, StatusLog};

/// How long a server may take to print its readiness line. Generous: the first start of the
/// Python and JS apps compiles them (several seconds on 2 cores), later starts hit the cache.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Default time allowed for an expected log line or process change.
pub const WAIT: Duration = Duration::from_secs(20);

/// The binary under test: this build's, or `RUSTCORN_TEST_BIN` (to run a test against another
/// build, e.g. to show it fails without a fix).
pub fn rustcorn_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("RUSTCORN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rustcorn").to_string())
    })
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Compile cache shared by all tests (and kept between runs) so each app compiles once.
pub fn cache_dir() -> PathBuf {
    tmp_root().join("compile-cache")
}

/// Builds every example guest from source, once per test run; returns the directory of .wasm files.
pub fn guests_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = tmp_root().join("guests");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/build.sh");
        let status = Command::new("bash").arg(&script).arg(&out).status().expect("run guest-examples/build.sh");
        assert!(status.success(), "guest-examples/build.sh failed: {status}");
        out
    })
}

/// Path of one built example guest, e.g. `guest("hello")`.
pub fn guest(name: &str) -> PathBuf {
    let path = guests_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "guest {} was not built", path.display());
    path
}

/// Where [`skip`] records the tests that could not run (`.ci/run` prints and counts them).
pub fn skips_file() -> PathBuf {
    tmp_root().join("integration-skips.txt")
}

/// A test that cannot run here: says why on stderr and appends `test: reason` to
/// [`skips_file`], so the run reports it as skipped, never as passed. libtest cannot mark a test
/// ignored once it runs, so the caller returns right after: `return skip(test, "why")`.
pub fn skip(test: &str, reason: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    // libtest names each test's thread after the test's full path (`module::name`).
    let current = std::thread::current();
    let test = current.name().filter(|name| name.ends_with(test)).unwrap_or(test);
    eprintln!("SKIPPED {test}: {reason}");
    std::fs::create_dir_all(tmp_root()).unwrap();
    let line = format!("{test}: {}\n", reason.replace('\n', " "));
    // One O_APPEND write per line: tests running in parallel never tear each other's lines.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(skips_file())
        .expect("open the skips file");
    file.write_all(line.as_bytes()).expect("record the skip");
}

/// For a test that needs root (switching users, chown to another owner): true as root;
/// otherwise records the skip and returns false.
pub fn running_as_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip(test, "needs root (run as root, as CI does)");
    }
    root
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> tempfile::TempDir {
    std::fs::create_dir_all(tmp_root()).unwrap();
    tempfile::Builder::new().prefix(name).tempdir_in(tmp_root()).unwrap()
}

/// Error-log lines collected from a child's stderr, with a way to wait for one.
#[derive(Default)]
pub struct LogCapture {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl LogCapture {
    pub fn follow(stream: impl Read + Send + 'static) -> Arc<LogCapture> {
        let capture = Arc::new(LogCapture::default());
        capture.follow_also(stream);
        capture
    }

    /// Appends the lines of another stream (stdout, where `--access-logfile -` writes) too.
    fn follow_also(self: &Arc<Self>, stream: impl Read + Send + 'static) {
        let writer = Arc::clone(self);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("RUSTCORN_TEST_ECHO").is_some() {
                    eprintln!("    | {line}");
                }
                writer.lines.lock().unwrap().push(line);
                writer.changed.notify_all();
            }
        });
    }

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until a line containing every one of `needles` appears; returns that line.
    pub fn wait_for(&self, needles: &[&str], timeout: Duration) -> String {
        self.wait_for_nth(needles, 1, timeout)
    }

    /// Waits until `count` lines contain every one of `needles`; returns the last of them.
    pub fn wait_for_nth(&self, needles: &[&str], count: usize, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        loop {
            let matching: Vec<&String> = lines.iter().filter(|line| needles.iter().all(|n| line.contains(n))).collect();
            if matching.len() >= count {
                return matching[count - 1].clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "no log line #{count} containing {needles:?} within {timeout:?}; the log so far:\n{}",
                    lines.join("\n")
                );
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn count(&self, needles: &[&str]) -> usize {
        self.lines.lock().unwrap().iter().filter(|line| needles.iter().all(|n| line.contains(n))).count()
    }
}

/// A running `rustcorn serve`, killed (with its workers) when dropped.
pub struct Server {
    child: Child,
    pub pid: u32,
    /// `host:port` of the first TCP listener, if any.
    pub addr: String,
    /// Every address from the readiness line (`http://...` or `unix:...`).
    pub addresses: Vec<String>,
    pub log: Arc<LogCapture>,
    /// The arbiter's published status (empty when the test set `NOTIFY_SOCKET` itself).
    pub status: Arc<StatusLog>,
}

/// Builder for a server command line.
pub struct ServerCommand {
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    bind_given: bool,
    cache_given: bool,
    own_process_group: bool,
    /// Sockets to pass open: (socket, fd number in the child).
    inherited: Vec<(std::os::fd::OwnedFd, i32)>,
    /// Run through `sh` so `LISTEN_PID` can be the server's own pid (systemd socket activation).
    systemd_activation: bool,
    current_dir: Option<PathBuf>,
}

impl ServerCommand {
    pub fn new(app: &Path) -> Self {
        ServerCommand {
            args: vec!["serve".into(), app.into()],
            envs: Vec::new(),
            bind_given: false,
            cache_given: false,
            own_process_group: false,
            inherited: Vec::new(),
            systemd_activation: false,
            current_dir: None,
        }
    }

    /// `rustcorn serve` with no APP (it comes from a config file) and no default `-b`.
    pub fn without_app() -> Self {
        let mut command = ServerCommand::new(Path::new(""));
        command.args.truncate(1);
        command.bind_given = true;
        command
    }

    /// Runs the server in `dir` (where `./rustcorn.toml` is looked for).
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.current_dir = Some(dir.to_path_buf());
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        let arg = arg.into();
        if arg == "-b" || arg == "--bind" {
            self.bind_given = true;
        }
        if arg == "--cache-dir" {
            self.cache_given = true;
        }
        self.args.push(arg);
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the server in a process group of its own: a test run from a terminal would
    /// otherwise share the terminal's foreground group, where rustcorn ignores WINCH.
    pub fn own_process_group(mut self) -> Self {
        self.own_process_group = true;
        self
    }

    /// Passes `socket` to the server open, as file descriptor `fd`.
    pub fn inherit_fd(mut self, socket: impl Into<std::os::fd::OwnedFd>, fd: i32) -> Self {
        self.inherited.push((socket.into(), fd));
        self
    }

    /// Passes `sockets` the way systemd does: as fds 3.., with `LISTEN_FDS` and `LISTEN_PID`.
    pub fn systemd_sockets(mut self, sockets: Vec<std::os::fd::OwnedFd>) -> Self {
        let count = sockets.len();
        for (i, socket) in sockets.into_iter().enumerate() {
            self.inherited.push((socket, 3 + i as i32));
        }
        self.systemd_activation = true;
        self.bind_given = true;
        self.env("LISTEN_FDS", &count.to_string())
    }

    fn command(&self) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = if self.systemd_activation {
            // `exec` keeps the pid, so $$ is the server's pid by the time it reads LISTEN_PID.
            let mut sh = Command::new("sh");
            sh.arg("-c").arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"").arg(rustcorn_bin());
            sh
        } else {
            Command::new(rustcorn_bin())
        };
        command.args(&self.args);
        if !self.bind_given {
            command.args(["-b", "127.0.0.1:0"]);
        }
        if self.own_process_group {
            command.process_group(0);
        }
        if !self.inherited.is_empty() {
            use std::os::fd::AsRawFd;
            let fds: Vec<(i32, i32)> = self.inherited.iter().map(|(s, fd)| (s.as_raw_fd(), *fd)).collect();
            assert!(fds.len() <= 16, "at most 16 inherited sockets");
            // SAFETY: only dup/dup2/fcntl (async-signal-safe) between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    // Move every source out of the target range first, then into place (no
                    // allocation here: the test process has other threads).
                    let mut moved = [(-1, -1); 16];
                    for (slot, &(source, target)) in moved.iter_mut().zip(fds.iter()) {
                        let high = libc::fcntl(source, libc::F_DUPFD_CLOEXEC, 100);
                        if high < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        *slot = (high, target);
                    }
                    for &(high, target) in moved.iter().take(fds.len()) {
                        if libc::dup2(high, target) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        if !self.cache_given {
            command.arg("--cache-dir").arg(cache_dir());
        }
        command.env_remove("WEB_CONCURRENCY").env_remove("PORT").env_remove("RUSTCORN_CMD_ARGS");
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Spawns the command with stdout and stderr piped to the test.
    fn spawn_piped(&self) -> Child {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rustcorn")
    }

    /// Starts the server and waits for its readiness line.
    pub fn start(mut self) -> Server {
        let status = StatusLog::listen();
        if !self.envs.iter().any(|(key, _)| key == "NOTIFY_SOCKET") {
            self = self.env("NOTIFY_SOCKET", status.socket_path.to_str().unwrap());
        }
        let mut child = self.spawn_piped();
        let log = LogCapture::follow(child.stderr.take().unwrap());
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id();
        let line = read_line_within(&mut stdout, READY_TIMEOUT);
        let Some(line) = line.filter(|l| l.starts_with("rustcorn: listening on ")) else {
            let _ = child.kill();
            let _ = child.wait();
            // Give the log thread a moment to drain what the dead process wrote.
            std::thread::sleep(Duration::from_millis(100));
            panic!("rustcorn did not become ready; its log:\n{}", log.text());
        };
        let addresses = readiness_addresses(&line);
        let addr = first_http_address(&addresses);
        assert!(line.contains(&format!("(pid {pid},")), "readiness line names the arbiter pid: {line}");
        // Everything after the readiness line on stdout (the access log with `-`) joins the log.
        log.follow_also(stdout);
        Server { child, pid, addr, addresses, log, status }
    }

    /// Starts the server with stdout and stderr both writing into `pipe` (its write end), reads
    /// `reader` (the read end) only up to the readiness line and returns the server with the
    /// lines read so far in its log. Nothing reads `reader` afterwards unless the test does.
    pub fn start_on_pipe(mut self, pipe: std::os::fd::OwnedFd, reader: &mut std::fs::File) -> Server {
        let status = StatusLog::listen();
        self = self.env("NOTIFY_SOCKET", status.socket_path.to_str().unwrap());
        let stderr = pipe.try_clone().expect("dup the pipe");
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::from(pipe))
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn rustcorn");
        let log = Arc::new(LogCapture::default());
        let deadline = Instant::now() + READY_TIMEOUT;
        let line = loop {
            let line = read_raw_line(reader, deadline)
                .unwrap_or_else(|| panic!("rustcorn did not become ready; its output:\n{}", log.text()));
            if line.starts_with("rustcorn: listening on ") {
                break line;
            }
            log.lines.lock().unwrap().push(line);
        };
        let addresses = readiness_addresses(&line);
        let addr = first_http_address(&addresses);
        let pid = child.id();
        Server { child, pid, addr, addresses, log, status }
    }

    /// Runs the command expecting it to exit without becoming ready; returns (status, stderr).
    pub fn run_to_exit(self) -> (ExitStatus, String, String) {
        let mut child = self.spawn_piped();
        let status = wait_with_timeout(&mut child, WAIT).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("rustcorn kept running; it should have exited")
        });
        let mut stdout = String::new();
        let mut stderr = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        (status, stdout, stderr)
    }
}

/// The addresses a readiness line names.
fn readiness_addresses(line: &str) -> Vec<String> {
    line.trim_start_matches("rustcorn: listening on ")
        .split(" (pid")
        .next()
        .unwrap()
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// `host:port` of the first TCP address, or empty.
fn first_http_address(addresses: &[String]) -> String {
    addresses
        .iter()
        .find_map(|a| a.strip_prefix("http://").or_else(|| a.strip_prefix("https://")))
        .map(str::to_string)
        .unwrap_or_default()
}

/// Reads one line from `reader` a byte at a time (nothing past the newline is consumed), giving
/// up at `deadline`.
fn read_raw_line(reader: &mut std::fs::File, deadline: Instant) -> Option<String> {
    use std::os::fd::AsRawFd;
    let mut line = Vec::new();
    loop {
        if !poll_readable(reader.as_raw_fd(), deadline) {
            return None;
        }
        let mut byte = [0u8; 1];
        match reader.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(byte[0]),
        }
    }
}

/// Reads one line from a child's stdout, giving up after `timeout`.
fn read_line_within(stdout: &mut BufReader<ChildStdout>, timeout: Duration) -> Option<String> {
    use std::os::fd::AsRawFd;
    let fd = stdout.get_ref().as_raw_fd();
    let deadline = Instant::now() + timeout;
    let mut line = String::new();
    loop {
        if !stdout.buffer().is_empty() || poll_readable(fd, deadline) {
            let mut byte = [0u8; 1];
            match stdout.read(&mut byte) {
                Ok(0) | Err(_) => return None,
                Ok(_) if byte[0] == b'\n' => return Some(line),
                Ok(_) => line.push(byte[0] as char),
            }
        } else {
            return None;
        }
    }
}

fn poll_readable(fd: i32, deadline: Instant) -> bool {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut pollfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = remaining.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, count 1.
    let ready = unsafe { libc::poll(&mut pollfd, 1, ms) };
    ready > 0
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `timeout`.
/// Used only where the server offers no readiness signal (process tables, files on disk).
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    pub fn start(app: &Path, args: &[&str]) -> Server {
        ServerCommand::new(app).args(args).start()
    }

    pub fn get(&self, path: &str) -> Reply {
        http(&self.addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Reply {
        http(&self.addr, "POST", path, &[], body).unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Pids of the arbiter's live child processes (its workers and any compile helper).
    pub fn worker_pids(&self) -> Vec<u32> {
        child_pids(self.pid)
    }

    /// Waits until this arbiter's published status satisfies `condition`.
    pub fn wait_status(&self, what: &str, condition: impl Fn(&Status) -> bool) -> Status {
        self.status
            .try_wait(self.pid, WAIT, condition)
            .unwrap_or_else(|last| panic!("timed out waiting for {what}; {last}; log:\n{}", self.log.text()))
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on our own child.
        let rc = unsafe { libc::kill(self.pid as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid);
    }

    /// Waits for the arbiter to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_with_timeout(&mut self.child, timeout)
            .unwrap_or_else(|| panic!("arbiter still running after {timeout:?}; log:\n{}", self.log.text()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let workers = self.worker_pids();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in workers {
            // SAFETY: kill(2) on pids that were our arbiter's children a moment ago.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Kills a process that is not (or no longer) a child of the test, and its children, when dropped:
/// the arbiter started by USR2, or a daemon.
pub struct ProcessGuard(pub u32);

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        if !process_alive(self.0) {
            return;
        }
        let children = child_pids(self.0);
        // SAFETY: kill(2) on a server process this test started, and its workers.
        unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        for pid in children {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: plain kill(2) on a process of this test.
    let rc = unsafe { libc::kill(pid as i32, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// The number after `prefix` in `line`, e.g. `number_after("pid 42)", "pid ")` = 42.
pub fn number_after(line: &str, prefix: &str) -> u32 {
    let start = line.find(prefix).unwrap_or_else(|| panic!("{prefix:?} not in {line:?}")) + prefix.len();
    let digits: String = line[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {prefix:?} in {line:?}"))
}

/// Live children of `pid`, from /proc.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return children };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    children.retain(|&child| !is_zombie(child));
    children.sort_unstable();
    children
}

fn is_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')).unwrap_or(true),
        Err(_) => true,
    }
}

pub fn process_alive(pid: u32) -> bool {
    !is_zombie(pid)
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// True when the body ended as framed (content-length reached, or the last chunk seen).
    pub complete: bool,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

/// One request with `Connection: close` over TCP; errors are I/O errors (refused, reset...).
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Reply> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    raw_exchange(stream, &request)
}

/// Sends raw bytes on a fresh TCP connection and parses whatever comes back.
pub fn raw_tcp(addr: &str, request: &[u8]) -> std::io::Result<Reply> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    raw_exchange(stream, request)
}

/// Sends raw bytes on a fresh unix-socket connection and parses whatever comes back.
pub fn raw_unix(path: &Path, request: &[u8]) -> std::io::Result<Reply> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    raw_exchange(stream, request)
}

fn raw_exchange(mut stream: impl Read + Write, request: &[u8]) -> std::io::Result<Reply> {
    stream.write_all(request)?;
    parse_response(&read_until_closed(&mut stream)?)
}

/// Everything the peer sends until it closes (or the read times out). A reset or timeout after
/// some bytes still leaves those bytes (a truncated response); one before any byte is the error.
pub fn read_until_closed(mut stream: impl Read) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if raw.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    Ok(raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no complete response head"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let rest = &raw[head_end + 4..];
    let (body, complete) = if headers.get("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        decode_chunked(rest)
    } else if let Some(length) = headers.get("content-length").and_then(|l| l.parse::<usize>().ok()) {
        (rest[..rest.len().min(length)].to_vec(), rest.len() >= length)
    } else {
        (rest.to_vec(), true)
    };
    Ok(Reply { status, headers, body, complete })
}

/// Decodes a chunked body; `complete` is true only if the terminating zero-size chunk arrived.
fn decode_chunked(mut data: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else { return (body, false) };
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16) else {
            return (body, false);
        };
        data = &data[line_end + 2..];
        if size == 0 {
            return (body, true);
        }
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..data.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Runs `requests` GETs of `path` from `threads` client threads; returns (ok, failed) counts.
/// A request fails if it errors or gets a status other than 200.
pub fn load(addr: &str, path: &str, threads: usize, requests: usize) -> (usize, usize) {
    let per_thread = requests / threads;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let addr = addr.to_string();
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut ok = 0;
                for _ in 0..per_thread {
                    match http(&addr, "GET", &path, &[], b"") {
                        Ok(reply) if reply.status == 200 && reply.complete => ok += 1,
                        _ => {}
                    }
                }
                ok
            })
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    (ok, per_thread * threads - ok)
}

/// Load that runs until `stop` is set; counts successes and failures (with the first errors).
pub struct BackgroundLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl BackgroundLoad {
    pub fn start(addr: &str, path: &str, threads: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let addr = addr.to_string();
                let path = path.to_string();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut ok = 0;
                    let mut failures = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match http(&addr, "GET", &path, &[], b"") {
                            Ok(reply) if reply.status == 200 && reply.complete => ok += 1,
                            Ok(reply) => failures.push(format!("status {} complete={}", reply.status, reply.complete)),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    (ok, failures)
                })
            })
            .collect();
        BackgroundLoad { stop, handles }
    }

    /// Stops the load; returns (successes, failure descriptions).
    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut ok = 0;
        let mut failures = Vec::new();
        for handle in self.handles {
            let (n, f) = handle.join().unwrap();
            ok += n;
            failures.extend(f);
        }
        (ok, failures)
    }
}

/// One open descriptor of a process, from `/proc/PID/fd` and `/proc/PID/fdinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenFd {
    pub fd: i32,
    /// What the link points to: a path, `socket:[INODE]`, `pipe:[INODE]`, `anon_inode:[...]`.
    pub target: String,
    /// The open flags (octal in fdinfo): access mode, O_CLOEXEC (0o2000000), ...
    pub flags: u32,
}

impl OpenFd {
    /// The inode of a `socket:[N]` or `pipe:[N]` link.
    pub fn inode_of(&self, kind: &str) -> Option<u64> {
        self.target.strip_prefix(kind)?.strip_prefix(":[")?.strip_suffix(']')?.parse().ok()
    }

    pub fn close_on_exec(&self) -> bool {
        self.flags & libc::O_CLOEXEC as u32 != 0
    }

    pub fn write_only(&self) -> bool {
        self.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32
    }
}

/// Every open descriptor of `pid`, by number (descriptors closed while reading are skipped).
pub fn open_fds(pid: u32) -> Vec<OpenFd> {
    let mut fds: Vec<OpenFd> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .flatten()
        .filter_map(|entry| {
            let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?.to_string_lossy().into_owned();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
            Some(OpenFd { fd, target, flags: u32::from_str_radix(flags, 8).ok()? })
        })
        .collect();
    fds.sort_by_key(|fd| fd.fd);
    fds
}

/// Inodes of the TCP sockets (IPv4 and IPv6) listening on `port` anywhere on this host.
pub fn listening_tcp_inodes(port: u16) -> std::collections::HashSet<u64> {
    listening_inodes(Some(port))
}

/// Inodes of every listening TCP socket on this host.
pub fn all_listening_tcp_inodes() -> std::collections::HashSet<u64> {
    listening_inodes(None)
}

fn listening_inodes(port: Option<u16>) -> std::collections::HashSet<u64> {
    let port_hex = port.map(|port| format!(":{port:04X}"));
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // local_address is IP:PORT in hex; state 0A is LISTEN; field 9 is the inode.
                    let on_port = port_hex.as_ref().is_none_or(|hex| fields.get(1).is_some_and(|a| a.ends_with(hex)));
                    (on_port && *fields.get(3)? == "0A").then(|| fields.get(9)?.parse().ok())?
                })
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// The port of an address from the readiness line (`http://127.0.0.1:PORT` or `HOST:PORT`).
pub fn port_of(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// A process's umask as `/proc/PID/status` shows it (`0022`).
/// Resident set of a process in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

pub fn umask_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string())).expect("a Umask: line")
}

/// A process's working directory.
pub fn cwd_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap()
}

/// A process's state letter from `/proc/PID/stat` (`S` sleeping, `T` stopped, ...).
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// An HTTP/2 (prior knowledge) connection to `addr`, driven on the current tokio runtime.
pub async fn h2_client(addr: &str) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// `GET path` on `addr` for [`h2_client`].
pub fn h2_get(addr: &str, path: &str) -> hyper::Request<http_body_util::Empty<bytes::Bytes>> {
    hyper::Request::get(format!("http://{addr}{path}")).body(http_body_util::Empty::new()).unwrap()
}

/// Replaces `app` with a copy of `from` in one rename, as a deploy would (HUP and USR2 tests).
pub fn install_app(app: &Path, from: &Path) {
    let tmp = app.with_extension("wasm.tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, app).unwrap();
}
