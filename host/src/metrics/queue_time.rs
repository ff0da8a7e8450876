//! Queue time: how long a request waited between a trusted proxy stamping `X-Request-Start` and
//! a worker taking it; `--forwarded-allow-ips` decides whom to trust, `--max-queue-time` sheds
//! requests that waited too long (their clients have likely given up).
use crate::net::cidr::AddressSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// Whether a peer may stamp `X-Request-Start`. `-` (a unix socket peer) is trusted, as in
/// Gunicorn: only local processes can connect there. An IPv4 peer seen on a dual-stack socket
/// as `::ffff:a.b.c.d` is also matched as its IPv4 address.
pub fn trusts(trusted: &AddressSet, remote: &str) -> bool {
    if remote == "-" {
        return true;
    }
    match remote.parse::<IpAddr>() {
        Ok(peer) => trusted.contains(peer) || trusted.contains(peer.to_canonical()),
        Err(_) => matches!(trusted, AddressSet::All),
    }
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

/// How long the request waited, if a peer in `trusted` (`--forwarded-allow-ips`) stamped it. A
/// stamp from the future (clock skew between hosts) counts as no wait.
pub fn waited(trusted: &AddressSet, headers: &http::HeaderMap, remote: &str, now: SystemTime) -> Option<Duration> {
    let value = headers.get("x-request-start")?;
    if !trusts(trusted, remote) {
        return None;
    }
    let started = parse_request_start(value.to_str().ok()?)?;
    Some(now.duration_since(started).unwrap_or(Duration::ZERO))
}

/// Whether a request that waited `waited` is to be answered 503 without running the guest
/// (`max` is `--max-queue-time`).
pub fn sheds(max: Option<Duration>, waited: Option<Duration>) -> bool {
    matches!((max, waited), (Some(max), Some(waited)) if waited > max)
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
        let list = AddressSet::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert!(trusts(&list, "127.0.0.1"));
        assert!(trusts(&list, "10.20.30.40"));
        assert!(trusts(&list, "::ffff:10.1.2.3"));
        assert!(trusts(&list, "::1"));
        assert!(trusts(&list, "-"), "unix socket peers are local");
        assert!(!trusts(&list, "127.0.0.2"));
        assert!(!trusts(&list, "192.168.1.1"));
        assert!(!trusts(&list, "not an address"));
        assert!(trusts(&AddressSet::parse("*").unwrap(), "203.0.113.9"));
        assert!(!trusts(&AddressSet::parse("").unwrap(), "127.0.0.1"));
        assert!(trusts(&AddressSet::parse("::ffff:0:0/96").unwrap(), "::ffff:10.1.2.3"));
    }

    #[test]
    fn untrusted_stamps_are_ignored_and_old_ones_shed() {
        let trusted = AddressSet::parse("127.0.0.1,::1").unwrap();
        let max = Some(Duration::from_secs(1));
        let now = at(1_700_000_010, 0);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-request-start", "t=1700000005000000".parse().unwrap());
        assert_eq!(waited(&trusted, &headers, "127.0.0.1", now), Some(Duration::from_secs(5)));
        assert!(sheds(max, waited(&trusted, &headers, "127.0.0.1", now)));
        assert_eq!(waited(&trusted, &headers, "192.0.2.1", now), None);
        assert!(!sheds(max, None));
        headers.insert("x-request-start", "t=1700000020000000".parse().unwrap());
        assert_eq!(waited(&trusted, &headers, "127.0.0.1", now), Some(Duration::ZERO));
    }
}
