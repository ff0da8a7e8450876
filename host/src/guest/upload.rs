//! The request body as the guest reads it: each chunk received counts as progress on the request
//! clock (a long upload is not a stuck request). The HTTP front bounds the body (size, pace) and
//! records in a [`BodyVerdict`] when it cut one; the guest path answers for such a request by
//! handing the verdict back instead of the guest's response.
use crate::guest::clock::RequestClock;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Why the front cut a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyCut {
    /// Over `--limit-request-body`.
    TooLarge,
    /// Below the minimum pace (`--body-timeout`, `--body-min-rate`).
    TooSlow,
}

/// Shared between the body and the request path: whether, and why, the body was cut.
#[derive(Clone, Default, Debug)]
pub struct BodyVerdict(Arc<AtomicU8>);

impl BodyVerdict {
    pub fn cut(&self, why: BodyCut) {
        let code = match why {
            BodyCut::TooLarge => 1,
            BodyCut::TooSlow => 2,
        };
        let _ = self.0.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn get(&self) -> Option<BodyCut> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(BodyCut::TooLarge),
            2 => Some(BodyCut::TooSlow),
            _ => None,
        }
    }
}

/// A request body whose data frames restart the request clock.
pub struct UploadBody<B> {
    inner: B,
    clock: Arc<RequestClock>,
}

impl<B> UploadBody<B> {
    pub fn new(inner: B, clock: Arc<RequestClock>) -> UploadBody<B> {
        UploadBody { inner, clock }
    }
}

impl<B> Body for UploadBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if frame.is_data() {
                self.clock.progress();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
