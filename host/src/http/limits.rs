//! How many bytes a request head may take, from the `--limit-request-*` settings, in one formula for
//! both HTTP versions: the request line (HTTP/2's pseudo-headers) plus every field at its size limit,
//! each with its framing overhead, never more than [`MAX_HEAD_BYTES`].
use crate::config::settings::RequestLimits;

/// Most bytes a request head may take (request line and all fields; `config::bounds`). An HTTP/1
/// connection's read buffer and an HTTP/2 stream's decoded header list grow to this at most, so
/// 1,000 connections dribbling heads hold at most 64 MiB, and an HTTP/2 connection's 100 streams
/// at most 6.4 MiB.
pub const MAX_HEAD_BYTES: usize = crate::config::bounds::MAX_HEAD_BYTES as usize;

/// hyper's smallest HTTP/1 read buffer.
const MIN_H1_BUFFER: usize = 8192;

/// The smallest header list an HTTP/2 client must be allowed (RFC 9113 recommends at least 16 KiB
/// of SETTINGS_MAX_HEADER_LIST_SIZE for interoperability).
const MIN_H2_HEADER_LIST: usize = 16 * 1024;

/// Bytes each field costs beyond its size limit: CRLF on HTTP/1 (the limit counts name, `: ` and
/// value), RFC 9113's 32 per entry on HTTP/2.
const H1_FIELD_OVERHEAD: usize = 2;
const H2_FIELD_OVERHEAD: usize = 32;

/// The head bound with `overhead` bytes per field, clamped to `[min, MAX_HEAD_BYTES]`.
fn head_bytes(limits: &RequestLimits, overhead: usize, min: usize) -> usize {
    let unlimited_or = |limit: usize| if limit == 0 { MAX_HEAD_BYTES } else { limit.saturating_add(overhead) };
    let line = unlimited_or(limits.line);
    let field = unlimited_or(limits.field_size);
    line.saturating_add(field.saturating_mul(limits.fields)).clamp(min, MAX_HEAD_BYTES)
}

/// hyper's HTTP/1 read buffer: enough for the longest allowed head.
pub fn h1_read_buffer(limits: &RequestLimits) -> usize {
    head_bytes(limits, H1_FIELD_OVERHEAD, MIN_H1_BUFFER)
}

/// The largest decoded header list an HTTP/2 stream may send (SETTINGS_MAX_HEADER_LIST_SIZE).
pub fn h2_header_list(limits: &RequestLimits) -> u32 {
    // MAX_HEAD_BYTES fits in u32 by construction.
    head_bytes(limits, H2_FIELD_OVERHEAD, MIN_H2_HEADER_LIST) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_share_the_bound() {
        let gunicorn = RequestLimits { line: 4094, fields: 100, field_size: 8190 };
        assert_eq!(h1_read_buffer(&gunicorn), MAX_HEAD_BYTES);
        assert_eq!(h2_header_list(&gunicorn) as usize, MAX_HEAD_BYTES);
        let small = RequestLimits { line: 100, fields: 2, field_size: 100 };
        assert_eq!(h1_read_buffer(&small), MIN_H1_BUFFER);
        assert_eq!(h2_header_list(&small) as usize, MIN_H2_HEADER_LIST);
        let mid = RequestLimits { line: 1000, fields: 10, field_size: 2000 };
        assert_eq!(h1_read_buffer(&mid), 1002 + 10 * 2002);
        assert_eq!(h2_header_list(&mid) as usize, 1032 + 10 * 2032);
    }

    #[test]
    fn unlimited_and_huge_limits_do_not_overflow() {
        let unlimited = RequestLimits { line: 0, fields: usize::MAX, field_size: 0 };
        assert_eq!(h1_read_buffer(&unlimited), MAX_HEAD_BYTES);
        let huge = RequestLimits { line: usize::MAX, fields: usize::MAX, field_size: usize::MAX };
        assert_eq!(h2_header_list(&huge) as usize, MAX_HEAD_BYTES);
    }
}
