//! IP networks in CIDR notation (`10.0.0.0/8`, `fd00::/8`; a bare address is its own /32 or
//! /128) and the one rule for whether an address lies in a network.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// The longest prefix for `ip`'s family: 32 or 128.
pub fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

const fn mask_v4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

const fn mask_v6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

impl Cidr {
    /// The network of `ip/prefix` (host bits cleared); None when the prefix is too long.
    pub fn new(ip: IpAddr, prefix: u8) -> Option<Cidr> {
        if prefix > max_prefix(ip) {
            return None;
        }
        let network = match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask_v6(prefix))),
        };
        Some(Cidr { network, prefix })
    }

    /// An IPv4 network for a constant table (`octets` must have no host bits set).
    pub const fn v4(octets: [u8; 4], prefix: u8) -> Cidr {
        Cidr { network: IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])), prefix }
    }

    /// An IPv6 network for a constant table (`segments` must have no host bits set).
    pub const fn v6(s: [u16; 8], prefix: u8) -> Cidr {
        Cidr { network: IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])), prefix }
    }

    /// `ip` with the prefix given as text (`None` = the whole address): the error says what is
    /// wrong with the prefix.
    pub fn with_prefix_text(ip: IpAddr, prefix: Option<&str>) -> Result<Cidr, String> {
        let max = max_prefix(ip);
        let prefix = match prefix {
            None => max,
            Some(text) => match text.parse::<u8>() {
                Ok(p) if p <= max && text.bytes().all(|b| b.is_ascii_digit()) => p,
                _ => return Err(format!("CIDR prefix /{text} is not a number from 0 to {max}")),
            },
        };
        Ok(Cidr::new(ip, prefix).expect("prefix checked against the family"))
    }

    /// Parses `ADDRESS[/PREFIX]` (IPv6 without brackets). Host bits are cleared.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let ip: IpAddr =
            address.parse().map_err(|_| format!("{address:?} is not an IP address (e.g. 10.0.0.0/8 or fd00::/8)"))?;
        Cidr::with_prefix_text(ip, prefix)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// True when `ip` lies in this network. Families never mix: an IPv4 network does not
    /// contain an IPv4-mapped IPv6 address (callers that mean to unmap do so themselves).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (ip, self.network) {
            (IpAddr::V4(ip), IpAddr::V4(net)) => {
                let mask = mask_v4(self.prefix);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(ip), IpAddr::V6(net)) => {
                let mask = mask_v6(self.prefix);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }

    /// True when this network contains every address of `other`.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.prefix <= other.prefix && self.contains(other.network)
    }
}

/// A set of addresses written as `*` (all of them) or a comma list of addresses and networks
/// (`127.0.0.1,10.0.0.0/8,::1`), as `--forwarded-allow-ips` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressSet {
    All,
    Networks(Vec<Cidr>),
}

impl AddressSet {
    /// Parses the list; empty items are skipped, a `*` anywhere means every address.
    pub fn parse(text: &str) -> Result<AddressSet, String> {
        let mut networks = Vec::new();
        for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
            if item == "*" {
                return Ok(AddressSet::All);
            }
            networks.push(Cidr::parse(item).map_err(|why| format!("{item:?}: {why}"))?);
        }
        Ok(AddressSet::Networks(networks))
    }

    /// True when `ip` is in the set (families never mix, as in [`Cidr::contains`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match self {
            AddressSet::All => true,
            AddressSet::Networks(networks) => networks.iter().any(|network| network.contains(ip)),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn cidr(text: &str) -> Cidr {
        Cidr::parse(text).unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        assert!(cidr("10.0.0.0/8").contains(ip("10.9.8.7")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("fd00::/8").contains(ip("fd00::5")));
        assert!(!cidr("fd00::/8").contains(ip("fe00::5")));
        assert!(!cidr("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")), "families never mix");
        assert!(cidr("0.0.0.0/0").contains(ip("1.2.3.4")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("::/0").contains(ip("::ffff:127.0.0.1")));
    }

    #[test]
    fn parsing_clears_host_bits_and_checks_the_prefix() {
        assert_eq!(cidr("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr("fd12::1/8").network(), ip("fd00::"));
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0.0/x", "10.0.0.0/+8", "10.0.0.0/", "example.com", "[::1]"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("CIDR prefix /33"));
    }

    #[test]
    fn coverage_compares_whole_networks() {
        assert!(cidr("::/0").covers(&cidr("::ffff:0:0/96")));
        assert!(cidr("::/64").covers(&cidr("::ffff:0:0/96")));
        assert!(!cidr("::ffff:0:0/97").covers(&cidr("::ffff:0:0/96")));
        assert!(!cidr("10.0.0.0/8").covers(&cidr("0.0.0.0/0")));
    }

    #[test]
    fn address_sets_parse_addresses_networks_and_star() {
        let set = AddressSet::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert_eq!(set, AddressSet::Networks(vec![cidr("127.0.0.1"), cidr("10.0.0.0/8"), cidr("::1")]));
        assert!(set.contains(ip("10.1.2.3")) && set.contains(ip("::1")) && !set.contains(ip("127.0.0.2")));
        assert_eq!(AddressSet::parse("10.0.0.1, *"), Ok(AddressSet::All));
        assert!(AddressSet::All.contains(ip("203.0.113.9")));
        assert_eq!(AddressSet::parse(""), Ok(AddressSet::Networks(vec![])));
        assert!(AddressSet::parse("10.0.0.0/33").unwrap_err().starts_with("\"10.0.0.0/33\": CIDR prefix"));
        assert!(AddressSet::parse("example.com").is_err());
    }

    #[test]
    fn constant_tables_hold_networks() {
        assert_eq!(Cidr::v4([169, 254, 0, 0], 16), cidr("169.254.0.0/16"));
        assert_eq!(Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), cidr("2001:db8::/32"));
    }
}
