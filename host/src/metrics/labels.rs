//! Label values: the OpenTelemetry method set (anything else is `_OTHER`), status codes, guest
//! outcomes and outbound results, and the packing of (method, status) and of (bucket, key-value
//! operation) into slot keys.

/// OpenTelemetry's known HTTP methods; index + 1 is the method's code in a request key.
pub const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
/// The label of every other method (never the raw method: clients choose it freely).
pub const OTHER_METHOD: &str = "_OTHER";

/// How a guest run ended, as `rustcorn_guest_outcomes_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    Trap,
    Timeout,
    MemoryLimit,
    NoInstanceSlot,
    NoResponse,
}

pub const OUTCOMES: [&str; 6] = ["ok", "trap", "timeout", "memory_limit", "no_instance_slot", "no_response"];

/// `rustcorn_outbound_requests_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundResult {
    Ok = 0,
    Denied,
    Error,
}

pub const OUTBOUND_RESULTS: [&str; 3] = ["ok", "denied", "error"];

/// A key-value cell key: the bucket's label (see `Arena::bucket_labels`) and the operation's
/// index in `OP_NAMES`; never 0.
pub fn keyvalue_key(bucket_label: u16, op: usize) -> u32 {
    (u32::from(bucket_label) << 8) | (op as u32 + 1)
}

/// The (bucket label, operation index) a key-value cell key stands for.
pub fn split_keyvalue_key(key: u32) -> (u16, usize) {
    ((key >> 8) as u16, ((key & 0xFF) as usize).saturating_sub(1))
}

/// The method's code: 1..=9 for the known methods, 10 for `_OTHER`.
pub fn method_code(method: &http::Method) -> u8 {
    METHODS.iter().position(|m| *m == method.as_str()).map_or(METHODS.len() as u8 + 1, |i| i as u8 + 1)
}

/// The label of a method code.
pub fn method_label(code: u8) -> &'static str {
    METHODS.get(usize::from(code).wrapping_sub(1)).copied().unwrap_or(OTHER_METHOD)
}

/// A request cell key: never 0 (0 marks a free cell).
pub fn request_key(method: u8, status: u16) -> u32 {
    (u32::from(method) << 16) | u32::from(status)
}

/// The (method label, status) a key stands for.
pub fn split_key(key: u32) -> (&'static str, u16) {
    (method_label((key >> 16) as u8), (key & 0xFFFF) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_keep_their_name_and_others_become_other() {
        assert_eq!(method_label(method_code(&http::Method::GET)), "GET");
        assert_eq!(method_label(method_code(&http::Method::PATCH)), "PATCH");
        let custom = http::Method::from_bytes(b"PROPFIND").unwrap();
        assert_eq!(method_label(method_code(&custom)), "_OTHER");
        // Case matters in HTTP methods: "get" is not GET.
        let lower = http::Method::from_bytes(b"get").unwrap();
        assert_eq!(method_label(method_code(&lower)), "_OTHER");
    }

    #[test]
    fn keys_round_trip_and_are_never_zero() {
        for method in [&http::Method::GET, &http::Method::DELETE, &http::Method::from_bytes(b"X").unwrap()] {
            for status in [100u16, 200, 404, 503, 599, 999] {
                let key = request_key(method_code(method), status);
                assert_ne!(key, 0);
                assert_eq!(split_key(key), (method_label(method_code(method)), status));
            }
        }
    }
}
