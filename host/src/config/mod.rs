//! Settings: the command-line definitions (`cli`), the layers they are resolved from (`layers`:
//! defaults, config file, `RUSTCORN_CMD_ARGS`, command line) and the validated result (`settings`).
pub mod cli;
pub mod layers;
pub mod settings;
