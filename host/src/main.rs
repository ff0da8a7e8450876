//! The `rustcorn` command line: `serve` (settings layered from the config file, the environment
//! and the command line), `compile` and `check`.
use clap::Parser;
use rustcorn::config::cli::{Cli, Command};
use rustcorn::config::layers::{self, LayerError};
use std::ffi::OsString;

fn main() {
    keep_library_backtraces_off();
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|command| command == "serve") {
        // Recorded before anything can change it: HUP and USR2 resolve the settings from here.
        let launch_dir = match std::env::current_dir() {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("rustcorn: error: cannot read the current directory: {e}");
                std::process::exit(1);
            }
        };
        let code = match layers::resolve(&argv[2..]) {
            Ok(resolved) => rustcorn::commands::serve::run(resolved, launch_dir),
            // --help, --version and usage errors on the command line itself: clap's own output.
            Err(LayerError::Clap(e)) => e.exit(),
            Err(e) => {
                eprintln!("rustcorn: error: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(_) => unreachable!("serve is resolved through the config layers above"),
        Command::Compile(args) => rustcorn::commands::compile::run(&args),
        Command::Check(args) => rustcorn::commands::check::run(&args),
    };
    std::process::exit(code);
}

/// `RUST_BACKTRACE=1` asks for panic backtraces, and by default also makes every error the
/// libraries create walk the stack: wasmtime makes (and drops) one each time a WASI 0.3 store goes
/// with a guest task still parked, i.e. on most 0.3 requests. `RUST_LIB_BACKTRACE=0` keeps panic
/// backtraces and turns only those off, unless the user set it.
fn keep_library_backtraces_off() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Set first thing in main, while this process has only one thread.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}
