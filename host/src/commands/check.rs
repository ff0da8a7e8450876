//! `rustcorn check APP`: validate an app and list what it imports and exports.
use crate::app::engine;
use crate::app::prepare::{ensure_component, load_precompiled_any, read_app, validate_proxy, ELF_MAGIC};
use crate::app::world::World;
use anyhow::{Context, Result};
use wasmtime::component::Component;

/// `rustcorn check APP`: validate and list imports and exports.
pub fn run(args: &crate::config::cli::CheckArgs) -> i32 {
    let result = (|| -> Result<()> {
        let bytes = read_app(&args.app)?;
        let (engine, component, world) = if bytes.starts_with(ELF_MAGIC) {
            load_precompiled_any(&args.app, &bytes)?
        } else {
            ensure_component(&args.app, &bytes)?;
            let world = World::of_component(&bytes);
            let engine = engine::engine(None, true, world)?;
            let component = Component::new(&engine, &bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot compile {}", args.app.display()))?;
            (engine, component, world)
        };
        let ty = component.component_type();
        println!("{}", args.app.display());
        println!("imports:");
        for (name, _) in ty.imports(&engine) {
            println!("  {name}");
        }
        println!("exports:");
        for (name, _) in ty.exports(&engine) {
            println!("  {name}");
        }
        let world = validate_proxy(&engine, &component, &args.app, world)?;
        println!("world: {world}");
        println!("ok: servable wasi:http component");
        Ok(())
    })();
    super::report(result)
}
