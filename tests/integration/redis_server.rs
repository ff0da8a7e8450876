//! A throwaway `redis-server` for the key-value tests: on a free loopback port, in a temporary
//! directory, nothing saved to disk, killed when dropped; plus a minimal RESP client to look at
//! what rustcorn stored. Absent `redis-server` is a recorded skip, never a pass.
use crate::support::{scratch_dir, skip, wait_until};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a fresh `redis-server` may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(20);

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Whether `redis-server` can be run here.
fn installed() -> bool {
    Command::new("redis-server").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

impl RedisServer {
    /// A running server, or `None` after recording `test` as skipped when `redis-server` is missing.
    pub fn start(test: &str) -> Option<RedisServer> {
        if !installed() {
            skip(test, "redis-server is not installed (.ci/run installs Debian's redis-server)");
            return None;
        }
        let mut server = RedisServer { child: None, port: free_port(), dir: scratch_dir("redis") };
        // Another process can take the port between our probe and redis binding it: try again.
        for _ in 0..5 {
            if server.spawn() {
                return Some(server);
            }
            server.port = free_port();
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A server that is not running yet, on a port that was free (start it with `restart`).
    pub fn stopped(test: &str) -> Option<RedisServer> {
        if !installed() {
            skip(test, "redis-server is not installed (.ci/run installs Debian's redis-server)");
            return None;
        }
        Some(RedisServer { child: None, port: free_port(), dir: scratch_dir("redis") })
    }

    /// Starts redis-server on `self.port`; true once it answers PING, false if it exited.
    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let mut exited = false;
        wait_until("redis-server answers PING", START_TIMEOUT, || {
            exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            exited || self.command(&["PING"]).is_ok_and(|reply| reply == "+PONG")
        });
        !exited
    }

    /// Kills the server at once (SIGKILL: no shutdown, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing is saved).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not start again on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command; returns the reply's raw text (`+PONG`, `$3\r\nabc`, `:5`, ...), trimmed.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        // One short reply: read until it ends with CRLF (the tests ask for small values only).
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
            if reply.ends_with(b"\r\n") && complete(&reply) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&reply).trim_end().to_string())
    }
}

/// Whether a RESP reply of a simple type, an integer or one bulk string is all there.
fn complete(reply: &[u8]) -> bool {
    match reply.first() {
        Some(b'$') => {
            let text = String::from_utf8_lossy(reply);
            let Some((len, rest)) = text[1..].split_once("\r\n") else { return false };
            match len.parse::<i64>() {
                Ok(n) if n >= 0 => rest.len() >= n as usize + 2,
                _ => true,
            }
        }
        Some(b'*') => true,
        _ => true,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
