//! `rustcorn compile APP -o OUT [--target TRIPLE]`: compile a component ahead of time into a
//! `.cwasm` file, for this machine or (with `--target`) for another architecture.
use crate::app::engine;
use crate::app::prepare::{ensure_component, read_app, validate_proxy};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use wasmtime::component::Component;

/// `rustcorn compile APP -o OUT [--target TRIPLE]`.
pub fn run(args: &crate::config::cli::CompileArgs) -> i32 {
    let result = (|| -> Result<()> {
        let bytes = read_app(&args.app)?;
        ensure_component(&args.app, &bytes)?;
        let world = crate::app::world::World::of_component(&bytes);
        let engine = match &args.target {
            Some(target) => engine::cross_engine(target, world)?,
            None => engine::engine(None, true, world)?,
        };
        let compiled = engine
            .precompile_component(&bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot compile {}", args.app.display()))?;
        // Validate the component's imports and exports. Code for another architecture cannot be
        // loaded here, so that case validates a compile for this machine instead (twice the work).
        let foreign = args.target.as_deref().is_some_and(|t| t.split('-').next() != Some(std::env::consts::ARCH));
        if foreign {
            let host = engine::engine(None, true, world)?;
            let component = Component::new(&host, &bytes)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("cannot compile {}", args.app.display()))?;
            validate_proxy(&host, &component, &args.app, world)?;
        } else {
            // SAFETY: produced by this engine just now.
            let component = unsafe { Component::deserialize(&engine, &compiled) }?;
            validate_proxy(&engine, &component, &args.app, world)?;
        }
        // 0644: `serve` and `check` refuse a .cwasm that anyone but its owner can write.
        std::fs::write(&args.output, &compiled)
            .and_then(|()| std::fs::set_permissions(&args.output, std::fs::Permissions::from_mode(0o644)))
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        let target = args.target.as_deref().unwrap_or("this machine");
        println!(
            "compiled {} -> {} for {target} ({} bytes)",
            args.app.display(),
            args.output.display(),
            compiled.len()
        );
        Ok(())
    })();
    super::report(result)
}
