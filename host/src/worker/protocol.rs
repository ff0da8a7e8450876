//! What a new connection speaks: TLS or not, then HTTP/1.1 or HTTP/2 (by ALPN on TLS, by the
//! client's connection preface on a plain bind with `--http-protocols h1,h2`). Runs in the
//! connection's own task, so a slow handshake never holds up the accept loop.
use super::tls::Tls;
use super::{connection, http2};
use crate::config::tls::HttpProtocols;
use crate::guest::handle::{AppRuntime, ConnectionInfo};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// The HTTP/2 connection preface a prior-knowledge client starts with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a worker sets up its connections.
pub struct Setup {
    /// TLS for TCP binds.
    pub tls: Option<Arc<Tls>>,
    /// Versions on plain connections (TCP without TLS, unix sockets).
    pub plain: HttpProtocols,
    /// With h2 on a plain bind: how long the client gets to show which version it speaks.
    pub first_bytes_timeout: Duration,
    /// HTTP/2 streams this worker runs at once, across its connections (see `http2::stream_permits`).
    pub h2_streams: Arc<tokio::sync::Semaphore>,
}

/// Serves a TCP connection (with TLS when configured).
pub async fn serve_tcp(
    stream: tokio::net::TcpStream,
    app: Arc<AppRuntime>,
    mut info: ConnectionInfo,
    draining: watch::Receiver<bool>,
    setup: Arc<Setup>,
) {
    let Some(tls) = &setup.tls else { return serve_plain(stream, app, info, draining, &setup).await };
    let Some((stream, negotiated)) = tls.handshake(stream, &info.remote).await else { return };
    info.https = true;
    info.client_subject = negotiated.client_subject;
    let offered = app.settings.protocols(true);
    if negotiated.h2 || !offered.h1 {
        http2::serve(stream, app, info, draining, &setup.h2_streams).await
    } else {
        connection::serve(stream, app, info, draining).await
    }
}

/// Serves a plain connection: HTTP/1.1, HTTP/2 by prior knowledge, or either.
pub async fn serve_plain<I>(
    mut io: I,
    app: Arc<AppRuntime>,
    info: ConnectionInfo,
    draining: watch::Receiver<bool>,
    setup: &Setup,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match (setup.plain.h1, setup.plain.h2) {
        (true, true) => {
            let first = tokio::time::timeout(setup.first_bytes_timeout, read_preface(&mut io)).await;
            let Ok(Ok((is_h2, seen))) = first else { return };
            let io = Prefixed { seen, position: 0, inner: io };
            if is_h2 {
                http2::serve(io, app, info, draining, &setup.h2_streams).await
            } else {
                connection::serve(io, app, info, draining).await
            }
        }
        (false, true) => http2::serve(io, app, info, draining, &setup.h2_streams).await,
        _ => connection::serve(io, app, info, draining).await,
    }
}

/// Reads until the bytes stop matching the HTTP/2 preface or match all of it: (is HTTP/2, the
/// bytes read). End of stream before either is an error.
async fn read_preface<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(bool, Vec<u8>)> {
    let mut seen = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; 24];
    loop {
        let wanted = PREFACE.len() - seen.len();
        let n = io.read(&mut buf[..wanted]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&buf[..n]);
        if !PREFACE.starts_with(&seen) {
            return Ok((false, seen));
        }
        if seen.len() == PREFACE.len() {
            return Ok((true, seen));
        }
    }
}

/// A stream whose first bytes were already read: replays them, then reads on.
struct Prefixed<I> {
    seen: Vec<u8>,
    position: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.position < this.seen.len() {
            let n = (this.seen.len() - this.position).min(buf.remaining());
            buf.put_slice(&this.seen[this.position..this.position + n]);
            this.position += n;
            if this.position == this.seen.len() {
                this.seen = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_preface_is_recognised_and_other_bytes_replayed() {
        let (is_h2, seen) = read_preface(&mut &PREFACE[..]).await.unwrap();
        assert!(is_h2);
        assert_eq!(seen, PREFACE);
        let (is_h2, seen) = read_preface(&mut &b"GET / HTTP/1.1\r\n"[..]).await.unwrap();
        assert!(!is_h2);
        let mut replayed = Vec::new();
        let mut io = Prefixed { seen, position: 0, inner: &b"rest"[..] };
        io.read_to_end(&mut replayed).await.unwrap();
        assert_eq!(replayed, b"GET / HTTP/1.1\r\nrest");
    }
}
