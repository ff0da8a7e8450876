//! Queue time: how long a request waited between a trusted proxy stamping `X-Request-Start` and
//! a worker taking it; `--forwarded-allow-ips` decides whom to trust, `--max-queue-time` sheds
//! requests that waited too long (their clients have likely given up).
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Gunicorn's default `--forwarded-allow-ips`.
pub const DEFAULT_FORWARDED_ALLOW_IPS: &str = "127.0.0.1,::1";

/// `--forwarded-allow-ips`: `*`, or a comma list of addresses and CIDR networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustedProxies {
    All,
    Networks(Vec<(IpAddr, u8)>),
}

impl TrustedProxies {
    pub fn parse(text: &str) -> Result<TrustedProxies, String> {
        let mut networks = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            if item == "*" {
                return Ok(TrustedProxies::All);
            }
            let (address, prefix) = match item.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (item, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR network (e.g. 10.0.0.0/8)"))?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= max)
                    .ok_or_else(|| format!("{item:?}: the prefix length must be 0-{max}"))?,
            };
            networks.push((address, prefix));
        }
        Ok(TrustedProxies::Networks(networks))
    }

    /// Whether a peer may stamp `X-Request-Start`. `-` (a unix socket peer) is trusted, as in
    /// Gunicorn: only local processes can connect there.
    pub fn trusts(&self, remote: &str) -> bool {
        match self {
            TrustedProxies::All => true,
            TrustedProxies::Networks(_) if remote == "-" => true,
            TrustedProxies::Networks(networks) => match remote.parse::<IpAddr>() {
                Ok(peer) => networks.iter().any(|&(network, prefix)| in_network(peer, network, prefix)),
                Err(_) => false,
            },
        }
    }
}

fn in_network(peer: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let peer = match (peer, network) {
        // An IPv4 peer seen on a dual-stack socket as ::ffff:a.b.c.d.
        (IpAddr::V6(v6), IpAddr::V4(_)) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        _ => peer,
    };
    match (peer, network) {
        (IpAddr::V4(p), IpAddr::V4(n)) => {
            masked(u32::from(p).into(), 32, prefix) == masked(u32::from(n).into(), 32, prefix)
        }
        (IpAddr::V6(p), IpAddr::V6(n)) => masked(u128::from(p), 128, prefix) == masked(u128::from(n), 128, prefix),
        _ => false,
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 {
        return 0;
    }
    bits >> (width - prefix)
}

/// The instant `X-Request-Start` names: `t=<microseconds>` (Heroku, New Relic), `t=<seconds.fraction>`
/// (nginx `t=${msec}`), or integer milliseconds/nanoseconds/seconds told apart by magnitude; the
/// `t=` prefix is optional.
pub fn parse_request_start(value: &str) -> Option<SystemTime> {
    let text = value.trim();
    let text = text.strip_prefix("t=").unwrap_or(text).trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let since_epoch = if text.contains('.') {
        let seconds: f64 = text.parse().ok()?;
        Duration::try_from_secs_f64(seconds).ok()?
    } else {
        let n: u64 = text.parse().ok()?;
        match n {
            n if n >= 100_000_000_000_000_000 => Duration::from_nanos(n),
            n if n >= 100_000_000_000_000 => Duration::from_micros(n),
            n if n >= 100_000_000_000 => Duration::from_millis(n),
            n => Duration::from_secs(n),
        }
    };
    SystemTime::UNIX_EPOCH.checked_add(since_epoch)
}

/// The queue-time policy of a worker.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    pub trusted: TrustedProxies,
    pub max: Option<Duration>,
}

impl QueuePolicy {
    /// How long the request waited, if a trusted peer stamped it. A stamp from the future (clock
    /// skew between hosts) counts as no wait.
    pub fn queue_time(&self, headers: &http::HeaderMap, remote: &str, now: SystemTime) -> Option<Duration> {
        let value = headers.get("x-request-start")?;
        if !self.trusted.trusts(remote) {
            return None;
        }
        let started = parse_request_start(value.to_str().ok()?)?;
        Some(now.duration_since(started).unwrap_or(Duration::ZERO))
    }

    /// Whether a request that waited `waited` is to be answered 503 without running the guest.
    pub fn sheds(&self, waited: Option<Duration>) -> bool {
        matches!((self.max, waited), (Some(max), Some(waited)) if waited > max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn request_start_accepts_micros_millis_seconds_and_fractions() {
        assert_eq!(parse_request_start("t=1700000000123456"), Some(at(1_700_000_000, 123_456)));
        assert_eq!(parse_request_start("1700000000123"), Some(at(1_700_000_000, 123_000)));
        assert_eq!(parse_request_start("t=1700000000"), Some(at(1_700_000_000, 0)));
        assert_eq!(
            parse_request_start("t=1700000000123456789"),
            Some(at(1_700_000_000, 123_456) + Duration::from_nanos(789))
        );
        let fraction = parse_request_start("t=1700000000.250").unwrap();
        let off = fraction.duration_since(at(1_700_000_000, 250_000)).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_micros(1), "{off:?}");
    }

    #[test]
    fn request_start_rejects_garbage() {
        for bad in ["", "t=", "t=abc", "t=-5", "t=1e9", "t=1.2.3", "x=1700000000"] {
            assert_eq!(parse_request_start(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn trust_follows_the_allow_list() {
        let list = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert!(list.trusts("127.0.0.1"));
        assert!(list.trusts("10.20.30.40"));
        assert!(list.trusts("::ffff:10.1.2.3"));
        assert!(list.trusts("::1"));
        assert!(list.trusts("-"), "unix socket peers are local");
        assert!(!list.trusts("127.0.0.2"));
        assert!(!list.trusts("192.168.1.1"));
        assert!(TrustedProxies::parse("*").unwrap().trusts("203.0.113.9"));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("example.com").is_err());
        assert!(!TrustedProxies::parse("").unwrap().trusts("127.0.0.1"));
    }

    #[test]
    fn untrusted_stamps_are_ignored_and_old_ones_shed() {
        let policy = QueuePolicy {
            trusted: TrustedProxies::parse(DEFAULT_FORWARDED_ALLOW_IPS).unwrap(),
            max: Some(Duration::from_secs(1)),
        };
        let now = at(1_700_000_010, 0);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-start", "t=1700000005000000".parse().unwrap());
        assert_eq!(policy.queue_time(&headers, "127.0.0.1", now), Some(Duration::from_secs(5)));
        assert!(policy.sheds(policy.queue_time(&headers, "127.0.0.1", now)));
        assert_eq!(policy.queue_time(&headers, "192.0.2.1", now), None);
        assert!(!policy.sheds(None));
        headers.insert("x-request-start", "t=1700000020000000".parse().unwrap());
        assert_eq!(policy.queue_time(&headers, "127.0.0.1", now), Some(Duration::ZERO));
    }
}
