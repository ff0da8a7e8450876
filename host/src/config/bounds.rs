//! The allowed range of every numeric setting, in one table, checked before anything else is
//! resolved: a value outside its range stops the start (or a reload) with one line naming the
//! setting, so nothing downstream has to guard its arithmetic against absurd values.
use super::cli::ServeArgs;
use super::settings::{bad, ConfigError};

/// A whole-number setting's range.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub flag: &'static str,
    pub min: u64,
    pub max: u64,
    /// Appended to the bounds in the message: " seconds", " bytes" or "".
    pub unit: &'static str,
    /// What 0 means, when the minimum is 0 and 0 is special ("unlimited", "off"...).
    pub zero_means: Option<&'static str>,
}

impl Range {
    const fn new(flag: &'static str, min: u64, max: u64) -> Range {
        Range { flag, min, max, unit: "", zero_means: None }
    }

    const fn seconds(self) -> Range {
        Range { unit: " seconds", ..self }
    }

    const fn zero_means(self, meaning: &'static str) -> Range {
        Range { zero_means: Some(meaning), ..self }
    }

    /// The value if it is within the range, else the one-line error.
    pub fn check<T: TryInto<i128> + Copy + std::fmt::Display>(&self, value: T) -> Result<T, ConfigError> {
        let wide: Option<i128> = value.try_into().ok();
        if wide.is_some_and(|v| v >= i128::from(self.min) && v <= i128::from(self.max)) {
            return Ok(value);
        }
        let zero = match self.zero_means {
            Some(meaning) => format!(" ({meaning})"),
            None => String::new(),
        };
        Err(bad(format!(
            "{} must be between {}{zero} and {}{} (got {value})",
            self.flag, self.min, self.max, self.unit
        )))
    }
}

/// Upper bound for the seconds-valued settings: far beyond any real use, and small enough that
/// `Instant + Duration` and millisecond conversions can never overflow.
pub const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// Upper bound for `--max-requests` and its jitter: their sum (and jitter's `max + 1`) cannot overflow.
pub const MAX_REQUEST_COUNT: u64 = 1 << 40;
/// The largest request head a worker reads (request line and every header field together): a
/// single header field can never be larger.
pub const MAX_HEAD_BYTES: u64 = 64 * 1024;

pub const WORKERS: Range = Range::new("--workers", 1, 1024);
pub const THREADS: Range = Range::new("--threads", 1, 1024);
/// A worker holds a descriptor per connection: Linux's default `fs.nr_open` caps it anyway.
pub const WORKER_CONNECTIONS: Range = Range::new("--worker-connections", 1, 1 << 20);
/// Linux caps the listen queue at `net.core.somaxconn` (at most 65535 on most kernels).
pub const BACKLOG: Range = Range::new("--backlog", 1, 65535);
pub const LIMIT_REQUEST_LINE: Range = Range::new("--limit-request-line", 0, 8190).zero_means("unlimited");
pub const LIMIT_REQUEST_FIELDS: Range = Range::new("--limit-request-fields", 1, 32768);
pub const LIMIT_REQUEST_FIELD_SIZE: Range =
    Range::new("--limit-request-field_size", 0, MAX_HEAD_BYTES).zero_means("unlimited");
/// Each slot reserves address space for two linear memories (4 GiB and guard pages each) in
/// every worker: 10,000 slots take ~80 TiB of the 128 TiB a process may map (measured: a worker
/// with 10,000 slots and `--max-memory 4G` boots and serves).
pub const INSTANCE_SLOTS: Range = Range::new("--instance-slots", 1, 10_000);
pub const INSTANCE_REUSE: Range = Range::new("--instance-reuse", 1, 1_000_000);
pub const INSTANCE_CONCURRENCY: Range = Range::new("--instance-concurrency", 1, 10_000);
pub const INSTANCE_TRIM_AFTER: Range = Range::new("--instance-trim-after", 0, 86_400).seconds().zero_means("never");
pub const TIMEOUT: Range = Range::new("--timeout", 0, MAX_SECONDS).seconds();
pub const MAX_REQUEST_TIME: Range = Range::new("--max-request-time", 0, MAX_SECONDS).seconds();
pub const GRACEFUL_TIMEOUT: Range = Range::new("--graceful-timeout", 0, MAX_SECONDS).seconds();
pub const KEEP_ALIVE: Range = Range::new("--keep-alive", 0, MAX_SECONDS).seconds();
pub const HEADER_TIMEOUT: Range = Range::new("--header-timeout", 0, 3600).seconds();
pub const HANDSHAKE_TIMEOUT: Range = Range::new("--handshake-timeout", 1, 3600).seconds();
pub const MAX_REQUESTS: Range = Range::new("--max-requests", 0, MAX_REQUEST_COUNT);
pub const MAX_REQUESTS_JITTER: Range = Range::new("--max-requests-jitter", 0, MAX_REQUEST_COUNT);
pub const KEEP_ALIVE_MAX_REQUESTS: Range = Range::new("--keep-alive-max-requests", 0, MAX_REQUEST_COUNT);
pub const BODY_TIMEOUT: Range = Range::new("--body-timeout", 0, 3600).seconds().zero_means("no bound");
pub const BODY_MIN_RATE: Range = Range::new("--body-min-rate", 1, 1 << 30);
pub const KEYVALUE_MAX_KEY_SIZE: Range = Range::new("--keyvalue-max-key-size", 1, 64 * 1024);
pub const KEYVALUE_MAX_VALUE_SIZE: Range = Range::new("--keyvalue-max-value-size", 1, 64 << 20);
/// Read-ahead bodies are held in memory, up to `worker-connections` of them per worker.
pub const MAX_BODY_BUFFER: u64 = 64 << 20;

/// Checks every whole-number flag of `serve` against its range (`--workers` is checked once
/// `$WEB_CONCURRENCY` is taken into account; byte sizes once parsed).
pub fn check_ranges(args: &ServeArgs) -> Result<(), ConfigError> {
    THREADS.check(args.threads)?;
    WORKER_CONNECTIONS.check(args.worker_connections)?;
    BACKLOG.check(args.backlog)?;
    LIMIT_REQUEST_LINE.check(args.limit_request_line)?;
    LIMIT_REQUEST_FIELDS.check(args.limit_request_fields)?;
    LIMIT_REQUEST_FIELD_SIZE.check(args.limit_request_field_size)?;
    INSTANCE_SLOTS.check(args.instance_slots)?;
    INSTANCE_REUSE.check(args.instance_reuse)?;
    INSTANCE_CONCURRENCY.check(args.instance_concurrency)?;
    for (range, value) in [
        (TIMEOUT, args.timeout),
        (MAX_REQUEST_TIME, args.max_request_time),
        (GRACEFUL_TIMEOUT, args.graceful_timeout),
        (KEEP_ALIVE, args.keep_alive),
        (HEADER_TIMEOUT, args.header_timeout),
        (HANDSHAKE_TIMEOUT, args.tls.handshake_timeout),
        (MAX_REQUESTS, args.max_requests),
        (MAX_REQUESTS_JITTER, args.max_requests_jitter),
        (KEEP_ALIVE_MAX_REQUESTS, args.keep_alive_max_requests),
        (BODY_TIMEOUT, args.body_timeout),
        (BODY_MIN_RATE, args.body_min_rate),
        (INSTANCE_TRIM_AFTER, args.instance_trim_after),
        (KEYVALUE_MAX_KEY_SIZE, args.keyvalue_max_key_size),
        (KEYVALUE_MAX_VALUE_SIZE, args.keyvalue_max_value_size),
    ] {
        range.check(value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[Range] = &[
        WORKERS,
        THREADS,
        WORKER_CONNECTIONS,
        BACKLOG,
        LIMIT_REQUEST_LINE,
        LIMIT_REQUEST_FIELDS,
        LIMIT_REQUEST_FIELD_SIZE,
        INSTANCE_SLOTS,
        INSTANCE_REUSE,
        INSTANCE_TRIM_AFTER,
        TIMEOUT,
        MAX_REQUEST_TIME,
        GRACEFUL_TIMEOUT,
        KEEP_ALIVE,
        HEADER_TIMEOUT,
        HANDSHAKE_TIMEOUT,
        MAX_REQUESTS,
        MAX_REQUESTS_JITTER,
        KEEP_ALIVE_MAX_REQUESTS,
        BODY_TIMEOUT,
        BODY_MIN_RATE,
        KEYVALUE_MAX_KEY_SIZE,
        KEYVALUE_MAX_VALUE_SIZE,
    ];

    #[test]
    fn each_range_takes_its_ends_and_refuses_what_lies_beyond() {
        for range in ALL {
            assert_eq!(range.check(range.min).ok(), Some(range.min), "{}", range.flag);
            assert_eq!(range.check(range.max).ok(), Some(range.max), "{}", range.flag);
            let over = range.check(range.max + 1).unwrap_err().0;
            assert!(over.starts_with(&format!("{} must be between {}", range.flag, range.min)), "{over}");
            assert!(over.ends_with(&format!("(got {})", range.max + 1)) && !over.contains('\n'), "{over}");
            assert!(range.check(u64::MAX).is_err() && range.check(usize::MAX).is_err(), "{}", range.flag);
            if range.min > 0 {
                assert!(range.check(range.min - 1).is_err(), "{}", range.flag);
            }
        }
    }

    #[test]
    fn messages_name_the_unit_and_what_zero_means() {
        assert_eq!(
            LIMIT_REQUEST_FIELD_SIZE.check(70_000usize).unwrap_err().0,
            "--limit-request-field_size must be between 0 (unlimited) and 65536 (got 70000)"
        );
        assert_eq!(
            HANDSHAKE_TIMEOUT.check(0u64).unwrap_err().0,
            "--handshake-timeout must be between 1 and 3600 seconds (got 0)"
        );
        assert_eq!(BACKLOG.check(-5i32).unwrap_err().0, "--backlog must be between 1 and 65535 (got -5)");
    }

    #[test]
    fn products_of_the_bounds_cannot_overflow() {
        // The head-size formula: line + fields x field size, in usize.
        let head = (LIMIT_REQUEST_LINE.max + 2)
            .checked_add((LIMIT_REQUEST_FIELD_SIZE.max + 32).checked_mul(LIMIT_REQUEST_FIELDS.max).unwrap());
        assert!(head.is_some_and(|h| usize::try_from(h).is_ok() && u32::try_from(h).is_ok()));
        // The metrics arena: four slots per worker.
        assert!(WORKERS.max.checked_mul(4).is_some_and(|n| n < u64::from(u32::MAX)));
        // --max-requests plus its jitter plus one.
        assert!(MAX_REQUESTS.max.checked_add(MAX_REQUESTS_JITTER.max + 1).is_some());
        // Seconds as milliseconds and nanoseconds.
        assert!(MAX_SECONDS.checked_mul(1_000_000_000).is_some());
    }
}
