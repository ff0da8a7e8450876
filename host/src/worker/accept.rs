//! The worker's accept loop: takes connections while a `--worker-connections` slot is free and
//! it is this worker's turn (see `balance`), hands each to its own task, and on drain empties a
//! `--reuse-port` socket's own queue before closing it.
use super::balance::{self, board::WorkerSeat, rule::Patience};
use super::WorkerSpec;
use crate::http::{negotiate, ConnectionInfo, Front};
use crate::log_warning;
use crate::sys::binds::Listener;
use anyhow::{Context, Result};
use http::HeaderValue;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;

/// A listener as this worker accepts on it.
pub struct WorkerListener {
    pub listener: Listener,
    /// This worker's own `--reuse-port` socket: its accept queue is nobody else's.
    own_queue: bool,
}

/// The shared listening sockets, except that a TCP socket the arbiter only reserved
/// (`--reuse-port`: bound, not listening) is replaced by this worker's own listening socket.
pub fn open_listeners(spec: &WorkerSpec<'_>) -> Result<Vec<WorkerListener>> {
    spec.listeners
        .iter()
        .map(|listener| {
            if let Listener::Tcp(reserved) = listener {
                if !socket2::SockRef::from(reserved).is_listener().context("cannot read SO_ACCEPTCONN")? {
                    let own = crate::sys::binds::bind_reuse_port(reserved, spec.settings.backlog)?;
                    return Ok(WorkerListener { listener: Listener::Tcp(own), own_queue: true });
                }
            }
            let shared = listener.try_clone().with_context(|| format!("cannot use listener {listener}"))?;
            Ok(WorkerListener { listener: shared, own_queue: false })
        })
        .collect()
}

/// A listening socket registered with tokio, and the authority its requests default to.
enum Accepting {
    Tcp(tokio::net::TcpListener, HeaderValue),
    Unix(tokio::net::UnixListener, HeaderValue),
}

/// An accepted connection and where it came from.
enum Accepted {
    Tcp(tokio::net::TcpStream, ConnectionInfo),
    Unix(tokio::net::UnixStream, ConnectionInfo),
}

impl Accepting {
    fn new(listener: Listener) -> Result<Accepting> {
        Ok(match listener {
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                let authority = HeaderValue::from_str(&l.local_addr()?.to_string())?;
                Accepting::Tcp(tokio::net::TcpListener::from_std(l)?, authority)
            }
            Listener::Unix(l, _) => {
                l.set_nonblocking(true)?;
                Accepting::Unix(tokio::net::UnixListener::from_std(l)?, HeaderValue::from_static("localhost"))
            }
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Accepting::Tcp(listener, _) => listener.as_fd(),
            Accepting::Unix(listener, _) => listener.as_fd(),
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Accepting::Tcp(listener, authority) => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Accepted::Tcp(stream, ConnectionInfo::new(peer.ip().to_string(), authority.clone())))
            }
            Accepting::Unix(listener, authority) => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Unix(stream, ConnectionInfo::new("-".into(), authority.clone())))
            }
        }
    }

    /// Without waiting: the connections already in the listener's own queue.
    fn take_queued(&self) -> Vec<Accepted> {
        let mut queued = Vec::new();
        let Accepting::Tcp(listener, authority) = self else {
            return queued;
        };
        while let Ok((socket, peer)) = socket2::SockRef::from(listener).accept() {
            let stream = std::net::TcpStream::from(socket);
            let (Ok(()), Some(peer)) = (stream.set_nonblocking(true), peer.as_socket()) else {
                continue;
            };
            if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                let _ = stream.set_nodelay(true);
                queued.push(Accepted::Tcp(stream, ConnectionInfo::new(peer.ip().to_string(), authority.clone())));
            }
        }
        queued
    }
}

impl Accepted {
    /// Serves the connection through the HTTP front to its end.
    async fn serve(self, front: Arc<Front>, draining: watch::Receiver<bool>) {
        match self {
            Accepted::Tcp(stream, info) => negotiate::serve_tcp(stream, front, info, draining).await,
            Accepted::Unix(stream, info) => negotiate::serve_plain(stream, front, info, draining).await,
        }
    }
}

/// Accepts connections on one listener while a connection slot is free and it is this worker's
/// turn on a shared socket (`seat`: its place on the load board), until the worker drains. A
/// `--reuse-port` socket's queue is then emptied (those connections get their first request
/// served) before the socket closes, since no other worker could take them.
pub fn accept_loop(
    listener: WorkerListener,
    front: Arc<Front>,
    slots: Arc<Semaphore>,
    connections: TaskTracker,
    mut draining: watch::Receiver<bool>,
    seat: Option<WorkerSeat>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let own_queue = listener.own_queue;
    let accepting = Accepting::new(listener.listener)?;
    // Nobody else can take a connection from this worker's own queue: no turns to wait for.
    let balanced = if own_queue { None } else { seat };
    Ok(async move {
        let mut patience = Patience::default();
        loop {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => return },
                _ = draining.changed() => break,
            };
            if let Some(seat) = &balanced {
                tokio::select! {
                    _ = balance::wait_turn(seat, accepting.fd(), &mut patience) => {}
                    _ = draining.changed() => break,
                }
            }
            let accepted = tokio::select! {
                accepted = accepting.accept() => accepted,
                _ = draining.changed() => break,
            };
            match accepted {
                Ok(accepted) => {
                    let open = seat.map(|seat| seat.opened());
                    let served = accepted.serve(front.clone(), draining.clone());
                    connections.spawn(async move {
                        served.await;
                        drop((permit, open));
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning on the error.
                    log_warning!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if own_queue {
            let queued = accepting.take_queued();
            // Closing the socket now stops the kernel from queueing more connections on it.
            drop(accepting);
            for accepted in queued {
                let open = seat.map(|seat| seat.opened());
                let served = accepted.serve(front.clone(), draining.clone());
                connections.spawn(async move {
                    served.await;
                    drop(open);
                });
            }
        }
    })
}
