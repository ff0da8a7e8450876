//! Settings as plain data: the command-line definitions (`cli`), the layers they are resolved
//! from (`layers`: defaults, config file, `RUSTCORN_CMD_ARGS`, command line), the range of each
//! number (`bounds`) and the validated result (`settings`, with its `tls`, `outbound`, `queue` and
//! `state` groups). Imports no runtime module: each process builds its runtime objects from these.
pub mod access_format;
pub mod binds;
pub mod bounds;
pub mod cli;
pub mod layers;
pub mod logging;
pub mod outbound;
pub mod queue;
pub mod settings;
pub mod state;
pub mod tls;
