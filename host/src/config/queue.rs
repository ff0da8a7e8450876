//! Queue-time settings as plain data: `--forwarded-allow-ips` (who may stamp `X-Request-Start`)
//! and `--max-queue-time`. Measuring and shedding is `metrics::queue_time`'s work.
use super::cli::ServeArgs;
use super::settings::{bad, ConfigError};
use crate::net::cidr::AddressSet;
use std::time::Duration;

/// Gunicorn's default `--forwarded-allow-ips`.
pub const DEFAULT_FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";

/// Longest `--max-queue-time`, exclusive: a day.
const MAX_QUEUE_TIME_SECS: f64 = 86_400.0;

/// The queue-time policy of a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// `--forwarded-allow-ips`: the proxies trusted to stamp `X-Request-Start`.
    pub trusted: AddressSet,
    /// `--max-queue-time`; None = no shedding.
    pub max: Option<Duration>,
}

/// `--max-queue-time` and `--forwarded-allow-ips`.
pub fn queue_settings(args: &ServeArgs) -> Result<QueueSettings, ConfigError> {
    let max = match args.max_queue_time {
        None => None,
        Some(secs) if secs.is_finite() && secs > 0.0 && secs < MAX_QUEUE_TIME_SECS => {
            Some(Duration::from_secs_f64(secs))
        }
        Some(secs) => {
            return Err(bad(format!(
                "--max-queue-time must be a number of seconds above 0 and below {MAX_QUEUE_TIME_SECS} (got {secs}); omit it to turn shedding off"
            )))
        }
    };
    let trusted =
        AddressSet::parse(&args.forwarded_allow_ips).map_err(|e| bad(format!("--forwarded-allow-ips: {e}")))?;
    Ok(QueueSettings { trusted, max })
}
