//! Listeners: binding the `--bind` specs (`config::binds`) to the sockets the arbiter hands to every worker, and
//! adopting sockets opened by someone else (`fd://N`, systemd's `LISTEN_FDS`, an upgrading arbiter).
use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};
use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

pub use crate::config::binds::BindSpec;

/// A bound listening socket, shared by all workers through fork.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// The address clients use, e.g. `http://127.0.0.1:8000` or `unix:/run/app.sock`.
    pub fn display_address(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => format!("http://{addr}"),
                Err(_) => "http://?".into(),
            },
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    pub fn try_clone(&self) -> std::io::Result<Listener> {
        Ok(match self {
            Listener::Tcp(l) => Listener::Tcp(l.try_clone()?),
            Listener::Unix(l, p) => Listener::Unix(l.try_clone()?, p.clone()),
        })
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display_address())
    }
}

/// Binds (or adopts, for `fd://N`) every spec; a failure names the address and the reason.
/// With `reuse_port`, TCP sockets get SO_REUSEPORT and are bound but not listening: they reserve
/// the address (and resolve port 0), and each worker listens on its own socket (`bind_reuse_port`).
pub fn bind_all(specs: &[BindSpec], backlog: i32, reuse_port: bool) -> Result<Vec<Listener>> {
    // Every fd:// is checked (open, a listening stream socket, not given twice) before anything
    // is bound or adopted, so a bad one never leaves a half-adopted set to close.
    let fds: Vec<RawFd> = specs
        .iter()
        .filter_map(|spec| match spec {
            BindSpec::Fd(fd) => Some(*fd),
            _ => None,
        })
        .collect();
    for (i, &fd) in fds.iter().enumerate() {
        if fds[..i].contains(&fd) {
            bail!("--bind fd://{fd} is given twice");
        }
        check_adoptable(&[fd], true).with_context(|| format!("--bind fd://{fd}"))?;
    }
    specs.iter().map(|spec| bind(spec, backlog, reuse_port)).collect()
}

fn bind(spec: &BindSpec, backlog: i32, reuse_port: bool) -> Result<Listener> {
    match spec {
        BindSpec::Tcp(text) => {
            let addrs: Vec<SocketAddr> =
                text.to_socket_addrs().with_context(|| format!("--bind {text}: cannot resolve the host"))?.collect();
            let mut last_error = None;
            for addr in addrs {
                // With --reuse-port the arbiter only reserves the address; workers listen.
                let listen_backlog = if reuse_port { None } else { Some(backlog) };
                match bind_tcp(addr, listen_backlog, reuse_port) {
                    Ok(listener) => return Ok(Listener::Tcp(listener)),
                    Err(e) => last_error = Some(e),
                }
            }
            match last_error {
                Some(e) => Err(e).with_context(|| format!("--bind {text}: cannot listen")),
                None => bail!("--bind {text}: the host resolved to no address"),
            }
        }
        BindSpec::Unix(path) => {
            remove_stale_unix_socket(path)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            let addr = socket2::SockAddr::unix(path)?;
            socket.bind(&addr).with_context(|| format!("--bind unix:{}: cannot bind", path.display()))?;
            socket.listen(backlog).with_context(|| format!("--bind unix:{}: cannot listen", path.display()))?;
            Ok(Listener::Unix(UnixListener::from(std::os::fd::OwnedFd::from(socket)), path.clone()))
        }
        BindSpec::Fd(fd) => adopt_fd(*fd, true).with_context(|| format!("--bind fd://{fd}")),
    }
}

/// Takes ownership of inherited sockets. All of `fds` are checked first — each open, a stream
/// socket (TCP or unix), listening if `must_listen`, none given twice — and only then adopted,
/// so an error leaves every fd as it was (never closed, never owned twice). Each adopted socket
/// gets close-on-exec like the sockets we bind.
pub fn adopt_fds(fds: &[RawFd], must_listen: bool) -> Result<Vec<Listener>> {
    check_adoptable(fds, must_listen)?;
    Ok(fds.iter().map(|&fd| take_checked(fd)).collect())
}

/// One inherited socket: see `adopt_fds`.
pub fn adopt_fd(fd: RawFd, must_listen: bool) -> Result<Listener> {
    let mut adopted = adopt_fds(&[fd], must_listen)?;
    Ok(adopted.remove(0))
}

/// Checks `fds` without taking ownership of any: see `adopt_fds`.
pub fn check_adoptable(fds: &[RawFd], must_listen: bool) -> Result<()> {
    for (i, &fd) in fds.iter().enumerate() {
        if fd < 0 {
            bail!("{fd} is not a file descriptor number");
        }
        if fds[..i].contains(&fd) {
            bail!("file descriptor {fd} is given twice (each socket must be passed once)");
        }
        // SAFETY: F_GETFD only reads the descriptor flags; it fails with EBADF on a closed fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            bail!("file descriptor {fd} is not open (it was not passed to this process)");
        }
        // SAFETY: the fd is open for the duration of this borrow; nothing here closes it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&borrowed);
        let domain = socket.domain().map_err(|_| anyhow::anyhow!("file descriptor {fd} is not a socket"))?;
        if domain != Domain::UNIX && domain != Domain::IPV4 && domain != Domain::IPV6 {
            bail!("socket {fd} is neither TCP nor a unix socket");
        }
        if socket.r#type().with_context(|| format!("socket {fd}: cannot read its type"))? != Type::STREAM {
            bail!("file descriptor {fd} is not a stream socket");
        }
        if must_listen && !socket.is_listener().with_context(|| format!("socket {fd}: cannot read SO_ACCEPTCONN"))? {
            bail!("socket {fd} is not listening");
        }
    }
    Ok(())
}

/// Owns an fd that `check_adoptable` accepted.
fn take_checked(fd: RawFd) -> Listener {
    // SAFETY: checked open, a stream socket, and not a duplicate in this set; by the caller's
    // contract (it was handed to this process to listen on) no one else in this process owns it.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = socket.set_cloexec(true);
    if socket.domain().ok() == Some(Domain::UNIX) {
        let path = socket
            .local_addr()
            .ok()
            .and_then(|addr| addr.as_pathname().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(format!("fd{fd}")));
        Listener::Unix(UnixListener::from(OwnedFd::from(socket)), path)
    } else {
        Listener::Tcp(socket.into())
    }
}

/// systemd socket activation: the sockets passed as fds 3.. when `LISTEN_PID` is this process.
/// Returns None when there are none for us. The variables are removed either way once read, so
/// nothing this process starts mistakes them for its own.
pub fn systemd_listeners() -> Result<Option<Vec<Listener>>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    for key in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(key);
    }
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count: RawFd = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .with_context(|| format!("$LISTEN_FDS={count:?} is not a socket count"))?;
    const SD_LISTEN_FDS_START: RawFd = 3;
    let fds: Vec<RawFd> = (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + count).collect();
    adopt_fds(&fds, true)
        .map(Some)
        .with_context(|| format!("$LISTEN_FDS={count} (systemd passes fds 3 to {})", 2 + count))
}

/// In a worker with `--reuse-port`: its own listening socket on the address the arbiter reserved.
pub fn bind_reuse_port(reserved: &TcpListener, backlog: i32) -> Result<TcpListener> {
    let addr = reserved.local_addr().context("cannot read the reserved address")?;
    bind_tcp(addr, Some(backlog), true).with_context(|| format!("--reuse-port: cannot listen on {addr}"))
}

/// Binds a TCP socket (SO_REUSEPORT with `reuse_port`); listens when given a backlog.
fn bind_tcp(addr: SocketAddr, backlog: Option<i32>, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    if let Some(backlog) = backlog {
        socket.listen(backlog)?;
    }
    Ok(socket.into())
}

/// A leftover socket file from a previous run would make bind fail, so it is removed — but only
/// if nothing accepts on it: a live socket belongs to another process. A regular file is not ours.
fn remove_stale_unix_socket(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "--bind unix:{}: another process is listening on this socket; stop it or bind another path",
                path.display()
            ),
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "--bind unix:{}: a socket exists there and rustcorn cannot tell whether it is in use",
                    path.display()
                )
            }),
        },
        Ok(_) => bail!("--bind unix:{}: the path exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

/// `--user`/`--group`: gives the unix socket files we bound (the `listeners` whose path a
/// `--bind unix:PATH` in `specs` names; never an inherited socket's) to `uid`/`gid`, without
/// following a symlink at the path.
pub fn chown_unix_sockets(listeners: &[&Listener], specs: &[BindSpec], uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    for listener in listeners {
        let Listener::Unix(_, path) = listener else { continue };
        if !specs.contains(&BindSpec::Unix(path.clone())) {
            continue;
        }
        let is_socket = std::fs::symlink_metadata(path).map(|m| m.file_type().is_socket()).unwrap_or(false);
        if !is_socket {
            bail!("--bind unix:{}: the socket file is gone or was replaced; cannot chown it", path.display());
        }
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .with_context(|| format!("--bind unix:{}: cannot chown the socket to {uid}:{gid}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_specs_parse_like_gunicorn() {
        assert_eq!(BindSpec::parse("127.0.0.1:0"), Ok(BindSpec::Tcp("127.0.0.1:0".into())));
        assert_eq!(BindSpec::parse("[::1]:8080"), Ok(BindSpec::Tcp("[::1]:8080".into())));
        assert_eq!(BindSpec::parse("localhost"), Ok(BindSpec::Tcp("localhost:8000".into())));
        assert_eq!(BindSpec::parse("unix:/tmp/a.sock"), Ok(BindSpec::Unix("/tmp/a.sock".into())));
        assert!(BindSpec::parse("127.0.0.1:99999").is_err());
        assert!(BindSpec::parse("unix:").is_err());
        assert_eq!(BindSpec::parse("fd://3"), Ok(BindSpec::Fd(3)));
        assert!(BindSpec::parse("fd://x").is_err());
        assert!(BindSpec::parse("fd://-1").is_err());
    }

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    #[test]
    fn duplicate_or_closed_fds_are_rejected_before_any_is_adopted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = listener.as_raw_fd();
        let e = adopt_fds(&[fd, fd], true).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        assert!(is_open(fd), "a rejected set closes nothing");
        let closed = 900_000; // far above any fd this test process has open
        let e = adopt_fds(&[fd, closed], true).unwrap_err().to_string();
        assert!(e.contains(&format!("file descriptor {closed} is not open")), "{e}");
        assert!(is_open(fd), "the good fd before the bad one was not adopted (and closed)");
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = adopt_fds(&[file.as_raw_fd()], true).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        let mut adopted = adopt_fds(&[fd], true).unwrap();
        assert!(matches!(adopted.remove(0), Listener::Tcp(_)));
        std::mem::forget(listener); // now owned (and closed) by the adopted Listener
    }

    #[test]
    fn a_live_unix_socket_is_never_removed_but_a_stale_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let live = UnixListener::bind(&path).unwrap();
        let e = remove_stale_unix_socket(&path).unwrap_err().to_string();
        assert!(e.contains("another process is listening"), "{e}");
        assert!(path.exists());
        drop(live);
        remove_stale_unix_socket(&path).unwrap();
        assert!(!path.exists());
    }
}
