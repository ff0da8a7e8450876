//! The wasmtime configuration shared by the compiler child and the workers (compiled code must
//! match it), and the linker: the WASI CLI world plus `wasi:http`, 0.2 and 0.3, with no grants by
//! default.
use crate::app::world::World;
use anyhow::Result;
use wasmtime::component::Linker;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How many guest instances a worker's pooling allocator holds, and how big each may grow.
#[derive(Debug, Clone, Copy)]
pub struct PoolSizing {
    pub instance_slots: u32,
    pub max_memory: usize,
    /// Bytes of each linear memory that stay resident when its slot is freed
    /// (`--instance-keep-resident`): with PAGEMAP_SCAN (Linux 6.7+; patched to scan past 32
    /// regions) only the pages the last instance dirtied are reset in place, so the next instance
    /// in the slot takes no page faults there; pages past this bound are decommitted (madvise).
    /// Without PAGEMAP_SCAN the whole kept range is reset by memset. The cost: a slot keeps up to
    /// this many dirtied bytes resident after its instance is gone, until the worker trims its
    /// unused slots (`guest::trim`).
    pub keep_resident: usize,
}

/// Most core instances one component may have (componentize-py/js apps link many modules).
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
const MAX_MEMORIES_PER_COMPONENT: u32 = 8;
const MAX_TABLES_PER_COMPONENT: u32 = 32;
const TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// Builds the engine configuration. Everything that shapes compiled code is fixed here so a
/// `.cwasm` compiled by one process loads in every other; `pool` only sizes runtime pools.
/// The app's `world` shapes it too: only a WASI 0.3 app gets the component model's async support
/// (async exports, streams, futures); a 0.2 app's stores carry none of its per-store state.
pub fn config(pool: Option<PoolSizing>, parallel_compilation: bool, world: World) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    match world {
        World::Service03 => {
            config.wasm_component_model_async(true);
        }
        World::Proxy02 => {
            config.concurrency_support(false);
        }
    }
    config.parallel_compilation(parallel_compilation);
    if let Some(pool) = pool {
        let slots = pool.instance_slots;
        let mut pooling = PoolingAllocationConfig::new();
        pooling
            .total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(MAX_CORE_INSTANCES_PER_COMPONENT / 2))
            .max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .total_memories(slots.saturating_mul(2))
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .total_tables(slots.saturating_mul(MAX_TABLES_PER_COMPONENT / 2))
            .table_elements(100_000)
            .max_core_instance_size(4 << 20)
            .total_stacks(slots)
            .max_memory_size(pool.max_memory)
            .linear_memory_keep_resident(pool.keep_resident.min(pool.max_memory))
            .table_keep_resident(TABLE_KEEP_RESIDENT)
            .pagemap_scan(Enabled::Auto);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

/// An engine for compiling or loading apps.
pub fn engine(pool: Option<PoolSizing>, parallel_compilation: bool, world: World) -> Result<Engine> {
    Ok(Engine::new(&config(pool, parallel_compilation, world))?)
}

/// The targets `rustcorn compile --target` is built to compile for (Cranelift backends compiled in).
pub const CROSS_TARGETS: &[&str] = &["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

/// An engine that compiles for another machine (`rustcorn compile --target TRIPLE`). Same
/// configuration as `engine`, so the artifact loads in that machine's workers; Cranelift then
/// assumes only the architecture's baseline CPU features instead of this machine's.
pub fn cross_engine(target: &str, world: World) -> Result<Engine> {
    let mut config = config(None, true, world);
    config.target(target).map_err(|e| anyhow::anyhow!("--target {target}: not a target triple ({e})"))?;
    Engine::new(&config).map_err(|e| {
        anyhow::anyhow!("--target {target}: cannot compile for it ({e:#}); supported: {}", CROSS_TARGETS.join(", "))
    })
}

/// The host functions a guest may import: the WASI 0.2 CLI world (so ordinary Rust, Python and JS
/// guests link), `wasi:http`, and `wasi:keyvalue` and `wasi:config` (`state`), for any store data
/// that offers those contexts.
pub fn linker<T>(engine: &Engine, world: World) -> Result<Linker<T>>
where
    T: wasmtime_wasi::WasiView + wasmtime_wasi_http::WasiHttpView + crate::state::StateView + 'static,
{
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    // WASI 0.3 apps also get the 0.3 interfaces (`wasi:http/service@0.3.0` and the 0.3 CLI
    // world), from the same contexts and grants: a 0.3 guest reaches nothing a 0.2 guest could not.
    if world == World::Service03 {
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
    }
    crate::state::add_to_linker(&mut linker)?;
    Ok(linker)
}

/// Store data with the WASI and wasi-http contexts and nothing else: what checking a component's
/// imports against the linker needs (no store is ever made with it).
pub struct LinkCheck {
    wasi: wasmtime_wasi::WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    table: wasmtime::component::ResourceTable,
    state: crate::state::AppState,
}

impl crate::state::StateView for LinkCheck {
    fn state(&mut self) -> crate::state::StateCtxView<'_> {
        crate::state::StateCtxView { state: &self.state, table: &mut self.table, deadline: None }
    }
}

impl wasmtime_wasi::WasiView for LinkCheck {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wasmtime_wasi_http::WasiHttpView for LinkCheck {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: Default::default() }
    }
}
