//! The first generation's sockets: those an upgrading arbiter passed us, matched to our `--bind`s
//! by address (not by position: the config may have changed before USR2), else systemd's, else
//! bound from `--bind`.
use super::generation::{unix_socket_files, Bound};
use super::upgrade;
use crate::config::settings::Settings;
use crate::sys::binds::{self, BindSpec, Listener};
use crate::{log_info, log_warning};
use anyhow::Result;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;

/// The sockets and the unix socket files this arbiter owns (removed when it exits).
pub struct InitialSockets {
    pub bound: Vec<Bound>,
    pub socket_files: Vec<PathBuf>,
    /// Sockets from `--bind` (ours or an upgrade's): a HUP may re-bind them. systemd's may not.
    pub rebindable: bool,
}

pub fn open(settings: &Settings, reuse_port: bool, bind_given: bool) -> Result<InitialSockets> {
    if let Some(inherited) = upgrade::inherited_listeners(reuse_port)? {
        log_info!("upgrade: using the listening socket(s) of the old arbiter that match our binds");
        let bound = adopt_by_address(inherited, &settings.binds, settings.backlog, reuse_port)?;
        return Ok(InitialSockets { bound, socket_files: unix_socket_files(&settings.binds), rebindable: true });
    }
    if let Some(listeners) = binds::systemd_listeners()? {
        log_info!("using the {} listening socket(s) passed by systemd (LISTEN_FDS)", listeners.len());
        if bind_given {
            log_warning!("--bind is ignored: the sockets come from systemd socket activation");
        }
        let bound = listeners.into_iter().map(|l| Bound { spec: None, listener: Rc::new(l) }).collect();
        return Ok(InitialSockets { bound, socket_files: Vec::new(), rebindable: false });
    }
    let listeners = binds::bind_all(&settings.binds, settings.backlog, reuse_port)?;
    if reuse_port {
        log_info!("--reuse-port: each worker listens on its own socket for the TCP binds");
    }
    let bound = settings
        .binds
        .iter()
        .zip(listeners)
        .map(|(spec, listener)| Bound { spec: Some(spec.clone()), listener: Rc::new(listener) })
        .collect();
    Ok(InitialSockets { bound, socket_files: unix_socket_files(&settings.binds), rebindable: true })
}

/// Each bind gets the inherited socket at its address, or a new one; inherited sockets that no
/// bind names any more are closed.
fn adopt_by_address(
    inherited: Vec<Listener>,
    specs: &[BindSpec],
    backlog: i32,
    reuse_port: bool,
) -> Result<Vec<Bound>> {
    let mut inherited: Vec<Option<Listener>> = inherited.into_iter().map(Some).collect();
    let mut bound = Vec::new();
    for spec in specs {
        let found =
            inherited.iter_mut().find(|slot| slot.as_ref().is_some_and(|l| serves(spec, l))).and_then(Option::take);
        let listener = match found {
            Some(listener) => listener,
            None => {
                log_info!("upgrade: binding {spec:?}, which the old arbiter did not listen on");
                binds::bind_all(std::slice::from_ref(spec), backlog, reuse_port)?.remove(0)
            }
        };
        bound.push(Bound { spec: Some(spec.clone()), listener: Rc::new(listener) });
    }
    for dropped in inherited.into_iter().flatten() {
        log_info!("upgrade: not listening on {dropped} any more (no --bind names it)");
    }
    Ok(bound)
}

/// True when `listener` is the socket `spec` asks for. A TCP bind on port 0 matches a socket on
/// the same host address whatever its port.
pub fn serves(spec: &BindSpec, listener: &Listener) -> bool {
    match (spec, listener) {
        (BindSpec::Unix(path), Listener::Unix(_, bound)) => path == bound,
        (BindSpec::Fd(fd), listener) => listener.raw_fd() == *fd,
        (BindSpec::Tcp(address), Listener::Tcp(socket)) => {
            let Ok(local) = socket.local_addr() else { return false };
            address.to_socket_addrs().map(|mut addrs| addrs.any(|want| same_address(want, local))).unwrap_or(false)
        }
        _ => false,
    }
}

fn same_address(want: SocketAddr, local: SocketAddr) -> bool {
    want.ip() == local.ip() && (want.port() == 0 || want.port() == local.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_binds_match_by_address_not_position() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        let listener = Listener::Tcp(a);
        assert!(serves(&BindSpec::Tcp(format!("127.0.0.1:{port}")), &listener));
        assert!(serves(&BindSpec::Tcp("127.0.0.1:0".into()), &listener));
        assert!(!serves(&BindSpec::Tcp(format!("127.0.0.2:{port}")), &listener));
        assert!(!serves(&BindSpec::Unix("/tmp/x.sock".into()), &listener));
    }
}
