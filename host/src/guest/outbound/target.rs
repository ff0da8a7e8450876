//! Where an outbound request goes: its scheme, host (a name or an IP literal) and port, read
//! from the request URI the guest built.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The scheme of an outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A request's host: a DNS name (lower case, no trailing dot) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// Where an outbound request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// The target of a request URI; None when it has no usable scheme or host.
    pub fn from_uri(uri: &http::Uri) -> Option<Target> {
        let scheme = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("http") => Scheme::Http,
            s if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => return None,
        };
        let authority = uri.authority()?;
        let host = parse_host(authority.host())?;
        let port = authority.port_u16().unwrap_or(scheme.default_port());
        Some(Target { scheme, host, port })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(name) => write!(f, "{}://{}:{}", self.scheme.as_str(), name, self.port),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "{}://[{}]:{}", self.scheme.as_str(), ip, self.port),
            Host::Ip(ip) => write!(f, "{}://{}:{}", self.scheme.as_str(), ip, self.port),
        }
    }
}

fn parse_host(host: &str) -> Option<Host> {
    if let Some(inner) = host.strip_prefix('[') {
        return inner.strip_suffix(']')?.parse::<Ipv6Addr>().ok().map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    (!name.is_empty()).then_some(Host::Name(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::from_uri(&uri.parse().unwrap()).unwrap()
    }

    #[test]
    fn targets_come_from_request_uris() {
        assert_eq!(
            target("https://Example.COM/x"),
            Target { scheme: Scheme::Https, host: Host::Name("example.com".into()), port: 443 }
        );
        assert_eq!(target("http://[::1]:81/").host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(target("http://[::1]:81/").to_string(), "http://[::1]:81");
        assert_eq!(Target::from_uri(&"/relative".parse().unwrap()), None);
    }
}
