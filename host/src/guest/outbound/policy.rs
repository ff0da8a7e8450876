//! Matching an outbound request against the `--allow-outbound` allow-list (parsed in
//! `config::outbound`): which targets a guest may reach, and which non-global addresses a
//! pattern names literally.
use super::target::Target;
use crate::config::outbound::{AllowList, HostRule, PortRule, Rule, SchemeRule};
use crate::net::host::Host;
use std::net::IpAddr;

/// Whether some pattern allows this scheme, host and port.
pub fn permits(allow: &AllowList, target: &Target) -> bool {
    allow.rules.iter().any(|r| matches_scheme_and_port(r, target) && matches_host(r, &target.host))
}

/// Whether a pattern that applies to this target's scheme and port names `ip` literally
/// (an IP or a network containing it): only then may a non-global address be dialled.
pub fn names_address(allow: &AllowList, target: &Target, ip: IpAddr) -> bool {
    allow.rules.iter().any(|r| {
        matches_scheme_and_port(r, target) && matches!(&r.host, HostRule::Network(network) if network.contains(ip))
    })
}

fn matches_scheme_and_port(rule: &Rule, target: &Target) -> bool {
    let scheme = match rule.scheme {
        SchemeRule::Only(s) => s == target.scheme,
        SchemeRule::Any => true,
    };
    let port = match rule.port {
        PortRule::Default => target.port == target.scheme.default_port(),
        PortRule::Only(p) => p == target.port,
        PortRule::Any => true,
    };
    scheme && port
}

fn matches_host(rule: &Rule, host: &Host) -> bool {
    match (&rule.host, host) {
        (HostRule::Any, _) => true,
        (HostRule::Name(rule), Host::Name(name)) => rule == name,
        (HostRule::Subdomains(suffix), Host::Name(name)) => {
            name.len() > suffix.len() + 1 && name.ends_with(suffix.as_str()) && {
                let dot = name.len() - suffix.len() - 1;
                name.as_bytes()[dot] == b'.'
            }
        }
        (HostRule::Network(network), Host::Ip(ip)) => network.contains(*ip),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::from_uri(&uri.parse().unwrap()).unwrap()
    }

    fn allows(patterns: &[&str], uri: &str) -> bool {
        permits(&AllowList::parse(patterns).unwrap(), &target(uri))
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
        assert!(!names_address(&list, &target("http://localhost/"), ip("127.0.0.1")));
        assert!(names_address(&list, &target("http://localhost:9000/"), ip("127.0.0.1")));
        assert!(!names_address(&list, &target("http://localhost:9001/"), ip("127.0.0.1")));
        assert!(names_address(&list, &target("https://internal:8443/"), ip("10.2.3.4")));
        assert!(!names_address(&list, &target("http://metadata/"), ip("169.254.169.254")));
        // Why `::/0` is warned about at startup: it names IPv4 loopback through IPv4-mapped addresses.
        let every_v6 = AllowList::parse(&["http://[::]/0:*"]).unwrap();
        assert!(names_address(&every_v6, &target("http://[::ffff:127.0.0.1]:81/"), ip("::ffff:127.0.0.1")));
        assert!(permits(&every_v6, &target("http://[::ffff:169.254.169.254]/")));
    }
}
