//! The per-request store: what a guest instance may reach (WASI context, wasi-http context,
//! resource table), its memory cap, its request clock and its stdout/stderr.
use crate::config::settings::Settings;
use crate::guest::clock::RequestClock;
use crate::guest::outbound::{Outbound, OutboundHooks};
use crate::guest::output::GuestOutput;
use crate::guest::release::{self, Leftover};
use crate::state::{AppState, StateCtxView, StateView};
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Per-request store data.
pub struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Outbound HTTP: the allow-list check, address check and limits (never the default sender).
    outbound: OutboundHooks,
    table: ResourceTable,
    limiter: MemoryLimiter,
    clock: Arc<RequestClock>,
    /// The worker's key-value buckets and config values.
    state: Arc<AppState>,
    stdout: GuestOutput,
    stderr: GuestOutput,
    /// The worker's instance slot this instance occupies, freed with the store.
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl GuestState {
    /// Readies a kept instance's state for its next request (--instance-reuse).
    pub fn begin_request(&mut self, request_id: &Arc<str>, clock: Arc<RequestClock>) {
        self.outbound.begin_request(request_id.clone(), clock.clone());
        self.clock = clock;
        self.limiter.denied = false;
        self.stdout.set_request(request_id.clone());
        self.stderr.set_request(request_id.clone());
    }

    /// Reports this request's linear memory (as it grows) into `figures`.
    pub fn track_memory(&mut self, figures: Arc<crate::log::request_figures::RequestFigures>) {
        figures.set_memory(self.limiter.granted_bytes);
        self.limiter.figures = Some(figures);
    }

    /// True when the guest asked for more linear memory than `--max-memory` allows.
    pub fn memory_denied(&self) -> bool {
        self.limiter.denied
    }

    /// True when the last request left nothing of itself behind in the instance's table
    /// (a leaked body would keep its response or its connection open if the instance lived on).
    /// Releases what the finished request left in the table, or says why the instance must
    /// not serve another request (see `release`). Only once the guest has returned.
    pub fn release_request(&mut self) -> Result<usize, Leftover> {
        release::release_request(&mut self.table)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl StateView for GuestState {
    fn state(&mut self) -> StateCtxView<'_> {
        StateCtxView { state: &self.state, table: &mut self.table, deadline: self.clock.deadline() }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

/// Caps the linear memory of one instance (all its memories together) and remembers a denial,
/// so a guest that dies after running out of memory is logged as such.
struct MemoryLimiter {
    max_bytes: usize,
    granted_bytes: usize,
    denied: bool,
    /// The current request's figures (peak linear memory for the access log).
    figures: Option<Arc<crate::log::request_figures::RequestFigures>>,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.granted_bytes.saturating_add(desired.saturating_sub(current));
        if total > self.max_bytes {
            self.denied = true;
            return Ok(false);
        }
        self.granted_bytes = total;
        if let Some(figures) = &self.figures {
            figures.set_memory(total);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

/// Most resources (streams, fields, pollables, bodies...) one instance may hold at once. A
/// request needs a few dozen; wasmtime's default (1,000,000) lets a guest pin host memory.
pub const MAX_GUEST_RESOURCES: usize = 10_000;

/// Largest header field list (name + value bytes) a guest may build in one `fields` resource:
/// as much as the largest request head the server accepts.
pub const MAX_GUEST_FIELD_BYTES: usize = crate::config::bounds::MAX_HEAD_BYTES as usize;

fn resource_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_GUEST_RESOURCES);
    table
}

fn http_ctx() -> WasiHttpCtx {
    let mut ctx = WasiHttpCtx::new();
    ctx.set_field_size_limit(MAX_GUEST_FIELD_BYTES);
    ctx
}

/// A fresh store for one request: the granted environment and directories, the memory cap, and
/// an epoch callback that interrupts the guest once its request clock has run out.
pub fn new_store(
    engine: &Engine,
    settings: &Settings,
    outbound: &Arc<Outbound>,
    state: &Arc<AppState>,
    request_id: &Arc<str>,
    clock: Arc<RequestClock>,
    metrics: crate::metrics::Recorder,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> anyhow::Result<Store<GuestState>> {
    let stdout = GuestOutput::new(request_id.clone(), "stdout");
    let stderr = GuestOutput::new(request_id.clone(), "stderr");
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(&settings.guest_env).stdout(stdout.clone()).stderr(stderr.clone());
    for (host, guest) in &settings.guest_dirs {
        wasi.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadWrite)?;
    }
    let state = GuestState {
        wasi: wasi.build(),
        http: http_ctx(),
        outbound: OutboundHooks::new(outbound.clone(), request_id.clone(), clock.clone(), metrics),
        table: resource_table(),
        limiter: MemoryLimiter { max_bytes: settings.max_memory, granted_bytes: 0, denied: false, figures: None },
        clock,
        state: state.clone(),
        stdout,
        stderr,
        _slot: slot,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        if ctx.data().clock.is_expired() {
            Ok(UpdateDeadline::Interrupt)
        } else {
            // A CPU-bound guest steps aside at every tick (see `yield_to_other_requests`).
            Ok(UpdateDeadline::YieldCustom(1, Box::pin(yield_to_other_requests())))
        }
    });
    Ok(store)
}

/// Scheduler rounds a CPU-bound guest gives up at each epoch tick. A short request needs a few
/// rounds (read, run its guest, write), so it finishes within one tick of a spinning neighbour
/// instead of waiting one tick per round. tokio's yield_now defers each wake-up until the runtime
/// has polled for I/O, so new connections get in too. Alone, the spinner loses only microseconds.
const ROUNDS_PER_TICK: usize = 4;

async fn yield_to_other_requests() {
    for _ in 0..ROUNDS_PER_TICK {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_resource_table_is_capped() {
        let mut table = resource_table();
        assert_eq!(table.max_capacity(), MAX_GUEST_RESOURCES);
        for _ in 0..MAX_GUEST_RESOURCES {
            table.push(0u8).unwrap();
        }
        assert!(table.push(0u8).is_err(), "one resource over the cap is refused");
    }
}
