//! The request path inside a worker: one guest instance per request (`handle`), its store data
//! (`store`), the response body streamed from it (`body`), the request clock (`clock`), the
//! guest's stdout/stderr (`output`) and its outbound HTTP (`outbound`); WASI 0.3 apps' requests
//! take `p3` instead of `handle`'s 0.2 path; `instances` keeps reused
//! and spare instances, `release` ends a request in a kept instance, `trim` gives back what idle
//! instance slots keep resident.
pub mod body;
pub mod clock;
pub mod handle;
pub mod instances;
pub mod outbound;
pub mod output;
pub mod p3;
pub mod release;
pub mod spare;
pub mod store;
pub mod trim;
pub mod upload;
