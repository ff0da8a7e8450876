//! Where an outbound request goes: its scheme, host (a name or an IP literal) and port, read
//! from the request URI the guest built, with the same `host[:port]` parser that admits
//! inbound requests.
pub use crate::config::outbound::Scheme;
use crate::net::host::{parse_host_port, Host};
use std::fmt;
use std::net::IpAddr;

/// Where an outbound request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

/// Why a request URI names no target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTarget {
    /// No http(s) scheme, no host, or a host that is not `host[:port]`.
    Unusable,
    /// `user:password@` before the host: refused, never forwarded (it would end up in `Host`).
    Userinfo,
}

impl Target {
    /// The target of a request URI.
    pub fn from_uri(uri: &http::Uri) -> Result<Target, BadTarget> {
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => return Err(BadTarget::Unusable),
        };
        let authority = uri.authority().ok_or(BadTarget::Unusable)?.as_str();
        if authority.contains('@') {
            return Err(BadTarget::Userinfo);
        }
        let parsed = parse_host_port(authority.as_bytes()).ok_or(BadTarget::Unusable)?;
        let host = Host::of(parsed.host).ok_or(BadTarget::Unusable)?;
        Ok(Target { scheme, host, port: parsed.port.unwrap_or(scheme.default_port()) })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Result<Target, BadTarget> {
        Target::from_uri(&uri.parse().unwrap())
    }

    #[test]
    fn targets_come_from_request_uris() {
        assert_eq!(
            target("https://Example.COM/x"),
            Ok(Target { scheme: Scheme::Https, host: Host::Name("example.com".into()), port: 443 })
        );
        assert_eq!(target("http://[::1]:81/").unwrap().host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(target("http://[::1]:81/").unwrap().to_string(), "http://[::1]:81");
        assert_eq!(target("http://127.0.0.1:8080/").unwrap().host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert_eq!(target("/relative"), Err(BadTarget::Unusable));
        assert_eq!(target("ftp://example.com/"), Err(BadTarget::Unusable));
    }

    #[test]
    fn userinfo_is_refused_not_dropped() {
        assert_eq!(target("http://user:pw@127.0.0.1:9000/"), Err(BadTarget::Userinfo));
        assert_eq!(target("https://user@example.com/"), Err(BadTarget::Userinfo));
        assert_eq!(target("http://@example.com/"), Err(BadTarget::Userinfo));
    }
}
