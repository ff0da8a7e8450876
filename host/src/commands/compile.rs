//! `rustcorn compile APP -o OUT`: compile a component ahead of time into a `.cwasm` file.
use crate::app::engine;
use crate::app::prepare::{ensure_component, read_app, validate_proxy};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use wasmtime::component::Component;

/// `rustcorn compile APP -o OUT`.
pub fn run(args: &crate::config::cli::CompileArgs) -> i32 {
    let result = (|| -> Result<()> {
        let bytes = read_app(&args.app)?;
        ensure_component(&args.app, &bytes)?;
        let engine = engine::engine(None, true)?;
        let compiled = engine
            .precompile_component(&bytes)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot compile {}", args.app.display()))?;
        // SAFETY: produced by this engine just now.
        let component = unsafe { Component::deserialize(&engine, &compiled) }?;
        validate_proxy(&engine, &component, &args.app)?;
        // 0644: `serve` and `check` refuse a .cwasm that anyone but its owner can write.
        std::fs::write(&args.output, &compiled)
            .and_then(|()| std::fs::set_permissions(&args.output, std::fs::Permissions::from_mode(0o644)))
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        println!("compiled {} -> {} ({} bytes)", args.app.display(), args.output.display(), compiled.len());
        Ok(())
    })();
    super::report(result)
}
