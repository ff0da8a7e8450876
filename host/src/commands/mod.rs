//! The `rustcorn` subcommands: `serve` (the arbiter), `compile` and `check`.
pub mod check;
pub mod compile;
pub mod serve;

/// Prints an error as one line and turns the result into the process exit status.
fn report(result: anyhow::Result<()>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rustcorn: error: {e:#}");
            1
        }
    }
}
