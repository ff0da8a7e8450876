//! The `host[:port]` syntax of RFC 3986 (a `Host` header, the authority of an absolute-form
//! target or of a guest's outbound request), and what kind of host it names.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The host part of a `host[:port]`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostText<'a> {
    /// `[IPv6]`.
    Ipv6(Ipv6Addr),
    /// A reg-name (which includes dotted IPv4): unreserved characters, sub-delims and `%XX`.
    /// May be empty (`Host:` with no value is valid HTTP).
    RegName(&'a str),
}

/// A parsed `host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    pub host: HostText<'a>,
    pub port: Option<u16>,
}

/// Parses `host[:port]`: a reg-name (unreserved, sub-delims, %XX), an IPv4 address, or an
/// `[IPv6]` literal; the port 1 to 5 digits, at most 65535. None when it is none of these
/// (userinfo, a path, spaces, a zone id, a bad port...).
pub fn parse_host_port(value: &[u8]) -> Option<HostPort<'_>> {
    let (host, port) = if value.first() == Some(&b'[') {
        let end = value.iter().position(|&b| b == b']')?;
        let ip = std::str::from_utf8(&value[1..end]).ok()?.parse::<Ipv6Addr>().ok()?;
        let port = match &value[end + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return None,
        };
        (HostText::Ipv6(ip), port)
    } else {
        let (host, port) = match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        };
        if !is_reg_name(host) {
            return None;
        }
        (HostText::RegName(std::str::from_utf8(host).ok()?), port)
    };
    let port = match port {
        None => None,
        Some(digits) => Some(parse_port(digits)?),
    };
    Some(HostPort { host, port })
}

/// True when `value` is a valid `host[:port]` (see [`parse_host_port`]).
pub fn valid_host_port(value: &[u8]) -> bool {
    parse_host_port(value).is_some()
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse::<u16>().ok()
}

fn is_reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        match host[i] {
            b'%' => {
                if !(host.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && host.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// What a host names: a DNS name (lower case, no trailing dot) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// The host of a parsed `host[:port]`: `[IPv6]` and dotted-quad IPv4 are addresses,
    /// anything else a name. None for an empty name.
    pub fn of(text: HostText<'_>) -> Option<Host> {
        match text {
            HostText::Ipv6(ip) => Some(Host::Ip(IpAddr::V6(ip))),
            HostText::RegName(name) => {
                if let Ok(ip) = name.parse::<Ipv4Addr>() {
                    return Some(Host::Ip(IpAddr::V4(ip)));
                }
                let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
                (!name.is_empty()).then_some(Host::Name(name))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts_and_ports() {
        for good in [
            "example.com",
            "example.com:8080",
            "h",
            "",
            ":80",
            "[::1]",
            "[::1]:80",
            "10.0.0.1:0",
            "a%41b",
            "x!$&'()*+,;=~_-.y",
        ] {
            assert!(valid_host_port(good.as_bytes()), "{good}");
        }
        for bad in [
            "a b",
            "a/b",
            "a:99999",
            "a:8x",
            "a:",
            "u@h",
            "u:p@h:80",
            "[::1",
            "[zz]:80",
            "h:80:80",
            "[::1]x",
            "a%4",
            "[fe80::1%25eth0]",
            "a:+80",
        ] {
            assert!(!valid_host_port(bad.as_bytes()), "{bad}");
        }
        assert!(!valid_host_port(b"caf\xc3\xa9.example"), "non-ASCII names are not reg-names");
    }

    #[test]
    fn the_parts_come_out_as_written() {
        let parsed = parse_host_port(b"Example.COM.:81").unwrap();
        assert_eq!(parsed, HostPort { host: HostText::RegName("Example.COM."), port: Some(81) });
        assert_eq!(parse_host_port(b"[::1]").unwrap().host, HostText::Ipv6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        let host = |text: &str| Host::of(parse_host_port(text.as_bytes()).unwrap().host);
        assert_eq!(host("Example.COM."), Some(Host::Name("example.com".into())));
        assert_eq!(host("127.0.0.1"), Some(Host::Ip("127.0.0.1".parse().unwrap())));
        assert_eq!(host("[::1]:80"), Some(Host::Ip("::1".parse().unwrap())));
        assert_eq!(host("127.1"), Some(Host::Name("127.1".into())), "only dotted quads are IPv4 literals");
        assert_eq!(host(""), None);
        assert_eq!(host("."), None);
    }
}
