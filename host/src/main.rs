//! The `rustcorn` command line: `serve`, `compile` and `check`.
use clap::Parser;
use rustcorn::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => rustcorn::arbiter::serve_command(*args),
        Command::Compile(args) => rustcorn::app::compile_command(&args),
        Command::Check(args) => rustcorn::app::check_command(&args),
    };
    std::process::exit(code);
}
