//! The shared-memory metrics arena: one slot of atomic counters per worker plus a "retired" slot,
//! mapped `MAP_SHARED | MAP_ANONYMOUS` by the arbiter before any fork. A worker records into its
//! own slot with relaxed atomic adds (no lock, no syscall); the arbiter reads every slot at scrape
//! time, and folds a dead worker's counters into the retired slot before zeroing it for reuse, so
//! totals stay monotonic across worker deaths, recycling and reloads. Gauges are not folded.
use anyhow::{Context, Result};
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

/// OpenTelemetry's default buckets for `http.server.request.duration` (seconds).
pub const REQUEST_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Instantiation is fast (tens of microseconds to milliseconds): finer buckets.
pub const INSTANTIATION_BUCKETS: [f64; 12] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];
/// (method, status) pairs one slot can hold; more land in `request_overflow`.
pub const REQUEST_CELLS: usize = 128;
/// Key-value operations take from tens of microseconds (SQLite, a loopback Redis) to seconds.
pub const KEYVALUE_BUCKETS: [f64; 12] = INSTANTIATION_BUCKETS;
/// (bucket, operation) pairs one slot can hold; more land in `keyvalue_overflow`.
pub const KEYVALUE_CELLS: usize = 64;
/// Most distinct bucket names the arena labels; later ones are labelled `_other`.
pub const MAX_BUCKET_LABELS: usize = 1024;

/// A histogram with `N` buckets: one per bound plus `+Inf` (per-bucket, not cumulative, counts).
#[repr(C)]
pub struct Histogram<const N: usize> {
    pub buckets: [AtomicU64; N],
    pub count: AtomicU64,
    pub sum_ns: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    pub fn observe(&self, bounds: &[f64], nanos: u64) {
        let seconds = nanos as f64 / 1e9;
        let index = bounds.iter().position(|&bound| seconds <= bound).unwrap_or(N - 1);
        self.buckets[index].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(nanos, Relaxed);
    }

    fn fold_into(&self, into: &Histogram<N>) {
        for (from, to) in self.buckets.iter().zip(&into.buckets) {
            to.fetch_add(from.swap(0, Relaxed), Relaxed);
        }
        into.count.fetch_add(self.count.swap(0, Relaxed), Relaxed);
        into.sum_ns.fetch_add(self.sum_ns.swap(0, Relaxed), Relaxed);
    }

    /// Adds this histogram's values to `sum`: (count, sum in ns, per-bucket counts).
    pub fn add_to(&self, sum: &mut HistogramSum) {
        sum.count += self.count.load(Relaxed);
        sum.sum_ns += self.sum_ns.load(Relaxed);
        sum.buckets.resize(N, 0);
        for (total, bucket) in sum.buckets.iter_mut().zip(&self.buckets) {
            *total += bucket.load(Relaxed);
        }
    }
}

/// A histogram read out of the arena (summed over slots).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSum {
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: Vec<u64>,
}

/// The request-duration histogram of one (method, status) pair; `key` 0 = unused.
#[repr(C)]
pub struct RequestCell {
    pub key: AtomicU32,
    pub histogram: Histogram<{ REQUEST_BUCKETS.len() + 1 }>,
}

/// The key-value operations of one (bucket, operation) pair; `key` 0 = unused.
#[repr(C)]
pub struct KeyvalueCell {
    pub key: AtomicU32,
    pub outcomes: [AtomicU64; crate::state::keyvalue::op::OUTCOME_NAMES.len()],
    pub duration: Histogram<{ KEYVALUE_BUCKETS.len() + 1 }>,
}

impl KeyvalueCell {
    fn fold_into(&self, into: &KeyvalueCell) {
        for (from, to) in self.outcomes.iter().zip(&into.outcomes) {
            to.fetch_add(from.swap(0, Relaxed), Relaxed);
        }
        self.duration.fold_into(&into.duration);
    }
}

/// A cell with a key (0 = free), claimed on first use by open addressing.
trait Keyed {
    fn key(&self) -> &AtomicU32;
}

impl Keyed for RequestCell {
    fn key(&self) -> &AtomicU32 {
        &self.key
    }
}

impl Keyed for KeyvalueCell {
    fn key(&self) -> &AtomicU32 {
        &self.key
    }
}

/// The cell of `cells` for `key` (non-zero), claiming a free one on first use; `None` when full.
fn claim<T: Keyed>(cells: &[T], key: u32) -> Option<&T> {
    let start = (key.wrapping_mul(0x9E37_79B1) >> 16) as usize % cells.len();
    for step in 0..cells.len() {
        let cell = &cells[(start + step) % cells.len()];
        match cell.key().load(Relaxed) {
            k if k == key => return Some(cell),
            0 => match cell.key().compare_exchange(0, key, Relaxed, Relaxed) {
                Ok(_) => return Some(cell),
                Err(actual) if actual == key => return Some(cell),
                Err(_) => continue,
            },
            _ => continue,
        }
    }
    None
}

/// Everything one worker records. All-zero bytes are a valid, empty slot.
#[repr(C)]
pub struct Slot {
    pub requests: [RequestCell; REQUEST_CELLS],
    /// Requests whose (method, status) found no free cell.
    pub request_overflow: AtomicU64,
    /// Gauge: requests in progress (not folded at death).
    pub active: AtomicI64,
    pub outcomes: [AtomicU64; super::labels::OUTCOMES.len()],
    pub instantiation: Histogram<{ INSTANTIATION_BUCKETS.len() + 1 }>,
    pub queue_time: Histogram<{ REQUEST_BUCKETS.len() + 1 }>,
    /// Requests answered 503 at once because they waited longer than --max-queue-time.
    pub shed_queue_time: AtomicU64,
    pub outbound: [AtomicU64; super::labels::OUTBOUND_RESULTS.len()],
    /// Log lines the worker dropped, per [`crate::log::LogKind`]: the worker stores its own
    /// process's counts here after each heartbeat.
    pub log_lines_dropped: [AtomicU64; crate::log::LogKind::ALL.len()],
    /// Key-value operations by (bucket label, operation).
    pub keyvalue: [KeyvalueCell; KEYVALUE_CELLS],
    /// Key-value operations whose (bucket, operation) found no free cell.
    pub keyvalue_overflow: AtomicU64,
}

impl Slot {
    /// The request cell for `key` (non-zero), claiming a free one on first use; `None` when full.
    pub fn cell(&self, key: u32) -> Option<&RequestCell> {
        claim(&self.requests, key)
    }

    /// The key-value cell for `key` (non-zero, see `labels::keyvalue_key`); `None` when full.
    pub fn keyvalue_cell(&self, key: u32) -> Option<&KeyvalueCell> {
        claim(&self.keyvalue, key)
    }

    /// Moves every counter and histogram of this (dead worker's) slot into `into` and zeroes the
    /// slot, gauges included, for its next worker.
    fn fold_into(&self, into: &Slot) {
        for cell in &self.requests {
            let key = cell.key.swap(0, Relaxed);
            if key == 0 {
                continue;
            }
            match into.cell(key) {
                Some(target) => cell.histogram.fold_into(&target.histogram),
                None => {
                    into.request_overflow.fetch_add(cell.histogram.count.load(Relaxed), Relaxed);
                    cell.histogram.fold_into(&empty_sink());
                }
            }
        }
        into.request_overflow.fetch_add(self.request_overflow.swap(0, Relaxed), Relaxed);
        self.active.store(0, Relaxed);
        for (from, to) in self.outcomes.iter().zip(&into.outcomes) {
            to.fetch_add(from.swap(0, Relaxed), Relaxed);
        }
        self.instantiation.fold_into(&into.instantiation);
        self.queue_time.fold_into(&into.queue_time);
        into.shed_queue_time.fetch_add(self.shed_queue_time.swap(0, Relaxed), Relaxed);
        for (from, to) in self.outbound.iter().zip(&into.outbound) {
            to.fetch_add(from.swap(0, Relaxed), Relaxed);
        }
        for (from, to) in self.log_lines_dropped.iter().zip(&into.log_lines_dropped) {
            to.fetch_add(from.swap(0, Relaxed), Relaxed);
        }
        self.fold_keyvalue_into(into);
    }

    fn fold_keyvalue_into(&self, into: &Slot) {
        for cell in &self.keyvalue {
            let key = cell.key.swap(0, Relaxed);
            if key == 0 {
                continue;
            }
            match into.keyvalue_cell(key) {
                Some(target) => cell.fold_into(target),
                None => {
                    let total: u64 = cell.outcomes.iter().map(|o| o.swap(0, Relaxed)).sum();
                    into.keyvalue_overflow.fetch_add(total, Relaxed);
                    cell.duration.fold_into(&empty_keyvalue_sink());
                }
            }
        }
        into.keyvalue_overflow.fetch_add(self.keyvalue_overflow.swap(0, Relaxed), Relaxed);
    }
}

fn empty_keyvalue_sink() -> Histogram<{ KEYVALUE_BUCKETS.len() + 1 }> {
    Histogram {
        buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        count: AtomicU64::new(0),
        sum_ns: AtomicU64::new(0),
    }
}

/// A throwaway histogram (zeroing a cell whose counts went to the overflow counter).
fn empty_sink() -> Histogram<{ REQUEST_BUCKETS.len() + 1 }> {
    Histogram {
        buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        count: AtomicU64::new(0),
        sum_ns: AtomicU64::new(0),
    }
}

/// Which worker slot a worker records into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId(usize);

/// The arena, owned by the arbiter. The mapping is never unmapped: workers forked from the
/// arbiter hold `&'static` references into it for their whole life.
pub struct Arena {
    base: NonNull<Slot>,
    worker_slots: usize,
    in_use: Vec<bool>,
    /// Every bucket name a worker was given a label for, in label order (label = index + 1; 0 is
    /// `_other`). Kept in the arbiter (a forked worker gets the copy it needs); only grows, so a
    /// label means the same name for every generation.
    bucket_names: Vec<String>,
}

// The arena is only atomics in shared memory.
unsafe impl Send for Arena {}

impl Arena {
    /// Maps room for `worker_slots` workers plus the retired totals. Call before any fork.
    pub fn create(worker_slots: usize) -> Result<Arena> {
        let bytes = std::mem::size_of::<Slot>() * (worker_slots + 1);
        let length = NonZeroUsize::new(bytes).context("metrics arena: no slots")?;
        use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
        // SAFETY: a fresh anonymous mapping; zero bytes are a valid Slot (atomics only).
        let base =
            unsafe { mmap_anonymous(None, length, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED) }
                .context("cannot map the shared metrics arena")?;
        Ok(Arena { base: base.cast(), worker_slots, in_use: vec![false; worker_slots], bucket_names: Vec::new() })
    }

    fn slot(&self, index: usize) -> &'static Slot {
        assert!(index <= self.worker_slots);
        // SAFETY: in bounds of a mapping that lives until the process exits; all-atomic type.
        unsafe { &*self.base.as_ptr().add(index) }
    }

    /// The retired totals: what workers that have exited recorded.
    pub fn retired(&self) -> &'static Slot {
        self.slot(self.worker_slots)
    }

    /// A free slot for a worker about to be forked; `None` when every slot is taken.
    pub fn claim(&mut self) -> Option<SlotId> {
        let index = self.in_use.iter().position(|used| !used)?;
        self.in_use[index] = true;
        Some(SlotId(index))
    }

    /// The slot a worker records into (valid in the forked child).
    pub fn worker_slot(&self, id: SlotId) -> &'static Slot {
        self.slot(id.0)
    }

    /// At reap: folds the dead worker's counters into the retired totals and frees its slot.
    pub fn release(&mut self, id: SlotId) {
        if std::mem::replace(&mut self.in_use[id.0], false) {
            self.slot(id.0).fold_into(self.retired());
        }
    }

    /// The retired totals followed by every slot held by a (possibly just dead, not yet reaped)
    /// worker: what a scrape sums.
    pub fn live_and_retired(&self) -> impl Iterator<Item = &'static Slot> + '_ {
        std::iter::once(self.retired())
            .chain(self.in_use.iter().enumerate().filter(|(_, used)| **used).map(|(i, _)| self.slot(i)))
    }

    /// The metrics labels of the buckets `names`, registering new names (up to
    /// [`MAX_BUCKET_LABELS`]; later ones share label 0, `_other`).
    pub fn bucket_labels<'a>(&mut self, names: impl Iterator<Item = &'a str>) -> Vec<u16> {
        names
            .map(|name| match self.bucket_names.iter().position(|known| known == name) {
                Some(i) => i as u16 + 1,
                None if self.bucket_names.len() < MAX_BUCKET_LABELS => {
                    self.bucket_names.push(name.to_string());
                    self.bucket_names.len() as u16
                }
                None => 0,
            })
            .collect()
    }

    /// The bucket name of a label.
    pub fn bucket_name(&self, label: u16) -> &str {
        match label {
            0 => "_other",
            n => self.bucket_names.get(usize::from(n) - 1).map_or("_other", String::as_str),
        }
    }

    /// Slots held by live workers only (for gauges).
    pub fn live(&self) -> impl Iterator<Item = &'static Slot> + '_ {
        self.live_and_retired().skip(1)
    }
}
