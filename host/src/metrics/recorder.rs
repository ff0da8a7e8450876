//! The worker side: records into the worker's own arena slot. Every call is a few relaxed atomic
//! adds (no lock, no syscall); a worker without a slot (metrics off) records nothing.
use super::arena::{Slot, INSTANTIATION_BUCKETS, KEYVALUE_BUCKETS, REQUEST_BUCKETS};
use super::labels::{method_code, request_key, OutboundResult, Outcome};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A worker's handle on its slot; cheap to copy.
#[derive(Clone, Copy, Default)]
pub struct Recorder(Option<&'static Slot>);

impl Recorder {
    pub fn new(slot: &'static Slot) -> Recorder {
        Recorder(Some(slot))
    }

    /// Records nothing (no `--admin-bind`, or no free slot).
    pub fn disabled() -> Recorder {
        Recorder(None)
    }

    /// A request has arrived: counts it active until the returned timer is dropped.
    pub fn request_started(&self, method: &http::Method) -> RequestTimer {
        if let Some(slot) = self.0 {
            slot.active.fetch_add(1, Ordering::Relaxed);
        }
        RequestTimer { recorder: *self, method: method_code(method), started: Instant::now(), status: None }
    }

    pub fn outcome(&self, outcome: Outcome) {
        if let Some(slot) = self.0 {
            slot.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn instantiation(&self, took: Duration) {
        if let Some(slot) = self.0 {
            slot.instantiation.observe(&INSTANTIATION_BUCKETS, nanos(took));
        }
    }

    pub fn queue_time(&self, waited: Duration) {
        if let Some(slot) = self.0 {
            slot.queue_time.observe(&REQUEST_BUCKETS, nanos(waited));
        }
    }

    /// A request answered 503 at once for waiting longer than `--max-queue-time`.
    pub fn shed_for_queue_time(&self) {
        if let Some(slot) = self.0 {
            slot.shed_queue_time.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One outgoing request of a guest (for the outbound HTTP control).
    pub fn outbound(&self, result: OutboundResult) {
        if let Some(slot) = self.0 {
            slot.outbound[result as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Copies this process's dropped-log-line counts (see `crate::log::dropped_counts`) into the
    /// slot, where the arbiter's scrape sums them.
    pub fn log_lines_dropped(&self, counts: [u64; crate::log::LogKind::ALL.len()]) {
        if let Some(slot) = self.0 {
            for (cell, count) in slot.log_lines_dropped.iter().zip(counts) {
                cell.store(count, Ordering::Relaxed);
            }
        }
    }

    /// One key-value operation: `key` from `labels::keyvalue_key`, `outcome` an index into
    /// `OUTCOME_NAMES`.
    pub fn keyvalue(&self, key: u32, outcome: usize, took: Duration) {
        let Some(slot) = self.0 else { return };
        match slot.keyvalue_cell(key) {
            Some(cell) => {
                if let Some(counter) = cell.outcomes.get(outcome) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                cell.duration.observe(&KEYVALUE_BUCKETS, nanos(took));
            }
            None => {
                slot.keyvalue_overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn request_done(&self, method: u8, status: u16, took: Duration) {
        let Some(slot) = self.0 else { return };
        match slot.cell(request_key(method, status)) {
            Some(cell) => cell.histogram.observe(&REQUEST_BUCKETS, nanos(took)),
            None => {
                slot.request_overflow.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One request in progress. Dropped when its response has been sent (it travels with the
/// response body) or abandoned: it then leaves the active gauge and, if a status was set, lands in
/// the duration histogram.
pub struct RequestTimer {
    recorder: Recorder,
    method: u8,
    started: Instant,
    status: Option<u16>,
}

impl RequestTimer {
    pub fn set_status(&mut self, status: u16) {
        self.status = Some(status);
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        if let Some(slot) = self.recorder.0 {
            slot.active.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(status) = self.status {
            self.recorder.request_done(self.method, status, self.started.elapsed());
        }
    }
}

/// Decides between `ok` and `no_response` for a guest run that returned normally, without a race
/// between the guest task (which knows it returned) and the request (which knows whether a
/// response head arrived): whichever of the two reports second records `ok`; a request that
/// learns no head will come records `no_response`.
#[derive(Clone, Default)]
pub struct OutcomeLatch(Arc<AtomicU8>);

const RETURNED: u8 = 1;
const HEAD: u8 = 2;

impl OutcomeLatch {
    /// The guest task: the guest's handler returned without a trap.
    pub fn guest_returned(&self, recorder: &Recorder) {
        if self.0.fetch_or(RETURNED, Ordering::AcqRel) & HEAD != 0 {
            recorder.outcome(Outcome::Ok);
        }
    }

    /// The request: the guest's response head arrived.
    pub fn head_arrived(&self, recorder: &Recorder) {
        if self.0.fetch_or(HEAD, Ordering::AcqRel) & RETURNED != 0 {
            recorder.outcome(Outcome::Ok);
        }
    }
}
