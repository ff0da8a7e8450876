//! Queue-time settings as plain data: `--forwarded-allow-ips` (who may stamp `X-Request-Start`)
//! and `--max-queue-time`. Measuring and shedding is `metrics::queue_time`'s work.
use super::cli::ServeArgs;
use super::settings::{bad, ConfigError};
use crate::net::cidr::Cidr;
use std::time::Duration;

/// Gunicorn's default `--forwarded-allow-ips`.
pub const DEFAULT_FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";

/// Longest `--max-queue-time`, exclusive: a day.
const MAX_QUEUE_TIME_SECS: f64 = 86_400.0;

/// `--forwarded-allow-ips`: `*`, or a comma list of addresses and CIDR networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    All,
    Networks(Vec<Cidr>),
}

impl TrustedProxies {
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            if item == "*" {
                return Ok(TrustedProxies::All);
            }
            networks.push(Cidr::parse(item).map_err(|why| format!("{item:?}: {why}"))?);
        }
        Ok(TrustedProxies::Networks(networks))
    }
}

/// The queue-time policy of a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    pub trusted: TrustedProxies,
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
        TrustedProxies::parse(&args.forwarded_allow_ips).map_err(|e| bad(format!("--forwarded-allow-ips: {e}")))?;
    Ok(QueueSettings { trusted, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_parse_addresses_networks_and_star() {
        let list = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert_eq!(
            list,
            TrustedProxies::Networks(vec![
                Cidr::parse("127.0.0.1").unwrap(),
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("::1").unwrap()
            ])
        );
        assert_eq!(TrustedProxies::parse("10.0.0.1, *"), Ok(TrustedProxies::All));
        assert_eq!(TrustedProxies::parse(""), Ok(TrustedProxies::Networks(vec![])));
        assert!(TrustedProxies::parse("10.0.0.0/33").unwrap_err().starts_with("\"10.0.0.0/33\": CIDR prefix"));
        assert!(TrustedProxies::parse("example.com").is_err());
    }
}
