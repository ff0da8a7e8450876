//! Instances a request can start on without instantiating: spare fresh ones (see `spare`) and,
//! with --instance-reuse > 1, kept ones; the decision to keep one after its request (releasing
//! what the request left, see `release`), and counts of why instances were not kept, logged at
//! debug level; and the worker's instance slots, one permit per live instance, so a spare is
//! never made in the last free slot a request could need.
use crate::guest::release::Leftover;
use crate::guest::store::GuestState;
use crate::log_debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// An instance waiting for its next request; never used by two requests at once.
pub struct IdleInstance {
    pub store: Store<GuestState>,
    pub proxy: Proxy,
    /// Requests it has served so far.
    pub served: u32,
    /// A spare: how long its instantiation took (reported by the request that takes it).
    pub instantiation: Option<std::time::Duration>,
}

/// Why an instance was dropped after a request instead of being kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// It served `--instance-reuse` requests.
    UsedUp,
    /// Its request trapped or timed out.
    Failed,
    /// Its request left something behind that must not outlive it.
    Left(Leftover),
    /// Enough instances are idle already (at most half of `--instance-slots`).
    IdleFull,
}

impl std::fmt::Display for NotKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotKept::UsedUp => write!(f, "it served --instance-reuse requests"),
            NotKept::Failed => write!(f, "its request failed"),
            NotKept::Left(why) => write!(f, "{why}"),
            NotKept::IdleFull => write!(f, "enough instances are idle already"),
        }
    }
}

/// How often instances were kept and, when not, why (this worker, since it started).
#[derive(Debug, Default)]
pub struct ReuseCounts {
    pub kept: AtomicU64,
    pub used_up: AtomicU64,
    pub failed: AtomicU64,
    pub left_resources: AtomicU64,
    pub idle_full: AtomicU64,
}

impl ReuseCounts {
    fn count(&self, outcome: Option<NotKept>) {
        let counter = match outcome {
            None => &self.kept,
            Some(NotKept::UsedUp) => &self.used_up,
            Some(NotKept::Failed) => &self.failed,
            Some(NotKept::Left(_)) => &self.left_resources,
            Some(NotKept::IdleFull) => &self.idle_full,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for ReuseCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        write!(
            f,
            "kept {}, not kept: {} used up, {} failed, {} left resources, {} idle full",
            n(&self.kept),
            n(&self.used_up),
            n(&self.failed),
            n(&self.left_resources),
            n(&self.idle_full)
        )
    }
}

/// The instances a worker keeps between requests.
pub struct KeptInstances {
    /// `--instance-reuse`: requests one instance may serve.
    reuse: u32,
    /// Idle instances hold pool slots; at most this many wait.
    max_idle: usize,
    idle: Mutex<Vec<IdleInstance>>,
    /// Fresh, never-used instances made while the worker had nothing else to do.
    spares: Mutex<Vec<IdleInstance>>,
    /// Set while a task is making spares.
    refilling: std::sync::atomic::AtomicBool,
    pub counts: ReuseCounts,
    /// One permit per `--instance-slots` slot; every live instance's store holds one.
    slots: Arc<Semaphore>,
}

/// Never-used instances a worker keeps ready so a request does not wait for instantiation.
pub const SPARE_INSTANCES: usize = 1;

/// Pool slots kept instances may hold while idle: half of `--instance-slots`, at least one.
pub fn max_idle_instances(instance_slots: u32) -> usize {
    (instance_slots / 2).max(1) as usize
}

/// Requests that can each be sure of a slot at once: the slots less those idle kept instances
/// (with `--instance-reuse` above 1) and spares may hold, at least one. A spare is made while two
/// slots are free and holds one until a request takes it, so a request let in beyond this could
/// find every slot taken.
pub fn slots_for_requests(instance_slots: u32, instance_reuse: u32) -> usize {
    let idle = if instance_reuse > 1 { max_idle_instances(instance_slots) } else { 0 };
    (instance_slots as usize).saturating_sub(idle + SPARE_INSTANCES).max(1)
}

impl KeptInstances {
    pub fn new(reuse: u32, instance_slots: u32) -> KeptInstances {
        KeptInstances {
            reuse,
            max_idle: max_idle_instances(instance_slots),
            slots: Arc::new(Semaphore::new(instance_slots as usize)),
            idle: Mutex::new(Vec::new()),
            spares: Mutex::new(Vec::new()),
            refilling: std::sync::atomic::AtomicBool::new(false),
            counts: ReuseCounts::default(),
        }
    }

    fn enabled(&self) -> bool {
        self.reuse > 1
    }

    /// An instance kept from an earlier request, else a spare fresh one, if any.
    pub fn take(&self) -> Option<IdleInstance> {
        if self.enabled() {
            if let Some(kept) = self.idle.lock().ok()?.pop() {
                return Some(kept);
            }
        }
        self.spares.lock().ok()?.pop()
    }

    /// A free instance slot for a request's fresh instance; None when every slot is in use.
    pub fn slot_for_request(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A free instance slot for a spare, only when another stays free for a request: a spare
    /// being instantiated must never take the slot a request arriving meanwhile needs.
    pub fn slot_for_spare(&self) -> Option<OwnedSemaphorePermit> {
        if self.slots.available_permits() < 2 {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }

    /// True when fewer than `SPARE_INSTANCES` spare instances are ready.
    pub fn wants_spare(&self) -> bool {
        self.spares.lock().is_ok_and(|spares| spares.len() < SPARE_INSTANCES)
    }

    /// Claims the refill duty; false when another task has it.
    pub fn begin_refill(&self) -> bool {
        !self.refilling.swap(true, Ordering::AcqRel)
    }

    pub fn end_refill(&self) {
        self.refilling.store(false, Ordering::Release);
    }

    /// Adds a freshly instantiated, never-used instance (it still serves one request only,
    /// unless --instance-reuse allows more).
    pub fn add_spare(&self, store: Store<GuestState>, proxy: Proxy, instantiation: std::time::Duration) {
        if let Ok(mut spares) = self.spares.lock() {
            if spares.len() < SPARE_INSTANCES {
                spares.push(IdleInstance { store, proxy, served: 0, instantiation: Some(instantiation) });
            }
        }
    }

    /// After a request the guest completed: releases what the request left in the instance and
    /// keeps the instance for the next request, or drops it (freeing its pool slot) and says why.
    pub fn after_success(&self, mut store: Store<GuestState>, proxy: Proxy, served: u32, request_id: &str) {
        if !self.enabled() {
            return;
        }
        let outcome = if served >= self.reuse {
            Some(NotKept::UsedUp)
        } else if let Err(why) = store.data_mut().release_request() {
            Some(NotKept::Left(why))
        } else {
            match self.idle.lock() {
                Ok(mut idle) if idle.len() < self.max_idle => {
                    idle.push(IdleInstance { store, proxy, served, instantiation: None });
                    None
                }
                _ => Some(NotKept::IdleFull),
            }
        };
        self.count(outcome, request_id);
    }

    /// After a request that trapped or timed out: its instance is dropped.
    pub fn after_failure(&self, request_id: &str) {
        if self.enabled() {
            self.count(Some(NotKept::Failed), request_id);
        }
    }

    fn count(&self, outcome: Option<NotKept>, request_id: &str) {
        self.counts.count(outcome);
        if let Some(why) = outcome {
            log_debug!("request {request_id}: instance not kept: {why} (this worker: {})", self.counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sure_of_a_slot_leave_room_for_idle_and_spare_instances() {
        assert_eq!(slots_for_requests(128, 1), 127, "one spare");
        assert_eq!(slots_for_requests(128, 3), 63, "64 idle kept instances and one spare");
        assert_eq!(slots_for_requests(2, 1), 1);
        assert_eq!(slots_for_requests(1, 1), 1, "one slot: never a spare, and one request still runs");
        assert_eq!(slots_for_requests(1, 5), 1);
    }

    #[test]
    fn a_spare_never_takes_the_last_free_slot() {
        let kept = KeptInstances::new(1, 2);
        let spare = kept.slot_for_spare().expect("two free slots: one may go to a spare");
        assert!(kept.slot_for_spare().is_none(), "the last free slot is kept for a request");
        let request = kept.slot_for_request().expect("a request takes the last slot");
        assert!(kept.slot_for_request().is_none(), "no slot left");
        drop((spare, request));
        assert!(KeptInstances::new(1, 1).slot_for_spare().is_none(), "one slot: never a spare");
    }
}
