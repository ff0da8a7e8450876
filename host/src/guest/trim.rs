//! Gives back the memory that unused instance slots keep resident: at the end of every
//! `--instance-trim-after` period the worker decommits the unused pool slots beyond the most
//! guest memories it had live at once during that period, so its resident memory falls back
//! toward its idle size once a burst is over, and stays sized to the load while traffic goes on.
use std::sync::atomic::{AtomicUsize, Ordering};
use wasmtime::{Engine, PoolingAllocatorMetrics};

/// A worker's trimmer: the period's peak of live guest memories and the pool it trims.
pub struct SlotTrim {
    engine: Engine,
    pool: Option<PoolingAllocatorMetrics>,
    /// Most guest memories live at once since the period began.
    peak: AtomicUsize,
}

impl SlotTrim {
    pub fn new(engine: &Engine) -> SlotTrim {
        SlotTrim { engine: engine.clone(), pool: engine.pooling_allocator_metrics(), peak: AtomicUsize::new(0) }
    }

    fn live(&self) -> usize {
        self.pool.as_ref().map_or(0, PoolingAllocatorMetrics::memories)
    }

    /// Notes the guest memories live now: at the end of every request (its instance still
    /// alive) and at every heartbeat.
    pub fn note_live(&self) {
        self.peak.fetch_max(self.live(), Ordering::Relaxed);
    }

    /// Ends a period: decommits what unused slots keep resident beyond the period's need and
    /// starts the next period; returns the bytes given back.
    pub fn end_period(&self) -> usize {
        let live = self.live();
        let peak = self.peak.swap(live, Ordering::Relaxed);
        let keep = unused_slots_to_keep(peak, live);
        self.engine.trim_unused_pool_memory(u32::try_from(keep).unwrap_or(u32::MAX))
    }
}

/// Unused slots that stay resident after a period: enough that the period's peak of live
/// memories finds warm slots again, counting those still live.
fn unused_slots_to_keep(peak: usize, live: usize) -> usize {
    peak.saturating_sub(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_period_keeps_nothing_and_a_busy_one_keeps_its_peak() {
        assert_eq!(unused_slots_to_keep(0, 0), 0, "no request in the period: every unused slot is trimmed");
        assert_eq!(unused_slots_to_keep(8, 0), 8, "a burst just ended: its slots stay warm one more period");
        assert_eq!(unused_slots_to_keep(8, 3), 5, "live memories count towards the peak");
        assert_eq!(unused_slots_to_keep(2, 5), 0, "more live now than the noted peak: nothing unused to keep");
    }
}
