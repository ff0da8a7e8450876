//! The `--allow-outbound` allow-list: parses `SCHEME://HOST[:PORT]` patterns and decides which
//! outbound targets (and which non-global addresses) a guest may reach.
use super::address::in_network;
use super::target::{Host, Scheme, Target};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
enum SchemeRule {
    Only(Scheme),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostRule {
    /// `*`: any host (its addresses still have to pass the address check).
    Any,
    /// `example.com`: that name only.
    Name(String),
    /// `*.example.com`: names under example.com (not example.com itself).
    Subdomains(String),
    /// `10.0.0.0/8`, `127.0.0.1`, `[fd00::]/8`: IP literals in that network; also names the
    /// network's addresses for the address check.
    Network(IpAddr, u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortRule {
    /// Omitted: the scheme's default port.
    Default,
    Only(u16),
    Any,
}

/// One `--allow-outbound` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    scheme: SchemeRule,
    host: HostRule,
    port: PortRule,
}

impl Rule {
    fn matches_scheme_and_port(&self, target: &Target) -> bool {
        let scheme = match self.scheme {
            SchemeRule::Only(s) => s == target.scheme,
            SchemeRule::Any => true,
        };
        let port = match self.port {
            PortRule::Default => target.port == target.scheme.default_port(),
            PortRule::Only(p) => p == target.port,
            PortRule::Any => true,
        };
        scheme && port
    }

    fn matches_host(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostRule::Any, _) => true,
            (HostRule::Name(rule), Host::Name(name)) => rule == name,
            (HostRule::Subdomains(suffix), Host::Name(name)) => {
                name.len() > suffix.len() + 1 && name.ends_with(suffix.as_str()) && {
                    let dot = name.len() - suffix.len() - 1;
                    name.as_bytes()[dot] == b'.'
                }
            }
            (HostRule::Network(net, prefix), Host::Ip(ip)) => in_network(*ip, *net, *prefix),
            _ => false,
        }
    }
}

/// The parsed allow-list; empty = no outbound HTTP at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parses every pattern; the error names the bad pattern and what is wrong with it.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<AllowList, String> {
        let rules = patterns
            .iter()
            .map(|p| parse_rule(p.as_ref()).map_err(|why| format!("{:?}: {why}", p.as_ref())))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether some pattern allows this scheme, host and port.
    pub fn permits(&self, target: &Target) -> bool {
        self.rules.iter().any(|r| r.matches_scheme_and_port(target) && r.matches_host(&target.host))
    }

    /// Whether a pattern that applies to this target's scheme and port names `ip` literally
    /// (an IP or a network containing it): only then may a non-global address be dialled.
    pub fn names_address(&self, target: &Target, ip: IpAddr) -> bool {
        self.rules.iter().any(|r| {
            r.matches_scheme_and_port(target)
                && matches!(r.host, HostRule::Network(net, prefix) if in_network(ip, net, prefix))
        })
    }
}

const SYNTAX: &str = "expected SCHEME://HOST[:PORT] (scheme http, https or *; host a name, *.domain, *, an IP or a CIDR; port a number or *)";

fn parse_rule(pattern: &str) -> Result<Rule, String> {
    let (scheme, rest) = pattern.split_once("://").ok_or_else(|| SYNTAX.to_string())?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => SchemeRule::Only(Scheme::Http),
        "https" => SchemeRule::Only(Scheme::Https),
        "*" => SchemeRule::Any,
        other => return Err(format!("scheme {other:?} is not http, https or *")),
    };
    if let Some(bad) = rest.chars().find(|c| matches!(c, '?' | '#' | '@') || c.is_whitespace() || c.is_control()) {
        return Err(format!("{bad:?} is not allowed; {SYNTAX}"));
    }
    // Split HOST[/PREFIX] from :PORT. A bracketed IPv6 host carries its own colons.
    let (host, prefix, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (ip, after) = inner.split_once(']').ok_or("unclosed '[' in the host")?;
        let (prefix, port) = split_prefix_and_port(after)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| format!("[{ip}] is not an IPv6 address"))?;
        (HostText::Ip(IpAddr::V6(ip)), prefix, port)
    } else {
        let host_end = rest.find(['/', ':']).unwrap_or(rest.len());
        let (host, after) = rest.split_at(host_end);
        let (prefix, port) = split_prefix_and_port(after)?;
        let host = match host.parse::<Ipv4Addr>() {
            Ok(ip) => HostText::Ip(IpAddr::V4(ip)),
            Err(_) => HostText::Name(host),
        };
        (host, prefix, port)
    };
    let host = match (host, prefix) {
        (HostText::Ip(ip), prefix) => {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(text) => match text.parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(format!("CIDR prefix /{text} is not a number from 0 to {max}")),
                },
            };
            if network_of(ip, prefix) != ip {
                return Err(format!("{ip}/{prefix} has host bits set; write the network address"));
            }
            HostRule::Network(ip, prefix)
        }
        (HostText::Name(name), Some(_)) => {
            return Err(format!("{name:?} is not an IP address: a path or a CIDR prefix needs an IP host"))
        }
        (HostText::Name(name), None) => parse_name_rule(name)?,
    };
    let port = match port {
        None => PortRule::Default,
        Some("*") => PortRule::Any,
        Some(text) => match text.parse::<u16>() {
            Ok(p) if p > 0 => PortRule::Only(p),
            _ => return Err(format!("port {text:?} is not a number from 1 to 65535 or *")),
        },
    };
    Ok(Rule { scheme, host, port })
}

enum HostText<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// Splits what follows a host: an optional `/PREFIX`, then an optional `:PORT`, nothing else.
fn split_prefix_and_port(after: &str) -> Result<(Option<&str>, Option<&str>), String> {
    let (prefix, rest) = match after.strip_prefix('/') {
        Some(tail) => {
            let end = tail.find(':').unwrap_or(tail.len());
            let prefix = &tail[..end];
            if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("has a path (/{tail}); patterns name SCHEME://HOST[:PORT] only"));
            }
            (Some(prefix), &tail[end..])
        }
        None => (None, after),
    };
    match rest.strip_prefix(':') {
        None if rest.is_empty() => Ok((prefix, None)),
        None => Err(format!("unexpected {rest:?}; {SYNTAX}")),
        Some(port) if port.contains(['/', ':']) => {
            Err(format!("has a path or extra ':' after the port ({rest}); {SYNTAX}"))
        }
        Some(port) => Ok((prefix, Some(port))),
    }
}

fn network_of(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn parse_name_rule(name: &str) -> Result<HostRule, String> {
    if name == "*" {
        return Ok(HostRule::Any);
    }
    let (wildcard, domain) = match name.strip_prefix("*.") {
        Some(domain) => (true, domain),
        None => (false, name),
    };
    let domain = domain.strip_suffix('.').unwrap_or(domain).to_ascii_lowercase();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if domain.is_empty() || domain.len() > 253 || !domain.split('.').all(label_ok) {
        return Err(format!("host {name:?} is not a DNS name, *.domain, *, an IP or a CIDR"));
    }
    Ok(if wildcard { HostRule::Subdomains(domain) } else { HostRule::Name(domain) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::from_uri(&uri.parse().unwrap()).unwrap()
    }

    fn allows(patterns: &[&str], uri: &str) -> bool {
        AllowList::parse(patterns).unwrap().permits(&target(uri))
    }

    #[test]
    fn empty_list_allows_nothing() {
        assert!(!allows(&[], "http://example.com/"));
        assert!(!allows(&[], "https://127.0.0.1/"));
    }

    #[test]
    fn names_and_subdomains() {
        assert!(allows(&["https://api.example.com"], "https://api.example.com/v1"));
        assert!(allows(&["https://API.Example.com."], "https://api.EXAMPLE.com./v1"));
        assert!(!allows(&["https://api.example.com"], "https://example.com/"));
        assert!(!allows(&["https://api.example.com"], "https://evil-api.example.com/"));
        assert!(allows(&["https://*.example.com"], "https://a.b.example.com/"));
        assert!(!allows(&["https://*.example.com"], "https://example.com/"));
        assert!(!allows(&["https://*.example.com"], "https://badexample.com/"));
        assert!(allows(&["http://*"], "http://anything.test/"));
        assert!(allows(&["http://*"], "http://127.0.0.1/"));
    }

    #[test]
    fn schemes_and_ports() {
        assert!(!allows(&["https://example.com"], "http://example.com/"));
        assert!(allows(&["*://example.com"], "http://example.com/"));
        assert!(allows(&["*://example.com"], "https://example.com/"));
        // Omitted port = the request scheme's default port.
        assert!(!allows(&["https://example.com"], "https://example.com:8443/"));
        assert!(!allows(&["*://example.com"], "http://example.com:443/"));
        assert!(allows(&["https://example.com:8443"], "https://example.com:8443/"));
        assert!(!allows(&["https://example.com:8443"], "https://example.com/"));
        assert!(allows(&["https://example.com:*"], "https://example.com:1234/"));
        assert!(allows(&["http://127.0.0.1:9000"], "http://127.0.0.1:9000/x"));
        assert!(!allows(&["http://127.0.0.1:9000"], "http://127.0.0.1:9001/x"));
    }

    #[test]
    fn ip_literals_and_networks() {
        assert!(allows(&["http://10.0.0.0/8:*"], "http://10.1.2.3:8080/"));
        assert!(!allows(&["http://10.0.0.0/8"], "http://11.0.0.1/"));
        assert!(!allows(&["http://10.0.0.0/8"], "http://ten.example/"));
        assert!(allows(&["http://[fd00::]/8"], "http://[fd12::1]/"));
        assert!(allows(&["http://[::1]:9000"], "http://[::1]:9000/"));
        assert!(!allows(&["http://[::1]:9000"], "http://[::2]:9000/"));
    }

    #[test]
    fn non_global_addresses_need_a_literal_pattern_for_the_same_scheme_and_port() {
        let list = AllowList::parse(&["http://*", "http://127.0.0.1:9000", "*://10.0.0.0/8:*"]).unwrap();
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(!list.names_address(&target("http://localhost/"), ip("127.0.0.1")));
        assert!(list.names_address(&target("http://localhost:9000/"), ip("127.0.0.1")));
        assert!(!list.names_address(&target("http://localhost:9001/"), ip("127.0.0.1")));
        assert!(list.names_address(&target("https://internal:8443/"), ip("10.2.3.4")));
        assert!(!list.names_address(&target("http://metadata/"), ip("169.254.169.254")));
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_reason() {
        for (pattern, why) in [
            ("example.com", "SCHEME://HOST"),
            ("ftp://example.com", "scheme"),
            ("http://example.com/", "path"),
            ("http://example.com/api", "path"),
            ("http://example.com:80/api", "path"),
            ("http://10.0.0.0/8/x", "path"),
            ("http://10.0.0.0/33", "CIDR prefix"),
            ("http://10.0.0.1/8", "host bits"),
            ("http://[fd00::]/129", "CIDR prefix"),
            ("http://[fd00::/8", "unclosed"),
            ("http://[nothex]", "IPv6"),
            ("http://example.com/8", "IP host"),
            ("http://example.com:0", "port"),
            ("http://example.com:99999", "port"),
            ("http://example.com:http", "port"),
            ("http://", "host"),
            ("http://*example.com", "host"),
            ("http://ex ample.com", "not allowed"),
            ("http://user@example.com", "not allowed"),
            ("http://example.com?x", "not allowed"),
            ("http://fd00::1", "extra ':'"),
        ] {
            let error = AllowList::parse(&[pattern]).expect_err(pattern);
            assert!(error.contains(why), "{pattern}: {error}");
            assert!(error.starts_with(&format!("{pattern:?}")), "{error}");
        }
    }
}
