//! The app: compiling and validating the component (`prepare`) and the wasmtime engine
//! configuration every process that touches it shares (`engine`), and the wasi:http world it
//! serves (`world`).
pub mod compat;
pub mod engine;
pub mod handoff;
pub mod prepare;
pub mod trust;
pub mod world;
