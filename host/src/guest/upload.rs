//! The request body as the guest reads it: streamed, never buffered by the host; each chunk
//! received counts as progress on the request clock (a long upload is not a stuck request), and a
//! body that passes `--limit-request-body` ends in an error and marks the request as too large.
use crate::guest::clock::RequestClock;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Why the request body could not be read to its end.
#[derive(Debug)]
pub enum UploadError {
    Http(hyper::Error),
    TooLarge(u64),
}

impl std::fmt::Display for UploadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadError::Http(e) => write!(f, "{e}"),
            UploadError::TooLarge(limit) => write!(f, "request body over --limit-request-body {limit} bytes"),
        }
    }
}

impl std::error::Error for UploadError {}

/// Shared flag: the body passed the limit.
#[derive(Clone, Default)]
pub struct TooLarge(Arc<AtomicBool>);

impl TooLarge {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct UploadBody<B> {
    inner: B,
    clock: Option<Arc<RequestClock>>,
    /// 0 = unlimited.
    limit: u64,
    received: u64,
    too_large: TooLarge,
}

impl<B> UploadBody<B> {
    pub fn new(inner: B, clock: Option<Arc<RequestClock>>, limit: u64) -> (UploadBody<B>, TooLarge) {
        let too_large = TooLarge::default();
        (UploadBody { inner, clock, limit, received: 0, too_large: too_large.clone() }, too_large)
    }
}

impl<B> Body for UploadBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = UploadError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, UploadError>>> {
        let this = &mut *self;
        if this.too_large.is_set() {
            return Poll::Ready(Some(Err(UploadError::TooLarge(this.limit))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    if this.limit > 0 && this.received > this.limit {
                        this.too_large.0.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(UploadError::TooLarge(this.limit))));
                    }
                    if let Some(clock) = &this.clock {
                        clock.progress();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(UploadError::Http(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What the guest sees: `http-request-body-size` for a body over the limit.
impl From<UploadError> for wasmtime_wasi_http::Error {
    fn from(error: UploadError) -> Self {
        match error {
            UploadError::Http(e) => wasmtime_wasi_http::Error::Hyper(e),
            UploadError::TooLarge(limit) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit)),
        }
    }
}
