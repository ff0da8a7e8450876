//! Network vocabulary with no I/O: IP networks (`cidr`), which addresses are public
//! (`address`) and the `host[:port]` syntax (`host`). Imports nothing from the crate, so any
//! module (settings, request admission, outbound HTTP, metrics) can use it.
pub mod address;
pub mod cidr;
pub mod host;
