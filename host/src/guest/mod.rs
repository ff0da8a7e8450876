//! The request path inside a worker: one guest instance per request (`handle`), its store data
//! (`store`), the response body streamed from it (`body`), the request clock (`clock`), the
//! guest's stdout/stderr (`output`) and its outbound HTTP (`outbound`).
pub mod body;
pub mod clock;
pub mod handle;
pub mod outbound;
pub mod output;
pub mod store;
