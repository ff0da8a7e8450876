//! The app: compiling and validating the component (`prepare`) and the wasmtime engine
//! configuration every process that touches it shares (`engine`).
pub mod compat;
pub mod engine;
pub mod handoff;
pub mod prepare;
pub mod trust;
