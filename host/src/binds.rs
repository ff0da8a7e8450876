//! Listeners: parsing `--bind` specs and binding the sockets the arbiter hands to every worker.
use anyhow::{bail, Context, Result};
use socket2::{Domain, Socket, Type};
use std::fmt;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// One `--bind` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindSpec {
    Tcp(String),
    Unix(PathBuf),
}

impl BindSpec {
    /// Parses `HOST:PORT`, `[V6]:PORT`, `unix:PATH`; a bare `HOST` gets port 8000 as in Gunicorn.
    pub fn parse(text: &str) -> Result<BindSpec, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("expected unix:PATH".into());
            }
            return Ok(BindSpec::Unix(PathBuf::from(path)));
        }
        if text.starts_with("fd://") {
            return Err("fd:// binds are not supported yet; use HOST:PORT or unix:PATH".into());
        }
        let with_port = if text.starts_with('[') {
            if text.contains("]:") { text.to_string() } else { format!("{text}:8000") }
        } else if text.contains(':') {
            text.to_string()
        } else {
            format!("{text}:8000")
        };
        let (_, port) = with_port.rsplit_once(':').ok_or("expected HOST:PORT")?;
        port.parse::<u16>().map_err(|_| format!("{port:?} is not a port number (0-65535)"))?;
        Ok(BindSpec::Tcp(with_port))
    }
}

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

/// Binds every spec; a failure names the address and the reason.
pub fn bind_all(specs: &[BindSpec], backlog: i32) -> Result<Vec<Listener>> {
    specs.iter().map(|spec| bind(spec, backlog)).collect()
}

fn bind(spec: &BindSpec, backlog: i32) -> Result<Listener> {
    match spec {
        BindSpec::Tcp(text) => {
            let addrs: Vec<SocketAddr> = text
                .to_socket_addrs()
                .with_context(|| format!("--bind {text}: cannot resolve the host"))?
                .collect();
            let mut last_error = None;
            for addr in addrs {
                match bind_tcp(addr, backlog) {
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
    }
}

fn bind_tcp(addr: SocketAddr, backlog: i32) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// A leftover socket file from a previous run would make bind fail; a regular file is not ours.
fn remove_stale_unix_socket(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))
        }
        Ok(_) => bail!("--bind unix:{}: the path exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
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
    }
}
