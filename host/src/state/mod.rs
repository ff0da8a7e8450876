//! App state the host offers guests, deny by default: key-value buckets (`keyvalue`,
//! `wasi:keyvalue`) and config values (`config_store`, `wasi:config/store`). Each worker builds
//! its `AppState` after the fork; a store reaches it through `StateView`.
pub mod config_store;
pub mod keyvalue;

use std::time::Instant;
use wasmtime::component::{HasData, Linker, ResourceTable};

/// What one worker's guests may reach: the granted buckets and config values.
pub struct AppState {
    pub keyvalue: keyvalue::Keyvalue,
    pub config: config_store::ConfigValues,
}

impl AppState {
    /// No bucket, no config value (what a guest gets when nothing is granted).
    pub fn none() -> AppState {
        AppState { keyvalue: keyvalue::Keyvalue::none(), config: config_store::ConfigValues::default() }
    }
}

/// A store's view of the app state during one host call.
pub struct StateCtxView<'a> {
    pub state: &'a AppState,
    pub table: &'a mut ResourceTable,
    /// When the current request runs out of time: no backend operation outlives it.
    pub deadline: Option<Instant>,
}

/// Store data that offers the app state to its guest.
pub trait StateView: Send {
    fn state(&mut self) -> StateCtxView<'_>;
}

/// The `HasData` marker the generated `add_to_linker` functions take.
struct HasState;

impl HasData for HasState {
    type Data<'a> = StateCtxView<'a>;
}

fn view<T: StateView>(data: &mut T) -> StateCtxView<'_> {
    data.state()
}

/// Links `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft` and `wasi:config/store@0.2.0-rc.1`.
pub fn add_to_linker<T: StateView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    keyvalue::host::add_to_linker::<T, HasState>(linker, view::<T>)?;
    config_store::add_to_linker::<T, HasState>(linker, view::<T>)?;
    Ok(())
}
