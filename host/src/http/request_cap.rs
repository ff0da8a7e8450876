//! `--keep-alive-max-requests`: a cap on the requests (HTTP/2 streams) one connection carries, so
//! keep-alive clients reconnect now and then and spread over the workers (after a respawn, a
//! reload or TTIN a new worker otherwise gets only new connections).
use http::{header, HeaderValue, Response, Version};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counts a connection's requests against the cap.
pub struct RequestCap {
    /// The cap; 0 = unlimited.
    max: u64,
    served: AtomicU64,
}

impl RequestCap {
    pub fn new(max: u64) -> Self {
        RequestCap { max, served: AtomicU64::new(0) }
    }

    /// Counts one request and says whether it is the one that reaches the cap (the connection's
    /// last on HTTP/1; on HTTP/2 the one after which GOAWAY goes out). Never `Last` with no cap.
    pub fn count_request(&self) -> Turn {
        if self.max != 0 && self.served.fetch_add(1, Ordering::Relaxed) + 1 == self.max {
            Turn::Last
        } else {
            Turn::More
        }
    }
}

/// Where a request stands against its connection's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// More requests may follow on the connection.
    More,
    /// The request that reaches the cap.
    Last,
}

/// Makes `response` the connection's last on HTTP/1: `Connection: close`, which hyper honours by
/// closing after writing the response. For an HTTP/1.0 client the response is marked 1.0 too, so
/// hyper does not add `keep-alive` next to the `close`.
pub fn mark_last<B>(response: &mut Response<B>, request_version: Version) {
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    if request_version == Version::HTTP_10 {
        *response.version_mut() = Version::HTTP_10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_request_reaching_the_cap_is_the_last() {
        let cap = RequestCap::new(3);
        let turns = [cap.count_request(), cap.count_request(), cap.count_request(), cap.count_request()];
        assert_eq!(turns, [Turn::More, Turn::More, Turn::Last, Turn::More]);
        let unlimited = RequestCap::new(0);
        assert!((0..10_000).all(|_| unlimited.count_request() == Turn::More));
    }

    #[test]
    fn the_last_response_says_close() {
        let mut response = Response::new(());
        mark_last(&mut response, Version::HTTP_10);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(response.version(), Version::HTTP_10);
    }
}
