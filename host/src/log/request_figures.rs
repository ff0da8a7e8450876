//! Per-request figures the access log prints (`%(instantiate_us)s`, `%(peak_memory)s`), filled
//! in by the guest task while the request runs.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Per-request figures the guest task fills in for the access log: instantiation time and the
/// guest's linear memory at its peak (the memory limiter updates it as memory grows).
#[derive(Debug)]
pub struct RequestFigures {
    instantiation_ns: AtomicU64,
    peak_memory: AtomicU64,
}

const UNKNOWN: u64 = u64::MAX;

impl Default for RequestFigures {
    fn default() -> Self {
        RequestFigures { instantiation_ns: AtomicU64::new(UNKNOWN), peak_memory: AtomicU64::new(0) }
    }
}

impl RequestFigures {
    pub fn set_instantiation(&self, took: Duration) {
        self.instantiation_ns
            .store(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).min(UNKNOWN - 1), Ordering::Relaxed);
    }

    /// `None` when the request reused an instance (or never reached instantiation).
    pub fn instantiation(&self) -> Option<Duration> {
        match self.instantiation_ns.load(Ordering::Relaxed) {
            UNKNOWN => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    pub fn set_memory(&self, bytes: usize) {
        self.peak_memory.fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// Linear memory of the guest instance at its largest, in bytes.
    pub fn peak_memory(&self) -> Option<u64> {
        match self.peak_memory.load(Ordering::Relaxed) {
            0 => None,
            bytes => Some(bytes),
        }
    }
}
