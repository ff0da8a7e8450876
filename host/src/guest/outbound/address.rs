//! Which IP addresses are globally reachable: everything else (loopback, private, link-local,
//! shared, documentation, multicast, reserved, and IPv4 hidden in IPv6) is refused to a guest
//! unless the allow-list names it literally.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// True when `ip` is a globally reachable unicast address. Strict: a range the IANA
/// special-purpose registries mark as not global, or that is not allocated for global unicast,
/// is not global; an IPv6 address carrying an IPv4 address is judged by the IPv4 address.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// IPv4 ranges that are not globally reachable (RFC 6890 and successors), as (network, prefix).
const NON_GLOBAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", incl. the unspecified 0.0.0.0
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (carrier-grade NAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local, incl. cloud metadata 169.254.169.254
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, incl. broadcast 255.255.255.255
];

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    !NON_GLOBAL_V4.iter().any(|&(net, prefix)| in_prefix_v4(bits, u32::from(Ipv4Addr::from(net)), prefix))
}

fn in_prefix_v4(bits: u32, net: u32, prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    bits & mask == net & mask
}

fn in_prefix_v6(bits: u128, net: u128, prefix: u8) -> bool {
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    bits & mask == net & mask
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let net = |text: &str| u128::from(text.parse::<Ipv6Addr>().expect("constant IPv6 network"));
    // IPv4-mapped ::ffff:0:0/96 and the well-known NAT64 prefix 64:ff9b::/96 reach the IPv4
    // address in their low 32 bits.
    if in_prefix_v6(bits, net("::ffff:0:0"), 96) || in_prefix_v6(bits, net("64:ff9b::"), 96) {
        return is_global_v4(Ipv4Addr::from(bits as u32));
    }
    // Everything else outside 2000::/3 (global unicast) is not global: ::, ::1, the deprecated
    // IPv4-compatible ::/96, local-use NAT64 64:ff9b:1::/48, discard 100::/64, ULA fc00::/7,
    // link-local fe80::/10, site-local fec0::/10, multicast ff00::/8.
    if !in_prefix_v6(bits, net("2000::"), 3) {
        return false;
    }
    // Teredo 2001::/32: the server's IPv4 in bits 32..64, the client's (inverted) in the last 32.
    if in_prefix_v6(bits, net("2001::"), 32) {
        let server = Ipv4Addr::from((bits >> 64) as u32);
        let client = Ipv4Addr::from(!(bits as u32));
        return is_global_v4(server) && is_global_v4(client);
    }
    // 6to4 2002::/16: the IPv4 address in bits 16..48.
    if in_prefix_v6(bits, net("2002::"), 16) {
        return is_global_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    const NON_GLOBAL_V6: &[(&str, u8)] = &[
        ("2001::", 23),     // IETF protocol assignments (benchmarking, ORCHID, ...)
        ("2001:db8::", 32), // documentation
        ("3fff::", 20),     // documentation
        ("5f00::", 16),     // segment routing SIDs
    ];
    !NON_GLOBAL_V6.iter().any(|&(text, prefix)| in_prefix_v6(bits, net(text), prefix))
}

/// True when `ip` lies in `network/prefix` (an IPv4 network never contains an IPv6 address).
pub fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => in_prefix_v4(u32::from(ip), u32::from(net), prefix),
        (IpAddr::V6(ip), IpAddr::V6(net)) => in_prefix_v6(u128::from(ip), u128::from(net), prefix),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(text: &str) -> bool {
        is_global(text.parse().unwrap())
    }

    #[test]
    fn public_addresses_are_global() {
        for ip in
            ["1.1.1.1", "8.8.8.8", "93.184.216.34", "100.63.255.255", "100.128.0.0", "172.32.0.1", "2606:4700::1111"]
        {
            assert!(global(ip), "{ip} is global");
        }
    }

    #[test]
    fn local_and_special_ipv4_is_not_global() {
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!global(ip), "{ip} is not global");
        }
    }

    #[test]
    fn local_and_special_ipv6_is_not_global() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "5f00::1",
            "64:ff9b:1::a9fe:a9fe",
        ] {
            assert!(!global(ip), "{ip} is not global");
        }
    }

    #[test]
    fn ipv4_hidden_in_ipv6_is_judged_by_the_ipv4_address() {
        // IPv4-mapped.
        assert!(!global("::ffff:127.0.0.1"));
        assert!(!global("::ffff:169.254.169.254"));
        assert!(!global("::ffff:10.1.2.3"));
        assert!(global("::ffff:8.8.8.8"));
        // NAT64 well-known prefix.
        assert!(!global("64:ff9b::7f00:1"));
        assert!(!global("64:ff9b::a9fe:a9fe"));
        assert!(global("64:ff9b::808:808"));
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        assert!(!global("2002:7f00:1::1"));
        assert!(!global("2002:a9fe:a9fe::1"));
        assert!(!global("2002:c0a8:0101::1"));
        assert!(global("2002:0808:0808::1"));
        // Teredo: server 8.8.8.8, client = !last 32 bits.
        let client_loopback = !u32::from(Ipv4Addr::new(127, 0, 0, 1));
        let teredo = |server: u32, client: u32| {
            let bits = (0x2001_0000u128 << 96) | ((server as u128) << 64) | client as u128;
            is_global(IpAddr::V6(Ipv6Addr::from(bits)))
        };
        let public = u32::from(Ipv4Addr::new(8, 8, 8, 8));
        assert!(!teredo(public, client_loopback));
        assert!(!teredo(u32::from(Ipv4Addr::new(10, 0, 0, 1)), !public));
        assert!(teredo(public, !u32::from(Ipv4Addr::new(1, 1, 1, 1))));
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("10.9.8.7"), ip("10.0.0.0"), 8));
        assert!(!in_network(ip("11.0.0.1"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("127.0.0.1"), ip("127.0.0.1"), 32));
        assert!(!in_network(ip("127.0.0.2"), ip("127.0.0.1"), 32));
        assert!(in_network(ip("fd00::5"), ip("fd00::"), 8));
        assert!(!in_network(ip("fe00::5"), ip("fd00::"), 8));
        assert!(!in_network(ip("::ffff:10.0.0.1"), ip("10.0.0.0"), 8));
        assert!(in_network(ip("1.2.3.4"), ip("0.0.0.0"), 0));
    }
}
