//! The heartbeat: one shared-memory page per worker (an unlinked file under `--worker-tmp-dir`,
//! mapped before the fork). The worker stores a monotonic timestamp from its event loop and its
//! lifecycle state; the arbiter reads both without a syscall on either side.
use anyhow::{Context, Result};
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// What a worker tells the arbiter about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerReport {
    /// Forked, still loading the app.
    Booting,
    /// Accepting connections.
    Ready,
    /// Served its `--max-requests`: wants a replacement started, keeps serving until told to stop.
    WantsRetirement,
}

#[repr(C)]
struct Page {
    beat_ms: AtomicU64,
    report: AtomicU32,
}

const PAGE_LEN: usize = 4096;

/// A worker's heartbeat page, visible to the arbiter and the worker.
pub struct Heartbeat {
    page: NonNull<Page>,
    /// The arbiter owns the mapping; a forked worker holds a view of the same page.
    owned: bool,
}

// SAFETY: the page holds only atomics and lives until the mapping is dropped.
unsafe impl Send for Heartbeat {}
unsafe impl Sync for Heartbeat {}

impl Heartbeat {
    /// Maps a fresh page backed by an unlinked file in `dir`.
    pub fn create(dir: &Path) -> Result<Heartbeat> {
        let file = tempfile::tempfile_in(dir)
            .with_context(|| format!("cannot create a heartbeat file in --worker-tmp-dir {}", dir.display()))?;
        file.set_len(PAGE_LEN as u64)?;
        // SAFETY: a fresh shared mapping of a file we own, unmapped in Drop.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(PAGE_LEN).expect("page length"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .context("cannot map the heartbeat page")?;
        let heartbeat = Heartbeat { page: ptr.cast(), owned: true };
        heartbeat.beat();
        Ok(heartbeat)
    }

    /// The same page, for the forked worker (which inherited the mapping); never unmaps it.
    pub fn view(&self) -> Heartbeat {
        Heartbeat { page: self.page, owned: false }
    }

    fn page(&self) -> &Page {
        // SAFETY: mapped for our lifetime; zero-filled memory is a valid `Page`.
        unsafe { self.page.as_ref() }
    }

    /// Records that the worker's event loop is alive now.
    pub fn beat(&self) {
        self.page().beat_ms.store(monotonic_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last beat.
    pub fn silence_ms(&self) -> u64 {
        monotonic_ms().saturating_sub(self.page().beat_ms.load(Ordering::Relaxed))
    }

    pub fn report(&self, report: WorkerReport) {
        let value = match report {
            WorkerReport::Booting => 0,
            WorkerReport::Ready => 1,
            WorkerReport::WantsRetirement => 2,
        };
        self.page().report.store(value, Ordering::Release);
    }

    pub fn read_report(&self) -> WorkerReport {
        match self.page().report.load(Ordering::Acquire) {
            1 => WorkerReport::Ready,
            2 => WorkerReport::WantsRetirement,
            _ => WorkerReport::Booting,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // SAFETY: unmapping the page we mapped; no references outlive self.
        unsafe {
            let _ = munmap(self.page.cast(), PAGE_LEN);
        }
    }
}

/// CLOCK_MONOTONIC in milliseconds: one clock for every process on the machine.
pub fn monotonic_ms() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000
}
