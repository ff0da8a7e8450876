//! Outbound HTTP settings as plain data: the `--allow-outbound` allow-list parsed from its
//! `SCHEME://HOST[:PORT]` patterns, and the limits. Matching a request against the list is the
//! outbound client's work (`guest::outbound::policy`).
use super::cli::ServeArgs;
use super::settings::{bad, ConfigError};
use crate::net::address::{IPV4_MAPPED, NAT64};
use crate::net::cidr::Cidr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

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

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemeRule {
    Only(Scheme),
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// `*`: any host name or address; the addresses still have to pass the address check
    /// (loopback, private, link-local and metadata addresses stay refused).
    Any,
    /// `example.com`: that name only.
    Name(String),
    /// `*.example.com`: names under example.com (not example.com itself).
    Subdomains(String),
    /// `10.0.0.0/8`, `127.0.0.1`, `[fd00::]/8`: IP literals in that network; also names the
    /// network's addresses for the address check.
    Network(Cidr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRule {
    /// Omitted: the scheme's default port.
    Default,
    Only(u16),
    Any,
}

/// One `--allow-outbound` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The pattern as given, for messages.
    pub pattern: String,
    pub scheme: SchemeRule,
    pub host: HostRule,
    pub port: PortRule,
}

/// The parsed allow-list; empty = no outbound HTTP at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub rules: Vec<Rule>,
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

    /// One warning per pattern that grants every address of a family: such a pattern names
    /// loopback, private and link-local (cloud metadata) addresses literally, so the address
    /// check lets them through.
    pub fn warnings(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|rule| match &rule.host {
                HostRule::Network(network) => every_address_of(network).map(|family| {
                    format!(
                        "--allow-outbound {:?} grants every {family}, including loopback (127.0.0.1, ::1) and link-local and cloud metadata addresses (169.254.169.254): guests can reach services on this host and its network; name the networks they need instead",
                        rule.pattern
                    )
                }),
                _ => None,
            })
            .collect()
    }
}

/// Which whole address family `network` grants, if it grants one: IPv4 through `0.0.0.0/0` or
/// through the IPv6 blocks that carry IPv4 addresses (IPv4-mapped, NAT64), IPv6 through `::/0`.
fn every_address_of(network: &Cidr) -> Option<&'static str> {
    match network.network() {
        IpAddr::V4(_) if network.prefix() == 0 => Some("IPv4 address"),
        IpAddr::V6(_) if network.prefix() == 0 => {
            Some("IPv6 address and, through IPv4-mapped addresses, every IPv4 address")
        }
        IpAddr::V6(_) if network.covers(&IPV4_MAPPED) || network.covers(&NAT64) => {
            Some("IPv4 address (through IPv4-mapped or NAT64 IPv6 addresses)")
        }
        _ => None,
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
    let (host, prefix, port) = split_host(rest)?;
    let host = match (host, prefix) {
        (HostText::Ip(ip), prefix) => {
            let network = Cidr::with_prefix_text(ip, prefix)?;
            if network.network() != ip {
                return Err(format!("{ip}/{} has host bits set; write the network address", network.prefix()));
            }
            HostRule::Network(network)
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
    Ok(Rule { pattern: pattern.to_string(), scheme, host, port })
}

enum HostText<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// Splits HOST[/PREFIX][:PORT]. A bracketed IPv6 host carries its own colons.
fn split_host(rest: &str) -> Result<(HostText<'_>, Option<&str>, Option<&str>), String> {
    if let Some(inner) = rest.strip_prefix('[') {
        let (ip, after) = inner.split_once(']').ok_or("unclosed '[' in the host")?;
        let (prefix, port) = split_prefix_and_port(after)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| format!("[{ip}] is not an IPv6 address"))?;
        return Ok((HostText::Ip(IpAddr::V6(ip)), prefix, port));
    }
    let host_end = rest.find(['/', ':']).unwrap_or(rest.len());
    let (host, after) = rest.split_at(host_end);
    let (prefix, port) = split_prefix_and_port(after)?;
    let host = match host.parse::<Ipv4Addr>() {
        Ok(ip) => HostText::Ip(IpAddr::V4(ip)),
        Err(_) => HostText::Name(host),
    };
    Ok((host, prefix, port))
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

/// Outbound settings: the allow-list and the limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundSettings {
    /// `--allow-outbound`: empty = no outbound HTTP.
    pub allow: AllowList,
    /// `--outbound-max-concurrency`: outbound requests one instance may have in flight.
    pub max_concurrency: usize,
    /// `--outbound-max-connections`: open outbound connections per worker process.
    pub max_connections: usize,
    /// `--outbound-connect-timeout`: DNS + TCP connect + TLS handshake; guests may ask for less.
    pub connect_timeout: Duration,
}

impl OutboundSettings {
    /// No outbound HTTP at all.
    pub fn deny_all() -> OutboundSettings {
        OutboundSettings {
            allow: AllowList::default(),
            max_concurrency: 1,
            max_connections: 1,
            connect_timeout: Duration::from_secs(DEFAULT_CONNECT_TIMEOUT_SECS),
        }
    }
}

/// Most outbound connections a worker may open by default.
const DEFAULT_OUTBOUND_CONNECTIONS: usize = 256;
/// Most outbound requests one instance may have in flight.
pub const MAX_OUTBOUND_CONCURRENCY: usize = 4096;
const DEFAULT_CONNECT_TIMEOUT_SECS: u64 = 10;
const MAX_CONNECT_TIMEOUT_SECS: u64 = 600;

/// `--allow-outbound`, `--outbound-max-concurrency`, `--outbound-max-connections` (checked
/// against the open-files limit) and `--outbound-connect-timeout`.
pub fn outbound_settings(args: &ServeArgs) -> Result<OutboundSettings, ConfigError> {
    let allow = AllowList::parse(&args.allow_outbound).map_err(|e| bad(format!("--allow-outbound {e}")))?;
    if !(1..=MAX_OUTBOUND_CONCURRENCY).contains(&args.outbound_max_concurrency) {
        return Err(bad(format!(
            "--outbound-max-concurrency must be between 1 and {MAX_OUTBOUND_CONCURRENCY} (got {})",
            args.outbound_max_concurrency
        )));
    }
    let fd_limit = open_files_limit();
    let max_connections = match args.outbound_max_connections {
        None => DEFAULT_OUTBOUND_CONNECTIONS.min(fd_limit / 4).max(1),
        Some(n) if n >= 1 && n <= fd_limit / 2 => n,
        Some(n) => {
            return Err(bad(format!(
                "--outbound-max-connections must be between 1 and half the open-files limit ({}; got {n}): raise `ulimit -n` or lower it",
                fd_limit / 2
            )))
        }
    };
    if !(1..=MAX_CONNECT_TIMEOUT_SECS).contains(&args.outbound_connect_timeout) {
        return Err(bad(format!(
            "--outbound-connect-timeout must be between 1 and {MAX_CONNECT_TIMEOUT_SECS} seconds (got {})",
            args.outbound_connect_timeout
        )));
    }
    Ok(OutboundSettings {
        allow,
        max_concurrency: args.outbound_max_concurrency,
        max_connections,
        connect_timeout: Duration::from_secs(args.outbound_connect_timeout),
    })
}

/// The soft RLIMIT_NOFILE of this process (workers inherit it).
fn open_files_limit() -> usize {
    match nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => usize::try_from(soft).unwrap_or(usize::MAX),
        Err(_) => 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn patterns_that_grant_every_address_are_warned_about() {
        let warned = |pattern: &str| {
            let warnings = AllowList::parse(&[pattern]).unwrap().warnings();
            assert!(warnings.len() <= 1, "{warnings:?}");
            warnings.into_iter().next()
        };
        for pattern in [
            "http://0.0.0.0/0",
            "*://0.0.0.0/0:*",
            "https://[::]/0",
            "http://[::ffff:0:0]/96:*",
            "http://[::]/64",
            "http://[64:ff9b::]/96",
        ] {
            let warning = warned(pattern).unwrap_or_else(|| panic!("{pattern} is warned about"));
            assert!(warning.starts_with(&format!("--allow-outbound {pattern:?} grants every ")), "{warning}");
            assert!(warning.contains("loopback") && warning.contains("169.254.169.254"), "{warning}");
            assert!(!warning.contains('\n'), "one line: {warning}");
        }
        // `*` names no address: loopback and metadata stay refused by the address check.
        for pattern in [
            "http://*",
            "*://*:*",
            "http://10.0.0.0/8",
            "http://0.0.0.0/1",
            "http://127.0.0.1:9000",
            "http://[::ffff:0:0]/97",
        ] {
            assert_eq!(warned(pattern), None, "{pattern}");
        }
        let list = AllowList::parse(&["http://0.0.0.0/0", "http://example.com", "http://[::]/0"]).unwrap();
        assert_eq!(list.warnings().len(), 2, "one warning per broad pattern");
    }
}
