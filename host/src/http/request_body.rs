//! The request body as the front hands it to the guest: bounded in size (`--limit-request-body`,
//! 413) and in pace (`--body-timeout` + `--body-min-rate`, 408), and read ahead before the guest
//! is instantiated (`--body-buffer-size`, within a per-worker byte budget), so a slow upload holds
//! a connection, never an instance slot.
use crate::config::settings::BodyPace;
use crate::guest::upload::{BodyCut, BodyVerdict};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Bytes of read-ahead bodies one worker holds at once, across its connections; a body that finds
/// the budget spent streams to the guest as it arrives (still under the pace bound).
pub const READ_AHEAD_BUDGET: usize = 64 << 20;

/// The budget is counted in pages of this size.
const BUDGET_UNIT: usize = 4096;

/// A worker's read-ahead budget.
pub fn read_ahead_budget() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(READ_AHEAD_BUDGET / BUDGET_UNIT))
}

/// Why a request body was not read to its end.
#[derive(Debug)]
pub enum BodyError {
    Http(hyper::Error),
    Cut(BodyCut, u64),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Http(e) => write!(f, "{e}"),
            BodyError::Cut(BodyCut::TooLarge, limit) => {
                write!(f, "request body over --limit-request-body {limit} bytes")
            }
            BodyError::Cut(BodyCut::TooSlow, received) => {
                write!(f, "request body too slow (--body-timeout, --body-min-rate) after {received} bytes")
            }
        }
    }
}

impl std::error::Error for BodyError {}

/// What the guest sees: `http-request-body-size` over the limit, a read timeout when too slow.
impl From<BodyError> for wasmtime_wasi_http::Error {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Http(e) => wasmtime_wasi_http::Error::Hyper(e),
            BodyError::Cut(BodyCut::TooLarge, limit) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit)),
            BodyError::Cut(BodyCut::TooSlow, _) => wasmtime_wasi_http::Error::ConnectionReadTimeout,
        }
    }
}

/// A request body under the size and pace bounds, with the frames read ahead first.
pub struct RequestBody {
    ahead: VecDeque<Frame<Bytes>>,
    /// The rest of the body; None once it has ended.
    rest: Option<Incoming>,
    received: u64,
    limit: u64,
    pace: BodyPace,
    started: Instant,
    /// When the body counts as too slow, moved on as bytes arrive; None without a pace bound.
    deadline: Option<Pin<Box<Sleep>>>,
    verdict: BodyVerdict,
    /// The read-ahead budget this body's frames hold.
    budget: Option<OwnedSemaphorePermit>,
}

impl RequestBody {
    pub fn new(body: Incoming, limit: u64, pace: BodyPace) -> RequestBody {
        let started = Instant::now();
        let ended = body.is_end_stream();
        RequestBody {
            ahead: VecDeque::new(),
            rest: (!ended).then_some(body),
            received: 0,
            limit,
            deadline: pace.grace.filter(|_| !ended).map(|grace| Box::pin(tokio::time::sleep_until(started + grace))),
            pace,
            started,
            verdict: BodyVerdict::default(),
            budget: None,
        }
    }

    /// Where the front learns whether the body was cut, after the guest has answered.
    pub fn verdict(&self) -> BodyVerdict {
        self.verdict.clone()
    }

    /// Reads ahead up to `--body-buffer-size` bytes, if the worker's budget has room for them.
    /// An error (too large, too slow, a broken connection) means the guest never runs.
    pub async fn read_ahead(&mut self, budget: &Arc<Semaphore>) -> Result<(), BodyError> {
        let wanted = match self.size_hint().exact() {
            Some(length) => (length as usize).min(self.pace.buffer),
            None => self.pace.buffer,
        };
        if self.rest.is_none() || wanted == 0 {
            return Ok(());
        }
        let units = u32::try_from(wanted.div_ceil(BUDGET_UNIT)).unwrap_or(u32::MAX);
        let Ok(permit) = budget.clone().try_acquire_many_owned(units) else { return Ok(()) };
        self.budget = Some(permit);
        let mut buffered = 0usize;
        while buffered < wanted && self.rest.is_some() {
            match std::future::poll_fn(|cx| self.poll_rest(cx)).await {
                Some(Ok(frame)) => {
                    buffered += frame.data_ref().map_or(0, Bytes::len);
                    self.ahead.push_back(frame);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(())
    }

    /// The next frame of the rest of the body, under the size and pace bounds.
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(cut) = self.verdict.get() {
            return Poll::Ready(Some(Err(BodyError::Cut(cut, self.cut_figure(cut)))));
        }
        let Some(rest) = self.rest.as_mut() else { return Poll::Ready(None) };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => self.received_frame(frame),
            Poll::Ready(Some(Err(e))) => {
                self.rest = None;
                Poll::Ready(Some(Err(BodyError::Http(e))))
            }
            Poll::Ready(None) => {
                self.rest = None;
                self.deadline = None;
                Poll::Ready(None)
            }
            Poll::Pending => match self.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Some(Err(self.cut(BodyCut::TooSlow)))),
                _ => Poll::Pending,
            },
        }
    }

    fn received_frame(&mut self, frame: Frame<Bytes>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(data) = frame.data_ref() else { return Poll::Ready(Some(Ok(frame))) };
        self.received += data.len() as u64;
        if self.limit > 0 && self.received > self.limit {
            return Poll::Ready(Some(Err(self.cut(BodyCut::TooLarge))));
        }
        if let (Some(deadline), Some(grace)) = (self.deadline.as_mut(), self.pace.grace) {
            let earned = std::time::Duration::from_secs_f64(self.received as f64 / self.pace.min_rate as f64);
            deadline.as_mut().reset(self.started + grace + earned);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn cut(&mut self, why: BodyCut) -> BodyError {
        self.verdict.cut(why);
        self.rest = None;
        self.deadline = None;
        BodyError::Cut(why, self.cut_figure(why))
    }

    /// The figure an error message names: the limit, or the bytes received.
    fn cut_figure(&self, why: BodyCut) -> u64 {
        match why {
            BodyCut::TooLarge => self.limit,
            BodyCut::TooSlow => self.received,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.ahead.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        this.budget = None;
        this.poll_rest(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.ahead.is_empty() && self.rest.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead: u64 = self.ahead.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        let rest = self.rest.as_ref().map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + ahead);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + ahead);
        }
        hint
    }
}
