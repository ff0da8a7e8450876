//! The admin listener, served from the arbiter's own poll loop without blocking it: non-blocking
//! sockets, at most `MAX_CONNECTIONS` admin connections, each with a small head buffer and a
//! deadline; one request per connection, then close.
use super::routes::AdminResponse;
use crate::sys::binds::{self, BindSpec, Listener};
use anyhow::Result;
use nix::poll::{PollFd, PollFlags};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Admin connections open at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 8;
/// From accept to the last byte of the response.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Longest request head read.
pub const MAX_HEAD: usize = 4096;

/// A request head, as far as the admin routes care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    pub method: String,
    pub path: String,
    pub accept: Option<String>,
}

enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Stream {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

struct Connection {
    stream: Stream,
    head: Vec<u8>,
    /// The response and how much of it is written.
    out: Option<(Vec<u8>, usize)>,
    deadline: Instant,
}

/// The admin listener and its open connections.
pub struct AdminServer {
    listener: Listener,
    connections: Vec<Connection>,
}

impl AdminServer {
    /// Binds `--admin-bind` (any `--bind` syntax).
    pub fn bind(spec: &BindSpec) -> Result<AdminServer> {
        let listener = binds::bind_all(std::slice::from_ref(spec), 64, false)
            .map_err(|e| {
                // The bind error names `--bind`; this one is the admin listener's.
                let message = format!("{e:#}");
                anyhow::anyhow!("--admin-bind: {}", message.strip_prefix("--bind ").unwrap_or(&message))
            })?
            .remove(0);
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix(l, _) => l.set_nonblocking(true)?,
        }
        Ok(AdminServer { listener, connections: Vec::new() })
    }

    /// `http://HOST:PORT` or `unix:PATH`.
    pub fn address(&self) -> String {
        self.listener.display_address()
    }

    /// The unix socket file to remove when the arbiter exits, if any.
    pub fn socket_file(&self) -> Option<&std::path::Path> {
        match &self.listener {
            Listener::Unix(_, path) => Some(path),
            Listener::Tcp(_) => None,
        }
    }

    /// What the arbiter's poll waits on for the admin endpoint.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = Vec::with_capacity(self.connections.len() + 1);
        if self.connections.len() < MAX_CONNECTIONS {
            let fd = match &self.listener {
                Listener::Tcp(l) => l.as_fd(),
                Listener::Unix(l, _) => l.as_fd(),
            };
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        for connection in &self.connections {
            let events = if connection.out.is_some() { PollFlags::POLLOUT } else { PollFlags::POLLIN };
            fds.push(PollFd::new(connection.stream.fd(), events));
        }
        fds
    }

    /// Accepts, reads, answers and closes whatever is ready, never waiting. `answer` is called
    /// once per complete request head.
    pub fn service(&mut self, now: Instant, answer: &mut dyn FnMut(&AdminRequest) -> AdminResponse) {
        self.accept(now);
        for connection in &mut self.connections {
            if connection.out.is_none() {
                match connection.read_head() {
                    Ok(Some(request)) => {
                        let response = answer(&request);
                        connection.out = Some((encode(&request, &response), 0));
                    }
                    Ok(None) => {}
                    Err(()) => connection.deadline = now,
                }
            }
            if let Some((bytes, written)) = &mut connection.out {
                loop {
                    match connection.stream.io().write(&bytes[*written..]) {
                        Ok(0) => break,
                        Ok(n) => *written += n,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            connection.deadline = now;
                            break;
                        }
                    }
                    if *written == bytes.len() {
                        break;
                    }
                }
            }
        }
        self.connections.retain(|c| {
            let done = c.out.as_ref().is_some_and(|(bytes, written)| *written == bytes.len());
            !done && now < c.deadline
        });
    }

    fn accept(&mut self, now: Instant) {
        while self.connections.len() < MAX_CONNECTIONS {
            let stream = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, _)| s.set_nonblocking(true).map(|()| Stream::Tcp(s))),
                Listener::Unix(l, _) => l.accept().map(|(s, _)| s.set_nonblocking(true).map(|()| Stream::Unix(s))),
            };
            match stream {
                Ok(Ok(stream)) => self.connections.push(Connection {
                    stream,
                    head: Vec::with_capacity(512),
                    out: None,
                    deadline: now + DEADLINE,
                }),
                Ok(Err(_)) => continue,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }
}

impl Connection {
    /// `Ok(Some)` once the head is complete, `Ok(None)` for more to come, `Err` to close.
    fn read_head(&mut self) -> Result<Option<AdminRequest>, ()> {
        let mut chunk = [0u8; 1024];
        loop {
            let room = MAX_HEAD - self.head.len();
            if room == 0 {
                return Err(());
            }
            let want = room.min(chunk.len());
            match self.stream.io().read(&mut chunk[..want]) {
                Ok(0) => return Err(()),
                Ok(n) => self.head.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(_) => return Err(()),
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&self.head) {
                Ok(httparse::Status::Complete(_)) => {
                    let accept = request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("accept"))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .map(str::to_string);
                    return Ok(Some(AdminRequest {
                        method: request.method.unwrap_or("").to_string(),
                        path: request.path.unwrap_or("").to_string(),
                        accept,
                    }));
                }
                Ok(httparse::Status::Partial) => continue,
                Err(_) => return Err(()),
            }
        }
    }
}

fn encode(request: &AdminRequest, response: &AdminResponse) -> Vec<u8> {
    let reason = match response.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if request.method != "HEAD" {
        out.extend_from_slice(response.body.as_bytes());
    }
    out
}
