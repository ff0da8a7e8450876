//! An HTTP/1 connection's socket with what hyper does not give us: a request head must arrive
//! within `--header-timeout` of its first byte (of the connection, for a first request), apart from
//! the keep-alive idle time; a response that makes no write progress for the request timeout (a
//! client that stopped reading) fails the connection, which frees its `--worker-connections` slot;
//! and the raw bytes pass the framing check (`framing`) before hyper reads them.
use crate::http::framing::FramingCheck;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the socket and the connection's service tell each other: whether the connection is
/// between requests (waiting for, or reading, a request head; the service clears it when a head has
/// been parsed, the response body sets it again when dropped), and the framing rule the client broke.
#[derive(Debug)]
pub struct ConnectionState {
    awaiting: AtomicBool,
    /// Heads parsed so far on this connection.
    heads: AtomicU64,
    /// Set once, when the bytes after a head broke the framing rules (see `framing`).
    framing_error: std::sync::OnceLock<&'static str>,
}

impl ConnectionState {
    pub fn new() -> Arc<ConnectionState> {
        Arc::new(ConnectionState {
            awaiting: AtomicBool::new(true),
            heads: AtomicU64::new(0),
            framing_error: std::sync::OnceLock::new(),
        })
    }

    /// Why the body of the request whose head was just parsed is malformed, if it is: the
    /// request is then refused before its guest runs.
    pub fn framing_error(&self) -> Option<&'static str> {
        self.framing_error.get().copied()
    }

    /// A request head was parsed: its body and response are not the header timeout's business.
    pub fn head_received(&self) {
        self.heads.fetch_add(1, Ordering::Relaxed);
        self.awaiting.store(false, Ordering::Relaxed);
    }

    /// The response is done: the next bytes start a new head.
    pub fn response_done(&self) {
        self.awaiting.store(true, Ordering::Relaxed);
    }
}

fn malformed(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed request: {reason}"))
}

/// Why the guard failed a connection (the error's text is logged with the peer).
fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// A socket with the two deadlines.
pub struct TimedSocket<I> {
    inner: I,
    state: Arc<ConnectionState>,
    header_timeout: Option<Duration>,
    /// Running while a head is being read.
    head_deadline: Option<Pin<Box<Sleep>>>,
    /// `ConnectionState::heads` when `head_deadline` was armed: a later head needs its own clock.
    armed_for: u64,
    write_stall: Option<Duration>,
    /// Running while a write is blocked.
    stall_deadline: Option<Pin<Box<Sleep>>>,
    framing: FramingCheck,
    /// The framing rule the client broke; no byte after it reaches hyper.
    broken: Option<&'static str>,
}

impl<I> TimedSocket<I> {
    pub fn new(
        inner: I,
        state: Arc<ConnectionState>,
        header_timeout: Option<Duration>,
        write_stall: Option<Duration>,
    ) -> Self {
        // The first head is timed from the accept: a connection that never sends a byte is a
        // slowloris too.
        let head_deadline = header_timeout.map(|t| Box::pin(tokio::time::sleep(t)));
        TimedSocket {
            inner,
            state,
            header_timeout,
            head_deadline,
            armed_for: 0,
            write_stall,
            stall_deadline: None,
            framing: FramingCheck::default(),
            broken: None,
        }
    }

    fn head_timeout_error(&self) -> io::Error {
        timed_out(format!(
            "no complete request head within --header-timeout {}s",
            self.header_timeout.map_or(0, |t| t.as_secs())
        ))
    }

    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some(stall) = self.write_stall else { return Poll::Pending };
        let deadline = self.stall_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(timed_out(format!(
                "the client read nothing of the response for --timeout {}s",
                stall.as_secs()
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Any written byte is progress (the stall clock restarts); a pending write runs it.
    fn after_write(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Pending => self.write_pending(cx).map(Err),
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.stall_deadline = None;
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

use std::future::Future;

impl<I: AsyncRead + Unpin> AsyncRead for TimedSocket<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let awaiting = this.state.awaiting.load(Ordering::Relaxed);
        let heads = this.state.heads.load(Ordering::Relaxed);
        if !awaiting || heads != this.armed_for {
            this.head_deadline = None;
            this.armed_for = heads;
        }
        if let Some(reason) = this.broken {
            // Before the refused request's head reached the service, hold hyper here (the
            // service answers 400 and closes); after, fail the connection (a running guest gets
            // a body error).
            return if awaiting { Poll::Pending } else { Poll::Ready(Err(malformed(reason))) };
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            if let Err(violation) = this.framing.feed(&buf.filled()[before..]) {
                buf.set_filled(before + violation.offset);
                this.broken = Some(violation.reason);
                let _ = this.state.framing_error.set(violation.reason);
                if !violation.after_head {
                    // An oversized head: nothing for a service to answer; close.
                    this.broken = None;
                    return Poll::Ready(Err(malformed(violation.reason)));
                }
                if violation.offset == 0 {
                    return if awaiting { Poll::Pending } else { Poll::Ready(Err(malformed(violation.reason))) };
                }
            }
        }
        let Some(timeout) = this.header_timeout.filter(|_| awaiting) else { return polled };
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                // First bytes of a new head: start its clock (a running one keeps going).
                match &this.head_deadline {
                    Some(deadline) if deadline.is_elapsed() => return Poll::Ready(Err(this.head_timeout_error())),
                    Some(_) => {}
                    None => this.head_deadline = Some(Box::pin(tokio::time::sleep_until(Instant::now() + timeout))),
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.head_deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(this.head_timeout_error())),
                _ => Poll::Pending,
            },
            other => other,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedSocket<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_pending(cx).map(Err),
            Poll::Ready(Ok(())) => {
                // Everything written reached the socket: the stall clock starts afresh next time.
                self.stall_deadline = None;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that marks the end of its request on the connection's [`ConnectionState`] when
/// hyper is done with it (dropped).
pub struct ResponseDoneBody<B> {
    inner: B,
    state: Arc<ConnectionState>,
}

impl<B> ResponseDoneBody<B> {
    pub fn new(inner: B, state: Arc<ConnectionState>) -> Self {
        ResponseDoneBody { inner, state }
    }
}

impl<B> Drop for ResponseDoneBody<B> {
    fn drop(&mut self) {
        self.state.response_done();
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for ResponseDoneBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_dribbled_head_times_out_but_a_request_in_progress_does_not() {
        let (client, server) = tokio::io::duplex(64);
        let state = ConnectionState::new();
        let mut io = TimedSocket::new(server, state.clone(), Some(Duration::from_secs(5)), None);
        let mut client = client;
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let err = io.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client, server) = tokio::io::duplex(64);
        let mut io = TimedSocket::new(server, state.clone(), Some(Duration::from_secs(5)), None);
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        state.head_received();
        // A slow body is the request clock's business, not the header timeout's.
        let slow = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            client.write_all(b"body").await.unwrap();
            client
        });
        assert_eq!(io.read(&mut buf).await.unwrap(), 4);
        drop(slow);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_for_the_stall_time_fails() {
        let (_client, server) = tokio::io::duplex(16);
        let mut io = TimedSocket::new(server, ConnectionState::new(), None, Some(Duration::from_secs(3)));
        let err = io.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    /// A socket whose flush stays pending while `stalled` is set (as a TLS stream's does while the
    /// client reads nothing); writes always go into its buffer.
    struct SlowFlush {
        stalled: bool,
    }

    impl AsyncWrite for SlowFlush {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.stalled {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// One poll of `io`'s flush.
    async fn poll_flush(io: &mut TimedSocket<SlowFlush>) -> Poll<Result<(), io::ErrorKind>> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *io).poll_flush(cx).map_err(|e| e.kind()))).await
    }

    /// A stalled flush arms the stall clock; once a flush has gone through, the next stall gets a
    /// fresh `--timeout`, not the remains of the old one.
    #[tokio::test(start_paused = true)]
    async fn a_flush_that_goes_through_clears_the_stall_clock() {
        let mut io =
            TimedSocket::new(SlowFlush { stalled: true }, ConnectionState::new(), None, Some(Duration::from_secs(3)));
        assert!(poll_flush(&mut io).await.is_pending(), "a stalled flush arms the clock");
        tokio::time::sleep(Duration::from_secs(2)).await;
        io.inner.stalled = false;
        assert!(poll_flush(&mut io).await.is_ready(), "the client read: the flush goes through");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        io.inner.stalled = true;
        // 3.5 s after the first stall began, 1.5 s after the last progress: not timed out.
        assert!(poll_flush(&mut io).await.is_pending(), "a fresh stall gets a fresh clock");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(poll_flush(&mut io).await, Poll::Ready(Err(io::ErrorKind::TimedOut)), "a real stall still fails");
    }
}
