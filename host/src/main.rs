//! The `rustcorn` command line: `serve` (settings layered from the config file, the environment
//! and the command line), `compile` and `check`.
use clap::Parser;
use rustcorn::config::cli::{Cli, Command};
use rustcorn::config::layers::{self, LayerError};
use std::ffi::OsString;

fn main() {
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
