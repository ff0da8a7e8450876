//! `wasi:config/store@0.2.0-rc.1`: the values given with `--config-var KEY=VALUE` and
//! `--config-file KEY=PATH` (read by each worker at boot, so again when HUP replaces the workers).
use super::StateCtxView;
use crate::config::state::{StateSettings, MAX_CONFIG_FILE_BYTES};
use anyhow::Context;
use std::io::Read;

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit/deps/config.wit",
        world: "wasi:config/imports",
        imports: { default: trappable },
    });
}

use generated::wasi::config::store;

/// The config values one worker's guests see, in the order given.
#[derive(Default)]
pub struct ConfigValues {
    values: Vec<(String, String)>,
}

impl ConfigValues {
    /// The `--config-var` values and the current contents of the `--config-file` files (whole,
    /// as UTF-8, at most `MAX_CONFIG_FILE_BYTES` each).
    pub fn read(settings: &StateSettings) -> anyhow::Result<ConfigValues> {
        let mut values = settings.config_vars.clone();
        for (key, path) in &settings.config_files {
            let mut text = String::new();
            std::fs::File::open(path)
                .and_then(|file| file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_string(&mut text))
                .with_context(|| format!("--config-file {key}={}: cannot read it as UTF-8 text", path.display()))?;
            if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
                anyhow::bail!("--config-file {key}={}: larger than {MAX_CONFIG_FILE_BYTES} bytes", path.display());
            }
            values.push((key.clone(), text));
        }
        Ok(ConfigValues { values })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

impl store::Host for StateCtxView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, store::Error>> {
        Ok(Ok(self.state.config.get(&key).map(str::to_string)))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, store::Error>> {
        Ok(Ok(self.state.config.values.clone()))
    }
}

pub fn add_to_linker<T: 'static, D>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> D::Data<'_>,
) -> wasmtime::Result<()>
where
    D: wasmtime::component::HasData,
    for<'a> D::Data<'a>: store::Host,
{
    store::add_to_linker::<T, D>(linker, get)
}
