//! The ceiling for the benchmark: a native hyper hello-world with no wasm, one current-thread
//! runtime per core sharing one listener (the same shape as a rustcorn worker).
fn main() {}
